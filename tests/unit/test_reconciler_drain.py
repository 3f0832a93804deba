"""The reconciler with a drain (fleet/drain.py) on the fake host: a disruptive numVfs change
waits for the drain; a budget that does not allow it leaves the change out, reports the pod
and the budget, and uncordons; `drain: none` changes the host while the pods run."""
from __future__ import annotations

from plumber_agent.clock import FakeClock
from plumber_agent.fleet.drain import DRAIN_FILE, DRAIN_RETRY_S, DrainGate, Drainer, PassPods
from plumber_agent.ops import Metrics
from plumber_agent.reconciler import Reconciler
from tests.support.fakehost import ListSource, Node, make_template, seed_host
from tests.unit.test_drain import NodeApi
from tests.unit.test_reconciler import RecordingEvents
from tests.unit.test_disruption import pod

ENO2 = "0000:01:00.1"


def vfs(count: int, drain: str = "pods", timeout_s: int = 3):
    return make_template("vfs", {"sriovConfig": [{"pfName": "eno2", "numVfs": count}],
                                 "rollout": {"drain": drain, "drainTimeoutSeconds": timeout_s}},
                         generation=count)


def setup(tmp_path, specs_path=None):
    fake = seed_host()
    node = Node(fake, tmp_path)
    clock = FakeClock(auto_advance=True)
    api = NodeApi([])
    metrics, events = Metrics(), RecordingEvents()
    drain = DrainGate(drainer=Drainer(api=api, state_path=str(tmp_path / DRAIN_FILE), node="n1",
                                      clock=clock), pods=PassPods(api), clock=clock,
                      metrics=metrics, events=events, specs_path=specs_path)
    source = ListSource([vfs(2)])
    published: list = []
    rec = Reconciler(host=node.host, source=source, publish=published.append, metrics=metrics,
                     clock=clock, drain=drain, events=events)
    assert rec.sync().ok  # 0 -> 2 VFs: nothing to drain
    assert api.calls == []  # nothing disruptive: not even a pod list
    vf_addrs = sorted(vf.pci_addr for vf in node.host.discover().pfs[ENO2].vfs)
    assert len(vf_addrs) == 2
    api.pods = {"web": pod("web", vf_addrs[0]), "other": pod("other")}
    return fake, node, api, source, rec, published, clock


def state(published):
    [entry] = [t for t in published[-1]["templates"] if t["name"] == "vfs"]
    return entry["state"], entry.get("message") or ""


def test_a_blocked_drain_leaves_the_change_out_then_a_free_budget_lets_it_through(tmp_path):
    fake, node, api, source, rec, published, clock = setup(tmp_path)
    api.protected = {"web"}
    source.items = [vfs(4)]
    outcome = rec.sync()
    assert not outcome.ok
    assert node.host.discover().pfs[ENO2].num_vfs == 2  # the change was not made
    got, message = state(published)
    assert got == "Failed"
    assert "timed out after 3 s, the disruptive change was not made" in message
    assert "pod apps/web:" in message and "PodDisruptionBudget apps/web-pdb" in message
    assert not api.unschedulable and api.calls.count("uncordon") == 1
    assert outcome.retry_after_s is not None and outcome.retry_after_s <= DRAIN_RETRY_S
    api.protected = set()
    clock.advance(DRAIN_RETRY_S)
    assert rec.sync().ok
    assert node.host.discover().pfs[ENO2].num_vfs == 4
    assert "web" not in api.pods and "other" in api.pods  # `pods`: only the hit pod
    assert state(published)[0] == "Applied" and not api.unschedulable
    assert [r for r in rec.events.reasons if r[0].startswith("Drain")] == [
        ("DrainFailed", "vfs"), ("Drained", "vfs")]
    assert (rec.metrics.get("plumber_drains_total"), rec.metrics.get("plumber_drain_failures_total"),
            rec.metrics.get("plumber_evictions_total")) == (2, 1, 1)


def test_drain_none_changes_the_host_while_the_pods_run(tmp_path):
    fake, node, api, source, rec, published, clock = setup(tmp_path)
    api.protected = {"web"}
    source.items = [vfs(4, drain="none")]
    assert rec.sync().ok
    assert node.host.discover().pfs[ENO2].num_vfs == 4
    assert "web" in api.pods and "cordon" not in api.calls


def test_node_policy_evicts_every_evictable_pod(tmp_path):
    fake, node, api, source, rec, published, clock = setup(tmp_path)
    source.items = [vfs(4, drain="node")]
    assert rec.sync().ok
    assert api.pods == {} and not api.unschedulable


def test_cleanup_of_a_disruptive_change_drains_too(tmp_path):
    """The template deleted: its numVfs is put back (2 -> 0 destroys the VFs): the default
    policy (`pods`) applies to a template no longer there."""
    fake, node, api, source, rec, published, clock = setup(tmp_path)
    source.items = []
    assert rec.sync().ok
    assert node.host.discover().pfs[ENO2].num_vfs == 0
    assert "web" not in api.pods and api.calls.count("cordon") == 1 and not api.unschedulable


def test_the_rollout_preview_names_the_vfs_and_pods_a_change_disrupts(tmp_path):
    from plumber_agent.fleet.gate import ApprovedSpecs, RolloutGate
    from plumber_agent.models.pods import pod_use
    from tests.unit.test_fleet_gate import MemorySlots
    fake, node, api, source, rec, published, clock = setup(tmp_path)
    approved = ApprovedSpecs(None)
    approved.approve(vfs(2))
    gate = RolloutGate(approved=approved, slots=MemorySlots("n1", {}),
                       pods=lambda: [pod_use(p) for p in api.pods.values()])
    preview = make_template("vfs", {"sriovConfig": [{"pfName": "eno2", "numVfs": 4}],
                                    "rollout": {"dryRun": True}}, generation=5)
    result = gate.select([preview], {}, node.host.discover(), node.ledger.records(), None)
    [line] = result.verdicts["vfs"].planned
    assert "set_num_vfs 0000:01:00.1 destroys_vfs=True num_vfs=4" in line
    assert "DISRUPTIVE: numVfs 2 -> 4 destroys the 2 VF(s) of PF 0000:01:00.1" in line
    assert line.endswith("pods apps/web")
    assert "cordon" not in api.calls  # a preview drains nothing


def test_the_cleanup_of_a_deleted_template_follows_the_policy_it_had(tmp_path):
    """A template with `drain: none` deleted: its numVfs undo is made while the pods run, also
    by an agent restarted in between (the settings are kept in drain-specs.json)."""
    specs = str(tmp_path / "drain-specs.json")
    fake, node, api, source, rec, published, clock = setup(tmp_path, specs_path=specs)
    source.items = [vfs(2, drain="none")]  # a rollout-only edit: no host change
    assert rec.sync().ok
    again = DrainGate(drainer=rec.drain.drainer, pods=PassPods(api), clock=clock,
                      specs_path=specs)  # a restart
    rec.drain = again
    source.items = []
    assert rec.sync().ok
    assert node.host.discover().pfs[ENO2].num_vfs == 0
    assert "web" in api.pods and "cordon" not in api.calls
