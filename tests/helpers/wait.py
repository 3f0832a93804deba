"""The one bounded wait every test uses: poll a predicate until it holds, never a blind sleep.

Why one helper: a wait must say which exceptions mean "not yet". A host read racing the agent
(a bridge deleted between two reads) or an API object not written yet is "not yet"; a typo, a
crashed helper or a closed socket is a bug that must fail at once with its own message, not after
a 90 s timeout that hides it. So only the exception types in `retry_on` are retried (default:
AssertionError, which predicates raise to explain what they saw); anything else propagates
immediately. On timeout the WaitTimeout carries the last "not yet" reason (the last retried
exception, or the last falsy value).

    from tests.helpers.wait import wait_for
    wait_for(lambda: link_mtu(ns, "eth1") == 1400, timeout_s=10, what="eth1 MTU 1400")
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

POLL_INTERVAL_S = 0.05
# How fast a growing interval grows (when max_interval_s is given).
BACKOFF_FACTOR = 1.5


class WaitTimeout(AssertionError):
    """A bounded wait ran out; the message says what was waited for and what was last seen."""


def _reason(last: Any) -> str:
    if isinstance(last, BaseException):
        return f"{type(last).__name__}: {last}" if not isinstance(last, AssertionError) else str(last)
    return repr(last)


def wait_for(predicate: Callable[[], Any], *, timeout_s: float,
             interval_s: float = POLL_INTERVAL_S, max_interval_s: Optional[float] = None,
             retry_on: tuple[type[BaseException], ...] = (AssertionError,),
             what: str = "condition", on_timeout: Optional[Callable[[], str]] = None,
             clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> Any:
    """Call `predicate` until it returns something truthy, which is returned.

    A falsy value or an exception listed in `retry_on` means "not yet"; any other exception
    propagates at once. After `timeout_s` (the predicate is always tried at least once, and once
    more at the deadline) raise WaitTimeout naming `what` and the last "not yet" reason, plus
    `on_timeout()`'s text (e.g. a log tail). With `max_interval_s`, the interval grows by
    BACKOFF_FACTOR per try up to it. `clock` and `sleep` are seams for the helper's own tests.
    """
    deadline = clock() + timeout_s
    interval = interval_s
    last: Any = None
    while True:
        try:
            value = predicate()
        except retry_on as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        now = clock()
        if now >= deadline:
            extra = on_timeout() if on_timeout is not None else ""
            raise WaitTimeout(f"{what}: not reached within {timeout_s:g} s; last seen: "
                              f"{_reason(last)}" + (f"\n{extra}" if extra else ""))
        sleep(min(interval, max(deadline - now, 0.0)))
        if max_interval_s is not None:
            interval = min(interval * BACKOFF_FACTOR, max_interval_s)
