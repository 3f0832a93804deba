"""The work queue's contract (client-go doc.go), with a FakeClock: no test sleeps."""
from __future__ import annotations

import threading

import pytest

from plumber_agent.clock import FakeClock
from plumber_agent.workqueue import WorkQueue
from tests.helpers.wait import wait_for
from tests.kube.scripted import WAIT_BOUND_S


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def queue(clock):
    return WorkQueue(clock)


def test_fifo_and_dedup(queue):
    for key in ("a", "b", "a", "c", "b"):
        queue.add(key)
    assert len(queue) == 3
    assert [queue.get(0) for _ in range(3)] == ["a", "b", "c"]
    assert queue.get(0) is None


def test_never_hands_out_a_key_being_processed_and_reruns_it_once(queue):
    queue.add("a")
    assert queue.get(0) == "a"
    queue.add("a")
    queue.add("a")
    assert queue.get(0) is None            # still processing: not handed out again
    assert len(queue) == 0
    queue.done("a")
    assert queue.get(0) == "a"             # exactly one more run
    queue.done("a")
    assert queue.get(0) is None


def test_done_without_readd_does_not_requeue(queue):
    queue.add("a")
    queue.done(queue.get(0))
    assert len(queue) == 0 and queue.processing() == 0


def test_two_workers_never_share_a_key(queue):
    queue.add("a")
    got = []
    assert queue.get(0) == "a"
    queue.add("a")
    worker = threading.Thread(target=lambda: got.append(queue.get(timeout_s=None)))
    worker.start()
    # The second worker is blocked while "a" is processing...
    assert worker.is_alive()
    queue.done("a")
    worker.join(10)
    assert got == ["a"]


def test_get_blocks_until_add(queue):
    got = []
    worker = threading.Thread(target=lambda: got.append(queue.get()))
    worker.start()
    queue.add("x")
    worker.join(10)
    assert got == ["x"]


def test_get_timeout_uses_the_clock(clock, queue):
    got = []
    worker = threading.Thread(target=lambda: got.append(queue.get(timeout_s=5)))
    worker.start()
    assert clock.wait_for_waiters(1)
    clock.advance(5)
    worker.join(10)
    assert got == [None]


def test_add_after(clock, queue):
    queue.add_after("a", 10)
    queue.add_after("a", 20)   # the earlier time wins
    assert len(queue) == 0 and queue.waiting() == 1
    clock.advance(9.9)
    assert queue.get(0) is None
    clock.advance(0.1)
    assert queue.get(0) == "a"
    queue.done("a")
    clock.advance(30)
    assert queue.get(0) is None            # the superseded schedule does not fire again


def test_add_after_wakes_a_blocked_getter(clock, queue):
    got = []
    worker = threading.Thread(target=lambda: got.append(queue.get()))
    worker.start()
    assert clock.wait_for_waiters(1)
    queue.add_after("late", 3)
    wait_for(lambda: queue.waiting() == 1, what="scheduled", timeout_s=WAIT_BOUND_S)
    clock.advance(3)
    worker.join(10)
    assert got == ["late"]


def test_rate_limited_backoff_doubles_caps_and_forget_resets(clock, queue):
    delays = [queue.add_rate_limited("a") for _ in range(10)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays[-1] == 60.0 and max(delays) == 60.0
    assert queue.num_requeues("a") == 10
    queue.forget("a")
    assert queue.num_requeues("a") == 0
    assert queue.add_rate_limited("a") == 0.5


def test_rate_limited_key_comes_back_after_its_delay(clock, queue):
    queue.add("a")
    key = queue.get(0)
    queue.add_rate_limited(key)
    queue.done(key)
    assert queue.get(0) is None
    clock.advance(0.5)
    assert queue.get(0) == "a"


def test_shutdown_drains_then_returns_none(clock, queue):
    queue.add("a")
    queue.add_after("b", 1)
    queue.shut_down()
    queue.add("c")
    assert queue.shutting_down
    assert queue.get() == "a"
    assert queue.get() is None
    clock.advance(5)
    assert queue.get() is None


def test_shutdown_wakes_blocked_getters(queue):
    got = []
    workers = [threading.Thread(target=lambda: got.append(queue.get())) for _ in range(3)]
    for worker in workers:
        worker.start()
    queue.shut_down()
    for worker in workers:
        worker.join(10)
    assert got == [None, None, None]


def test_has_ready_work_counts_queued_and_readded_keys_not_delayed_ones(clock, queue):
    assert not queue.has_ready_work()
    queue.add_after("later", 5.0)
    assert not queue.has_ready_work()      # delayed: not yet
    queue.add("a")
    assert queue.has_ready_work()
    assert queue.get(0) == "a"
    assert not queue.has_ready_work()      # being processed, nothing else queued
    queue.add("a")
    assert queue.has_ready_work()          # re-added while processing: runs again at once
    queue.done("a")
    assert queue.get(0) == "a"
    queue.done("a")
    clock.advance(5.0)
    assert queue.has_ready_work()          # the delayed key is due now
