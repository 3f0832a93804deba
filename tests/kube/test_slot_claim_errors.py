"""Every slot claim error named (fleet/slots.py `lease_write_problem`): the real LeaseSlots and
KubeClient over the fake API server, each error class made by the server (a missing namespace
as the NamespaceLifecycle admission plugin answers it, a real 409) or by its fault hook
(`fail_next`: 403, 422, 503), and a timeout at our own seam (the client).

Why: a claim that failed with 404 (no namespace) or 403 (RBAC) read "another node took it
first", forever, with no warning; only a 409 means that.
"""
from __future__ import annotations

import logging

import pytest

from plumber_agent.apierrors import api_error_metric
from plumber_agent.clock import FakeClock
from plumber_agent.fleet import rollout
from plumber_agent.fleet.aggregate import aggregate
from plumber_agent.fleet.results import RESULTS_ANNOTATION, compact_hostnetwork, encode_summary
from plumber_agent.fleet.rollout import CLAIM_ERROR_PREFIX, decide, template_spec_hash
from plumber_agent.fleet.slots import CLAIM_WARNING_EVERY_S, LeaseSlots, lease_write_problem
from plumber_agent.models.parse import template_from_object
from plumber_agent.models.status import TemplateState
from plumber_agent.ops import Metrics
from tests.support.fleetsim import template_object

NAMESPACE = "plumber-system"
TEMPLATE = template_from_object(template_object(2))


def make_slots(client, clock, node: str = "node-a", metrics=None) -> LeaseSlots:
    return LeaseSlots(client=client, namespace=NAMESPACE, node=node, node_uid=lambda: "",
                      store=dict, read_slots=list, clock=clock, wake=lambda _s: None,
                      duration_s=4, metrics=metrics)


def first_claim(slots: LeaseSlots) -> bool:
    answer = decide(node=slots.node, template=TEMPLATE.name, template_uid=TEMPLATE.uid,
                    spec_hash=template_spec_hash(TEMPLATE), limit=1, slots=[])
    assert answer.admit and answer.claim == rollout.slot_name(TEMPLATE.name, 0)
    return slots.claim(TEMPLATE, answer)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name == "plumber_agent.fleet.slots"]


def test_a_missing_namespace_is_named_with_the_fix(kube, fake_api, caplog):
    fake_api.set_namespace_missing(NAMESPACE)
    slots = make_slots(kube, FakeClock())
    with caplog.at_level(logging.WARNING):
        assert not first_claim(slots)
    problem = slots.claim_problem(TEMPLATE)
    assert problem.startswith(CLAIM_ERROR_PREFIX)
    assert f"namespace '{NAMESPACE}' does not exist" in problem
    assert 'namespaces "plumber-system" not found' in problem  # the server's own words
    assert "manifests/namespace.yaml" in problem and "POD_NAMESPACE" in problem
    assert [w for w in warnings_of(caplog) if "does not exist" in w]
    fake_api.set_namespace_missing(NAMESPACE, False)
    assert first_claim(slots) and slots.claim_problem(TEMPLATE) is None  # fixed: cleared


@pytest.mark.parametrize("code, words", [
    (403, ["permission denied: create leases.coordination.k8s.io plumber-system/",
           "forbidden: injected failure", "Role plumber-agent in namespace 'plumber-system'",
           "manifests/rbac/role.yaml", "holderIdentity",
           "manifests/admission/stale_slot_policy.yaml"]),
    (422, ["refused leases.coordination.k8s.io plumber-system/", "as invalid",
           "injected failure"]),
    (503, ["the API server failed to create", "503", "etcd"]),
    (500, ["the API server failed to create", "Internal error occurred"]),
])
def test_each_status_gives_what_is_wrong_and_how_to_fix_it(kube, fake_api, caplog, code, words):
    fake_api.fail_next(1, code, method="POST", path_contains="/leases")
    metrics = Metrics()
    slots = make_slots(kube, FakeClock(), metrics=metrics)
    with caplog.at_level(logging.WARNING):
        assert not first_claim(slots)
    problem = slots.claim_problem(TEMPLATE)
    for word in words:
        assert word in problem, (word, problem)
    assert "another node" not in problem
    assert len(warnings_of(caplog)) == 1
    reason = {403: "Forbidden", 422: "Invalid", 503: "ServerError", 500: "ServerError"}[code]
    assert metrics.get(api_error_metric("rollout_slot", reason)) == 1


def test_only_a_409_means_another_node_took_it(kube, fake_api, caplog):
    other = make_slots(kube, FakeClock(), node="node-b")
    assert first_claim(other)
    slots = make_slots(kube, FakeClock())
    with caplog.at_level(logging.WARNING):
        assert not first_claim(slots)  # a real 409 AlreadyExists
    assert slots.claim_problem(TEMPLATE) is None
    assert not warnings_of(caplog)


def test_a_stuck_node_warns_once_per_interval_not_per_pass(kube, fake_api, caplog):
    fake_api.set_namespace_missing(NAMESPACE)
    clock = FakeClock()
    slots = make_slots(kube, clock)
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            assert not first_claim(slots)
            clock.advance(CLAIM_WARNING_EVERY_S / 10)
        assert len(warnings_of(caplog)) == 1
        clock.advance(CLAIM_WARNING_EVERY_S)
        assert not first_claim(slots)
    assert len(warnings_of(caplog)) == 2


class ReadTimeoutError(Exception):
    """Named like urllib3's: what the kubernetes client raises when no answer came in time."""


class TimingOutClient:
    def create_lease(self, namespace, body):
        raise ReadTimeoutError("HTTPSConnectionPool(host='10.0.0.1', port=443): Read timed out.")


def test_a_timeout_is_named():
    slots = make_slots(TimingOutClient(), FakeClock())
    assert not first_claim(slots)
    problem = slots.claim_problem(TEMPLATE)
    assert "no answer from the API server in time to create leases.coordination.k8s.io plumber-system/" in problem
    assert "Read timed out" in problem


def test_a_404_of_an_update_or_delete_is_a_gone_lease_not_an_error():
    class Gone(Exception):
        status = 404
    assert lease_write_problem(Gone(), verb="update", namespace=NAMESPACE, name="x") is None
    assert lease_write_problem(Gone(), verb="delete", namespace=NAMESPACE, name="x") is None


def test_the_writer_sets_degraded_when_no_node_can_claim():
    nodes = [{"metadata": {"name": f"n{i}"}} for i in range(3)]
    problem = CLAIM_ERROR_PREFIX + "namespace 'plumber-system' does not exist (...)"
    entry = {"name": TEMPLATE.name, "state": "Waiting", "message": problem,
             "observedGeneration": TEMPLATE.generation}
    def reported(name: str, templates: list) -> dict:
        """The writer's view: the summary annotation the node's agent writes, parsed."""
        return compact_hostnetwork({"metadata": {"name": name, "annotations": {
            RESULTS_ANNOTATION: encode_summary(templates)}}})
    waiting = reported("n0", [entry])
    other = reported("n1", [{**entry, "message": "waiting for the status writer to offer a slot"}])
    result = aggregate(TEMPLATE, nodes=nodes, hostnetworks={"n0": waiting, "n1": other},
                       slots=[], previous=None, now="2026-01-01T00:00:00Z")
    degraded = next(c for c in result.status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "SlotClaimsFailing"
    assert "n0" in degraded["message"] and "does not exist" in degraded["message"]
    # A node applying: claims work somewhere, so not Degraded for that.
    applying = rollout.Slot(name=rollout.slot_name(TEMPLATE.name, 0), holder="n2",
                            template=TEMPLATE.name, template_uid=TEMPLATE.uid,
                            generation=TEMPLATE.generation, phase=TemplateState.APPLYING,
                            spec_hash=template_spec_hash(TEMPLATE), duration_s=30)
    result = aggregate(TEMPLATE, nodes=nodes, hostnetworks={"n0": waiting, "n1": other},
                       slots=[applying], previous=None, now="2026-01-01T00:00:00Z")
    degraded = next(c for c in result.status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "False"
