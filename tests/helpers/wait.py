"""Bounded polling for conditions another thread or the kernel makes true."""
from __future__ import annotations

import time

WAIT_BOUND_S = 10.0


def wait_until(predicate, timeout_s: float = WAIT_BOUND_S) -> bool:
    """Poll `predicate` with a bound (never a blind sleep)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())
