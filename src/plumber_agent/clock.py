"""An injectable clock, so code that waits (backoff, resync, work-queue delays, the watch
watchdog) can be tested without ever sleeping for real.

Like client-go's `k8s.io/utils/clock`: code that schedules (reconciler, reporter, rollback, the
agent's loops, queue, reflector) takes a `Clock`, never calls `time.monotonic()`/`time.sleep()`
itself. The one exception is host/: its drivers' short, bounded polls of the kernel (a VF's
driver link, a netlink change becoming visible) wait for a real kernel in real time, and their
tests run against real kernels or the SR-IOV emulator. `FakeClock.advance(s)` moves time forward and wakes
everything whose deadline has passed, so a test decides exactly when a 30 s backoff is over.
Waiting always goes through `wait(event, timeout_s)`, which returns early when the event is set:
that is how a stop request interrupts a backoff.
"""
from __future__ import annotations

import threading
import time
from typing import Optional, Protocol

# How often a FakeClock waiter re-checks fake time and its event. Only affects how quickly a
# waiter notices `advance()` or `event.set()` in real time, never what it decides.
FAKE_CLOCK_POLL_S = 0.002


def micro_time(epoch_s: float) -> str:
    """metav1.MicroTime as the API server writes it (RFC 3339, microseconds, UTC): Lease
    renewals and Events' eventTime."""
    import datetime
    return datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


class Clock(Protocol):
    """What time-dependent code needs: two readings, a sleep and an interruptible wait."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; use for deadlines and durations."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch; use only for timestamps shown to people."""

    def sleep(self, seconds: float) -> None:
        """Block for `seconds`."""

    def wait(self, event: threading.Event, timeout_s: Optional[float]) -> bool:
        """Block until `event` is set (True) or `timeout_s` passed (False); None = no limit."""


class RealClock:
    """The process's clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, event: threading.Event, timeout_s: Optional[float]) -> bool:
        if timeout_s is not None and timeout_s <= 0:
            return event.is_set()
        return event.wait(timeout_s)


class FakeClock:
    """A clock that only moves when told to.

    - `advance(s)` moves time forward; sleepers and waiters whose deadline is reached return.
    - `auto_advance=True`: a sleep or wait whose event is not set jumps time straight to its
      deadline and returns at once. Handy for driving one thread through a chain of backoffs.
    - `waits` records every timeout requested through `sleep`/`wait` (None = unbounded), so tests
      can assert on the delay chosen rather than on how long anything took.
    - `waiters` / `wait_for_waiters(n)` let a test make sure a thread is blocked before advancing.
    """

    def __init__(self, start: float = 1000.0, *, wall_start: float = 1_700_000_000.0,
                 auto_advance: bool = False):
        self._lock = threading.Lock()
        self._now = float(start)
        self._wall_offset = float(wall_start) - float(start)
        self._waiters = 0
        self.auto_advance = auto_advance
        self.waits: list[Optional[float]] = []

    # -- readings -------------------------------------------------------------------------
    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def time(self) -> float:
        with self._lock:
            return self._now + self._wall_offset

    # -- control --------------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` (>= 0)."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        with self._lock:
            self._now += seconds

    def set(self, now: float) -> None:
        """Jump to `now` (not earlier than the current time)."""
        with self._lock:
            if now < self._now:
                raise ValueError("a monotonic clock cannot go back")
            self._now = float(now)

    @property
    def waiters(self) -> int:
        """Threads currently blocked in sleep()/wait()."""
        with self._lock:
            return self._waiters

    def wait_for_waiters(self, count: int = 1, *, timeout_s: float = 5.0) -> bool:
        """Block (bounded, real time) until at least `count` threads are blocked on this clock."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.waiters >= count:
                return True
            time.sleep(FAKE_CLOCK_POLL_S)
        return self.waiters >= count

    # -- waiting --------------------------------------------------------------------------
    def sleep(self, seconds: float) -> None:
        self.wait(threading.Event(), seconds)

    def wait(self, event: threading.Event, timeout_s: Optional[float]) -> bool:
        with self._lock:
            self.waits.append(timeout_s)
            if event.is_set():
                return True
            if timeout_s is not None and timeout_s <= 0:
                return False
            if self.auto_advance and timeout_s is not None:
                self._now += timeout_s
                return False
            deadline = None if timeout_s is None else self._now + timeout_s
            self._waiters += 1
        try:
            while True:
                if event.wait(FAKE_CLOCK_POLL_S):
                    return True
                with self._lock:
                    if deadline is not None and self._now >= deadline:
                        return False
        finally:
            with self._lock:
                self._waiters -= 1
