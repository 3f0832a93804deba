"""The collector policy (bench B2: no 100 ms full collections in the middle of a reconcile)."""
from __future__ import annotations

import gc
import weakref

import pytest

from plumber_agent.heap import CollectorPolicy


class Node:
    """An object that can sit in a reference cycle and be watched with a weak reference."""


@pytest.fixture(autouse=True)
def unfrozen():
    yield
    gc.unfreeze()


def test_survivors_of_a_pass_are_left_out_of_automatic_collections():
    gc.unfreeze()
    now = [0.0]
    policy = CollectorPolicy(every_s=600, monotonic=lambda: now[0])
    before = gc.get_freeze_count()
    policy.after_pass()
    assert gc.get_freeze_count() > before
    assert policy.full_collections == 0


def test_frozen_cycles_are_still_reclaimed_by_the_periodic_full_collection():
    gc.unfreeze()
    now = [0.0]
    policy = CollectorPolicy(every_s=600, monotonic=lambda: now[0])
    cycle = Node()
    cycle.self = cycle
    watch = weakref.ref(cycle)
    policy.after_pass()       # the cycle is alive now and gets frozen
    del cycle                 # garbage from now on, but frozen: a plain collection skips it
    gc.collect()
    assert watch() is not None
    now[0] = 601.0
    policy.after_pass()       # the periodic full collection unfreezes and reclaims it
    assert watch() is None
    assert policy.full_collections == 1


def test_plain_garbage_is_freed_at_once_even_when_frozen():
    gc.unfreeze()
    policy = CollectorPolicy(every_s=600, monotonic=lambda: 0.0)
    plain = Node()
    watch = weakref.ref(plain)
    policy.after_pass()
    del plain  # no cycle: reference counting frees it, frozen or not
    assert watch() is None


def test_memory_freed_by_a_pass_is_handed_back_to_the_kernel():
    gc.unfreeze()
    policy = CollectorPolicy(every_s=600, monotonic=lambda: 0.0)
    assert policy._malloc_trim is not None, "glibc's malloc_trim not found on this Debian host"
    calls = []
    policy._malloc_trim = calls.append  # our own seam: the libc function it was given
    policy.after_pass()
    assert calls == [0]
