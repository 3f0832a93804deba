"""What the fleet side reads from a template: node selection (`selects`), maxUnavailable
(`check_max_unavailable`, `resolve_max_unavailable`) and the slots the status writer offers
(`offered_slots`). Pure functions of plain data, below everything that uses them.
"""
from __future__ import annotations

import re
from typing import Any, Union

_PERCENT_RE = re.compile(r"([1-9][0-9]?|100)%")  # the CRD's pattern ^([1-9][0-9]?|100)%$


# The schema's maximum of an integer maxUnavailable (and of status.maxUnavailable): Kubernetes'
# largest supported cluster (5,000 nodes); "100%" is how to say "every node".
MAX_UNAVAILABLE = 5000


def check_max_unavailable(value: Any) -> str | None:
    """Why a maxUnavailable is refused, else None: an integer 1..MAX_UNAVAILABLE or
    "1%".."100%"."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return f"{value!r} is not an integer or a percentage string"
    if isinstance(value, int):
        if value > MAX_UNAVAILABLE:
            return f"{value} is more than {MAX_UNAVAILABLE}"
        return None if value >= 1 else f"{value} is not at least 1"
    if _PERCENT_RE.fullmatch(value) is None:
        return f"{value!r} is not a percentage from \"1%\" to \"100%\""
    return None


def resolve_max_unavailable(value: Union[int, str], matching: int) -> int:
    """How many nodes may change at once: an integer as is, a percentage of `matching` rounded
    down, never less than 1 (a Deployment's maxUnavailable rounds the same way; at least 1 so
    a small fleet still progresses)."""
    if isinstance(value, str):
        return max(1, int(value[:-1]) * max(matching, 0) // 100)
    return value

def offered_slots(obj: dict) -> dict[str, int]:
    """`status.rollout.offered` of a template object as {node: slot index}, when the status is
    about the object's generation (else nothing is offered: the writer has not caught up).
    Malformed entries are dropped: an offer only ever costs an attempt, never the limit."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    status = obj.get("status") if isinstance(obj, dict) else None
    if not isinstance(meta, dict) or not isinstance(status, dict) \
            or status.get("observedGeneration") != meta.get("generation"):
        return {}
    section = status.get("rollout")
    entries = section.get("offered") if isinstance(section, dict) else None
    offers: dict[str, int] = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        node, index = entry.get("node"), entry.get("slot")
        if isinstance(node, str) and isinstance(index, int) and not isinstance(index, bool) \
                and index >= 0:
            offers.setdefault(node, index)
    return offers


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Label equality, all must match; an empty selector selects every node."""
    return all(labels.get(key) == value for key, value in selector.items())
