"""A work queue of keys with client-go's contract, so informer callbacks stay cheap (they only
enqueue a key) and the reconciler never works on one key twice at once.

Contract (client-go `util/workqueue/doc.go`):

1. Fair: keys are handed out in the order they were first added.
2. Stingy: a key added many times before it is processed is processed once.
3. Never concurrent: `get()` never hands out a key that is still being processed (until `done`).
4. Re-added while processing: the key is processed exactly once more, after `done(key)`.

Retries live outside the business logic (client-go `examples/workqueue`): the worker calls
`add_rate_limited(key)` on failure (per-key exponential backoff) and `forget(key)` on success.
All time goes through an injected `Clock`, so tests advance a `FakeClock` instead of sleeping.
"""
from __future__ import annotations

import collections
import heapq
import itertools
import threading
from typing import Hashable, Optional

from plumber_agent.clock import Clock, RealClock

NODE_KEY = "node"
"""The key of the whole-node pass: every template or Node change enqueues it (the reflectors'
callbacks, the resync), so a burst of changes coalesces into one pass."""

# Per-key retry backoff: first retry after 0.5 s, doubling, capped at 60 s (client-go's
# DefaultControllerRateLimiter uses 5 ms..1000 s; a node agent hitting the kernel or the API
# server should not retry in milliseconds, nor wait a quarter of an hour).
RETRY_BASE_DELAY_S = 0.5
RETRY_MAX_DELAY_S = 60.0
RETRY_FACTOR = 2.0


class WorkQueue:
    """De-duplicating, delay-capable, rate-limited queue of keys (see module docstring)."""

    def __init__(self, clock: Optional[Clock] = None, *,
                 base_delay_s: float = RETRY_BASE_DELAY_S,
                 max_delay_s: float = RETRY_MAX_DELAY_S):
        self._clock: Clock = clock or RealClock()
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._lock = threading.Lock()
        # Set (under the lock) whenever something a getter may want appears; getters clear it
        # (under the lock) before waiting, so no wake-up is lost.
        self._signal = threading.Event()
        self._queue: collections.deque[Hashable] = collections.deque()
        self._dirty: set[Hashable] = set()        # needs processing (queued or re-added)
        self._processing: set[Hashable] = set()   # handed out, not done yet
        self._delayed: list[tuple[float, int, Hashable]] = []  # heap of (due, seq, key)
        self._delayed_due: dict[Hashable, float] = {}
        self._seq = itertools.count()
        self._failures: dict[Hashable, int] = {}
        self._shutting_down = False

    # -- adding -----------------------------------------------------------------------------
    def add(self, key: Hashable) -> None:
        """Queue `key` unless it is already queued; if it is being processed, run it once more
        after `done(key)`. Ignored after `shut_down()`."""
        with self._lock:
            self._add_locked(key)

    def _add_locked(self, key: Hashable) -> None:
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # requeued by done()
        self._queue.append(key)
        self._signal.set()

    def add_after(self, key: Hashable, delay_s: float) -> None:
        """Add `key` once `delay_s` has passed. If it is already waiting, the earlier time wins."""
        with self._lock:
            if self._shutting_down:
                return
            if delay_s <= 0:
                self._add_locked(key)
                return
            due = self._clock.monotonic() + delay_s
            if self._delayed_due.get(key, float("inf")) <= due:
                return
            self._delayed_due[key] = due
            heapq.heappush(self._delayed, (due, next(self._seq), key))
            self._signal.set()  # a getter may need a shorter wait now

    def add_rate_limited(self, key: Hashable) -> float:
        """Add `key` after its per-key backoff (base doubling to max); returns the delay used."""
        with self._lock:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
        delay_s = min(self._max_delay_s, self._base_delay_s * (RETRY_FACTOR ** failures))
        self.add_after(key, delay_s)
        return delay_s

    def forget(self, key: Hashable) -> None:
        """Reset `key`'s retry backoff (call after it was processed successfully)."""
        with self._lock:
            self._failures.pop(key, None)

    def num_requeues(self, key: Hashable) -> int:
        """How many times `key` was rate-limited since the last `forget`."""
        with self._lock:
            return self._failures.get(key, 0)

    # -- taking -----------------------------------------------------------------------------
    def get(self, timeout_s: Optional[float] = None) -> Optional[Hashable]:
        """The next key, marked as processing; None on shutdown (once drained) or timeout.

        Every key returned must be given back with `done(key)`.
        """
        deadline = None if timeout_s is None else self._clock.monotonic() + timeout_s
        while True:
            with self._lock:
                now = self._clock.monotonic()
                self._promote_due_locked(now)
                if self._queue:
                    key = self._queue.popleft()
                    self._processing.add(key)
                    self._dirty.discard(key)
                    return key
                if self._shutting_down:
                    return None
                if deadline is not None and now >= deadline:
                    return None
                waits = []
                if deadline is not None:
                    waits.append(deadline - now)
                if self._delayed:
                    waits.append(self._delayed[0][0] - now)
                wait_s = min(waits) if waits else None
                self._signal.clear()
            self._clock.wait(self._signal, wait_s)

    def done(self, key: Hashable) -> None:
        """Mark `key` as processed; if it was added meanwhile, queue it again."""
        with self._lock:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._signal.set()

    def _promote_due_locked(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            due, _, key = heapq.heappop(self._delayed)
            if self._delayed_due.get(key) != due:
                continue  # superseded by an earlier add_after
            del self._delayed_due[key]
            self._add_locked(key)

    # -- state ------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Keys ready to be handed out now (not counting delayed or in-progress keys)."""
        with self._lock:
            self._promote_due_locked(self._clock.monotonic())
            return len(self._queue)

    def waiting(self) -> int:
        """Keys scheduled for later (add_after / add_rate_limited)."""
        with self._lock:
            return len(self._delayed_due)

    def processing(self) -> int:
        """Keys handed out and not yet done."""
        with self._lock:
            return len(self._processing)

    def has_ready_work(self) -> bool:
        """Is a key queued now, or re-added while being processed (so it runs again at once)?
        The reporter then waits for the newer status instead of writing twice."""
        with self._lock:
            self._promote_due_locked(self._clock.monotonic())
            return bool(self._dirty)

    def shut_down(self) -> None:
        """Stop accepting keys, drop delayed ones; getters drain what is queued, then get None."""
        with self._lock:
            self._shutting_down = True
            self._delayed.clear()
            self._delayed_due.clear()
            self._signal.set()

    @property
    def shutting_down(self) -> bool:
        with self._lock:
            return self._shutting_down
