"""Events as client-go's tools/events records them (events.k8s.io/v1), so `kubectl get
events` and `kubectl describe` show their age, who reported them, and how often they happened.

Ported from k8s.io/client-go/tools/events:
- `EventRecorder.eventf` is recorderImpl.Eventf/makeEvent: name `<regarding>.<unix nanos in
  hex>`, namespace the regarding object's (cluster-scoped objects: "default"), eventTime now
  (MicroTime), reportingController, reportingInstance (`<controller>-<node>`, NewRecorder's
  `reportingController + "-" + hostname`), action, reason, note, regarding, type.
- The writes leave the recording thread through a bounded queue (newBroadcaster:
  `watch.NewBroadcaster(maxQueuedEvents, watch.DropIfChannelFull)`, maxQueuedEvents 1000;
  recordToSink writes from a goroutine), sent in order by `send` on a thread of their own: an
  Event POST (30 s client timeout against a slow API server) never holds up the reconciler.
  Full: upstream drops the newest; here the oldest goes (the newest says what the node is doing
  now), counted in plumber_events_dropped_total and logged once per overflow.
- `EventBroadcaster` is eventBroadcasterImpl's aggregation (recordToSink, getKey): the first
  event of a key is created; the second becomes a series {count: 2, lastObservedTime} sent as
  a strategic merge patch (recordEvent; a 404 creates it instead); later repeats only count
  in the cache. `finish_series` (finishSeries, every FINISH_S) writes the final count of a
  series quiet for FINISH_S and forgets it, and forgets singletons older than that;
  `refresh_series` (refreshExistingEventSeries, every REFRESH_S) rewrites the ongoing series.

Deviations, on purpose:
- The key also holds the note: upstream's getKey leaves it out, and a second failure with
  another message would show as a repeat of the first one's text ("x2" of the old message).
- Sending is best effort (the client drops an Event when the rate limit has no token,
  kube/client.py): no retry loop (upstream retries 12 times, 10 s apart); a failure is logged
  and the event forgotten.
- The final write of a series is skipped when its count was already written, and the cache
  is bounded (MAX_CACHED_EVENTS; the oldest entries go first): an idle agent writes nothing.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

from plumber_agent.clock import Clock, micro_time
from plumber_agent.models.text import truncate
from plumber_agent.retry import error_status

log = logging.getLogger(__name__)

# client-go tools/events/event_broadcaster.go
FINISH_S = 6 * 60.0    # finishTime
REFRESH_S = 30 * 60.0  # refreshTime
MAX_CACHED_EVENTS = 4096
MAX_QUEUED_EVENTS = 1000  # maxQueuedEvents
STOP_POLL_S = 1.0  # how often an idle sender re-checks its stop event (a write wakes it at once)
# pkg/apis/core/validation/events.go (the API server refuses longer ones)
NOTE_MAX = 1024
REPORTING_INSTANCE_MAX = 128
DEFAULT_NAMESPACE = "default"  # makeEvent: metav1.NamespaceDefault for cluster-scoped objects
NORMAL, WARNING = "Normal", "Warning"
NANOS_PER_S = 1_000_000_000


@dataclass
class _Cached:
    body: dict  # the Event as created (name, eventTime, ...)
    event_time_s: float
    count: int = 1
    last_observed_s: float = 0.0
    written_count: int = 1  # the count the server has (1: the singleton)
    order: int = 0

    def series(self) -> Optional[dict]:
        if self.count < 2:
            return None
        return {"count": self.count, "lastObservedTime": micro_time(self.last_observed_s)}


@dataclass
class EventBroadcaster:
    """The events of every recorder of the agent: aggregation and writes (see module doc)."""

    client: object  # KubeClient: create_event(namespace, body), patch_event(ns, name, patch)
    clock: Clock
    # Writes waiting for `send`, at most this many; 0: each is written on the recording thread
    # (the status writer's recorder, whose thread does nothing else).
    queue_max: int = 0
    metrics: Optional[Any] = None  # ops.Metrics: plumber_events_dropped_total
    _cache: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _queue: deque = field(default_factory=deque)
    _queued: threading.Condition = field(default_factory=threading.Condition)
    _overflowing: bool = False  # dropped since the queue was last empty (one log line each)
    _last_nanos: int = 0
    _order: int = 0
    writes: int = 0
    dropped: int = 0

    def new_recorder(self, controller: str, node: str) -> "EventRecorder":
        """NewRecorder: reportingInstance `<controller>-<node>` (cut to the API's 128)."""
        return EventRecorder(self, controller, f"{controller}-{node}"[:REPORTING_INSTANCE_MAX])

    def _name(self, regarding_name: str) -> str:
        """makeEvent's `<name>.<UnixNano in hex>`, never the same twice from this agent."""
        nanos = max(int(self.clock.time() * NANOS_PER_S), self._last_nanos + 1)
        self._last_nanos = nanos
        return f"{regarding_name or 'event'}.{nanos:x}"

    def record(self, key: tuple, make_body) -> None:
        """recordToSink: create the first, patch the second as a series, count the rest."""
        now = self.clock.time()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                cached.count += 1
                cached.last_observed_s = now
                if cached.count > 2:
                    return  # counted; written by finish_series or refresh_series
            else:
                if len(self._cache) >= MAX_CACHED_EVENTS:
                    oldest = min(self._cache, key=lambda k: self._cache[k].order)
                    del self._cache[oldest]
                self._order += 1
                body = make_body(self._name, now)
                cached = self._cache[key] = _Cached(body, now, last_observed_s=now,
                                                    order=self._order)
            body, series = dict(cached.body), cached.series()
        self._send(cached, body, series)

    def _send(self, cached: _Cached, body: dict, series: Optional[dict]) -> None:
        """Write now (no queue), or queue for `send`, dropping the oldest when full."""
        if self.queue_max <= 0:
            self._write(cached, body, series)
            return
        with self._queued:
            if len(self._queue) >= self.queue_max:
                _, old, _ = self._queue.popleft()
                self.dropped += 1
                if self.metrics is not None:
                    self.metrics.inc("plumber_events_dropped_total")
                if not self._overflowing:
                    log.warning("event queue full (%d): dropping the oldest (%s); the API "
                                "server is slow or unreachable", self.queue_max, old.get("reason"))
                self._overflowing = True
            self._queue.append((cached, body, series))
            self._queued.notify()

    def pending(self) -> int:
        """Writes queued and not yet sent."""
        with self._queued:
            return len(self._queue)

    def drain(self) -> None:
        """Send every queued write on this thread (tests; `send` does it otherwise)."""
        while self._send_one():
            pass

    def _send_one(self) -> bool:
        with self._queued:
            if not self._queue:
                self._overflowing = False
                return False
            item = self._queue.popleft()
        self._write(*item)
        return True

    def send(self, stop: threading.Event) -> None:
        """The sender thread: writes queued Events in order until `stop` (what is still
        queued then is dropped: best effort, and a shutdown must not wait on a slow API)."""
        while not stop.is_set():
            with self._queued:
                if not self._queue:
                    self._overflowing = False
                    self._queued.wait(STOP_POLL_S)
                    continue
            self._send_one()

    def _write(self, cached: _Cached, body: dict, series: Optional[dict]) -> None:
        """recordEvent: a series is patched (created when the Event is gone), a singleton
        created. Best effort: an error is logged, never raised."""
        meta = body["metadata"]
        try:
            if series is None:
                self.client.create_event(meta["namespace"], body)
            else:
                try:
                    self.client.patch_event(meta["namespace"], meta["name"], {"series": series})
                except Exception as exc:  # noqa: BLE001 - util.IsKeyNotFoundError: create it
                    if error_status(exc) != 404:
                        raise
                    self.client.create_event(meta["namespace"], {**body, "series": series})
            self.writes += 1
            with self._lock:
                cached.written_count = max(cached.written_count, series["count"] if series else 1)
        except Exception as exc:  # noqa: BLE001 - events are best effort
            log.warning("could not record event %s: %s", body.get("reason"), exc)

    def finish_series(self) -> None:
        """finishSeries: a series quiet for FINISH_S gets its final count written and is
        forgotten; a singleton older than that is forgotten."""
        cutoff = self.clock.time() - FINISH_S
        with self._lock:
            ended = [(key, c) for key, c in self._cache.items()
                     if (c.last_observed_s if c.count > 1 else c.event_time_s) < cutoff]
            for key, _ in ended:
                del self._cache[key]
        for _, cached in ended:
            if cached.count > cached.written_count:
                self._send(cached, dict(cached.body), cached.series())

    def refresh_series(self) -> None:
        """refreshExistingEventSeries: rewrite every ongoing series (its count so far)."""
        with self._lock:
            ongoing = [(c, dict(c.body), c.series()) for c in self._cache.values() if c.count > 1]
        for cached, body, series in ongoing:
            self._send(cached, body, series)

    def run(self, stop: threading.Event) -> None:
        """StartRecordingToSink's two loops in one thread."""
        since_refresh_s = 0.0
        while not self.clock.wait(stop, FINISH_S):
            self.finish_series()
            since_refresh_s += FINISH_S
            if since_refresh_s >= REFRESH_S:
                since_refresh_s = 0.0
                self.refresh_series()


@dataclass(frozen=True)
class EventRecorder:
    """One reporting controller's recorder (recorderImpl)."""

    broadcaster: EventBroadcaster
    controller: str  # reportingController: a qualified name, like plumber.k8s.pf9.io/agent
    instance: str    # reportingInstance

    def eventf(self, *, regarding: dict, reason: str, action: str, note: str,
               warning: bool = False, related: Optional[dict] = None) -> None:
        """Record an Event about `regarding` (an ObjectReference: apiVersion, kind, name, uid,
        and namespace for a namespaced object)."""
        regarding = {k: v for k, v in regarding.items() if v}
        event_type = WARNING if warning else NORMAL
        note = truncate(note, NOTE_MAX)
        key = (event_type, action, reason, self.controller, self.instance,
               tuple(sorted(regarding.items())), tuple(sorted((related or {}).items())), note)

        def make_body(name_for, now_s: float) -> dict:
            body = {"metadata": {"name": name_for(str(regarding.get("name") or "")),
                                 "namespace": regarding.get("namespace") or DEFAULT_NAMESPACE},
                    "eventTime": micro_time(now_s), "reportingController": self.controller,
                    "reportingInstance": self.instance, "action": action, "reason": reason,
                    "regarding": regarding, "note": note, "type": event_type}
            if related:
                body["related"] = related
            return body

        self.broadcaster.record(key, make_body)
