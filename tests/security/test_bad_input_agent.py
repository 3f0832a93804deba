"""Every row of the bad-input table (docs/pitfalls.md), end to end through the real agent in
local mode: `plumber-agent run --templates DIR --once --netns NS --state-dir D --sysfs-root R`.

Local mode has no CRD schema in front of it, so here the AGENT must refuse every row.

Invariant per row: the run exits 1; the HostNetwork status reports the template Invalid (or,
for rows only the host can judge -- numVfs above sriov_totalvfs, a driver that is not loaded, a
gateway on no link, an unknown dev -- Failed with a clear message); an Invalid message names the
path of the bad field; and the host is untouched: `ip -j` links/addresses/routes of the node's
namespace and every file of its sysfs tree are exactly as before, the ledger records nothing.
A control row (a valid template) must change the host, so these tests can fail.
"""
from __future__ import annotations


import pytest

from plumber_agent.host.ledger import read_records
from tests.support.agent_proc import (host_snapshot, read_hostnetwork, run_once, template_states,
                                     tree_snapshot, write_templates)

pytestmark = pytest.mark.privileged


def iface(**fields):
    return {"interfaceConfig": [dict({"name": "eth1"}, **fields)]}


NAMES = ["", ".", "..", "x" * 16, "a/b", "../../etc", "eth0:1", "eth 0", "eth0\n", "eth\0",
         "-eth0", "--help", "eth0;reboot", "еth1"]  # last: Cyrillic 'е'

# (row id, spec, expected state, path fragment the message must contain)
ROWS = []
for i, name in enumerate(NAMES):
    ROWS.append((f"ifname-{i}", {"interfaceConfig": [{"name": name, "mtu": 1400}]}, "Invalid",
                 "spec.interfaceConfig[0].name"))
    ROWS.append((f"pfname-{i}", {"sriovConfig": [{"pfName": name, "numVfs": 2}]}, "Invalid",
                 "spec.sriovConfig[0].pfName"))
for i, pci in enumerate(["../", "0000:3b:00.0/../..", "0000:01:00.1\n", "3b:00.0", "0000:01:00.8",
                         ""]):
    ROWS.append((f"pci-{i}", {"sriovConfig": [{"pciAddr": pci, "numVfs": 2}]}, "Invalid",
                 "spec.sriovConfig[0].pciAddr"))
for i, hexid in enumerate(["0x8086", "80866", "zzzz", ""]):
    ROWS.append((f"vendor-{i}", {"sriovConfig": [{"vendorId": hexid, "deviceId": "1572",
                                                  "numVfs": 2}]}, "Invalid",
                 "spec.sriovConfig[0].vendorId"))
    ROWS.append((f"device-{i}", {"sriovConfig": [{"vendorId": "8086", "deviceId": hexid,
                                                  "numVfs": 2}]}, "Invalid",
                 "spec.sriovConfig[0].deviceId"))
for i, num in enumerate([-1, 65536, "010", "0x10", 5.0, True]):
    ROWS.append((f"numvfs-{i}", {"sriovConfig": [{"pfName": "eno2", "numVfs": num}]}, "Invalid",
                 "spec.sriovConfig[0].numVfs"))
ROWS.append(("numvfs-above-total", {"sriovConfig": [{"pfName": "eno2", "numVfs": 4000}]},
             "Failed", "totalvfs"))
for i, drv in enumerate(["../vfio", "vfio-pci\n", "x" * 4096]):
    ROWS.append((f"vfdriver-{i}", {"sriovConfig": [{"pfName": "eno2", "vfDriver": drv}]},
                 "Invalid", "spec.sriovConfig[0].vfDriver"))
ROWS.append(("vfdriver-unknown", {"sriovConfig": [{"pfName": "eno2", "vfDriver": "nosuchdrv"}]},
             "Failed", "nosuchdrv"))
for i, vid in enumerate([0, 4095, 4096, -1, "100"]):
    ROWS.append((f"vlan-{i}", iface(vlan=[{"id": vid}]), "Invalid",
                 "spec.interfaceConfig[0].vlan[0].id"))
for i, mtu in enumerate([0, 67, 65536, "1500", 1500.5]):
    ROWS.append((f"mtu-{i}", iface(mtu=mtu), "Invalid", "spec.interfaceConfig[0].mtu"))
ROWS.append(("mtu-ipv6-below-1280", iface(mtu=1000, ipv6={"address": ["2001:db8::1/64"]}),
             "Invalid", "spec.interfaceConfig[0].mtu"))
ROWS.append(("mtu-vlan-above-parent", {"interfaceConfig": [
    {"name": "eth1", "mtu": 1500, "vlan": [{"id": 7, "name": "v7"}]},
    {"name": "v7", "mtu": 9000}]}, "Invalid", "spec.interfaceConfig[1].mtu"))
for i, addr in enumerate(["10.0.0.1/33", "::1/129", "010.0.0.1/24", "fe80::1%eth0/64",
                          " 10.0.0.1/24", "10.0.0.1"]):
    fam = "ipv6" if ":" in addr else "ipv4"
    ROWS.append((f"addr-{i}", iface(**{fam: {"address": [addr]}}), "Invalid",
                 f"spec.interfaceConfig[0].{fam}.address[0]"))
ROWS.append(("route-unknown-dev", {"routes": {"ipv4": [{"dst": "10.99.0.0/16",
                                                         "dev": "nosuch0"}]}},
             "Failed", "nosuch0"))
ROWS.append(("route-gw-on-no-link", {"routes": {"ipv4": [{"dst": "10.99.0.0/16",
                                                           "gw": "203.0.113.1"}]}},
             "Failed", "10.99.0.0/16"))
for i, name in enumerate(["br0,br1", "a=b", "--if-exists", '"br0"', "x" * 16]):
    ROWS.append((f"ovs-bridge-{i}", {"ovsConfig": [{"bridgeName": name}]}, "Invalid",
                 "spec.ovsConfig[0].bridgeName"))
    if "," in name:
        continue  # "br0,br1" as nodeInterface is a valid two-member bond, not a bad input
    ROWS.append((f"ovs-port-{i}", {"ovsConfig": [{"bridgeName": "br-ok",
                                                  "nodeInterface": name}]}, "Invalid",
                 "spec.ovsConfig[0].nodeInterface"))
ROWS.append(("too-many-interfaces", {"interfaceConfig": [{"name": f"e{i}"} for i in range(10000)]},
             "Invalid", "spec.interfaceConfig"))


@pytest.mark.parametrize("row,spec,state,path", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_row_is_refused_and_host_untouched(tmp_path, node_ns, static_sysfs, row, spec,
                                                     state, path):
    write_templates(tmp_path / "templates", {"bad": spec})
    out = tmp_path / "hostnetwork.yaml"
    before_host, before_tree = host_snapshot(node_ns), tree_snapshot(static_sysfs)
    proc = run_once(netns=node_ns, state_dir=tmp_path / "state", sysfs_root=static_sysfs,
                    templates=tmp_path / "templates", output=out)
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, log
    assert proc.returncode == 1, log
    states = template_states(read_hostnetwork(out))
    assert "bad" in states, f"no status for the template: {log}"
    assert states["bad"]["state"] == state, states["bad"]
    assert path in (states["bad"].get("message") or ""), states["bad"]
    assert host_snapshot(node_ns) == before_host
    assert tree_snapshot(static_sysfs) == before_tree
    assert read_records(tmp_path / "state") == {}


def test_control_valid_template_changes_the_host(tmp_path, node_ns, static_sysfs):
    """The harness can see a change: a valid template applies (exit 0) and the host differs."""
    write_templates(tmp_path / "templates", {"good": iface(mtu=1400,
                                                           ipv4={"address": ["10.5.0.1/24"]})})
    out = tmp_path / "hostnetwork.yaml"
    before = host_snapshot(node_ns)
    proc = run_once(netns=node_ns, state_dir=tmp_path / "state", sysfs_root=static_sysfs,
                    templates=tmp_path / "templates", output=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert template_states(read_hostnetwork(out))["good"]["state"] == "Applied"
    assert host_snapshot(node_ns) != before


@pytest.mark.parametrize("doc", [
    {"kind": "HostNetworkTemplate", "metadata": [1], "spec": {}},
    {"kind": "HostNetworkTemplate", "metadata": "x", "spec": {}},
    {"kind": "HostNetworkTemplate", "metadata": {"name": "s"}, "spec": {},
     "status": {"templates": "set by a user"}},
    {"kind": "HostNetworkTemplate", "metadata": {"name": ["odd"]}, "spec": []},
], ids=["metadata-list", "metadata-string", "user-status", "name-list-spec-list"])
def test_odd_api_objects_never_crash_the_agent(tmp_path, node_ns, static_sysfs, doc):
    """'API objects' row: odd documents are tolerated or reported, never a crash (traceback)."""
    import yaml
    tdir = tmp_path / "templates"
    tdir.mkdir()
    (tdir / "odd.yaml").write_text(yaml.safe_dump({"apiVersion": "plumber.k8s.pf9.io/v1", **doc}))
    before = host_snapshot(node_ns)
    proc = run_once(netns=node_ns, state_dir=tmp_path / "state", sysfs_root=static_sysfs,
                    templates=tdir, output=tmp_path / "hn.yaml")
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode in (0, 1)
    if doc["kind"] and isinstance(doc["metadata"], dict) and isinstance(doc["metadata"]["name"], str):
        assert read_hostnetwork(tmp_path / "hn.yaml") is not None  # tolerated (status ignored)
    else:  # metadata the API server would refuse: local mode refuses the read (issue 20)
        assert proc.returncode == 1 and f"{tdir / 'odd.yaml'}: metadata" in proc.stderr, proc.stderr
    assert host_snapshot(node_ns) == before
