"""crd_guard.CrdDeletionGuard: which template objects a pass may act on when templates vanish.
The CRD read is the guard's own seam (`read_crd`); the agent's real one goes to the fake API
server in tests/e2e/test_upgrade_uninstall.py."""
from __future__ import annotations

from plumber_agent.crd_guard import CrdDeletionGuard

CRD = "hostnetworktemplates.plumber.k8s.pf9.io"
RECHECK_S = 10.0


class ApiAnswer(Exception):
    def __init__(self, status):
        super().__init__(f"HTTP {status}")
        self.status = status


class Crd:
    """What GET of the CRD answers, switchable: present, terminating, gone (None), an error."""

    def __init__(self):
        self.answer = {"metadata": {"name": CRD}}
        self.reads = 0

    def __call__(self):
        self.reads += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def guard_with(crd, now):
    return CrdDeletionGuard(read_crd=crd, monotonic=lambda: now[0], crd_name=CRD,
                            recheck_s=RECHECK_S)


TWO = {"a": {"metadata": {"name": "a"}}, "b": {"metadata": {"name": "b"}}}


def test_a_users_delete_is_acted_on_at_once_and_costs_one_read():
    crd, now = Crd(), [0.0]
    guard = guard_with(crd, now)
    assert guard.view(TWO) == TWO and crd.reads == 0  # nothing vanished: no read
    assert guard.view({"a": TWO["a"]}) == {"a": TWO["a"]}
    assert crd.reads == 1 and not guard.holding


def test_a_crd_deletion_holds_until_the_crd_is_back():
    crd, now = Crd(), [0.0]
    guard = guard_with(crd, now)
    guard.view(TWO)
    crd.answer = {"metadata": {"name": CRD, "deletionTimestamp": "2026-12-06T23:00:00Z"}}
    assert guard.view({}) == TWO and guard.holding  # terminating: the templates of before
    crd.answer = None  # gone (404)
    now[0] = RECHECK_S + 1
    assert guard.view({}) == TWO and crd.reads == 2
    assert guard.view({}) == TWO and crd.reads == 2  # not again before recheck_s
    crd.answer = {"metadata": {"name": CRD}}  # reinstalled
    now[0] = 2 * RECHECK_S + 2
    assert guard.view({"b": TWO["b"]}) == {"b": TWO["b"]} and not guard.holding


def test_an_unreadable_crd_holds_and_a_forbidden_one_does_not():
    crd, now = Crd(), [0.0]
    guard = guard_with(crd, now)
    guard.view(TWO)
    crd.answer = ApiAnswer(503)
    assert guard.view({}) == TWO and guard.holding
    crd, now = Crd(), [0.0]
    guard = guard_with(crd, now)
    guard.view(TWO)
    crd.answer = ApiAnswer(403)  # a ClusterRole from before the check: as before it
    assert guard.view({}) == {} and not guard.holding
