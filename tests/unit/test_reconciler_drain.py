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


# -- a drain takes a rollout slot, whatever it is for ---------------------------------------------

FLEET_UID = "uid-vfs"


def fleet_template():
    from plumber_agent.models.parse import template_from_object
    return template_from_object({
        "metadata": {"name": "vfs", "generation": 1, "uid": FLEET_UID,
                     "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"sriovConfig": [{"pfName": "eno2", "numVfs": 2, "vfDriver": "vfio-pci"}],
                 "rollout": {"maxUnavailable": 1, "drainTimeoutSeconds": 3}}})


class FleetNode:
    """One node of a fleet whose rollout slots (tests/unit/test_fleet_gate.py MemorySlots, the
    real `rollout.decide`) other nodes share; the template applied here under a slot."""

    def __init__(self, tmp_path, shared: dict):
        from plumber_agent.fleet.gate import ApprovedSpecs, RolloutGate
        from tests.unit.test_fleet_gate import MemorySlots
        self.fake = seed_host()
        self.node = Node(self.fake, tmp_path)
        self.clock = FakeClock(auto_advance=True)
        self.api = NodeApi([])
        self.shared = shared
        drain = DrainGate(drainer=Drainer(api=self.api, state_path=str(tmp_path / DRAIN_FILE),
                                          node="n1", clock=self.clock),
                          pods=PassPods(self.api), clock=self.clock,
                          specs_path=str(tmp_path / "drain-specs.json"))
        self.gate = RolloutGate(approved=ApprovedSpecs(str(tmp_path / "rollout.json")),
                                slots=MemorySlots("n1", shared))
        self.source = ListSource([fleet_template()])
        self.published: list = []
        self.rec = Reconciler(host=self.node.host, source=self.source,
                              publish=self.published.append, metrics=Metrics(), clock=self.clock,
                              drain=drain, rollout=self.gate, events=RecordingEvents())
        assert self.rec.sync().ok  # applied under a slot (0 -> 2 VFs: nothing to drain)
        assert shared == {}  # ... and the slot released
        pf = self.fake.pfs[ENO2]
        assert [pf.vf_drivers.get(i) for i in range(2)] == ["vfio-pci", "vfio-pci"]
        self.vf0 = pf.vf_pci(0)
        self.api.pods = {"web": pod("web", self.vf0)}

    def other_node_holds(self, template) -> str:
        from plumber_agent.fleet.rollout import Slot, slot_name, template_spec_hash
        from plumber_agent.models.status import TemplateState
        name = slot_name(template.name, 0)
        self.shared[name] = Slot(name=name, holder="n2", template=template.name,
                                 template_uid=template.uid, generation=template.generation,
                                 phase=TemplateState.APPLYING,
                                 spec_hash=template_spec_hash(template))
        return name

    def entry(self, name: str):
        return next(t for t in self.published[-1]["templates"] if t["name"] == name)


def test_a_drift_repair_that_drains_waits_for_a_rollout_slot(tmp_path):
    """Someone rebinds a VF a pod uses: putting the driver back is disruptive, so it drains;
    with the template's only slot held by another node it waits (Waiting, nothing cordoned or
    changed), and once the slot is free it drains under it, repairs, and lets it go."""
    fleet = FleetNode(tmp_path, {})
    fleet.fake.pfs[ENO2].vf_drivers[0] = "iavf"  # behind the agent's back
    held = fleet.other_node_holds(fleet_template())
    fleet.clock.advance(DRAIN_RETRY_S)
    fleet.rec.sync()
    assert fleet.fake.pfs[ENO2].vf_drivers[0] == "iavf"  # not repaired without a slot
    assert "cordon" not in fleet.api.calls and "web" in fleet.api.pods
    entry = fleet.entry("vfs")
    assert entry["state"] == "Waiting", entry
    assert "waiting for a rollout slot to drain the node" in entry["message"]
    assert fleet.shared[held].holder == "n2"  # another node's slot is left alone

    del fleet.shared[held]  # n2 is done
    fleet.clock.advance(DRAIN_RETRY_S)
    assert fleet.rec.sync().ok
    assert fleet.fake.pfs[ENO2].vf_drivers[0] == "vfio-pci"
    assert fleet.api.calls.count("cordon") == 1 and "web" not in fleet.api.pods
    assert not fleet.api.unschedulable and fleet.shared == {}  # uncordoned, slot released
    assert fleet.entry("vfs")["state"] == "Applied"


def test_the_undo_of_a_deleted_template_drains_under_a_slot_of_the_template_it_was(tmp_path):
    """Deleting the template undoes numVfs (2 -> 0 destroys the pod's VF) on every node it
    selected: each node drains for it only under a slot of the deleted template (its stand-in
    from drain-specs.json: uid and limit), so the deletion does not drain the fleet at once."""
    from plumber_agent.fleet.drain import DrainSpec
    fleet = FleetNode(tmp_path, {})
    fleet.source.items = []
    stand_in = DrainSpec(uid=FLEET_UID, max_unavailable=1).stand_in("vfs")
    held = fleet.other_node_holds(stand_in)  # n2 is undoing it now
    fleet.rec.sync()
    assert fleet.fake.pfs[ENO2].num_vfs == 2 and "cordon" not in fleet.api.calls
    cleanup = fleet.entry("(cleanup)")
    assert "deleted template vfs: waiting for a rollout slot to drain the node" in \
        cleanup["message"], cleanup

    del fleet.shared[held]
    fleet.clock.advance(DRAIN_RETRY_S)
    assert fleet.rec.sync().ok
    assert fleet.fake.pfs[ENO2].num_vfs == 0 and "web" not in fleet.api.pods
    assert not fleet.api.unschedulable and fleet.shared == {}


def test_a_deleted_templates_slots_are_kept_while_its_undo_may_drain_then_forgotten(tmp_path):
    """Each pass tells the slots which template uids to keep (slots.py `forget_absent`): the
    templates there are, and a deleted one while the host still has something of it (its undo
    drains under a slot of its stand-in); once that is undone, nothing of it."""
    fleet = FleetNode(tmp_path, {})
    slots = fleet.gate.slots
    assert slots.kept == {FLEET_UID}
    fleet.source.items = []
    fleet.rec.sync()  # the undo of the deleted template: numVfs 2 -> 0, drained
    assert slots.kept == {FLEET_UID}
    assert fleet.fake.pfs[ENO2].num_vfs == 0
    fleet.rec.sync()
    assert slots.kept == set()
