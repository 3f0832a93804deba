"""Garbage-collector policy for the long-running agent.

Why: on a big node the agent keeps ~100k long-lived objects (the last netlink dump, the parsed
kernel messages it reuses, the published status). CPython's automatic full collections scan all
of them and found nothing to free, yet each took ~100 ms and landed in the middle of every other
reconcile (bench B2 on 1,000 links/10k routes). After each pass the survivors are frozen
(gc.freeze: left out of automatic collections; reference counting still frees them as usual),
and a full collection over everything runs at most every FULL_COLLECT_EVERY_S, between passes,
so reference cycles that only became garbage later are still reclaimed. Memory the pass freed
is then handed back to the kernel (malloc_trim) instead of staying resident.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import time
from typing import Callable, Optional

FULL_COLLECT_EVERY_S = 600.0


def _libc_malloc_trim() -> Optional[Callable[[int], int]]:
    """glibc's malloc_trim, or None elsewhere (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def give_back_free_memory() -> None:
    """Hand memory freed by a big one-off burst (the status writer's first lists of every
    Node and HostNetwork) back to the kernel instead of keeping it resident."""
    trim = _libc_malloc_trim()
    if trim is not None:
        trim(0)


class CollectorPolicy:
    def __init__(self, *, every_s: float = FULL_COLLECT_EVERY_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._monotonic = monotonic
        self._last_full = monotonic()
        self.full_collections = 0
        self._malloc_trim = _libc_malloc_trim()

    def after_pass(self) -> None:
        """Call between reconcile passes (the reconciler thread, nothing half-built)."""
        now = self._monotonic()
        if now - self._last_full >= self.every_s:
            gc.unfreeze()
            gc.collect()
            self.full_collections += 1
            self._last_full = now
        gc.freeze()
        if self._malloc_trim is not None:
            # A pass frees megabytes of parsed messages and status dicts; glibc keeps freed
            # memory in the process unless asked to give it back (bench B4: resident memory).
            self._malloc_trim(0)
