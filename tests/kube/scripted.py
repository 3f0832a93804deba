"""Scripted list/watch stubs at our own seam (Reflector's list_fn/watch_fn), after kopf's
`tests/k8s/test_watching_*`: streams are data, the test asserts the exact sequence of changes."""
from __future__ import annotations

import copy
import threading
from typing import Any, Optional

# Bound for anything a test waits on in real time (never asserted on).
WAIT_BOUND_S = 10.0

STALL = object()  # marker inside a stream: block here until the stream is closed


def obj(name: str, rv: str, *, labels: Optional[dict] = None, **extra) -> dict:
    meta = {"name": name, "resourceVersion": rv}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "plumber.k8s.pf9.io/v1", "kind": "HostNetworkTemplate",
            "metadata": meta, **extra}


def ev(event_type: str, body: Any) -> dict:
    return {"type": event_type, "object": body}


def bookmark(rv: str) -> dict:
    return ev("BOOKMARK", {"kind": "HostNetworkTemplate", "metadata": {"resourceVersion": rv}})


def gone(message: str = "too old resource version") -> dict:
    return ev("ERROR", {"kind": "Status", "status": "Failure", "reason": "Expired",
                        "code": 410, "message": message})


class ScriptedStream:
    """An iterable of raw events with close(), like client.WatchStream."""

    def __init__(self, events, *, raise_at_end: Optional[BaseException] = None):
        self.events = list(events)
        self.raise_at_end = raise_at_end
        self.closed = threading.Event()
        self.stalled = threading.Event()

    def __iter__(self):
        for item in self.events:
            if self.closed.is_set():
                return
            if item is STALL:
                self.stalled.set()
                self.closed.wait(WAIT_BOUND_S)
                if self.closed.is_set():
                    raise OSError("stream closed under the reader")
                raise AssertionError("stalled stream was never closed")
            yield copy.deepcopy(item)
        if self.raise_at_end is not None:
            raise self.raise_at_end

    def close(self):
        self.closed.set()


class Script:
    """list_fn/watch_fn stubs playing back `lists` and `watches` in order.

    Each list entry is (items, rv) or an exception to raise; each watch entry is a list of
    events, a ScriptedStream, or an exception. When the watches run out, `stop` is set, so
    `reflector.run(stop)` returns in the test thread with no real waiting at all.
    """

    def __init__(self, *, lists, watches, stop: Optional[threading.Event] = None):
        self.lists = list(lists)
        self.watches = list(watches)
        self.stop = stop or threading.Event()
        self.list_calls = 0
        self.list_versions: list[str] = []  # what list_at was asked for
        self.watch_calls: list[tuple[Optional[str], int, float]] = []
        self.streams: list[ScriptedStream] = []

    def list_fn(self):
        self.list_calls += 1
        if not self.lists:
            self.stop.set()
            raise RuntimeError("script: no more lists")
        item = self.lists.pop(0)
        if isinstance(item, BaseException):
            raise item
        items, rv = item
        return copy.deepcopy(items), rv

    def list_at(self, resource_version):
        """list_fn for a reflector that chooses the resourceVersion: recorded, then played."""
        self.list_versions.append(resource_version)
        return self.list_fn()

    def watch_fn(self, resource_version, timeout_seconds, request_timeout_s):
        self.watch_calls.append((resource_version, timeout_seconds, request_timeout_s))
        if not self.watches:
            self.stop.set()
            return ScriptedStream([])
        item = self.watches.pop(0)
        if isinstance(item, BaseException):
            raise item
        stream = item if isinstance(item, ScriptedStream) else ScriptedStream(item)
        self.streams.append(stream)
        return stream


class Recorder:
    """on_change that records (type, key, old rv, new rv)."""

    def __init__(self):
        self.calls: list[tuple] = []
        self._lock = threading.Lock()

    def __call__(self, event_type, key, old, new):
        with self._lock:
            self.calls.append((event_type, key, _rv(old), _rv(new)))

    def keys(self, event_type=None):
        with self._lock:
            return [c[1] for c in self.calls if event_type in (None, c[0])]

    def snapshot(self):
        with self._lock:
            return list(self.calls)


def _rv(o):
    return None if o is None else o.get("metadata", {}).get("resourceVersion")
