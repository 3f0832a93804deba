"""The fake clock moves only when told, and wakes waiters when their time comes."""
from __future__ import annotations

import threading

from plumber_agent.clock import FakeClock, RealClock


def test_advance_wakes_a_sleeper_only_at_its_deadline():
    clock = FakeClock()
    done = threading.Event()
    thread = threading.Thread(target=lambda: (clock.sleep(10), done.set()))
    thread.start()
    assert clock.wait_for_waiters(1)
    clock.advance(9)
    assert not done.wait(0.05)
    clock.advance(1)
    thread.join(10)
    assert done.is_set() and clock.monotonic() == 1010.0


def test_wait_returns_true_when_event_set_before_deadline():
    clock = FakeClock()
    event = threading.Event()
    result = []
    thread = threading.Thread(target=lambda: result.append(clock.wait(event, 100)))
    thread.start()
    assert clock.wait_for_waiters(1)
    event.set()
    thread.join(10)
    assert result == [True] and clock.monotonic() == 1000.0


def test_auto_advance_jumps_and_records():
    clock = FakeClock(auto_advance=True)
    assert clock.wait(threading.Event(), 30) is False
    clock.sleep(2)
    assert clock.monotonic() == 1032.0 and clock.waits == [30, 2]
    assert clock.time() - clock.monotonic() == 1_700_000_000.0 - 1000.0


def test_real_clock_wait_respects_a_set_event():
    event = threading.Event()
    event.set()
    assert RealClock().wait(event, 5) is True
    assert RealClock().wait(threading.Event(), 0) is False
