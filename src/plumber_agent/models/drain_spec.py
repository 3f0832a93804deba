"""spec.rollout.drain and spec.rollout.drainTimeoutSeconds: whether a node drains before a
disruptive change (planner/disruption.py) of the template, and for how long it may try.

- `none`: the change is made while the pods run (HostPlumber before drains existed);
- `pods` (default): cordon, evict only the pods the change disrupts (their VFs), change,
  uncordon; a change that disrupts no pod drains nothing and cordons nothing;
- `node`: cordon and evict every evictable pod before a disruptive change (kubectl drain).

Why `pods` is the default (README "Draining before disruptive changes"): a pod whose VF is
destroyed keeps running without its network and nothing reschedules it; evicted through the
Eviction API it is recreated elsewhere with its PodDisruptionBudget respected. A template
whose changes disrupt no pod sees no difference, so existing users meet the drain only where
today's behaviour cuts a pod off; `drain: none` restores that behaviour where wanted.

The timeout's default is the sriov-network-operator's drain timeout (90 s). Kept apart from
models/spec.py so the spec module takes only hooking lines.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Any, Callable


class DrainPolicy(StrEnum):
    NONE = "none"
    PODS = "pods"
    NODE = "node"


DEFAULT_DRAIN = DrainPolicy.PODS
DEFAULT_DRAIN_TIMEOUT_S = 90  # the sriov-network-operator's drain timeout
MIN_DRAIN_TIMEOUT_S = 1
MAX_DRAIN_TIMEOUT_S = 3600  # a rollout slot held longer than an hour by one drain is a stuck drain
DRAIN_KEYS = {"drain", "drainTimeoutSeconds"}


def check_drain(value: Any) -> str | None:
    if not isinstance(value, str) or value not in tuple(DrainPolicy):
        return f"{value!r} is not one of {', '.join(DrainPolicy)}"
    return None


def check_drain_timeout(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not (
            MIN_DRAIN_TIMEOUT_S <= value <= MAX_DRAIN_TIMEOUT_S):
        return (f"{value!r} is not an integer number of seconds from {MIN_DRAIN_TIMEOUT_S} "
                f"to {MAX_DRAIN_TIMEOUT_S}")
    return None


def validate_drain(check: Callable[[str, str | None], bool], path: str, raw: dict,
                   out: Any) -> None:
    """Set `out.drain` / `out.drain_timeout_seconds` from `raw` (spec.rollout) when valid;
    `check(path, problem)` records a problem (models/spec.py's _Problems.check)."""
    if raw.get("drain") is not None and check(f"{path}.drain", check_drain(raw["drain"])):
        out.drain = DrainPolicy(raw["drain"]).value
    if raw.get("drainTimeoutSeconds") is not None and check(
            f"{path}.drainTimeoutSeconds", check_drain_timeout(raw["drainTimeoutSeconds"])):
        out.drain_timeout_seconds = raw["drainTimeoutSeconds"]
