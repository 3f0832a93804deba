"""The one retry policy (plumber_agent/retry.py): full jitter within bounds at every step, the
cap included, and the server's Retry-After on 429 and 5xx only."""
from __future__ import annotations

import random

import pytest
from kubernetes.client.exceptions import ApiException

from plumber_agent.retry import Backoff, RetryAfterGate, retry_delay_s, server_wait_s

STEPS = 12  # 0.8 s doubling reaches the 30 s cap at step 7; five more steps sit at the cap


def _ceilings(initial_s: float, max_s: float, factor: float, steps: int) -> list[float]:
    out, ceiling = [], initial_s
    for _ in range(steps):
        out.append(min(ceiling, max_s))
        ceiling *= factor
    return out


@pytest.mark.parametrize("seed", range(20))
def test_full_jitter_stays_within_zero_and_the_ceiling_at_every_step(seed):
    backoff = Backoff(initial_s=0.8, max_s=30.0, factor=2.0, rng=random.Random(seed))
    for ceiling in _ceilings(0.8, 30.0, 2.0, STEPS):
        assert backoff.ceiling_s() == pytest.approx(ceiling)
        assert 0.0 <= backoff.next() <= ceiling


def test_delays_at_the_cap_are_spread_not_all_the_cap():
    """The defect this replaces: once at 30 s every agent of a fleet waited exactly 30 s."""
    backoff = Backoff(initial_s=0.8, max_s=30.0, factor=2.0, rng=random.Random(7))
    for _ in range(7):
        backoff.next()
    at_cap = [backoff.next() for _ in range(200)]
    assert backoff.ceiling_s() == 30.0
    assert max(at_cap) <= 30.0 and min(at_cap) < 3.0 and max(at_cap) > 27.0
    assert len(set(at_cap)) == len(at_cap)


def test_partial_jitter_keeps_a_floor_and_reset_starts_over():
    class Fixed(random.Random):
        def random(self):
            return 1.0

    backoff = Backoff(initial_s=1.0, max_s=4.0, factor=2.0, jitter=0.5, rng=Fixed())
    assert [backoff.next() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    backoff.reset()
    assert backoff.ceiling_s() == 1.0
    with pytest.raises(ValueError):
        Backoff(initial_s=1.0, max_s=4.0, factor=2.0, jitter=1.5)


def _error(status: int, retry_after: str | None = None) -> ApiException:
    exc = ApiException(status=status, reason="x")
    exc.headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return exc


@pytest.mark.parametrize("status, header, expected", [
    (429, "7", 7.0), (503, "3", 3.0), (500, "2", 2.0), (504, "1", 1.0),
    (429, None, None),
    (429, "Wed, 21 Oct 2015 07:28:00 GMT", None),  # client-go reads integer seconds only
    (409, "5", None), (404, "5", None),            # checkWait: only 429 and 5xx wait
])
def test_server_wait_is_retry_after_on_429_and_5xx_only(status, header, expected):
    assert server_wait_s(_error(status, header)) == expected


def test_the_longer_of_backoff_and_retry_after_wins():
    assert retry_delay_s(1.5, _error(429, "7")) == 7.0
    assert retry_delay_s(9.0, _error(429, "7")) == 9.0
    assert retry_delay_s(1.5, ConnectionRefusedError()) == 1.5


def test_the_gate_holds_until_the_server_said():
    gate = RetryAfterGate()
    assert gate.remaining_s(100.0) == 0.0
    assert gate.note(_error(409, "5"), 100.0) is None and gate.remaining_s(100.0) == 0.0
    assert gate.note(_error(429, "5"), 100.0) == 5.0
    assert gate.remaining_s(102.0) == 3.0 and gate.remaining_s(105.0) == 0.0
