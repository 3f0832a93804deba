"""A hand-rolled reflector (informer): keeps a local copy of a set of API objects current and
reports every change as (event_type, key, old, new), however the connection misbehaves.

Why not `kubernetes.watch.Watch` alone: it does not recover from 410 Gone (docs/pitfalls.md 1), lets raw
urllib3 errors escape (4), turns garbage into None events and crashes on ERROR objects without
a code (5), and has no idea of a silent, half-open stream (3). So we own the loop, in three
layers like kopf's `watching.py`:

1. `run()`: an infinite loop kept too simple to be wrong: call layer 2, on any error back off
   (with jitter, honouring Retry-After) and go again, until stopped.
2. `_list_then_watch()`: list when we have no usable resourceVersion (start, after 410), turning
   the difference with the store into ADDED/MODIFIED/DELETED (docs/pitfalls.md 2), then watch stream
   after stream from the last resourceVersion.
3. `_watch_once()`: one HTTP stream: events update the store, bookmarks only advance the
   resourceVersion (6), ERROR 410 means relist, anything odd is guarded and counted.

A watchdog closes a stream that has been silent too long (no event, no bookmark) or has
outlived its deadline; closing the socket unblocks the reading thread (docs/pitfalls.md 3).

Which resourceVersion a list asks for follows client-go's reflector (relistResourceVersion):
"0" for the first list (any cached copy will do: the API server answers from its watch cache,
not etcd, which is what keeps 5,000 agents starting at once from flattening it), the last
version seen when relisting after a watch expired (not older than that, still from the cache),
and "" (a consistent read) only after the server said that version is too old (410 Expired or
a too-large resourceVersion), retried at once. A `list_fn` taking `resource_version` gets the
choice; one that does not lists as it always did.

The reflector is decoupled from the client through `list_fn()` -> (items, resourceVersion) and
`watch_fn(resource_version, timeout_seconds, request_timeout_s)` -> iterable of raw events
(dicts; None for garbage) with an optional `close()`: tests script streams at this seam.
`on_change` runs on the reflector thread and must be cheap: enqueue a key (docs/pitfalls.md 9).
"""
from __future__ import annotations

import collections
import inspect
import logging
import random
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from plumber_agent.clock import Clock
# The retry policy's one owner; re-exported here for the callers that import them from the
# reflector (error_status, retry_after_s, Backoff).
from plumber_agent.apierrors import Target, classify, describe
from plumber_agent.retry import (Backoff, error_status, retry_after_s,  # noqa: F401
                                 retry_delay_s)
from plumber_agent.workqueue import NODE_KEY

log = logging.getLogger(__name__)

ADDED, MODIFIED, DELETED, BOOKMARK, ERROR = "ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"

LIST_WATCH = "list/watch"  # the verbs a reflector's failed request needed (errors, named)
TEMPLATE_KEY_PREFIX = "template/"

# --- Named numbers; each names the incident behind it. -------------------------------------
# client-go reflector: backoff 800 ms doubling to 30 s; an API server restart otherwise gets a
# reconnect storm from every node at once (docs/pitfalls.md 8).
BACKOFF_INITIAL_S = 0.8
BACKOFF_MAX_S = 30.0
BACKOFF_FACTOR = 2.0
# Jitter spreads 1,000 agents that lost the API server at the same moment: full jitter, each
# delay uniform in [0, ceiling], also once the ceiling is at BACKOFF_MAX_S (plumber_agent.retry).
BACKOFF_JITTER = 1.0
# client-go resets its backoff after 2 min without errors: a flaky minute should not leave
# a healthy agent reconnecting 30 s late forever.
BACKOFF_RESET_AFTER_S = 120.0
# The API server picks watch timeouts at random in [min-request-timeout, 2x] so watches do not
# all end at once; we ask for 5-10 min for the same reason (client-go: minWatchTimeout 5 min).
WATCH_TIMEOUT_MIN_S = 300
WATCH_TIMEOUT_MAX_S = 600
# Bookmarks arrive about every minute; 70-90 s of total silence means the stream is dead
# (half-open TCP after a load balancer dropped the flow: kopf's "inactivity timeout").
INACTIVITY_TIMEOUT_S = 80.0
# Client read timeout of a watch: past the watchdog, a backstop if the watchdog thread dies.
WATCH_READ_TIMEOUT_MARGIN_S = 10.0
# A stream may run this long past the server-side timeout before we close it ourselves
# (servers that ignore timeoutSeconds).
WATCH_DEADLINE_MARGIN_S = 30.0
# A watch that ends this fast with no events is an error, not a normal end: a proxy answering
# every watch with an empty 200 would otherwise be hammered in a tight loop (docs/pitfalls.md 8).
SHORT_WATCH_S = 1.0
# How often the watchdog looks at the stream (real time; decisions use the injected clock).
WATCHDOG_TICK_S = 1.0
# Bounded history of chosen backoffs, for metrics, logs and tests.
BACKOFF_HISTORY = 100


@dataclass(frozen=True)
class ReflectorSettings:
    """Timing knobs; defaults are the production values above, tests shorten some."""

    backoff_initial_s: float = BACKOFF_INITIAL_S
    backoff_max_s: float = BACKOFF_MAX_S
    backoff_factor: float = BACKOFF_FACTOR
    backoff_jitter: float = BACKOFF_JITTER
    backoff_reset_after_s: float = BACKOFF_RESET_AFTER_S
    watch_timeout_min_s: int = WATCH_TIMEOUT_MIN_S
    watch_timeout_max_s: int = WATCH_TIMEOUT_MAX_S
    inactivity_timeout_s: float = INACTIVITY_TIMEOUT_S
    watch_read_timeout_margin_s: float = WATCH_READ_TIMEOUT_MARGIN_S
    watch_deadline_margin_s: float = WATCH_DEADLINE_MARGIN_S
    short_watch_s: float = SHORT_WATCH_S
    # None: no watchdog thread (tests call check_watchdog() themselves).
    watchdog_tick_s: Optional[float] = WATCHDOG_TICK_S


# --- Keys and filters -----------------------------------------------------------------------
def template_key(name: str) -> str:
    return TEMPLATE_KEY_PREFIX + name


def template_key_of(obj: dict) -> str:
    return template_key(object_name(obj))


def node_key_of(obj: dict) -> str:
    return NODE_KEY


def object_name(obj: dict) -> str:
    return str(((obj.get("metadata") or {}).get("name")) or "")


def object_rv(obj: Optional[dict]) -> Optional[str]:
    if not isinstance(obj, dict):
        return None
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv not in (None, "") else None


def report_always(event_type: str, old: Optional[dict], new: Optional[dict]) -> bool:
    return True


def labels_changed(event_type: str, old: Optional[dict], new: Optional[dict]) -> bool:
    """Report a MODIFIED Node only when its labels changed (docs/pitfalls.md 12): status heartbeats
    every 10 s would otherwise trigger a reconcile each."""
    if event_type != MODIFIED or old is None or new is None:
        return True
    return ((old.get("metadata") or {}).get("labels") or {}) != \
        ((new.get("metadata") or {}).get("labels") or {})


# --- Errors the loop distinguishes ------------------------------------------------------------
class ResourceExpired(Exception):
    """410 Gone: the resourceVersion is older than the server's history; relist."""


class ShortWatch(Exception):
    """The watch ended within SHORT_WATCH_S without an event: treat as an error."""


class StreamDead(Exception):
    """The watchdog closed the stream (silent too long, or past its deadline)."""


class WatchError(Exception):
    """An ERROR event other than 410 (or one without a code)."""


OnChange = Callable[[str, str, Optional[dict], Optional[dict]], None]


class Reflector:
    """List+watch one kind of object into a store; report changes through `on_change`.

    Counters (for metrics): `watch_restarts` (streams that ended and were replaced),
    `events` (events and bookmarks received), `relists` (lists after the first), `errors`,
    `garbage` (unusable lines/events), `watchdog_kills`.
    """

    def __init__(self, name: str, list_fn: Callable[[], tuple[list[dict], str]],
                 watch_fn: Callable[..., Iterable[Optional[dict]]], on_change: OnChange,
                 clock: Clock, *, settings: ReflectorSettings = ReflectorSettings(),
                 key_fn: Callable[[dict], str] = template_key_of,
                 report_if: Callable[[str, Optional[dict], Optional[dict]], bool] = report_always,
                 rng: Optional[random.Random] = None,
                 on_backoff: Optional[Callable[[float, BaseException], None]] = None,
                 transform: Optional[Callable[[dict], dict]] = None,
                 target: Optional[Target] = None):
        """`transform`: applied to each listed or watched object before it is stored and
        reported (client-go's SetTransform), so a store keeps only the fields its reader uses;
        the result must keep metadata.name and metadata.resourceVersion. `target`: what is
        listed, for errors named as what they are (apierrors.describe: "permission denied:
        list/watch hostnetworktemplates.plumber.k8s.pf9.io ...")."""
        self.name = name
        self._target = target
        self._transform = transform
        self._list_fn, self._watch_fn, self._on_change = list_fn, watch_fn, on_change
        self._clock, self._settings = clock, settings
        self._key_fn, self._report_if = key_fn, report_if
        self._rng = rng or random.Random()
        self._on_backoff = on_backoff
        self._backoff = Backoff(initial_s=settings.backoff_initial_s,
                                max_s=settings.backoff_max_s, factor=settings.backoff_factor,
                                jitter=settings.backoff_jitter, rng=self._rng)
        self._lock = threading.Lock()
        self._store: dict[str, dict] = {}
        self._rv: Optional[str] = None
        # client-go reflector's lastSyncResourceVersion (kept across a 410, unlike _rv) and
        # isLastSyncResourceVersionUnavailable.
        self._last_sync_rv: Optional[str] = None
        self._last_sync_rv_unavailable = False
        self._list_takes_rv = _takes_resource_version(list_fn)
        self.list_resource_versions: collections.deque[str] = collections.deque(
            maxlen=BACKOFF_HISTORY)  # the resourceVersion each list asked for (tests, logs)
        self._synced = False
        self._listed_once = False
        self._last_activity = clock.monotonic()
        self._last_error_at: Optional[float] = None
        self._expired_streak = 0
        # The open stream, for the watchdog.
        self._stream: Any = None
        self._stream_deadline = 0.0
        self._stream_killed: Optional[str] = None
        self.backoffs: collections.deque[tuple[float, str]] = collections.deque(
            maxlen=BACKOFF_HISTORY)
        self.watch_restarts = 0
        self.events = 0
        self.relists = 0
        self.errors = 0
        self.garbage = 0
        self.watchdog_kills = 0

    # -- read side (any thread) -----------------------------------------------------------
    def store(self) -> dict[str, dict]:
        """A snapshot: key -> object (the objects are shared: do not mutate them)."""
        with self._lock:
            return dict(self._store)

    def get(self, key: str) -> Optional[dict]:
        with self._lock:
            return self._store.get(key)

    def has_synced(self) -> bool:
        """True once the first list has been stored (and stays true)."""
        with self._lock:
            return self._synced

    def last_activity(self) -> float:
        """Monotonic time of the last successful list, event or bookmark (for liveness)."""
        with self._lock:
            return self._last_activity

    def watching(self) -> bool:
        """True while a watch stream is open."""
        with self._lock:
            return self._stream is not None

    def resource_version(self) -> Optional[str]:
        with self._lock:
            return self._rv

    # -- layer 1: the loop ----------------------------------------------------------------
    def run(self, stop_event: threading.Event) -> None:
        """List and watch until `stop_event` is set. Never raises (except BaseException)."""
        watchdog_done = threading.Event()
        watchdog = None
        if self._settings.watchdog_tick_s:
            watchdog = threading.Thread(target=self._watchdog_loop,
                                        args=(watchdog_done, stop_event),
                                        name=f"{self.name}-watchdog", daemon=True)
            watchdog.start()
        try:
            while not stop_event.is_set():
                try:
                    self._list_then_watch(stop_event)
                except Exception as exc:  # noqa: BLE001 - every error class backs off
                    if stop_event.is_set():
                        break
                    self._wait(stop_event, self._delay_after(exc))
        finally:
            watchdog_done.set()
            self._close_stream()
            if watchdog is not None:
                watchdog.join(timeout=5)

    def _delay_after(self, exc: Exception) -> float:
        """Count and log the error; choose how long to wait before trying again."""
        if isinstance(exc, ResourceExpired):
            self._expired_streak += 1
            if self._expired_streak == 1:
                log.info("%s: resourceVersion expired (410); relisting", self.name)
                return 0.0  # first 410 in a row: relist at once (docs/pitfalls.md 1)
        self.errors += 1
        now = self._clock.monotonic()
        if self._last_error_at is not None and \
                now - self._last_error_at >= self._settings.backoff_reset_after_s:
            self._backoff.reset()
        self._last_error_at = now
        # 429/5xx with Retry-After: the server said when (docs/pitfalls.md 8).
        delay = retry_delay_s(self._backoff.next(), exc)
        status = error_status(exc)
        reason = describe(classify(exc), verb=LIST_WATCH, target=self._target) \
            if self._target is not None else self._describe(exc, status)
        self.backoffs.append((delay, reason))
        log.warning("%s: %s; retrying in %.1fs", self.name, reason, delay)
        if self._on_backoff is not None:
            try:
                self._on_backoff(delay, exc)
            except Exception:  # noqa: BLE001
                log.exception("%s: on_backoff hook failed", self.name)
        return delay

    @staticmethod
    def _describe(exc: BaseException, status: Optional[int]) -> str:
        if status == 404:
            return "404 not found (CRD not installed yet?)"
        if status == 429:
            return "429 too many requests"
        if status is not None:
            return f"HTTP {status}"
        return f"{type(exc).__name__}: {exc}"

    def _wait(self, stop_event: threading.Event, delay_s: float) -> None:
        if delay_s > 0:
            self._clock.wait(stop_event, delay_s)

    # -- layer 2: list, then watch --------------------------------------------------------
    def _list_then_watch(self, stop_event: threading.Event) -> None:
        if self.resource_version() is None:
            self._relist()
        while not stop_event.is_set():
            self._watch_once(stop_event)

    def _relist_resource_version(self) -> str:
        """reflector.go relistResourceVersion: "" (consistent) once the last version was
        refused, "0" (any cached list) before anything was seen, else not older than it."""
        if self._last_sync_rv_unavailable:
            return ""
        return self._last_sync_rv or "0"

    def _list(self) -> tuple[list[dict], str]:
        if not self._list_takes_rv:
            return self._list_fn()
        requested = self._relist_resource_version()
        self.list_resource_versions.append(requested)
        try:
            result = self._list_fn(resource_version=requested)
        except Exception as exc:
            if requested == "" or not _version_refused(exc):
                raise
            # reflector.go list: "too old" or "too large": relist at once from etcd.
            log.info("%s: list at resourceVersion %r refused (%s); a consistent list instead",
                     self.name, requested, error_status(exc))
            self._last_sync_rv_unavailable = True
            self.list_resource_versions.append("")
            result = self._list_fn(resource_version="")
        self._last_sync_rv_unavailable = False
        return result

    def _relist(self) -> None:
        items, rv = self._list()
        changes = []
        with self._lock:
            if self._listed_once:
                self.relists += 1
            old_store = self._store
            new_store: dict[str, dict] = {}
            for obj in items:
                if not isinstance(obj, dict) or not object_name(obj):
                    self.garbage += 1
                    continue
                obj = self._stored_form(obj)
                key = self._key_fn(obj)
                new_store[key] = obj
                old = old_store.get(key)
                if old is None:
                    changes.append((ADDED, key, None, obj))
                elif object_rv(old) != object_rv(obj):  # opaque: equality only (docs/pitfalls.md 7)
                    changes.append((MODIFIED, key, old, obj))
            for key in sorted(set(old_store) - set(new_store)):
                # Deleted while we were not watching (docs/pitfalls.md 2).
                changes.append((DELETED, key, old_store[key], None))
            self._store = new_store
            self._rv = str(rv) if rv not in (None, "") else None
            self._synced = True
            self._listed_once = True
            self._last_activity = self._clock.monotonic()
        log.debug("%s: listed %d objects at resourceVersion %s", self.name, len(new_store), rv)
        for change in changes:
            self._report(*change)
        if self._rv is None:
            raise WatchError("list returned no resourceVersion")

    # -- layer 3: one stream --------------------------------------------------------------
    def _watch_once(self, stop_event: threading.Event) -> None:
        settings = self._settings
        timeout_s = self._rng.randint(settings.watch_timeout_min_s, settings.watch_timeout_max_s)
        read_timeout_s = settings.inactivity_timeout_s + settings.watch_read_timeout_margin_s
        try:
            stream = self._watch_fn(self.resource_version(), timeout_s, read_timeout_s)
        except Exception as exc:
            if error_status(exc) == 410:
                self._expire()
                raise ResourceExpired(str(exc)) from exc
            raise
        started = self._clock.monotonic()
        with self._lock:
            self._stream, self._stream_killed = stream, None
            self._stream_deadline = started + timeout_s + settings.watch_deadline_margin_s
            self._last_activity = started
        received = 0
        try:
            for event in stream:
                if stop_event.is_set():
                    return
                if self._handle(event):
                    received += 1
                    self._expired_streak = 0
        except ResourceExpired:
            raise
        except Exception as exc:
            killed = self._stream_killed
            if killed:
                raise StreamDead(killed) from exc
            raise
        finally:
            self._close_stream()
            if not stop_event.is_set():
                self.watch_restarts += 1
        if stop_event.is_set():
            return
        if self._stream_killed:
            raise StreamDead(self._stream_killed)
        if received == 0 and self._clock.monotonic() - started < settings.short_watch_s:
            raise ShortWatch("watch ended at once without events")

    def _handle(self, event: Any) -> bool:
        """Apply one raw event; True when it was a real event or bookmark."""
        if not isinstance(event, dict):
            self.garbage += 1  # blank or non-JSON line (docs/pitfalls.md 5)
            return False
        event_type = event.get("type")
        obj = event.get("object")
        if event_type == ERROR:
            code = obj.get("code") if isinstance(obj, dict) else None
            if code == 410:
                self._expire()
                raise ResourceExpired(str(obj.get("message", "")))
            # An ERROR without a code used to raise KeyError in watch.stream (docs/pitfalls.md 5).
            raise WatchError(f"watch ERROR event: {obj!r}"[:500])
        if not isinstance(obj, dict):
            self.garbage += 1
            return False
        if event_type == BOOKMARK:
            rv = object_rv(obj)
            with self._lock:
                if rv is not None:
                    self._rv = rv  # bookmarks only advance the resourceVersion (docs/pitfalls.md 6)
                self._last_activity = self._clock.monotonic()
            self.events += 1
            return True
        if event_type not in (ADDED, MODIFIED, DELETED):
            self.garbage += 1
            log.warning("%s: ignoring watch event of unknown type %r", self.name, event_type)
            return False
        if not object_name(obj):
            self.garbage += 1
            return False
        obj = self._stored_form(obj)
        key = self._key_fn(obj)
        rv = object_rv(obj)
        with self._lock:
            old = self._store.get(key)
            if event_type == DELETED:
                self._store.pop(key, None)
                reported = (DELETED, key, old if old is not None else obj, None)
            else:
                self._store[key] = obj
                if old is None:
                    reported = (ADDED, key, None, obj)
                elif object_rv(old) == rv:
                    reported = None  # a replay of what we already have
                else:
                    reported = (MODIFIED, key, old, obj)
            if rv is not None:
                self._rv = rv
            self._last_activity = self._clock.monotonic()
        self.events += 1
        if reported is not None:
            self._report(*reported)
        return True

    def _stored_form(self, obj: dict) -> dict:
        """The object as the store keeps it (see `transform`); a transform that fails keeps
        the object whole rather than losing it."""
        if self._transform is None:
            return obj
        try:
            return self._transform(obj)
        except Exception:  # noqa: BLE001 - a transform bug must not kill the watch
            log.exception("%s: transform failed for %s", self.name, object_name(obj))
            return obj

    def _report(self, event_type: str, key: str, old: Optional[dict],
                new: Optional[dict]) -> None:
        try:
            if self._report_if(event_type, old, new):
                self._on_change(event_type, key, old, new)
        except Exception:  # noqa: BLE001 - a handler bug must not kill the watch
            log.exception("%s: on_change failed for %s %s", self.name, event_type, key)

    def _expire(self) -> None:
        with self._lock:
            if self._rv is not None:
                self._last_sync_rv = self._rv  # relist not older than what we saw
            self._rv = None

    # -- the watchdog ---------------------------------------------------------------------
    def _watchdog_loop(self, done: threading.Event, stop_event: threading.Event) -> None:
        while not done.wait(self._settings.watchdog_tick_s):
            if stop_event.is_set():
                self._close_stream()  # a stop must not wait for a silent stream to end
                continue
            try:
                self.check_watchdog()
            except Exception:  # noqa: BLE001
                log.exception("%s: watchdog check failed", self.name)

    def check_watchdog(self) -> Optional[str]:
        """Close the open stream if it went silent or outlived its deadline; returns why."""
        now = self._clock.monotonic()
        with self._lock:
            stream = self._stream
            if stream is None or self._stream_killed:
                return None
            if now - self._last_activity >= self._settings.inactivity_timeout_s:
                reason = (f"no event or bookmark for {now - self._last_activity:.0f}s "
                          "(stream presumed dead)")
            elif now >= self._stream_deadline:
                reason = "stream outlived its deadline"
            else:
                return None
            self._stream_killed = reason
            self.watchdog_kills += 1
        log.warning("%s: %s; closing it", self.name, reason)
        _close_quietly(stream)
        return reason

    def _close_stream(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            _close_quietly(stream)


def _takes_resource_version(fn: Callable) -> bool:
    """Does `fn` accept a resource_version keyword (the client's list methods do)?"""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "resource_version" or p.kind is p.VAR_KEYWORD for p in params)


def _version_refused(exc: BaseException) -> bool:
    """reflector.go isExpiredError or isTooLargeResourceVersionError: 410 (Expired or Gone),
    or a 504 whose cause is ResourceVersionTooLarge (storage.NewTooLargeResourceVersionError)."""
    status = error_status(exc)
    if status == 410:
        return True
    return status == 504 and "ResourceVersionTooLarge" in str(getattr(exc, "body", "") or "")


def _close_quietly(stream: Any) -> None:
    close = getattr(stream, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:  # noqa: BLE001
        pass
