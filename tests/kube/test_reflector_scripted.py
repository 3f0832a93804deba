"""The reflector against scripted streams at our own seam, with a FakeClock: every watching
docs/pitfalls.md (1-9, 12) as data in, an exact sequence of changes out."""
from __future__ import annotations

import random
import threading

import pytest
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from plumber_agent.clock import FakeClock
from plumber_agent.kube.reflector import (
    NODE_KEY, Reflector, ReflectorSettings, labels_changed, node_key_of, template_key,
)
from plumber_agent.workqueue import WorkQueue
from tests.helpers.wait import wait_for
from tests.kube.scripted import (
    STALL, WAIT_BOUND_S, Recorder, Script, ScriptedStream, bookmark, ev, gone, obj,
)

SETTINGS = ReflectorSettings(watchdog_tick_s=None)


class FixedRng(random.Random):
    """random() always `value`; randint always the low end: backoffs become exact."""

    def __init__(self, value: float = 0.0):
        super().__init__(0)
        self.value = value

    def random(self):
        return self.value

    def randint(self, a, b):
        return a


# --- objects and streams, as data -----------------------------------------------------------
A1, A2, A3 = obj("a", "10"), obj("a", "12"), obj("a", "15")
B1 = obj("b", "11")
C1 = obj("c", "14")

STREAM_A_MODIFIED_THEN_B_DELETED = [ev("MODIFIED", A2), ev("DELETED", obj("b", "13"))]
STREAM_GONE_AFTER_C = [ev("ADDED", C1), gone()]
STREAM_BOOKMARKS = [bookmark("20"), bookmark("25")]
STREAM_GARBAGE = [
    None,                                        # blank line
    "not an event",                              # not a dict
    ev("ERRORISH", A2),                          # unknown type
    ev("ADDED", None),                           # no object
    ev("ADDED", {"metadata": {}}),               # object without a name
    {"object": A2},                              # no type
    ev("MODIFIED", A2),                          # and life goes on
]
STREAM_ERROR_WITHOUT_CODE = [ev("ERROR", {"kind": "Status", "message": "etcd hiccup"})]


def make(script, recorder, *, clock=None, settings=SETTINGS, rng=None, **kw):
    clock = clock or FakeClock(auto_advance=True)
    return Reflector("templates", script.list_fn, script.watch_fn, recorder, clock,
                     settings=settings, rng=rng or FixedRng(), **kw)


def run(script, recorder, **kw):
    reflector = make(script, recorder, **kw)
    reflector.run(script.stop)
    return reflector


# --- basics -------------------------------------------------------------------------------------
def test_list_then_watch_reports_exact_sequence_and_keeps_store():
    script = Script(lists=[([A1, B1], "11")], watches=[STREAM_A_MODIFIED_THEN_B_DELETED])
    rec = Recorder()
    reflector = run(script, rec)
    assert rec.calls == [
        ("ADDED", "template/a", None, "10"),
        ("ADDED", "template/b", None, "11"),
        ("MODIFIED", "template/a", "10", "12"),
        ("DELETED", "template/b", "11", None),
    ]
    assert reflector.has_synced()
    assert set(reflector.store()) == {"template/a"}
    assert reflector.store()["template/a"]["metadata"]["resourceVersion"] == "12"
    # Watched from the list's resourceVersion, then from the last event's.
    assert [c[0] for c in script.watch_calls] == ["11", "13"]
    assert reflector.events == 2


def test_watch_timeouts_are_randomised_and_client_read_timeout_always_set():
    """docs/pitfalls.md 3: server-side timeout_seconds in 300-600 s AND a client read timeout."""
    script = Script(lists=[([], "1")], watches=[[bookmark("2")], [bookmark("3")]])
    run(script, Recorder(), rng=random.Random(7))
    for _, timeout_seconds, read_timeout_s in script.watch_calls:
        assert 300 <= timeout_seconds <= 600
        assert read_timeout_s == SETTINGS.inactivity_timeout_s + \
            SETTINGS.watch_read_timeout_margin_s


# --- docs/pitfalls.md 1: 410 as an ERROR event or as an HTTP error --------------------------------------
def test_410_error_event_relists_and_rewatches_from_the_new_version():
    script = Script(lists=[([A1, B1], "11"), ([A2, C1], "30")],
                    watches=[STREAM_GONE_AFTER_C, [ev("MODIFIED", A3)]])
    rec = Recorder()
    reflector = run(script, rec)
    assert rec.calls == [
        ("ADDED", "template/a", None, "10"),
        ("ADDED", "template/b", None, "11"),
        ("ADDED", "template/c", None, "14"),
        # relist after 410: a changed, c unchanged (no event), b vanished (docs/pitfalls.md 2)
        ("MODIFIED", "template/a", "10", "12"),
        ("DELETED", "template/b", "11", None),
        ("MODIFIED", "template/a", "12", "15"),
    ]
    assert script.list_calls == 2
    assert [c[0] for c in script.watch_calls][:2] == ["11", "30"]
    assert reflector.relists == 1
    # The first 410 relists at once: no backoff.
    assert list(reflector.backoffs) == []


def test_410_as_api_exception_at_watch_start_relists():
    script = Script(lists=[([A1], "10"), ([A2], "12")],
                    watches=[ApiException(status=410, reason="Gone"), [ev("ADDED", C1)]])
    rec = Recorder()
    reflector = run(script, rec)
    assert rec.calls[:3] == [
        ("ADDED", "template/a", None, "10"),
        ("MODIFIED", "template/a", "10", "12"),
        ("ADDED", "template/c", None, "14"),
    ]
    assert reflector.relists == 1
    assert list(reflector.backoffs) == []


def test_repeated_410_right_after_relist_backs_off():
    """A server that answers every watch with 410 must not get a list/watch storm."""
    script = Script(lists=[([], "1"), ([], "2"), ([], "3")], watches=[[gone()], [gone()]])
    reflector = run(script, Recorder())
    assert [delay for delay, _ in reflector.backoffs][:1] == [0.8]


# --- docs/pitfalls.md 2: deletions while disconnected -----------------------------------------------------
def test_relist_reports_objects_deleted_while_disconnected():
    script = Script(lists=[([A1, B1, C1], "14"), ([B1], "40")],
                    watches=[[gone()], []])
    rec = Recorder()
    run(script, rec)
    assert rec.calls == [
        ("ADDED", "template/a", None, "10"),
        ("ADDED", "template/b", None, "11"),
        ("ADDED", "template/c", None, "14"),
        ("DELETED", "template/a", "10", None),
        ("DELETED", "template/c", "14", None),
    ]


# --- docs/pitfalls.md 3: silent streams --------------------------------------------------------------------
def test_watchdog_closes_a_silent_stream_and_rewatches_from_the_same_version():
    clock = FakeClock(auto_advance=False)
    stalled = ScriptedStream([ev("ADDED", C1), STALL])
    script = Script(lists=[([A1], "10")], watches=[stalled, [ev("MODIFIED", A2)]])
    rec = Recorder()
    reflector = make(script, rec, clock=clock)
    thread = threading.Thread(target=reflector.run, args=(script.stop,), daemon=True)
    thread.start()
    try:
        wait_for(stalled.stalled.is_set, what="the stream to stall", timeout_s=WAIT_BOUND_S)
        assert reflector.check_watchdog() is None  # not silent long enough yet
        clock.advance(SETTINGS.inactivity_timeout_s - 1)
        assert reflector.check_watchdog() is None
        clock.advance(1)
        assert "no event or bookmark" in reflector.check_watchdog()
        assert stalled.closed.is_set()
        # The dead stream is an error: back off (the test moves time on), then re-watch.
        clock.wait_for_waiters(1)
        clock.advance(SETTINGS.backoff_max_s)
        thread.join(10)
        assert not thread.is_alive()
    finally:
        script.stop.set()
    assert reflector.watchdog_kills == 1
    assert reflector.watch_restarts >= 1
    assert [c[0] for c in script.watch_calls][:2] == ["10", "14"]  # no relist needed
    assert script.list_calls == 1
    assert rec.calls == [("ADDED", "template/a", None, "10"), ("ADDED", "template/c", None, "14"),
                         ("MODIFIED", "template/a", "10", "12")]


def test_watchdog_closes_a_stream_that_outlives_its_deadline():
    clock = FakeClock(auto_advance=False)
    chatty = ScriptedStream([STALL])
    script = Script(lists=[([], "1")], watches=[chatty])
    settings = ReflectorSettings(watchdog_tick_s=None, inactivity_timeout_s=1e9)
    reflector = make(script, Recorder(), clock=clock, settings=settings)
    thread = threading.Thread(target=reflector.run, args=(script.stop,), daemon=True)
    thread.start()
    try:
        wait_for(chatty.stalled.is_set, what="the stream to start", timeout_s=WAIT_BOUND_S)
        _, timeout_seconds, _ = script.watch_calls[0]
        clock.advance(timeout_seconds + settings.watch_deadline_margin_s)
        assert reflector.check_watchdog() == "stream outlived its deadline"
    finally:
        script.stop.set()
        clock.advance(100)
        thread.join(10)
    assert not thread.is_alive()


# --- docs/pitfalls.md 4: raw urllib3 errors ----------------------------------------------------------------
@pytest.mark.parametrize("error", [
    urllib3.exceptions.ReadTimeoutError(None, "/apis", "Read timed out."),
    urllib3.exceptions.ProtocolError("Response ended prematurely"),
    ConnectionRefusedError(111, "Connection refused"),
])
def test_urllib3_errors_mid_stream_back_off_and_resume_from_last_version(error):
    script = Script(lists=[([A1], "10")],
                    watches=[ScriptedStream([ev("ADDED", C1)], raise_at_end=error),
                             [ev("MODIFIED", A2)]])
    rec = Recorder()
    reflector = run(script, rec)
    assert rec.calls == [("ADDED", "template/a", None, "10"), ("ADDED", "template/c", None, "14"),
                         ("MODIFIED", "template/a", "10", "12")]
    assert [c[0] for c in script.watch_calls][:2] == ["10", "14"]
    assert list(reflector.backoffs)[0][0] == 0.8
    assert script.list_calls == 1


# --- docs/pitfalls.md 5: garbage ------------------------------------------------------------------------------
def test_garbage_events_are_guarded_and_counted():
    script = Script(lists=[([A1], "10")], watches=[STREAM_GARBAGE])
    rec = Recorder()
    reflector = run(script, rec)
    assert rec.calls == [("ADDED", "template/a", None, "10"),
                         ("MODIFIED", "template/a", "10", "12")]
    assert reflector.garbage == 6
    assert set(reflector.store()) == {"template/a"}


def test_error_event_without_code_is_an_error_not_a_crash():
    script = Script(lists=[([A1], "10")], watches=[STREAM_ERROR_WITHOUT_CODE, [ev("ADDED", C1)]])
    rec = Recorder()
    reflector = run(script, rec)
    assert rec.keys() == ["template/a", "template/c"]
    assert reflector.errors >= 1
    assert "WatchError" in list(reflector.backoffs)[0][1]
    assert script.list_calls == 1  # the version is still good: re-watch, no relist


# --- docs/pitfalls.md 6: bookmarks ----------------------------------------------------------------------------
def test_bookmarks_only_advance_the_resource_version():
    script = Script(lists=[([A1], "10")], watches=[STREAM_BOOKMARKS, []])
    rec = Recorder()
    reflector = run(script, rec)
    assert rec.calls == [("ADDED", "template/a", None, "10")]
    assert [c[0] for c in script.watch_calls][:2] == ["10", "25"]
    assert set(reflector.store()) == {"template/a"}
    assert reflector.events == 2


# --- docs/pitfalls.md 7: opaque resourceVersions ----------------------------------------------------------
def test_resource_versions_are_compared_for_equality_only():
    # "9" < "10" numerically and "b" is not a number at all: both are just "different".
    script = Script(lists=[([obj("a", "10")], "x-10")],
                    watches=[[ev("MODIFIED", obj("a", "9")), ev("MODIFIED", obj("a", "9")),
                              ev("MODIFIED", obj("a", "b"))]])
    rec = Recorder()
    run(script, rec)
    assert rec.calls == [("ADDED", "template/a", None, "10"),
                         ("MODIFIED", "template/a", "10", "9"),
                         ("MODIFIED", "template/a", "9", "b")]
    assert [c[0] for c in script.watch_calls][:2] == ["x-10", "b"]


# --- docs/pitfalls.md 8: backoff on every error class ---------------------------------------------------
def _retry_after(seconds):
    exc = ApiException(status=429, reason="Too Many Requests")
    exc.headers = {"Retry-After": str(seconds)}
    return exc


ERRORS_THEN_SUCCESS = [
    ApiException(status=403, reason="Forbidden"),
    ApiException(status=404, reason="Not Found"),      # CRD not installed yet
    ApiException(status=500, reason="Internal"),
    ApiException(status=503, reason="Unavailable"),
    ConnectionRefusedError(111, "Connection refused"),
    urllib3.exceptions.ProtocolError("Connection aborted."),
    ApiException(status=401, reason="Unauthorized"),
    ([A1], "10"),
]


def test_every_error_class_backs_off_exponentially_up_to_the_cap():
    script = Script(lists=ERRORS_THEN_SUCCESS, watches=[])
    rec = Recorder()
    reflector = run(script, rec)
    assert [delay for delay, _ in reflector.backoffs][:7] == [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0]
    assert "404 not found (CRD not installed yet?)" in [r for _, r in reflector.backoffs]
    assert rec.calls[0] == ("ADDED", "template/a", None, "10")


def test_backoff_has_jitter_and_keeps_it_at_the_cap():
    """Full jitter: a draw of 0.5 halves every ceiling, the 30 s cap's too (it used to be
    clipped to exactly 30 s there: every agent of a fleet retried in the same instant)."""
    script = Script(lists=[ApiException(status=500)] * 8 + [([], "1")], watches=[])
    reflector = run(script, Recorder(), rng=FixedRng(0.5))
    delays = [delay for delay, _ in reflector.backoffs][:8]
    assert delays == [pytest.approx(d) for d in (0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 15.0, 15.0)]


def test_429_honours_retry_after():
    script = Script(lists=[_retry_after(7), _retry_after(0), ([], "1")], watches=[])
    reflector = run(script, Recorder())
    assert [delay for delay, _ in reflector.backoffs][:2] == [7.0, 1.6]
    assert [reason for _, reason in reflector.backoffs][:1] == ["429 too many requests"]


def test_a_watch_ending_at_once_without_events_is_an_error():
    script = Script(lists=[([], "1")], watches=[[], [], [bookmark("5")]])
    reflector = run(script, Recorder())
    delays = [delay for delay, reason in reflector.backoffs if "ShortWatch" in reason]
    assert delays[:2] == [0.8, 1.6]


def test_backoff_resets_after_a_healthy_spell():
    clock = FakeClock(auto_advance=True)

    class Healthy(ScriptedStream):
        """A stream during which a long, healthy time passes."""

        def __iter__(self):
            clock.advance(SETTINGS.backoff_reset_after_s + 1)
            yield from super().__iter__()

    script = Script(lists=[ApiException(status=500), ApiException(status=500), ([], "1")],
                    watches=[Healthy([bookmark("2")], raise_at_end=OSError("reset"))])
    reflector = run(script, Recorder(), clock=clock)
    assert [delay for delay, _ in reflector.backoffs][:3] == [0.8, 1.6, 0.8]


def test_stop_interrupts_a_backoff():
    clock = FakeClock(auto_advance=False)
    script = Script(lists=[ApiException(status=500)], watches=[])
    reflector = make(script, Recorder(), clock=clock)
    thread = threading.Thread(target=reflector.run, args=(script.stop,), daemon=True)
    thread.start()
    clock.wait_for_waiters(1)
    script.stop.set()
    thread.join(10)
    assert not thread.is_alive()


# --- docs/pitfalls.md 9: the work happens off the watch thread ----------------------------------------
def test_on_change_only_enqueues_and_a_burst_coalesces_in_the_queue():
    queue = WorkQueue(FakeClock())
    script = Script(lists=[([A1], "10")],
                    watches=[[ev("MODIFIED", A2), ev("MODIFIED", A3), ev("ADDED", C1)]])
    reflector = make(script, lambda t, key, old, new: queue.add(key))
    reflector.run(script.stop)
    assert len(queue) == 2
    assert [queue.get(0), queue.get(0)] == ["template/a", "template/c"]


def test_a_failing_handler_does_not_kill_the_watch():
    seen = []

    def handler(event_type, key, old, new):
        seen.append(key)
        raise RuntimeError("handler bug")

    script = Script(lists=[([A1], "10")], watches=[[ev("ADDED", C1)]])
    reflector = make(script, handler)
    reflector.run(script.stop)
    assert seen == ["template/a", "template/c"]
    assert reflector.errors == 0


# --- docs/pitfalls.md 12: Node events that do not touch labels are not reported -----------------------
NODE_1 = {"kind": "Node", "metadata": {"name": "n1", "resourceVersion": "1",
                                       "labels": {"role": "a"}}, "status": {"hb": 1}}
NODE_HEARTBEAT = {"kind": "Node", "metadata": {"name": "n1", "resourceVersion": "2",
                                               "labels": {"role": "a"}}, "status": {"hb": 2}}
NODE_RELABELED = {"kind": "Node", "metadata": {"name": "n1", "resourceVersion": "3",
                                               "labels": {"role": "b"}}, "status": {"hb": 2}}


def test_node_reflector_reports_label_changes_only():
    script = Script(lists=[([NODE_1], "1")],
                    watches=[[ev("MODIFIED", NODE_HEARTBEAT), ev("MODIFIED", NODE_RELABELED)]])
    rec = Recorder()
    reflector = make(script, rec, key_fn=node_key_of, report_if=labels_changed)
    reflector.run(script.stop)
    assert rec.calls == [("ADDED", NODE_KEY, None, "1"), ("MODIFIED", NODE_KEY, "2", "3")]
    assert reflector.store()[NODE_KEY]["metadata"]["resourceVersion"] == "3"


def test_template_key():
    assert template_key("x") == "template/x"


# --- transform (client-go SetTransform) -------------------------------------------------------
def test_transform_stores_only_what_it_keeps_from_lists_and_events():
    """The status writer's stores: each listed and watched object goes through `transform`
    before it is stored and reported; a transform that fails keeps the object whole."""
    def keep_name_and_rv(o):
        if o["metadata"]["name"] == "bad":
            raise ValueError("broken")
        return {"metadata": {k: o["metadata"][k] for k in ("name", "resourceVersion")}}

    big_a, big_b = obj("a", "10", spec={"x": 1}), obj("b", "11", spec={"y": 2})
    bad = obj("bad", "13", spec={"z": 3})
    script = Script(lists=[([big_a, big_b], "11")],
                    watches=[[ev("MODIFIED", obj("a", "12", spec={"x": 2})), ev("ADDED", bad)]])
    rec = Recorder()
    reflector = run(script, rec, transform=keep_name_and_rv)
    store = reflector.store()
    assert store["template/a"] == {"metadata": {"name": "a", "resourceVersion": "12"}}
    assert store["template/b"] == {"metadata": {"name": "b", "resourceVersion": "11"}}
    assert store["template/bad"] == bad
    assert rec.calls == [("ADDED", "template/a", None, "10"), ("ADDED", "template/b", None, "11"),
                         ("MODIFIED", "template/a", "10", "12"),
                         ("ADDED", "template/bad", None, "13")]
# --- which resourceVersion a list asks for (client-go reflector relistResourceVersion) -----
def _versioned(script, recorder, **kw):
    """A reflector whose list_fn takes resource_version (like the client's list methods)."""
    clock = FakeClock(auto_advance=True)
    reflector = Reflector("templates", script.list_at, script.watch_fn, recorder, clock,
                          settings=SETTINGS, rng=FixedRng(), **kw)
    reflector.run(script.stop)
    return reflector


def _too_large() -> ApiException:
    exc = ApiException(status=504, reason="Timeout")
    exc.body = ('{"kind":"Status","code":504,"reason":"Timeout","details":{"causes":'
                '[{"reason":"ResourceVersionTooLarge"}]}}')
    return exc


def test_the_first_list_may_come_from_the_cache_and_a_relist_is_not_older_than_seen():
    """rv=0 first (the watch cache answers, not etcd); after a watch expired, the relist asks
    for the last version seen, which the cache still serves."""
    script = Script(lists=[([A1, B1], "11"), ([A3], "16")],
                    watches=[[ev("MODIFIED", A2), gone()], [bookmark("20")]])
    rec = Recorder()
    _versioned(script, rec)
    assert script.list_versions == ["0", "12"]
    assert ("DELETED", "template/b", "11", None) in rec.calls


@pytest.mark.parametrize("refusal", [
    ApiException(status=410, reason="Expired"),  # "too old": compacted away
    _too_large(),                                # "too large": a lagging cache
], ids=["too-old", "too-large"])
def test_a_refused_version_is_relisted_at_once_as_a_consistent_read(refusal):
    script = Script(lists=[([A1], "10"), refusal, ([A3], "15"), ([A3], "17")],
                    watches=[[gone()], [bookmark("16"), gone()], [bookmark("20")]])
    reflector = _versioned(script, Recorder())
    # "" right after the refusal, with no backoff; the next relist is cached again.
    assert script.list_versions == ["0", "10", "", "16"]
    assert list(reflector.backoffs) == []


def test_other_list_errors_back_off_and_keep_asking_for_the_cache():
    script = Script(lists=[ApiException(status=500), ([A1], "10")], watches=[[bookmark("11")]])
    reflector = _versioned(script, Recorder())
    assert script.list_versions == ["0", "0"]
    assert len(reflector.backoffs) == 1
