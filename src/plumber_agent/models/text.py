"""The one way a text is cut to a size limit (status messages, Event notes, annotations).

Why one helper: API objects have size limits (etcd's ~1.5 MB object, a 1 KiB Event note, the
CRD's message bounds: docs/pitfalls.md 40), and six places cut text, each its own way (some
with a marker, some silently). A cut text always says it was cut, and stays within the limit.
"""
from __future__ import annotations

ELLIPSIS = "..."


def truncate(text: str, limit: int, *, marker: str = ELLIPSIS) -> str:
    """`text` when at most `limit` characters, else its start and `marker`, `limit` characters
    in all (only `marker` when `limit` leaves no room for text)."""
    if len(text) <= limit:
        return text
    return text[:max(limit - len(marker), 0)] + marker
