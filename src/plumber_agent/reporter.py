"""Reporter thread: publishes the HostNetwork status, and only when it changed.

The reconciler hands over each freshly built status; the reporter coalesces bursts (a change
that follows a write within COALESCE_S, while the reconciler already has another pass queued, waits
out the rest of that window and only the newest is sent; any other change is written at once,
so a user's edit is not delayed because the previous one was recent), compares it semantically with what it
last published (the status holds nothing volatile: no timestamps, sorted lists), and hands the
changed status to the sink, which alone decides the one patch that carries it (cluster.py: the
changed elements as a JSON patch, else a merge patch of the difference). An idle node therefore makes no API writes at all (the original
rewrote its HostNetwork every 10 s). Write failures are retried with backoff (full jitter, and
never sooner than a 429's or 5xx's Retry-After: plumber_agent/retry.py); the sink re-creates
the HostNetwork if someone deleted it.

A status handed over with `publish_unmanaged` differs from the previous one only in objects no
template manages or depends on (pod veths and their routes: reconciler.py decides). It is held
until `unmanaged_interval_s` (times a random 1..1+UNMANAGED_JITTER_FRACTION, so a fleet's nodes
do not write in step) has passed since the last write of any kind, then the newest status is
written: unmanaged churn costs at most one write per interval, however fast pods come and go.
A `publish` in the meantime is written at once and carries the held changes with it.
"""
from __future__ import annotations

import logging
import random
import threading
from typing import Any, Callable, Optional, Protocol

from plumber_agent.apierrors import NamedApiError, api_error_metric
from plumber_agent.clock import Clock, RealClock
from plumber_agent.ops import Metrics
from plumber_agent.retry import Backoff, retry_delay_s

log = logging.getLogger(__name__)

COALESCE_S = 0.2  # host churn (a VLAN plus its addresses) arrives as a burst of reconciles
RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 30.0
RETRY_FACTOR = 2.0
# How often an idle reporter re-checks its stop event (a publish wakes it at once). Only
# affects how fast it notices a stop, never what it writes; an idle agent pays one wake-up per
# interval (0.05 s doubled B4's idle CPU).
STOP_POLL_S = 1.0
UNMANAGED_JITTER_FRACTION = 0.1
"""Up to 10 % added to each unmanaged interval (kubernetes-nmstate jitters its 60 s refresh by
+-10 %; only upwards here, so two unmanaged writes are never closer than the interval)."""


class StatusSink(Protocol):
    """Where status goes: the HostNetwork object (kube) or a file (local mode)."""

    def ensure(self) -> Optional[dict]:
        """Make sure the HostNetwork exists; return its currently published status (or None)."""

    def write(self, status: dict) -> None:
        """Publish `status` (which differs from what `ensure` returned or was last written):
        the sink computes the patch from what it last published, one request per write."""


def merge_patch(old: Any, new: Any) -> Any:
    """RFC 7386 merge patch turning `old` into `new` (lists are replaced wholesale)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch


def _pointer(path: str, key) -> str:
    return f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}"


def json_patch_ops(old: Any, new: Any, path: str = "") -> list[dict]:
    """RFC 6902 operations turning `old` into `new` at JSON pointer `path`.

    Unlike a merge patch, a change inside a list touches only that element (an MTU change on a
    1,000-interface node sends one operation, not the whole interfaceStatus list); a run of
    inserted or removed list elements becomes add/remove operations around the unchanged
    prefix and suffix."""
    if type(old) is dict and type(new) is dict:
        ops = [{"op": "remove", "path": _pointer(path, key)} for key in old if key not in new]
        for key, value in new.items():
            if key not in old:
                ops.append({"op": "add", "path": _pointer(path, key), "value": value})
            elif old[key] != value:
                ops.extend(json_patch_ops(old[key], value, _pointer(path, key)))
        return ops
    if type(old) is list and type(new) is list:
        limit = min(len(old), len(new))
        head = 0
        while head < limit and old[head] == new[head]:
            head += 1
        tail = 0
        while tail < limit - head and old[-1 - tail] == new[-1 - tail]:
            tail += 1
        old_mid, new_mid = old[head:len(old) - tail], new[head:len(new) - tail]
        ops = []
        for offset in range(min(len(old_mid), len(new_mid))):  # changed in place
            ops.extend(json_patch_ops(old_mid[offset], new_mid[offset],
                                      _pointer(path, head + offset)))
        common = min(len(old_mid), len(new_mid))
        for index in range(head + len(old_mid) - 1, head + common - 1, -1):  # last first
            ops.append({"op": "remove", "path": _pointer(path, index)})
        for offset in range(common, len(new_mid)):
            ops.append({"op": "add", "path": _pointer(path, head + offset),
                        "value": new_mid[offset]})
        return ops
    return [] if old == new else [{"op": "replace", "path": path, "value": new}]


class Reporter:
    def __init__(self, *, sink: StatusSink, metrics: Metrics, clock: Optional[Clock] = None,
                 coalesce_s: float = COALESCE_S,
                 more_work: Optional[Callable[[], bool]] = None,
                 unmanaged_interval_s: float = 0.0,
                 rng: Optional[random.Random] = None) -> None:
        """`more_work()`: has the reconciler another pass queued (a newer status coming)?
        Without it every write inside the window of the previous one is coalesced.
        `unmanaged_interval_s`: the least time between a write and one that only publishes
        unmanaged changes (0: those are written at once too). `rng`: the unmanaged write's
        jitter and the retry backoff's (tests pass a seeded one)."""
        self._backoff = Backoff(initial_s=RETRY_INITIAL_S, max_s=RETRY_MAX_S,
                                factor=RETRY_FACTOR, rng=rng)
        self.retry_delays: list[float] = []  # the waits chosen after failed writes (tests)
        self._sink = sink
        self._clock = clock or RealClock()
        self._metrics = metrics
        self._coalesce_s = coalesce_s
        self._more_work = more_work or (lambda: True)
        self._cond = threading.Condition()
        self._pending: Optional[dict] = None
        self._urgent = False  # something handed over with publish() is not written yet
        self._wake = threading.Event()  # set by publish(): a held status must go now
        self._unmanaged_interval_s = unmanaged_interval_s
        self._rng = rng or random.Random()
        self._unmanaged_due_at = float("-inf")  # when a held (unmanaged-only) status may go
        self._published: Optional[dict] = None
        self._ensured = False
        self.writes = 0
        self._last_write_at = float("-inf")

    def publish(self, status: dict) -> None:
        """Hand over the newest status, to be written at once (thread-safe, never blocks on
        the API)."""
        self._hand_over(status, urgent=True)

    def publish_unmanaged(self, status: dict) -> None:
        """Hand over the newest status, which differs from the previous one only in unmanaged
        objects: written once the unmanaged interval since the last write has passed."""
        self._hand_over(status, urgent=self._unmanaged_interval_s <= 0)

    def _hand_over(self, status: dict, *, urgent: bool) -> None:
        with self._cond:
            self._pending = status
            self._urgent = self._urgent or urgent
            if urgent:
                self._wake.set()
            self._cond.notify()

    def unmanaged_due_in(self) -> float:
        """Seconds until a status held for unmanaged changes may be written (0: now)."""
        return max(0.0, self._unmanaged_due_at - self._clock.monotonic())

    def _held_s(self) -> float:
        """How much longer the pending status is held (0: write it now)."""
        with self._cond:
            if self._pending is None or self._urgent:
                return 0.0
            self._wake.clear()  # under the lock: a publish() after this sets it again
        return self.unmanaged_due_in()

    def published(self) -> Optional[dict]:
        return self._published

    def flush(self) -> bool:
        """Publish what is pending now (one attempt); True when nothing is left pending."""
        with self._cond:
            status, urgent = self._pending, self._urgent
            self._urgent = False  # a publish() from now on makes the next one urgent again
        if status is None:
            return True
        try:
            self._write(status)
        except BaseException:
            with self._cond:
                self._urgent = self._urgent or urgent
            raise
        with self._cond:
            if self._pending is status:
                self._pending = None
                return True
        return False

    def _write(self, status: dict) -> None:
        if not self._ensured:
            self._published = self._sink.ensure()
            self._ensured = True
        if status != self._published:
            before = self._published or {}
            self._sink.write(status)
            self._last_write_at = self._clock.monotonic()
            self._unmanaged_due_at = self._last_write_at + self._unmanaged_interval_s * (
                1.0 + UNMANAGED_JITTER_FRACTION * self._rng.random())
            self.writes += 1
            self._metrics.inc("plumber_status_writes_total")
            log.info("status published", extra={"changed": sorted(
                key for key in before.keys() | status.keys() if before.get(key) != status.get(key))})
        self._published = status

    def _named(self, exc: BaseException) -> BaseException:
        """The error as the sink names it (a sink with `name_error`, like cluster.py's
        KubeStatusSink: "permission denied: patch hostnetworks.../status n1 ..."), counted in
        plumber_api_errors_total; else as it is (a file sink)."""
        name_error = getattr(self._sink, "name_error", None)
        if name_error is None:
            return exc
        said = name_error(exc)
        if isinstance(said, NamedApiError):
            self._metrics.inc(api_error_metric(said.operation, said.failure.reason))
        return said

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self._cond:
                while self._pending is None and not stop.is_set():
                    self._cond.wait(timeout=STOP_POLL_S)
            if stop.is_set():
                break
            held_s = self._held_s()
            if held_s > 0:  # only unmanaged changes: wait for the interval, or a publish()
                self._clock.wait(self._wake, min(held_s, STOP_POLL_S))
                continue
            since_write = self._clock.monotonic() - self._last_write_at
            if since_write < self._coalesce_s and self._more_work():
                # In a burst: let it settle.
                self._clock.wait(stop, self._coalesce_s - since_write)
            try:
                self.flush()
                self._backoff.reset()
            except Exception as exc:  # API down, 409, 5xx: retry with backoff, keep newest
                self._ensured = False
                said = self._named(exc)
                delay_s = retry_delay_s(self._backoff.next(), exc)  # 429/5xx: Retry-After
                self.retry_delays.append(delay_s)
                log.warning("status write failed, retrying in %.1fs: %s", delay_s, said)
                self._clock.wait(stop, delay_s)
        # Drain: one last attempt so a SIGTERM right after a change still reports it.
        try:
            self.flush()
        except Exception as exc:
            log.warning("final status write failed: %s", exc)
