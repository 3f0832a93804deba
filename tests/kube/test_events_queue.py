"""Events leave the recording thread through a bounded queue (kube/recorder.py, client-go's
NewBroadcaster: a queue of maxQueuedEvents): a slow Event POST never holds up the reconciler,
repeats still become a series, and a full queue drops the oldest and counts it."""
from __future__ import annotations

import threading

from plumber_agent.clock import FakeClock
from plumber_agent.kube.recorder import EventBroadcaster
from plumber_agent.ops import Metrics
from tests.fakeapi import EVENTS
from tests.helpers.wait import wait_for
from tests.kube.test_events_v1 import NODE, WALL_START, event_writes, hostnetwork, record

WAIT_S = 10.0


def queued(kube, *, queue_max: int = 10, metrics=None):
    broadcaster = EventBroadcaster(kube, FakeClock(wall_start=WALL_START), queue_max=queue_max,
                                   metrics=metrics)
    return broadcaster, broadcaster.new_recorder("plumber.k8s.pf9.io/agent", NODE)


def sender(broadcaster: EventBroadcaster) -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=broadcaster.send, args=(stop,), daemon=True).start()
    return stop


def test_a_stalled_event_post_does_not_hold_up_the_recording_thread(fake_api, kube):
    hn = hostnetwork(kube)
    broadcaster, rec = queued(kube)
    stop = sender(broadcaster)
    try:
        hold = fake_api.hold_next_answer("POST", "/events")
        record(rec, hn, note="first")
        assert hold.wait_held(WAIT_S)  # the sender's POST hangs, as on a slow API server
        recording = threading.Thread(target=record, args=(rec, hn), kwargs={"note": "second"},
                                     daemon=True)
        recording.start()
        recording.join(WAIT_S)
        assert not recording.is_alive(), "recording waited for the stalled POST"
        assert broadcaster.pending() == 1
        hold.release()
        wait_for(lambda: len(fake_api.list(EVENTS)) == 2, timeout_s=WAIT_S, what="both Events")
        assert sorted(e["message"] for e in fake_api.list(EVENTS)) == ["first", "second"]
    finally:
        stop.set()


def test_repeats_still_become_a_series_through_the_queue(fake_api, kube):
    hn = hostnetwork(kube)
    broadcaster, rec = queued(kube)
    stop = sender(broadcaster)
    try:
        record(rec, hn, reason="Failed", note="mtu refused", warning=True)
        record(rec, hn, reason="Failed", note="mtu refused", warning=True)
        wait_for(lambda: len(event_writes(fake_api)) == 2, timeout_s=WAIT_S, what="two writes")
        assert [w.method for w in event_writes(fake_api)] == ["POST", "PATCH"]
        (event,) = fake_api.list(EVENTS)
        assert event["series"]["count"] == 2
    finally:
        stop.set()


def test_a_full_queue_drops_the_oldest_and_counts_it(fake_api, kube):
    hn = hostnetwork(kube)
    metrics = Metrics()
    broadcaster, rec = queued(kube, queue_max=2, metrics=metrics)
    for note in ("one", "two", "three"):  # no sender yet: the API is unreachable, say
        record(rec, hn, note=note)
    assert broadcaster.pending() == 2 and broadcaster.dropped == 1
    assert metrics.get("plumber_events_dropped_total") == 1
    assert fake_api.list(EVENTS) == []
    broadcaster.drain()
    assert sorted(e["message"] for e in fake_api.list(EVENTS)) == ["three", "two"]
    assert broadcaster.pending() == 0
