"""The shared bounded wait (tests/helpers/wait.py): which exceptions mean "not yet", what a
timeout reports. Time is a fake clock advanced by the injected sleep: no wall time involved."""
from __future__ import annotations

import pytest

from tests.helpers.wait import WaitTimeout, wait_for


class FakeTime:
    """clock() and sleep() for wait_for: sleeping advances the clock, and is recorded."""

    def __init__(self) -> None:
        self.now_s = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds


def scripted(*outcomes):
    """A predicate returning (or raising) the given outcomes in order; counts its calls."""
    calls = []

    def predicate():
        outcome = outcomes[min(len(calls), len(outcomes) - 1)]
        calls.append(outcome)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    predicate.calls = calls
    return predicate


def test_returns_the_first_truthy_value():
    fake = FakeTime()
    predicate = scripted(None, 0, {"state": "Applied"})
    assert wait_for(predicate, timeout_s=10, clock=fake.clock, sleep=fake.sleep) == {"state": "Applied"}
    assert len(predicate.calls) == 3


def test_listed_exception_is_retried_until_the_predicate_holds():
    fake = FakeTime()
    predicate = scripted(AssertionError("bridge still there"), AssertionError("still"), True)
    assert wait_for(predicate, timeout_s=10, clock=fake.clock, sleep=fake.sleep) is True
    assert len(predicate.calls) == 3


def test_unexpected_exception_propagates_at_once_with_its_message():
    fake = FakeTime()
    predicate = scripted(AssertionError("not yet"),
                         RuntimeError("ovs-vsctl: no bridge named ovs-br01"), True)
    with pytest.raises(RuntimeError, match="no bridge named ovs-br01"):
        wait_for(predicate, timeout_s=10, clock=fake.clock, sleep=fake.sleep)
    assert len(predicate.calls) == 2  # not retried
    assert fake.now_s < 1000.0 + 10  # failed before the timeout


def test_retry_on_names_what_is_not_yet():
    fake = FakeTime()
    predicate = scripted(FileNotFoundError("virtfn3 vanished"), 7)
    assert wait_for(predicate, timeout_s=10, retry_on=(AssertionError, FileNotFoundError),
                    clock=fake.clock, sleep=fake.sleep) == 7
    # ...while an AssertionError is an unexpected error when not listed.
    with pytest.raises(AssertionError, match="boom"):
        wait_for(scripted(AssertionError("boom"), True), timeout_s=10, retry_on=(OSError,),
                 clock=fake.clock, sleep=fake.sleep)


def test_timeout_carries_the_last_reason_and_what():
    fake = FakeTime()
    predicate = scripted(AssertionError("first reason"), AssertionError("ovs[ovs-br01]: ['eno2'] -> None"))
    with pytest.raises(WaitTimeout) as excinfo:
        wait_for(predicate, timeout_s=5, what="node back to its baseline",
                 on_timeout=lambda: "agent log tail", clock=fake.clock, sleep=fake.sleep)
    message = str(excinfo.value)
    assert "node back to its baseline" in message
    assert "ovs[ovs-br01]: ['eno2'] -> None" in message and "first reason" not in message
    assert "agent log tail" in message
    assert isinstance(excinfo.value, AssertionError)  # a failed wait is a failed assertion


def test_timeout_reports_the_last_falsy_value():
    fake = FakeTime()
    with pytest.raises(WaitTimeout, match=r"last seen: \[\]"):
        wait_for(scripted([]), timeout_s=1, clock=fake.clock, sleep=fake.sleep)


def test_tries_once_more_at_the_deadline_and_never_sleeps_past_it():
    fake = FakeTime()
    predicate = scripted(None)
    with pytest.raises(WaitTimeout):
        wait_for(predicate, timeout_s=1.0, interval_s=0.3, clock=fake.clock, sleep=fake.sleep)
    assert fake.sleeps == pytest.approx([0.3, 0.3, 0.3, 0.1])
    assert len(predicate.calls) == 5  # at 0, 0.3, 0.6, 0.9 and at the deadline


def test_interval_grows_up_to_its_bound():
    fake = FakeTime()
    with pytest.raises(WaitTimeout):
        wait_for(scripted(False), timeout_s=100, interval_s=1.0, max_interval_s=2.0,
                 clock=fake.clock, sleep=fake.sleep)
    assert fake.sleeps[:4] == pytest.approx([1.0, 1.5, 2.0, 2.0])


def test_zero_timeout_still_tries_once():
    fake = FakeTime()
    assert wait_for(scripted("ok"), timeout_s=0, clock=fake.clock, sleep=fake.sleep) == "ok"
    assert fake.sleeps == []
