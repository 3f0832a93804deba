"""Reporter: writes only on semantic change, coalesces bursts, retries failed writes, and an
idle node makes zero writes (the patch each write sends is the sink's: test_status_sink)."""
import threading

import pytest
from kubernetes.client.exceptions import ApiException

from plumber_agent.clock import FakeClock
from plumber_agent.ops import Metrics
from plumber_agent.reporter import Reporter, merge_patch


class RecordingSink:
    """A StatusSink that behaves like the API: keeps the published status, can fail on demand."""

    def __init__(self, published=None, fail_times=0):
        self.published = published
        self.writes = []
        self.ensures = 0
        self.fail_times = fail_times

    def ensure(self):
        self.ensures += 1
        return self.published

    def write(self, status):
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("API server unreachable")
        self.writes.append(status)
        self.published = status


def test_merge_patch_is_rfc7386():
    old = {"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2], "gone": True}
    new = {"a": 1, "b": {"c": 2, "d": 4}, "l": [1], "new": "x"}
    assert merge_patch(old, new) == {"b": {"d": 4}, "l": [1], "new": "x", "gone": None}
    assert merge_patch(old, old) == {}


def test_unchanged_status_is_never_written_even_after_restart():
    status = {"interfaceStatus": [{"pfName": "eno1", "mtu": 1500}]}
    sink = RecordingSink(published=dict(status))  # a restarted agent finds its old status
    reporter = Reporter(sink=sink, metrics=Metrics())
    for _ in range(100):
        reporter.publish(dict(status))
        reporter.flush()
    assert sink.writes == []


def test_change_is_written_once():
    sink = RecordingSink(published={"interfaceStatus": [], "ovsError": "down"})
    metrics = Metrics()
    reporter = Reporter(sink=sink, metrics=metrics)
    reporter.publish({"interfaceStatus": [{"pfName": "eno1"}]})
    reporter.flush()
    reporter.publish({"interfaceStatus": [{"pfName": "eno1"}]})
    reporter.flush()
    assert sink.writes == [{"interfaceStatus": [{"pfName": "eno1"}]}]
    assert metrics.get("plumber_status_writes_total") == 1


def test_burst_is_coalesced_and_failures_retried():
    sink = RecordingSink(fail_times=1)
    # The retry backoff passes on the fake clock at once (auto_advance), not in real time.
    clock = FakeClock(auto_advance=True)
    reporter = Reporter(sink=sink, metrics=Metrics(), clock=clock, coalesce_s=0.05)
    # 50 statuses handed over before the thread runs: only the newest is written.
    for i in range(50):
        reporter.publish({"n": i})
    thread = _run_until(reporter, lambda: sink.published == {"n": 49})
    assert sink.writes == [{"n": 49}]
    assert not thread.is_alive()
    # The failed write was retried after a backoff: full jitter within the first step's 1 s.
    assert len(reporter.retry_delays) == 1 and 0.0 <= reporter.retry_delays[0] <= 1.0
    assert reporter.retry_delays[0] in clock.waits


class RetryAfterSink(RecordingSink):
    """Fails the first write as an API server shedding load does: 429 (or 503) + Retry-After."""

    def __init__(self, status: int, retry_after: str):
        super().__init__()
        self.error = ApiException(status=status, reason="shed")
        self.error.headers = {"Retry-After": retry_after}

    def write(self, status):
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        super().write(status)


@pytest.mark.parametrize("code", [429, 503])
def test_a_status_write_refused_with_retry_after_waits_what_the_server_said(code):
    """The backoff's first step is at most 1 s; the server asked for 7: the reporter waits 7
    (on the injected clock), then writes."""
    sink = RetryAfterSink(code, "7")
    clock = FakeClock(auto_advance=True)
    reporter = Reporter(sink=sink, metrics=Metrics(), clock=clock)
    reporter.publish({"n": 1})
    _run_until(reporter, lambda: sink.published == {"n": 1})
    assert reporter.retry_delays == [7.0]
    assert clock.waits[:1] == [7.0]


def _run_until(reporter: Reporter, predicate) -> threading.Thread:
    """Run the reporter's thread until `predicate` holds (bounded), then stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=reporter.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert _eventually(predicate, timeout_s=10)
    finally:
        stop.set()
        thread.join(5)
    return thread


def _eventually(predicate, timeout_s):
    done = threading.Event()
    for _ in range(int(timeout_s / 0.02)):
        if predicate():
            return True
        done.wait(0.02)
    return predicate()


@pytest.mark.parametrize("more_work", [False, True])
def test_a_change_inside_the_window_waits_only_when_another_pass_is_queued(more_work):
    """B2: a user's edit right after the previous write is written at once unless the
    reconciler already has another pass queued (then the newer status is awaited)."""
    sink = RecordingSink()
    asked = threading.Event()

    def another_pass_queued():
        asked.set()
        return more_work
    clock = FakeClock()  # the 60 s window only ends if the test advances this clock
    reporter = Reporter(sink=sink, metrics=Metrics(), clock=clock, coalesce_s=60.0,
                        more_work=another_pass_queued)
    stop = threading.Event()
    thread = threading.Thread(target=reporter.run, args=(stop,), daemon=True)
    thread.start()
    try:
        reporter.publish({"n": 1})
        assert _eventually(lambda: len(sink.writes) == 1, timeout_s=10)  # quiet: at once
        assert not asked.is_set()
        reporter.publish({"n": 2})
        assert asked.wait(10)
        if more_work:  # coalescing: nothing more is written while the window lasts
            assert clock.wait_for_waiters(1)  # waiting out the window (on the fake clock)
            assert not len(sink.writes) == 2
            assert clock.waits[-1] == pytest.approx(60.0)
        else:  # the 60 s window is not waited out
            assert _eventually(lambda: len(sink.writes) == 2, timeout_s=10)
    finally:
        stop.set()
        thread.join(5)
    assert sink.writes == [{"n": 1}, {"n": 2}]  # the coalesced one is written on the way out
