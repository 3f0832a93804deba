"""Garbage-collector policy for the long-running agent.

Why: on a big node the agent keeps ~100k long-lived objects (the last netlink dump, the parsed
kernel messages it reuses, the published status). CPython's automatic full collections scan all
of them and found nothing to free, yet each took ~100 ms and landed in the middle of every other
reconcile (bench B2 on 1,000 links/10k routes). After each pass the survivors are frozen
(gc.freeze: left out of automatic collections; reference counting still frees them as usual),
and a full collection over everything runs at most every FULL_COLLECT_EVERY_S, between passes,
so reference cycles that only became garbage later are still reclaimed.
"""
from __future__ import annotations

import gc
import time
from typing import Callable

FULL_COLLECT_EVERY_S = 600.0


class CollectorPolicy:
    def __init__(self, *, every_s: float = FULL_COLLECT_EVERY_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._monotonic = monotonic
        self._last_full = monotonic()
        self.full_collections = 0

    def after_pass(self) -> None:
        """Call between reconcile passes (the reconciler thread, nothing half-built)."""
        now = self._monotonic()
        if now - self._last_full >= self.every_s:
            gc.unfreeze()
            gc.collect()
            self.full_collections += 1
            self._last_full = now
        gc.freeze()
