"""Rollback on loss of the API server, after a round that touched the path this node uses to
reach it: a change a template allowed (`allowApiServerDisruption: true`), any change to a device
of that path (planner/apipath.py), or a path the kernel moved although the plan said it would
not. What must answer is the --api-probe targets (apiprobe.py).

Like kubernetes-nmstate's probes: before such a change the agent checks that the API server
answers (if it does not, nothing is armed, so a node bootstrapping without an API server is never
blocked); after it, the API server must answer again within a deadline. If it does not, the
reconciler rolls back every change of the templates concerned (the same ledger-driven undo as a
template deletion) and remembers the template generations it rolled back, in a small file in the
state directory, so the change is not retried until the template is edited.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

from plumber_agent.clock import Clock, RealClock
from plumber_agent.statefile import load_json, save_json

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 1.0
DEFAULT_DEADLINE_S = 60.0


class RolledBack:
    """Template name -> generation that was rolled back (persisted; survives restarts)."""

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self.entries: dict[str, dict] = {
            k: v for k, v in load_json(path, {}).items()
            if isinstance(v, dict) and isinstance(v.get("generation"), int)}

    def blocks(self, name: str, generation: int) -> Optional[str]:
        """The rollback message if this template generation was rolled back, else None."""
        entry = self.entries.get(name)
        if entry and entry["generation"] == generation:
            return entry.get("message") or "rolled back"
        return None

    def record(self, name: str, generation: int, message: str) -> None:
        self.entries[name] = {"generation": generation, "message": message}
        self._save()

    def prune(self, live: dict[str, int]) -> None:
        """Forget entries of templates that are gone or were edited since."""
        stale = [n for n, e in self.entries.items() if live.get(n) != e["generation"]]
        for name in stale:
            del self.entries[name]
        if stale:
            self._save()

    def _save(self) -> None:
        save_json(self.path, self.entries)


def wait_for_api(probe: Callable[[], bool], deadline_s: float, *,
                 clock: Optional[Clock] = None) -> bool:
    """Bounded: True as soon as `probe()` succeeds, False once `deadline_s` has passed."""
    clock = clock or RealClock()
    end = clock.monotonic() + deadline_s
    while True:
        if probe():
            return True
        if clock.monotonic() >= end:
            return False
        clock.sleep(min(PROBE_INTERVAL_S, max(0.0, end - clock.monotonic())))
