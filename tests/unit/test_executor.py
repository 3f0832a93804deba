"""The executor chokepoint and the Host facade, on the fake host at our driver seam."""
import errno
import logging
import subprocess
import sys

import pytest

from plumber_agent.errors import HostError
from plumber_agent.host import Host
from plumber_agent.host.executor import Executor
from plumber_agent.host.ledger import Ledger
from plumber_agent.models.actions import Action, Phase
from plumber_agent.planner import PlanIssue
from tests.unit.fakehost import API_SERVER_IP, Node, host_error, make_template, seed_host

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
    node.fake.fail("ensure_vlan", "eno1.10", host_error(errno.EOPNOTSUPP, "Unknown device type"))
    _, result = node.plan([TEMPLATE])
    report = node.host.execute(result)
    by_target = {(r.action.verb, r.action.target): r for r in report.results}
    failed = by_target[("ensure_vlan", "eno1.10")]
    assert (failed.status, failed.error_type) == ("failed", "HostError")
    assert failed.errno == errno.errorcode[errno.EOPNOTSUPP]  # 'ENOTSUP' on Linux (same value)
    assert "Unknown device type" in failed.error
    for skipped in (("set_up", "eno1.10"), ("add_address", "eno1.10"), ("ensure_port", "eno1.10")):
        assert by_target[skipped].status == "skipped"
        assert "link:eno1.10" in by_target[skipped].error
    for fine in (("ensure_vlan", "eno1.11"), ("add_address", "eno1.11"), ("ensure_bridge", "br10")):
        assert by_target[fine].status == "ok"
    assert not any(c[0] == "add_address" and c[1] == "eno1.10" for c in node.fake.calls)
    assert "vlan:eno1.10" not in node.ledger.records()  # nothing happened: nothing to undo
    failures = report.template_failures()
    assert failures["t"][0].startswith("ensure_vlan eno1.10: Unknown device type")
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
