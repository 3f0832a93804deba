"""Stable NIC names, end to end with the real command in local mode on a throw-away namespace:
a template names its NIC by altname; the kernel renames the NIC between passes; the next pass
applies the edited template to the NIC under its new name and the status says which name the
reference resolved to; a NIC the reference no longer matches fails the template and undoes
nothing; deleting the template undoes everything on the NIC under its new name (the ledger's
records followed it)."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.e2e import test_mistakes as mistakes
from tests.helpers.netns import ip, ip_json, veth_pair

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]

TEMPLATE = """apiVersion: plumber.k8s.pf9.io/v1
kind: HostNetworkTemplate
metadata:
  name: by-altname
spec:
  interfaceConfig:
    - name: altname:uplink0
      mtu: {mtu}
      ipv4:
        address: [192.0.2.10/24]
  routes:
    ipv4:
      - dst: 198.51.100.0/24
        gw: 192.0.2.1
        dev: altname:uplink0
"""


class Node(mistakes.Node):
    """The mistakes table's node: the real command in local mode on the namespace."""

    def run(self, *extra: str) -> subprocess.CompletedProcess:
        return self.agent("run", "--templates", str(self.templates), *extra)

    def link(self, ifname: str) -> dict:
        (row,) = ip_json(self.ns, "addr", "show", "dev", ifname)
        return {"mtu": row["mtu"], "ipv4": sorted(f"{a['local']}/{a['prefixlen']}"
                                                   for a in row.get("addr_info") or []
                                                   if a["family"] == "inet")}

    def route_devs(self) -> list[str]:
        return [r.get("dev") for r in ip_json(self.ns, "route", "show", "198.51.100.0/24")]


def template_status(output: str) -> dict:
    """The template's entry of the HostNetwork status the command prints."""
    for doc in yaml.safe_load_all(output):
        status = (doc or {}).get("status") if isinstance(doc, dict) else None
        for entry in (status or {}).get("templates") or []:
            if entry["name"] == "by-altname":
                return entry
    raise AssertionError(f"no status of template by-altname in:\n{output}")


@pytest.fixture
def node(netns_name, tmp_path):
    veth_pair(netns_name, "eth1", "peer1")
    ip(netns_name, "link", "property", "add", "dev", "eth1", "altname", "uplink0")
    return Node(netns_name, tmp_path)


def test_the_configuration_follows_a_renamed_nic(node):
    node.write({"t.yaml": TEMPLATE.format(mtu=1400)})
    proc = node.run()
    assert proc.returncode == 0, proc.stderr
    assert node.link("eth1") == {"mtu": 1400, "ipv4": ["192.0.2.10/24"]}
    assert node.route_devs() == ["eth1"]
    entry = template_status(proc.stdout)
    assert (entry["state"], entry["interfaceReferences"]) == (
        "Applied", [{"reference": "altname:uplink0", "name": "eth1"}])

    # The kernel renames the NIC (as a new kernel's or udev's naming would): down, rename, up.
    ip(node.ns, "link", "set", "eth1", "down")
    ip(node.ns, "link", "set", "eth1", "name", "nic7")
    ip(node.ns, "link", "set", "nic7", "up")
    node.write({"t.yaml": TEMPLATE.format(mtu=1450)})
    proc = node.agent("plan", "-f", str(node.templates))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    plan = " ".join(proc.stdout.split())
    assert "move_record mtu:eth1 to=mtu:nic7 # ledger: eth1 is now nic7 (altnames uplink0)" \
        in plan, proc.stdout
    assert "set_mtu nic7 mtu=1450" in plan, proc.stdout
    proc = node.run()
    assert proc.returncode == 0, proc.stderr
    assert node.link("nic7") == {"mtu": 1450, "ipv4": ["192.0.2.10/24"]}
    assert node.route_devs() == ["nic7"]  # the down/up dropped it; it came back on nic7
    entry = template_status(proc.stdout)
    assert (entry["state"], entry["interfaceReferences"]) == (
        "Applied", [{"reference": "altname:uplink0", "name": "nic7"}])
    assert "eth1" not in {row["ifname"] for row in ip_json(node.ns, "link", "show")}

    # The reference matches nothing now: Failed, and nothing it applied is undone.
    ip(node.ns, "link", "property", "del", "dev", "nic7", "altname", "uplink0")
    proc = node.run()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    entry = template_status(proc.stdout)
    assert entry["state"] == "Failed"
    message = " ".join(entry["message"].split())
    assert "spec.interfaceConfig[0].name: altname:uplink0 matches no interface on this node" \
        in message
    assert "nothing it applied before is undone while it fails here" in message
    assert node.link("nic7") == {"mtu": 1450, "ipv4": ["192.0.2.10/24"]}
    assert node.route_devs() == ["nic7"]

    # Deleting the template undoes everything, on the NIC under its new name.
    ip(node.ns, "link", "property", "add", "dev", "nic7", "altname", "uplink0")
    node.write({})
    proc = node.run("--allow-empty-templates")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert node.link("nic7") == {"mtu": 1500, "ipv4": []}
    assert node.route_devs() == []


BRIDGE_TEMPLATE = """apiVersion: plumber.k8s.pf9.io/v1
kind: HostNetworkTemplate
metadata:
  name: by-altname
spec:
  linuxBridgeConfig:
    - name: br7
      stp: false
      ports:
        - name: altname:uplink0
"""


def master_of(node: Node, ifname: str):
    (row,) = ip_json(node.ns, "link", "show", "dev", ifname)
    return row.get("master")


def test_a_linux_bridge_port_named_by_altname_follows_its_renamed_nic(node):
    """A kind from the registry (linuxBridgeConfig) gets references by declaring its port
    field: the port is the NIC with that altname, it stays in the bridge across a rename (the
    kernel keeps the master), its record follows it, and deleting the template lets go of the
    NIC under its new name."""
    node.write({"t.yaml": BRIDGE_TEMPLATE})
    proc = node.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert master_of(node, "eth1") == "br7"
    entry = template_status(proc.stdout)
    assert (entry["state"], entry["interfaceReferences"]) == (
        "Applied", [{"reference": "altname:uplink0", "name": "eth1"}])

    ip(node.ns, "link", "set", "eth1", "down")
    ip(node.ns, "link", "set", "eth1", "name", "nic7")
    ip(node.ns, "link", "set", "nic7", "up")
    proc = node.agent("plan", "-f", str(node.templates))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    plan = " ".join(proc.stdout.split())
    assert "move_record lbport:eth1 to=lbport:nic7 # ledger: eth1 is now nic7 (altnames " \
        "uplink0)" in plan, proc.stdout
    assert "set_linux_bridge_port" not in plan, proc.stdout
    proc = node.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert master_of(node, "nic7") == "br7"
    assert template_status(proc.stdout)["interfaceReferences"] == [
        {"reference": "altname:uplink0", "name": "nic7"}]

    node.write({})
    proc = node.run("--allow-empty-templates")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert master_of(node, "nic7") is None
    assert "br7" not in {row["ifname"] for row in ip_json(node.ns, "link", "show")}
