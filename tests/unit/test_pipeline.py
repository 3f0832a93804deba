"""The one merge->plan pipeline (pipeline.py): the reconciler, the rollout preview and the
simulated node plan alike, and a fenced apply's half is held back on request."""
from __future__ import annotations

from plumber_agent.fleet.gate import ApprovedSpecs, RolloutGate
from plumber_agent.models.actions import LedgerOp
from plumber_agent.pipeline import plan_templates
from tests.support.fakehost import API_SERVER_IP, Node, make_template, seed_host

VLAN = {"interfaceConfig": [{"name": "eno1", "mtu": 9000, "vlan": [{"id": 100}]}]}


def test_reconciler_preview_and_simulated_node_plan_alike(tmp_path):
    node = Node(seed_host(), tmp_path, api_ip=API_SERVER_IP)
    template = make_template("vlan", VLAN)
    _, planned = node.plan([template])
    observed = node.host.discover()
    api_path = node.host.api_server_path(API_SERVER_IP)
    preview = plan_templates([template], observed, labels={}, records=node.ledger.records(),
                             api_path=api_path).lines()
    assert preview == [a.describe() for a in planned.actions] and preview
    gate = RolloutGate(approved=ApprovedSpecs(None), slots=None)
    assert gate.select([template], {}, observed, node.ledger.records(), api_path).effective \
        == [template]
    rounds, final = node.reconcile([template])
    assert [a.describe() for a in rounds[0][0].actions] == preview
    assert final.actions == []


def test_kept_partial_holds_back_only_the_undo_of_the_kept_template(tmp_path):
    node = Node(seed_host(), tmp_path)
    node.reconcile([make_template("vlan", VLAN)])
    observed, records = node.host.discover(), node.ledger.records()
    undo = plan_templates([], observed, labels={}, records=records).plan.actions
    assert undo and all(a.ledger_op == LedgerOp.RELEASE for a in undo)
    kept = plan_templates([], observed, labels={}, records=records,
                          kept_partial=frozenset({"vlan"})).plan.actions
    assert kept == [a for a in undo if a.verb == "forget"]
    other = plan_templates([], observed, labels={}, records=records,
                           kept_partial=frozenset({"other"})).plan.actions
    assert other == undo
