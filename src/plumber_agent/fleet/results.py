"""The per-template result summary each agent publishes in an annotation of its own HostNetwork,
and the status writer reads instead of the HostNetwork (docs/rollout.md, "What the status writer
reads").

Why an annotation: the status writer needs five small fields per node and template, but a
HostNetwork is tens of KB (interfaces, VFs, pod veths and their routes) and changes with every
pod. With the summary in metadata the writer lists and watches HostNetworks as
PartialObjectMetadata: what it receives and holds no longer depends on the size of a HostNetwork,
and a status change that leaves the summary alone costs it one small metadata event.

Pure: encoding and parsing only (the HostNetwork sink writes it, the writer parses it).
"""
from __future__ import annotations

import json
import sys
from typing import Any, Optional

from plumber_agent import GROUP
from plumber_agent.fleet.rollout import CLAIM_ERROR_PREFIX
from plumber_agent.models.status import TemplateState
from plumber_agent.models.text import truncate

RESULTS_ANNOTATION = f"{GROUP}/template-results"
MAX_RESULT_MESSAGE = 256
"""Characters of a failing node's message in the summary (the full message, up to 1024, stays in
status.templates): the writer shows it in failingNodes and the Degraded condition, where a
sentence is enough, and 256 keeps the summary of 50 failing templates under 15 KB (annotations
have 256 KiB in all)."""
SHARED_SUMMARIES = 1024
"""Parsed summaries kept by their text (read-only, shared): most nodes report the same results,
so 5,000 nodes hold a few dicts instead of 5,000 (bench B9's memory growth)."""
MAX_RESULTS_BYTES = 64 * 1024
"""A summary larger than this is refused when parsed (a forged or broken annotation must not
cost the writer memory): the writer then counts the node as not reported."""

_FAILING = (TemplateState.FAILED, TemplateState.CONFLICT, TemplateState.INVALID)
_KEYS = ("name", "observedGeneration", "state", "message", "plannedActionCount")


def summary_entries(templates: Optional[list]) -> list[dict]:
    """The entries of status.templates the writer needs, in its fields: NotSelected entries are
    left out (the writer counts them like a missing entry), a message only for failing states
    and for a waiting node that cannot claim a slot (the writer's SlotClaimsFailing condition
    reads it), cut at MAX_RESULT_MESSAGE; plannedActionCount only when set."""
    out = []
    for entry in templates or []:
        if not isinstance(entry, dict) or entry.get("state") == TemplateState.NOT_SELECTED:
            continue
        item = {"name": entry.get("name"), "observedGeneration": entry.get("observedGeneration"),
                "state": entry.get("state")}
        message = entry.get("message")
        if message and (entry.get("state") in _FAILING
                        or str(message).startswith(CLAIM_ERROR_PREFIX)):
            item["message"] = truncate(str(message), MAX_RESULT_MESSAGE)
        if entry.get("plannedActionCount"):
            item["plannedActionCount"] = entry["plannedActionCount"]
        out.append(item)
    return sorted(out, key=lambda item: str(item["name"]))


def encode_summary(templates: Optional[list]) -> str:
    """The annotation's value for a status.templates list: compact JSON, stable for equal input
    (so an unchanged summary is never rewritten)."""
    return json.dumps(summary_entries(templates), separators=(",", ":"), sort_keys=True)


_shared: dict[str, dict[str, dict]] = {}


def parse_summary(text: Any) -> dict[str, dict]:
    """Template name -> entry from an annotation value; {} for anything that is not a summary
    (missing, too big, not JSON, wrong shapes): such a node counts as not reported. Equal texts
    give the same (shared) dict: never mutate it."""
    if not isinstance(text, str) or not text or len(text) > MAX_RESULTS_BYTES:
        return {}
    parsed = _shared.get(text)
    if parsed is None:
        if len(_shared) >= SHARED_SUMMARIES:
            _shared.clear()  # a fleet in the middle of a rollout: start over, stay bounded
        parsed = _shared[text] = _parse(text)
    return parsed


def _parse(text: str) -> dict[str, dict]:
    try:
        items = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(items, list):
        return {}
    out = {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            out[item["name"]] = {key: item[key] for key in _KEYS if key in item}
    return out


def summary_of(obj: Optional[dict]) -> Optional[str]:
    """The annotation value on a HostNetwork (full or metadata-only), if any."""
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    value = annotations.get(RESULTS_ANNOTATION) if isinstance(annotations, dict) else None
    return value if isinstance(value, str) else None


class Compact(dict):
    """An object in the status writer's compact form: compacting it again returns it (the
    client compacts list items as they are decoded, the reflector every object it stores)."""

    __slots__ = ()


def compact_hostnetwork(obj: dict) -> dict:
    """What the status writer keeps of a HostNetwork: its name, resourceVersion (the reflector
    compares them) and the parsed summary under "results"."""
    if isinstance(obj, Compact):
        return obj
    meta = obj.get("metadata") or {}
    return Compact(metadata={"name": meta.get("name"),
                             "resourceVersion": meta.get("resourceVersion")},
                   results=parse_summary(summary_of(obj)))


def compact_node(obj: dict) -> dict:
    """What the status writer keeps of a Node: name, resourceVersion and labels (who matches)."""
    if isinstance(obj, Compact):
        return obj
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
    # Interned: thousands of Nodes share the same few label keys and values.
    return Compact(metadata={"name": meta.get("name"),
                             "resourceVersion": meta.get("resourceVersion"),
                             "labels": {_intern(k): _intern(v) for k, v in labels.items()}})


def _intern(value: Any) -> Any:
    return sys.intern(value) if isinstance(value, str) else value
