"""The executor chokepoint and the Host facade, on the fake host at our driver seam."""
import errno
import logging
import os
import subprocess
import sys

import pytest

from plumber_agent.errors import HostError, HostTimeout, NotAvailable
from plumber_agent.host import Host
from plumber_agent.host.executor import INTENT_GROUP_ACTIONS, Executor
from plumber_agent.host.ledger import Ledger
from plumber_agent.models.actions import Action, Phase
from plumber_agent.models.observed import ObservedBridge, ObservedOvsInterface, ObservedOvsPort
from plumber_agent.models.plan import PlanIssue
from tests.support.fakehost import (API_SERVER_IP, CrashAt, Node, SimulatedCrash, host_error,
                                 make_template, seed_host)

TEMPLATE = make_template("t", {
    "interfaceConfig": [{"name": "eno1", "mtu": 9000,
                         "vlan": [{"id": 10}, {"id": 11}]},
                        {"name": "eno1.10", "ipv4": {"address": ["10.10.0.1/24"]}},
                        {"name": "eno1.11", "ipv4": {"address": ["10.11.0.1/24"]}}],
    "ovsConfig": [{"bridgeName": "br10", "nodeInterface": "eno1.10"}]})


@pytest.fixture
def node(tmp_path):
    return Node(seed_host(), tmp_path / "state", api_ip=API_SERVER_IP)


def test_actions_run_in_plan_order_through_the_drivers(node):
    _, result = node.plan([TEMPLATE])
    report = node.host.execute(result)
    assert report.ok
    assert node.fake.calls == [
        ("set_mtu", "eno1", 9000),
        ("ensure_vlan", "eno1.10", "eno1", 10),
        ("ensure_vlan", "eno1.11", "eno1", 11),
        ("set_up", "eno1.10"), ("set_up", "eno1.11"),
        ("add_address", "eno1.10", "10.10.0.1/24"),
        ("add_address", "eno1.11", "10.11.0.1/24"),
        ("ensure_bridge", "br10", None),
        ("ensure_port", "br10", "eno1.10", ("eno1.10",)),
    ]
    assert [r.status for r in report.results] == ["ok"] * 9
    assert sorted(node.ledger.records()) == [
        "addr:eno1.10:10.10.0.1/24", "addr:eno1.11:10.11.0.1/24", "bridge:br10", "mtu:eno1",
        "port:br10:eno1.10", "vlan:eno1.10", "vlan:eno1.11"]


def test_dry_run_calls_nothing_and_records_nothing(node, caplog):
    _, result = node.plan([TEMPLATE])
    dry = Host(node.fake.netlink, node.fake.sysfs, node.fake.ovs, node.ledger, dry_run=True)
    before = node.fake.snapshot()
    with caplog.at_level(logging.INFO):
        report = dry.execute(result)
    assert node.fake.calls == [] and node.fake.snapshot() == before
    assert node.ledger.records() == {}
    assert {r.status for r in report.results} == {"dry-run"}
    assert "dry-run  link_create        ensure_vlan eno1.10 parent=eno1 vlan_id=10" in caplog.text
    assert node.plan([TEMPLATE])[1].actions == result.actions  # still all to do


def test_a_failed_creation_skips_its_dependants_but_not_independent_actions(node):
    # What the real Netlink driver raises when the kernel refuses the create (EOPNOTSUPP).
    node.fake.fail("ensure_vlan", "eno1.10", NotAvailable(
        "cannot create VLAN eno1.10: Unknown device type (the kernel said EOPNOTSUPP)"))
    _, result = node.plan([TEMPLATE])
    report = node.host.execute(result)
    by_target = {(r.action.verb, r.action.target): r for r in report.results}
    failed = by_target[("ensure_vlan", "eno1.10")]
    assert (failed.status, failed.error_type) == ("failed", "NotAvailable")
    assert "Unknown device type" in failed.error
    for skipped in (("set_up", "eno1.10"), ("add_address", "eno1.10"), ("ensure_port", "eno1.10")):
        assert by_target[skipped].status == "skipped"
        assert "link:eno1.10" in by_target[skipped].error
    for fine in (("ensure_vlan", "eno1.11"), ("add_address", "eno1.11"), ("ensure_bridge", "br10")):
        assert by_target[fine].status == "ok"
    assert not any(c[0] == "add_address" and c[1] == "eno1.10" for c in node.fake.calls)
    assert "vlan:eno1.10" not in node.ledger.records()  # nothing happened: intent abandoned
    assert node.ledger.pending_keys() == []
    failures = report.template_failures()
    assert failures["t"][0].startswith("ensure_vlan eno1.10: cannot create VLAN eno1.10")
    assert len(failures["t"]) == 4
    # The next round retries exactly what is missing.
    _, again = node.plan([TEMPLATE])
    assert [(a.verb, a.target) for a in again.actions] == [
        ("ensure_vlan", "eno1.10"), ("set_up", "eno1.10"), ("add_address", "eno1.10"),
        ("ensure_port", "eno1.10")]


def test_a_failed_delete_keeps_the_ledger_record_for_the_next_round(node):
    node.reconcile([TEMPLATE])
    node.fake.fail("delete_bridge", "br10", HostError("ovs-vsctl: timed out"))
    _, result = node.plan([])
    report = node.host.execute(result)
    assert [r.action.target for r in report.failed()] == ["br10"]
    assert "bridge:br10" in node.ledger.records()
    assert "vlan:eno1.10" not in node.ledger.records()
    _, again = node.plan([])
    assert [(a.verb, a.target) for a in again.actions] == [("delete_bridge", "br10")]


def test_real_host_errors_propagate_to_the_templates(node):
    node.fake.pfs["0000:01:00.0"].driver = None  # no PF driver: the kernel says ENOENT
    t = make_template("sriov", {"sriovConfig": [{"pfName": "eno1", "numVfs": 2}]})
    _, result = node.plan([t])
    report = node.host.execute(result)
    (failed,) = report.failed()
    assert failed.errno == "ENOENT" and failed.action.templates == ["sriov"]
    assert report.template_failures() == {"sriov": [
        "set_num_vfs 0000:01:00.0: PF 0000:01:00.0 has no driver (ENOENT)"]}
    assert node.ledger.records() == {}


def test_driver_enabling_fewer_vfs_is_a_failure_but_is_recorded(node):
    node.fake.pfs["0000:01:00.0"].enable_limit = 2
    t = make_template("sriov", {"sriovConfig": [{"pfName": "eno1", "numVfs": 4}]})
    _, result = node.plan([t])
    report = node.host.execute(result)
    (failed,) = report.failed()
    assert failed.error == "PF 0000:01:00.0: asked for 4 VFs, the driver enabled 2"
    assert node.ledger.get("numvfs:0000:01:00.0")["prior"] == 0  # the host did change
    node.fake.pfs["0000:01:00.0"].enable_limit = None
    node.reconcile([])
    assert node.fake.pfs["0000:01:00.0"].num_vfs == 0


def test_unloaded_vf_driver_is_not_available(node):
    node.fake.available_drivers.discard("vfio-pci")
    t = make_template("sriov", {"sriovConfig": [{"pfName": "eno1", "numVfs": 1, "vfDriver": "vfio-pci"}]})
    rounds, _ = node.reconcile([t])
    (failed,) = rounds[1][1].failed()
    assert failed.error_type == "NotAvailable"
    assert failed.error == "VF driver vfio-pci is not loaded on this node"


def test_skipping_is_transitive_and_a_failed_numvfs_skips_vf_binds(node):
    ex = Executor(node.fake.netlink, node.fake.sysfs, node.fake.ovs, node.ledger)
    node.fake.fail("set_num_vfs", "0000:01:00.0", HostError("write timed out"))
    actions = [
        Action(Phase.SRIOV_NUMVFS, "set_num_vfs", "0000:01:00.0", {"num_vfs": 2}, templates=["a"]),
        Action(Phase.SRIOV_VF_DRIVER, "bind_vf_driver", "0000:02:02.0",
               {"driver": "vfio-pci", "pf": "0000:01:00.0"}, templates=["a"]),
        Action(Phase.LINK_CREATE, "ensure_vlan", "v1", {"parent": "nope", "vlan_id": 5}),
        Action(Phase.LINK_CREATE, "ensure_vlan", "v2", {"parent": "v1", "vlan_id": 6}),
        Action(Phase.LINK_MTU, "set_mtu", "v2", {"mtu": 1400}),
        Action(Phase.LINK_MTU, "set_mtu", "eno2", {"mtu": 1400}),
    ]
    report = ex.execute(actions, refusals=[PlanIssue("bond0", "not removing ...", ["b"])])
    assert [r.status for r in report.results] == ["failed", "skipped", "failed", "skipped",
                                                  "skipped", "ok"]
    assert report.results[2].errno == "ENODEV"
    assert report.template_failures()["b"] == ["not removing ..."]
    assert set(report.template_failures()) == {"a", "b"}


def test_unknown_verb_is_a_reported_failure_not_a_crash(node):
    ex = Executor(node.fake.netlink, node.fake.sysfs, node.fake.ovs, node.ledger)
    (result,) = ex.execute([Action(Phase.LINK_UP, "reboot", "eno1")]).results
    assert result.status == "failed" and "unknown action verb 'reboot'" in result.error


def test_ledger_write_failure_is_reported(tmp_path):
    fake = seed_host()
    ledger = Ledger(tmp_path)  # lock not acquired: claims are refused
    ex = Executor(fake.netlink, fake.sysfs, fake.ovs, ledger)
    action = Action(Phase.LINK_MTU, "set_mtu", "eno1", {"mtu": 9000}, ledger_key="mtu:eno1",
                    ledger_op="claim", ledger_prior=1500, templates=["t"])
    (result,) = ex.execute([action]).results
    assert result.status == "failed" and "lock is not held" in result.error


# ---- the Host facade -----------------------------------------------------------------------

def test_discover_combines_the_drivers(node):
    observed = node.host.discover()
    assert observed.links["eno2"].pci_addr == "0000:01:00.1"  # annotated by sysfs
    assert observed.pfs["0000:05:00.0"].ifname is None
    assert observed.bridges == {} and observed.ovs_error is None


def test_discover_without_ovs_reports_why(node):
    node.fake.ovs_available = False
    observed = node.host.discover()
    assert observed.bridges is None
    assert observed.ovs_error == "cannot connect to the OVS database (fake: OVS is down)"


def test_api_server_path(node):
    path = node.host.api_server_path(API_SERVER_IP)
    assert (path.ip, path.dev, path.src, path.gw) == (API_SERVER_IP, "bond0", "145.40.65.95",
                                                      "145.40.65.94")
    assert node.host.api_server_path(None) is None


def test_importing_the_host_layer_does_not_import_the_real_drivers():
    code = ("import sys, plumber_agent.host, plumber_agent.planner; "
            "print(sorted(m for m in ('pyroute2', 'pyudev', 'kubernetes') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_vfs_not_appearing_in_time_is_a_failure_but_the_claim_is_kept(node, monkeypatch):
    from plumber_agent.errors import HostTimeout

    def never(pci, num_vfs, timeout_s):
        raise HostTimeout(f"PF {pci}: 0 of {num_vfs} VFs after {timeout_s} s")
    monkeypatch.setattr(node.fake.sysfs, "wait_for_vfs", never)  # our own fake, not a library
    t = make_template("sriov", {"sriovConfig": [{"pfName": "eno1", "numVfs": 2}]})
    _, result = node.plan([t])
    (failed,) = node.host.execute(result).failed()
    assert failed.error_type == "HostTimeout"
    assert node.ledger.get("numvfs:0000:01:00.0")["prior"] == 0


def test_report_iterates_over_its_results(node):
    _, result = node.plan([TEMPLATE])
    report = node.host.execute(result)
    assert list(report) == report.results and len(report.results) == 9


# ---- write-ahead intents: a crash between the host change and the ledger -----------------------
#
# The agent is "SIGKILLed" (SimulatedCrash, a BaseException nothing catches) at its Nth
# mutating driver call, before the call reaches the host or right after it changed the host and
# before the executor could confirm the claim. A fresh agent on the same host and state dir must
# then undo EXACTLY what was done once the template is gone, and delete nothing that pre-existed.

CRASH_TEMPLATE = make_template("crash", {
    "sriovConfig": [{"pfName": "eno2", "numVfs": 2, "vfDriver": "vfio-pci"},
                    {"pfName": "enp3s0f0", "vfs": [{"id": 1, "trust": True}]}],
    "interfaceConfig": [
        {"name": "eno1", "mtu": 9000, "vlan": [{"id": 10}]},
        {"name": "eno1.10", "ipv4": {"address": ["10.10.0.1/24"]}},
        {"name": "enp3s0f1", "ipv4": {"address": ["192.168.60.2/24"]}}],
    "routes": {"ipv4": [{"dst": "10.99.0.0/16", "gw": "10.10.0.254"},
                        {"dst": "10.98.0.0/16", "gw": "172.16.0.254"}]},
    "ovsConfig": [{"bridgeName": "br10", "nodeInterface": "eno1.10"}]})


def crash_host():
    """The seed node plus what the template replaces: an address the final-state rule removes
    and a route it re-points, and VFs someone made on enp3s0f0 (every ledger key kind: numvfs,
    vfdriver, vfattr, mtu, vlan, addr created and removed, route created and replaced, bridge,
    port)."""
    h = seed_host()
    h.sysfs.set_num_vfs("0000:03:00.0", 2)
    h._add_address(h.links["enp3s0f1"], "192.168.50.2/24")
    h._add_address(h.links["enp3s0f0"], "172.16.0.2/24")
    h.add_route(dst="10.98.0.0/16", gw="172.16.0.1", dev="enp3s0f0")
    return h


def comparable(snapshot):
    """A route we put back is ours now (proto 'static'), as with `ip route`: ignore proto."""
    return dict(snapshot, routes=sorted(r[:-1] for r in snapshot["routes"]))


def converge(node, templates):
    rounds, final = node.reconcile(templates)
    for _, report in rounds:
        assert report.ok, [(r.action.describe(), r.error) for r in report.failed()]
    assert final.actions == [], [a.describe() for a in final.actions]


def crashed_node(tmp_path, n, *, after):
    fake = crash_host()
    initial = comparable(fake.snapshot())
    crash = CrashAt(n, after=after)
    node = Node(fake, tmp_path / "state", api_ip=API_SERVER_IP, crash=crash)
    with pytest.raises(SimulatedCrash):
        node.reconcile([CRASH_TEMPLATE])
    return node.restart(), initial, crash.fired


def reference_run(tmp_path):
    """An uninterrupted run: how many mutating driver calls, and the converged host."""
    counter = CrashAt(0, after=True)  # never fires
    node = Node(crash_host(), tmp_path / "ref-state", api_ip=API_SERVER_IP, crash=counter)
    converge(node, [CRASH_TEMPLATE])
    return counter.count, comparable(node.fake.snapshot()), sorted(node.ledger.records())


def test_the_crash_template_exercises_every_ledger_kind(tmp_path):
    calls, _, keys = reference_run(tmp_path)
    assert {k.split(":", 1)[0] for k in keys} == {
        "numvfs", "vfdriver", "vfattr", "mtu", "vlan", "addr", "route", "bridge", "port"}
    assert calls >= 12


@pytest.mark.parametrize("after", [True, False], ids=["after-change", "before-change"])
def test_crash_at_every_host_call_then_template_removed_undoes_exactly(tmp_path, after):
    calls, _, ref_keys = reference_run(tmp_path)
    seen = []
    for n in range(1, calls + 1):
        node, initial, fired = crashed_node(tmp_path / f"n{n}", n, after=after)
        seen.append(fired[0])
        pending = node.ledger.pending_keys()
        # the interrupted action's intent, and those written ahead with it for actions that
        # had not started (executor.py INTENT_GROUP_ACTIONS); settled below from the host
        assert set(pending) <= set(ref_keys) and len(pending) <= INTENT_GROUP_ACTIONS, pending
        converge(node, [])
        assert comparable(node.fake.snapshot()) == initial, f"crash at call {n}: {fired}"
        assert node.ledger.records() == {}, f"crash at call {n}: {fired}"
    assert {"ensure_vlan", "ensure_bridge", "ensure_port", "add_address", "delete_address",
            "add_route", "set_mtu", "set_num_vfs", "bind_vf_driver"} <= set(seen)


@pytest.mark.parametrize("after", [True, False], ids=["after-change", "before-change"])
def test_crash_at_every_host_call_then_restart_converges_and_cleans_up(tmp_path, after):
    calls, reference, ref_keys = reference_run(tmp_path)
    for n in range(1, calls + 1):
        node, initial, fired = crashed_node(tmp_path / f"n{n}", n, after=after)
        converge(node, [CRASH_TEMPLATE])
        assert comparable(node.fake.snapshot()) == reference, f"crash at call {n}: {fired}"
        assert sorted(node.ledger.records()) == ref_keys
        converge(node, [])
        assert comparable(node.fake.snapshot()) == initial, f"crash at call {n}: {fired}"
        assert node.ledger.records() == {}


def test_an_intent_is_on_disk_before_the_host_changes(tmp_path):
    """At the moment the driver is called the pending record is already fsync'd: a fresh Ledger
    on the state dir (what a restarted agent reads) sees it."""
    seen = {}
    node = Node(seed_host(), tmp_path / "state")

    class Spy:
        def __getattr__(self, name):
            return getattr(node.fake.netlink, name)

        def ensure_vlan(self, ifname, parent, vlan_id):
            seen["record"] = Ledger(str(tmp_path / "state")).get(f"vlan:{ifname}")
            return node.fake.netlink.ensure_vlan(ifname, parent, vlan_id)

    host = Host(Spy(), node.fake.sysfs, node.fake.ovs, node.ledger)
    t = make_template("t", {"interfaceConfig": [{"name": "eno1", "vlan": [{"id": 7}]}]})
    _, result = node.plan([t])
    assert host.execute(result).ok
    assert seen["record"] == {"prior": None, "created": True, "templates": ["t"], "pending": True,
                              "since": seen["record"]["since"],
                              "value": {"parent": "eno1", "vlan_id": 7}}
    assert "pending" not in node.ledger.get("vlan:eno1.7")  # confirmed afterwards


def test_the_intents_of_a_group_of_actions_are_on_disk_before_the_first_host_change(tmp_path):
    """One fsync for up to INTENT_GROUP_ACTIONS intents (bench B11): when the first VLAN is
    created, a restarted agent would already find every VLAN's pending record; the last ones
    are confirmed afterwards, and a fenced action's intent is dropped again."""
    seen = []
    node = Node(seed_host(), tmp_path / "state")

    class Spy:
        def __getattr__(self, name):
            return getattr(node.fake.netlink, name)

        def ensure_vlan(self, ifname, parent, vlan_id):
            if not seen:
                seen.extend(Ledger(str(tmp_path / "state")).pending_keys())
            return node.fake.netlink.ensure_vlan(ifname, parent, vlan_id)

    host = Host(Spy(), node.fake.sysfs, node.fake.ovs, node.ledger)
    t = make_template("t", {"interfaceConfig": [
        {"name": "eno1", "vlan": [{"id": i} for i in range(10, 15)]}]})
    _, result = node.plan([t])
    keys = [a.ledger_key for a in result.actions if a.ledger_key]
    assert len(keys) == 5 and len(keys) <= INTENT_GROUP_ACTIONS
    fenced = "vlan:eno1.14"
    report = host.execute(result, may_start=lambda a: "no slot" if a.ledger_key == fenced
                          else None)
    assert sorted(seen) == sorted(keys)  # all five on disk before the first change
    assert [r.status for r in report.results if r.action.ledger_key == fenced] == ["skipped"]
    assert node.ledger.pending_keys() == []
    assert sorted(node.ledger.records()) == sorted(set(keys) - {fenced})
    assert "eno1.14" not in node.fake.links


@pytest.mark.parametrize("replan_first", [True, False], ids=["replan-then-remove", "remove"])
@pytest.mark.parametrize("verb", ["ensure_vlan", "add_route", "ensure_bridge", "ensure_port"])
def test_a_crash_before_creating_does_not_delete_a_foreign_object_of_the_same_name(
        tmp_path, verb, replan_first):
    """Crash right before ensure_vlan/add_route/ensure_bridge/ensure_port (the intent is pending,
    created=True); then someone else creates a link, route, bridge or port with that name but
    not what we were creating. Neither a re-plan with the template nor cleanup deletes it."""
    t = make_template("t", {
        "interfaceConfig": [{"name": "eno1", "vlan": [{"id": 10}]}],
        "routes": {"ipv4": [{"dst": "10.70.0.0/16", "gw": "145.40.65.94"}]},
        "ovsConfig": [{"bridgeName": "br10", "nodeInterface": "eno2"}]})
    fake = seed_host()
    if verb == "ensure_port":  # on a bridge someone else made (deleting ours takes its ports)
        fake.bridges["br10"] = ObservedBridge(name="br10", datapath_type="", external_ids={})
    probe = Node(fake, tmp_path / "probe")
    actions = probe.plan([t])[1].actions
    n = 1 + [a.verb for a in actions].index(verb)  # one driver call each
    probe.ledger.release_lock()
    node = Node(fake, tmp_path / "state", crash=CrashAt(n, after=False))
    with pytest.raises(SimulatedCrash):
        node.host.execute(node.plan([t])[1])
    node = node.restart()
    pending = set(node.ledger.pending_keys())
    # the interrupted action's intent, and those written ahead with it (INTENT_GROUP_ACTIONS)
    # for actions that had not started; none of an action that finished
    assert actions[n - 1].ledger_key in pending
    assert pending <= {a.ledger_key for a in actions[n - 1:]}
    # Someone else, meanwhile:
    if verb == "ensure_vlan":
        fake.add_link("eno1.10", kind="vlan", parent="eno1", vlan_id=99)
    elif verb == "add_route":
        fake.add_route(dst="10.70.0.0/16", dev="eno2", proto="boot")
    elif verb == "ensure_bridge":
        fake.bridges["br10"] = ObservedBridge(name="br10", datapath_type="", external_ids={})
    else:
        fake.bridges["br10"].ports.append(ObservedOvsPort(
            name="eno2", interfaces=[ObservedOvsInterface(name="eno2", ofport=9)]))
    foreign = comparable(fake.snapshot())
    if replan_first:
        node.reconcile([t])  # may fail on the taken name; must not delete it
    node.reconcile([])
    after = comparable(fake.snapshot())
    if verb == "ensure_vlan":
        assert after["links"]["eno1.10"] == foreign["links"]["eno1.10"]
    elif verb == "add_route":
        assert (4, "10.70.0.0/16", "", "eno2", "", 0) in after["routes"]
    elif verb == "ensure_bridge":
        assert after["bridges"] == {"br10": ("", ())}
    else:
        assert after["bridges"]["br10"][1] == (("eno2", ("eno2",), None, None, (None,)),)
    assert node.ledger.records() == {}


def test_a_failure_that_may_have_changed_the_host_keeps_the_intent_pending(node):
    """ensure_vlan in the real driver is create-then-up: a HostError may come after the create.
    The fresh intent stays (pending); the re-plan retries, and cleanup then does the right
    thing whether or not the VLAN exists."""
    t = make_template("t", {"interfaceConfig": [{"name": "eno1", "vlan": [{"id": 10}]}]})
    node.fake.fail("ensure_vlan", "eno1.10", HostError("setting eno1.10 up: EPERM"))
    _, result = node.plan([t])
    assert not node.host.execute(result).ok
    assert node.ledger.pending_keys() == ["vlan:eno1.10"]
    converge(node, [t])
    assert node.ledger.pending_keys() == []  # confirmed by the successful retry
    converge(node, [])
    assert "eno1.10" not in node.fake.links and node.ledger.records() == {}


def test_a_timeout_keeps_the_intent_and_a_refusal_drops_it(node):
    node.fake.fail("set_mtu", "eno1", HostTimeout("setting MTU 9000 on eno1: not visible"))
    node.fake.fail("add_address", "eno2", host_error(errno.EINVAL, "bad address"))
    t = make_template("t", {"interfaceConfig": [
        {"name": "eno1", "mtu": 9000}, {"name": "eno2", "ipv4": {"address": ["10.2.2.2/24"]}}]})
    _, result = node.plan([t])
    assert len(node.host.execute(result).failed()) == 2
    assert node.ledger.pending_keys() == ["mtu:eno1"]
    assert node.ledger.get("mtu:eno1")["prior"] == 1500
    assert "addr:eno2:10.2.2.2/24" not in node.ledger.records()
    converge(node, [])  # MTU unchanged: the pending record is just forgotten
    assert node.ledger.records() == {} and node.fake.links["eno1"].mtu == 1500


def test_an_intent_that_cannot_be_written_stops_the_action(tmp_path, monkeypatch):
    node = Node(seed_host(), tmp_path / "state")

    def broken_fsync(fd):
        raise OSError(errno.EIO, "Input/output error")
    t = make_template("t", {"interfaceConfig": [{"name": "eno1", "vlan": [{"id": 10}]}]})
    _, result = node.plan([t])
    monkeypatch.setattr("os.fsync", broken_fsync)
    report = node.host.execute(result)
    monkeypatch.undo()
    assert [r.status for r in report.results] == ["failed", "skipped"]
    assert report.results[0].errno == "EIO"
    assert node.fake.calls == [] and node.ledger.records() == {}


def test_dry_run_writes_no_intent(node, tmp_path):
    _, result = node.plan([CRASH_TEMPLATE])
    dry = Host(node.fake.netlink, node.fake.sysfs, node.fake.ovs, node.ledger, dry_run=True)
    before = sorted(os.listdir(node.state_dir))
    dry.execute(result)
    assert sorted(os.listdir(node.state_dir)) == before and node.ledger.records() == {}


def test_restoring_a_vf_driver_leaves_no_driver_override_behind(tmp_path):
    """Binding goes through driver_override, which stays set (it keeps vfDriver across probes);
    when the template stops asking for vfDriver the VF is bound back to the driver found before
    and the override is cleared: the kernel's own matching had chosen that driver."""
    h = seed_host()
    node = Node(h, tmp_path / "state")
    with_driver = make_template("vfs", {"sriovConfig": [{"pfName": "eno2", "numVfs": 2,
                                                         "vfDriver": "vfio-pci"}]})
    converge(node, [with_driver])
    pf = h.pfs["0000:01:00.1"]
    vfs = [pf.vf_pci(i) for i in range(2)]
    assert [pf.vf_drivers.get(i) for i in range(2)] == ["vfio-pci", "vfio-pci"]
    assert {vf: h.driver_overrides.get(vf) for vf in vfs} == dict.fromkeys(vfs, "vfio-pci")

    converge(node, [make_template("vfs", {"sriovConfig": [{"pfName": "eno2", "numVfs": 2}]})])
    assert [pf.vf_drivers.get(i) for i in range(2)] == ["iavf", "iavf"]
    assert {vf: h.driver_overrides.get(vf) for vf in vfs} == dict.fromkeys(vfs)
    assert sorted(c[1] for c in h.calls if c[0] == "clear_driver_override") == sorted(vfs)
