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


def test_the_pods_are_read_only_for_a_disruptive_plan_and_name_who_it_hits():
    """The preview, `plan --pods` and the drain read the pods off the pipeline's plan: once,
    only when an action is disruptive, a failed read said in the words and `pods_problem`."""
    from tests.unit.test_disruption import ENO2_VFS, host, pod, uses
    observed = host()
    reads: list[str] = []

    def pods():
        reads.append("list")
        return uses(pod("web", ENO2_VFS[1]), pod("other"))
    vlan = make_template("vlan", {"interfaceConfig": [{"name": "eno3", "vlan": [{"id": 7}]}]})
    quiet = plan_templates([vlan], observed, labels={}, records={}, pods=pods)
    assert quiet.plan.actions and reads == [] and quiet.pods_problem is None
    numvfs = make_template("vfs", {"sriovConfig": [{"pfName": "eno2", "numVfs": 8}]})
    planned = plan_templates([numvfs], observed, labels={}, records={}, pods=pods)
    [line] = [line for line in planned.lines() if "DISRUPTIVE" in line]
    assert reads == ["list"] and line.endswith("; pods apps/web"), line

    def down():
        raise ConnectionError("API server down")
    failed = plan_templates([numvfs], observed, labels={}, records={}, pods=down)
    assert failed.pods_problem == "API server down"
    assert any(line.endswith("; pods using them not read") for line in failed.lines())
