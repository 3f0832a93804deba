"""The client-side token bucket (kube/flowcontrol.py), as golang.org/x/time/rate's Limiter behind
client-go's NewTokenBucketRateLimiter: starts full, refills at qps, never banks more than burst,
and makes each caller past the burst wait exactly until its token arrives. A FakeClock with
auto_advance turns every wait into a recorded number: nothing here sleeps."""
from __future__ import annotations

import threading

import pytest

from plumber_agent.clock import FakeClock
from plumber_agent.kube.client import KubeClient
from plumber_agent.kube.flowcontrol import TokenBucket


def test_a_full_bucket_lets_the_burst_through_then_one_request_per_interval():
    clock = FakeClock(auto_advance=True)
    bucket = TokenBucket(qps=5, burst=3, clock=clock)
    delays = [bucket.accept() for _ in range(6)]
    # 3 at once (the burst), then each waits 1/qps = 0.2 s after the one before (time moved
    # on by each wait, as a real caller's sleep moves it).
    assert delays == [0, 0, 0, pytest.approx(0.2), pytest.approx(0.2), pytest.approx(0.2)]
    assert clock.waits == [pytest.approx(0.2)] * 3
    assert bucket.throttled == 3 and bucket.waited_s == pytest.approx(0.6)


def test_reservations_queue_up_when_time_does_not_move():
    """reserveN lets the token count go negative: callers that ask at the same instant are
    told to wait 1, 2, 3 intervals, in the order they asked (no spinning, no overtaking)."""
    clock = FakeClock()
    bucket = TokenBucket(qps=2, burst=1, clock=clock)
    assert [bucket.reserve() for _ in range(4)] == [0, 0.5, 1.0, 1.5]


def test_the_bucket_refills_at_qps_and_never_holds_more_than_burst():
    clock = FakeClock()
    bucket = TokenBucket(qps=10, burst=4, clock=clock)
    for _ in range(4):
        assert bucket.reserve() == 0
    assert not bucket.try_accept()
    clock.advance(0.25)  # 2.5 tokens
    assert bucket.try_accept() and bucket.try_accept() and not bucket.try_accept()
    clock.advance(3600)  # an idle hour banks only the burst
    assert [bucket.reserve() for _ in range(5)] == [0, 0, 0, 0, pytest.approx(0.1)]


def test_a_throttled_caller_blocks_on_the_clock_until_its_token_arrives():
    clock = FakeClock()
    bucket = TokenBucket(qps=1, burst=1, clock=clock)
    bucket.accept()
    done = threading.Event()
    thread = threading.Thread(target=lambda: (bucket.accept(), done.set()))
    thread.start()
    assert clock.wait_for_waiters(1)
    clock.advance(0.9)
    assert not done.wait(0.05)
    clock.advance(0.1)
    thread.join(10)
    assert done.is_set()


@pytest.mark.parametrize("qps, burst", [(0, 1), (-1, 1), (5, 0)])
def test_nonsense_settings_are_refused(qps, burst):
    with pytest.raises(ValueError):
        TokenBucket(qps=qps, burst=burst, clock=FakeClock())


def test_every_request_of_the_client_takes_a_token_and_a_watch_takes_one(fake_api, kube):
    """Through the real client against the fake API server: a get, a list and a watch cost
    one token each (a watch when it is opened, not per event)."""
    clock = FakeClock(auto_advance=True)
    kube.rate_limiter = TokenBucket(qps=1, burst=2, clock=clock)
    kube.get_template("missing")
    kube.list_templates()
    stream = kube.watch_templates(None, 1, 10)
    stream.close()
    assert kube.rate_limiter.accepted == 3 == kube.requests
    assert clock.waits == [pytest.approx(1.0)]  # the third request waited for its token


def test_the_agent_wires_the_flags_into_the_client(fake_api, kubeconfig):
    from plumber_agent.cluster import ClusterWiring
    from plumber_agent.ops import Metrics
    clock = FakeClock(auto_advance=True)
    wiring = ClusterWiring(node_name="n1", kubeconfig=kubeconfig, clock=clock, metrics=Metrics(),
                           on_change=lambda: None, api_qps=3, api_burst=7)
    limiter = wiring.client.rate_limiter
    assert (limiter.qps, limiter.burst) == (3, 7)
    unlimited = ClusterWiring(node_name="n1", kubeconfig=kubeconfig, clock=clock,
                              metrics=Metrics(), on_change=lambda: None, api_qps=0)
    assert unlimited.client.rate_limiter is None
    assert KubeClient.from_kubeconfig(kubeconfig).rate_limiter is None  # only the agent limits


def test_an_event_never_waits_for_a_token_it_is_dropped(fake_api, kube):
    """Events are best effort and created on the reconciler's thread: with the bucket empty
    the Event is dropped at once (nothing sent, nothing waited), other requests still queue."""
    from plumber_agent.kube.client import ClientThrottled
    clock = FakeClock(auto_advance=True)
    kube.rate_limiter = TokenBucket(qps=1, burst=1, clock=clock)
    kube.get_template("missing")  # the only token
    with pytest.raises(ClientThrottled):
        kube.create_event("default", {"metadata": {"name": "n1.1"}, "reason": "Applied"})
    assert clock.waits == [] and not fake_api.requests(method="POST")
    kube.get_template("missing")  # a plain request waits for its token
    assert clock.waits == [pytest.approx(1.0)]
