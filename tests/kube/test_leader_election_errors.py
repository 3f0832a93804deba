"""Leader-election failures named (fleet/leader.py over plumber_agent/apierrors.py): the real
LeaderElector and KubeClient against the fake API server, which answers each error as a real
one does (RBAC's 403 from `deny`, NamespaceLifecycle's 404 from `set_namespace_missing`,
`fail_next` for 5xx), and a stall-free step-down on the FakeClock.

Why: failures of the status-writer election appeared only in the log, at info level, and a
403 there looked like any other.
"""
from __future__ import annotations

import threading

from plumber_agent.apierrors import api_error_metric, metric_name
from plumber_agent.clock import FakeClock
from plumber_agent.fleet.leader import (CONDITION_TYPE, EVENT_REASON, FAILURES_METRIC,
                                        LEADER_LEASE, RENEW_DEADLINE_EXCEEDED, LeaderElector)
from plumber_agent.fleet.slots import RENEW_DEADLINE_FRACTION
from plumber_agent.ops import Metrics

NAMESPACE = "plumber-system"


class Events:
    """A reconciler.EventSink that keeps what it is given."""

    def __init__(self) -> None:
        self.emitted: list[dict] = []

    def emit(self, *, reason, message, warning=False, template=None, action="") -> None:
        assert action == "LeaderElection"
        self.emitted.append({"reason": reason, "message": message, "warning": warning})


def elector(kube, fake_api, clock, *, identity="node-a", **options) -> tuple:
    metrics, events, changes = Metrics(), Events(), []
    lease = lambda: fake_api.get("leases", LEADER_LEASE, NAMESPACE)  # noqa: E731
    made = LeaderElector(client=kube, namespace=NAMESPACE, identity=identity, clock=clock,
                         lead=lambda stop: stop.wait(), read=lease, metrics=metrics,
                         events=events, on_problem=lambda: changes.append(1), **options)
    return made, metrics, events, changes


def test_a_forbidden_lease_is_named_in_status_events_and_metrics(kube, fake_api):
    fake_api.deny("create", "leases", group="coordination.k8s.io", namespace=NAMESPACE)
    leader, metrics, events, changes = elector(kube, fake_api, FakeClock())
    assert not leader.try_acquire_or_renew()
    problem = leader.problem()
    assert problem is not None and problem.reason == "Forbidden"
    assert problem.message.startswith("cannot take part in the status writer's leader "
                                      "election: permission denied: create "
                                      f"leases.coordination.k8s.io {NAMESPACE}/{LEADER_LEASE}")
    # The server's own words (RBAC's), and where to fix it.
    assert ('User "system:serviceaccount:plumber-system:plumber-agent" cannot create resource '
            '"leases" in API group "coordination.k8s.io" in the namespace "plumber-system"'
            in problem.message)
    assert "Role plumber-agent in namespace 'plumber-system' (manifests/rbac/role.yaml)" \
        in problem.message
    assert problem.condition() == {"type": CONDITION_TYPE, "status": "True",
                                   "reason": "Forbidden", "message": problem.message}
    assert events.emitted == [{"reason": EVENT_REASON, "message": problem.message,
                               "warning": True}]
    assert metrics.get(metric_name(FAILURES_METRIC, reason="Forbidden")) == 1
    assert metrics.get(api_error_metric("leader_election", "Forbidden")) == 1
    assert changes == [1]
    # Failing the same way again: counted, but no new Event and no status change.
    assert not leader.try_acquire_or_renew()
    assert len(events.emitted) == 1 and changes == [1]
    assert metrics.get(metric_name(FAILURES_METRIC, reason="Forbidden")) == 2
    # RBAC fixed: elected, and the condition goes away.
    fake_api.allow_all()
    assert leader.try_acquire_or_renew()
    assert leader.problem() is None and changes == [1, 1]


def test_a_missing_namespace_is_named_with_the_fix(kube, fake_api):
    fake_api.set_namespace_missing(NAMESPACE)
    leader, metrics, _, _ = elector(kube, fake_api, FakeClock())
    assert not leader.try_acquire_or_renew()
    problem = leader.problem()
    assert problem.reason == "NamespaceNotFound"
    assert f"namespace '{NAMESPACE}' does not exist" in problem.message
    assert "manifests/namespace.yaml" in problem.message
    assert metrics.get(metric_name(FAILURES_METRIC, reason="NamespaceNotFound")) == 1


def test_a_server_error_is_named_only_once_it_lasts(kube, fake_api):
    """A 503 blip is retried and costs no status write; one that lasts the renew deadline is
    reported as ServerError."""
    clock = FakeClock()
    fake_api.fail_next(100, 503, method="POST", path_contains="/leases")
    leader, metrics, events, _ = elector(kube, fake_api, clock)
    assert not leader.try_acquire_or_renew()
    assert leader.problem() is None and not events.emitted
    assert metrics.get(metric_name(FAILURES_METRIC, reason="ServerError")) == 1
    clock.advance(leader.duration_s * RENEW_DEADLINE_FRACTION)
    assert not leader.try_acquire_or_renew()
    assert leader.problem().reason == "ServerError"
    assert "server error: the API server failed to create" in leader.problem().message
    assert [e["reason"] for e in events.emitted] == [EVENT_REASON]


def test_a_conflict_is_another_agent_winning_not_a_failure(kube, fake_api):
    first, _, _, _ = elector(kube, fake_api, FakeClock(), identity="node-b")
    assert first.try_acquire_or_renew()
    # node-a read nothing yet (its watch lags): its create is a real 409 AlreadyExists.
    leader, metrics, events, _ = elector(kube, fake_api, FakeClock())
    leader._read = lambda: None
    assert not leader.try_acquire_or_renew()
    assert leader.problem() is None and not events.emitted
    assert not [k for k in metrics._values if k.startswith(FAILURES_METRIC)]


def test_could_not_renew_is_named_when_the_holder_steps_down(kube, fake_api):
    clock = FakeClock()
    leader, metrics, events, _ = elector(kube, fake_api, clock)
    stop = threading.Event()
    assert leader.try_acquire_or_renew()
    leader._start_term()
    fake_api.deny("update", "leases", group="coordination.k8s.io", namespace=NAMESPACE)
    clock.advance(leader.duration_s / 2)
    assert not leader.try_acquire_or_renew()  # forbidden to renew
    clock.advance(leader.duration_s * RENEW_DEADLINE_FRACTION)
    assert not leader.confirmed()
    leader._stepped_down()
    stop.set()
    assert not leader.leading
    problem = leader.problem()
    assert problem.reason == RENEW_DEADLINE_EXCEEDED
    assert problem.message.startswith(
        f"stopped being the status writer: could not renew Lease {NAMESPACE}/{LEADER_LEASE} "
        "within the renew deadline (10 s of 15 s); cannot take part")
    assert "permission denied: update" in problem.message
    assert metrics.get(metric_name(FAILURES_METRIC, reason=RENEW_DEADLINE_EXCEEDED)) == 1
    assert [e["reason"] for e in events.emitted] == [EVENT_REASON, EVENT_REASON]
