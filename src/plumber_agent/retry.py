"""Retry policy, one owner: exponential backoff with full jitter and the server's Retry-After.

Every loop that retries an API call (the reflectors, the reporter's status writes, the status
writer's template writes, the leader Lease and the rollout slots) takes its delays from here,
so "a fleet that lost its API server comes back spread out, and waits as long as the server
asked" is decided in one place:

- `Backoff`: each delay is drawn uniformly from [ceiling x (1 - jitter), ceiling], the ceiling
  doubling from the initial delay up to the cap. With jitter 1.0 (the default) that is "full
  jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter"): 1,000 agents that failed
  at the same moment retry spread over the whole window, also once the ceiling has reached the
  cap (the old backoff stretched delays by up to half, then clipped them to the cap: at 30 s
  every agent retried in the same instant, docs/pitfalls.md 8).
- `server_wait_s`: the Retry-After a 429 or a 5xx carries, as client-go's `checkWait` and
  `retryAfterSeconds` (rest/request.go) read it: integer seconds only.
- `retry_delay_s`: wait the backoff, but never less than the server asked.
- `RetryAfterGate`: for loops that tick on their own schedule (lease renewals): after a 429/5xx
  with Retry-After, the next attempt waits until the server's time has passed.

Kept outside kube/ (pure, no `kubernetes` import) so the reporter and the fleet use it without
depending on the client.
"""
from __future__ import annotations

import random
import threading
from typing import Optional

# client-go's checkWait: "any 500 error code and 429 can trigger a wait".
TOO_MANY_REQUESTS = 429
SERVER_ERROR_MIN = 500
FULL_JITTER = 1.0


def error_status(exc: BaseException) -> Optional[int]:
    """The HTTP status of an API error (ApiException or alike), if any."""
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) and status > 0 else None


def retry_after_s(exc: BaseException) -> Optional[float]:
    """The Retry-After header of an API error, in seconds (integer form only, like client-go's
    retryAfterSeconds: an HTTP date is ignored)."""
    headers = getattr(exc, "headers", None) or {}
    try:
        items = list(headers.items())
    except AttributeError:
        return None
    for key, value in items:
        if str(key).lower() == "retry-after":
            value = str(value).strip()
            return float(value) if value.isdigit() else None
    return None


def server_wait_s(exc: BaseException) -> Optional[float]:
    """How long the server asked us to wait (Retry-After on a 429 or any 5xx), else None."""
    status = error_status(exc)
    if status is None or not (status == TOO_MANY_REQUESTS or status >= SERVER_ERROR_MIN):
        return None
    return retry_after_s(exc)


def retry_delay_s(backoff_s: float, exc: BaseException) -> float:
    """The backoff's delay, or the server's Retry-After when that is longer."""
    after = server_wait_s(exc)
    return after if after is not None and after > backoff_s else backoff_s


class Backoff:
    """Exponential backoff with jitter at every step, the cap included; `reset()` after a
    healthy spell. `ceiling_s()` is the upper bound of the next delay (tests, logs)."""

    def __init__(self, *, initial_s: float, max_s: float, factor: float,
                 jitter: float = FULL_JITTER, rng: Optional[random.Random] = None):
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter must be within [0, 1], not {jitter}")
        self._initial_s, self._max_s = initial_s, max_s
        self._factor, self._jitter = factor, jitter
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._ceiling_s = min(initial_s, max_s)

    def ceiling_s(self) -> float:
        with self._lock:
            return self._ceiling_s

    def next(self) -> float:
        with self._lock:
            ceiling = self._ceiling_s
            self._ceiling_s = min(self._max_s, self._ceiling_s * self._factor)
        return ceiling * (1.0 - self._jitter * self._rng.random())

    def reset(self) -> None:
        with self._lock:
            self._ceiling_s = min(self._initial_s, self._max_s)


class RetryAfterGate:
    """Remembers until when the server asked us to hold off (thread-safe).

    `note(exc, now)` after a failed call; `remaining_s(now)` is how long the next attempt must
    still wait (0 when it may go)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until = float("-inf")

    def note(self, exc: BaseException, now: float) -> Optional[float]:
        after = server_wait_s(exc)
        if after is not None:
            with self._lock:
                self._until = max(self._until, now + after)
        return after

    def remaining_s(self, now: float) -> float:
        with self._lock:
            return max(0.0, self._until - now)
