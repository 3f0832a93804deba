"""What a template should do to a node, given what the target can do, and the host checks for it.

Why in one place: every scenario asks the same two questions -- "which state should the agent
report for this template here?" and "does the host now have what the template asks for?" -- and
the answers depend on the target (no 802.1Q on the CI kernel, no SR-IOV on kind, userspace-only
OVS locally). Keeping the rules here means a scenario never silently weakens its assertions: when
a part cannot apply on this target, the template must be reported Failed with a message saying
why, and every other part must still be on the host.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Optional

from tests.e2e.cluster import (BOND_MISSING_TEXT, BRIDGE_VLAN_FILTERING_MISSING, VLAN_MISSING_TEXT, Capabilities, NodeHost, PfLayout, addresses_of,
                               links_of, vlan_ifname, vlans_of)


@dataclass
class Expected:
    state: str  # Applied | Failed
    message_contains: list[str] = field(default_factory=list)
    skipped_parts: list[str] = field(default_factory=list)  # parts not checked on the host, and why


def resolve_pfs(node: NodeHost, entry: dict) -> list[PfLayout]:
    """The node's PFs an sriovConfig entry selects (pfName, pciAddr or vendorId+deviceId)."""
    if entry.get("pfName"):
        return [pf for pf in node.pfs if pf.ifname == entry["pfName"]]
    if entry.get("pciAddr"):
        return [pf for pf in node.pfs if pf.pci_addr == str(entry["pciAddr"]).lower()]
    return [pf for pf in node.pfs if pf.vendor == str(entry.get("vendorId")).lower()
            and pf.device == str(entry.get("deviceId")).lower()]


def _vlan_names(spec: dict) -> set[str]:
    return {vlan_ifname(ifc["name"], int(v["id"]), v) for ifc in spec.get("interfaceConfig") or []
            for v in ifc.get("vlan") or []}


def bridge_can_apply(bridge: dict, spec: dict, caps: Capabilities) -> tuple[bool, str]:
    if not caps.ovs:
        return False, caps.why_not.get("ovs", "no Open vSwitch on this target")
    datapath = (bridge.get("params") or {}).get("datapathType") or "system"
    if datapath == "system" and not caps.ovs_system_datapath:
        return False, caps.why_not.get("ovs_system_datapath", "no OVS kernel datapath")
    ports = [p.strip() for p in (bridge.get("nodeInterface") or "").split(",") if p.strip()]
    if not caps.vlan and any(p in _vlan_names(spec) for p in ports):
        return False, "its port is a VLAN interface and this kernel has no 802.1Q"
    return True, ""


def expected(spec: dict, caps: Capabilities, node: Optional[NodeHost] = None) -> Expected:
    """The state the agent must report for a template selecting `node` on this target."""
    out = Expected("Applied")
    if _vlan_names(spec) and not caps.vlan:
        out.state = "Failed"
        out.message_contains.append(VLAN_MISSING_TEXT)
        out.skipped_parts.append("VLAN interfaces: " + caps.why_not.get("vlan", "no 802.1Q"))
    for entry in spec.get("sriovConfig") or []:
        if not caps.sriov or (node is not None and not resolve_pfs(node, entry)):
            out.state = "Failed"
            out.skipped_parts.append(f"SR-IOV {entry}: " + caps.why_not.get("sriov", "no such PF"))
    for bridge in spec.get("ovsConfig") or []:
        ok, why = bridge_can_apply(bridge, spec, caps)
        if not ok:
            out.state = "Failed"
            out.skipped_parts.append(f"OVS bridge {bridge.get('bridgeName')}: {why}")
    if spec.get("bondConfig") and not caps.bond:
        out.state = "Failed"
        out.message_contains.append(BOND_MISSING_TEXT)
        out.skipped_parts.append("bonds, and what sits on them: "
                                 + caps.why_not.get("bond", "no bonding module"))
    for bridge in spec.get("linuxBridgeConfig") or []:
        if not linux_bridge_can_apply(bridge, caps):
            out.state = "Failed"
            out.message_contains.append(BRIDGE_VLAN_FILTERING_MISSING)
            out.skipped_parts.append(f"linux bridge {bridge['name']}: " + caps.why_not.get(
                "bridge_vlan_filtering", "no bridge VLAN filtering"))
    return out


def _bond_names(spec: dict) -> set[str]:
    return {bond["name"] for bond in spec.get("bondConfig") or []}


def linux_bridge_can_apply(bridge: dict, caps: Capabilities) -> bool:
    return caps.bridge_vlan_filtering or not bridge.get("vlanFiltering")


def _linux_bridge_problems(links: dict, spec: dict, caps: Capabilities) -> list[str]:
    """The Linux bridges of `spec` that can apply here: the bridge, its settings, its ports'
    master (their VLAN entries are checked by the unit and host tests, not from `ip -j`)."""
    problems = []
    for bridge in spec.get("linuxBridgeConfig") or []:
        if not linux_bridge_can_apply(bridge, caps):
            continue
        name = bridge["name"]
        info = (links.get(name) or {}).get("linkinfo") or {}
        if info.get("info_kind") != "bridge":
            problems.append(f"linux bridge {name}: missing (have {info or 'no such link'})")
            continue
        data = info.get("info_data") or {}
        for key, field_name in (("stp", "stp_state"), ("vlanFiltering", "vlan_filtering")):
            if bridge.get(key) is not None and bool(data.get(field_name)) != bridge[key]:
                problems.append(f"linux bridge {name}: {field_name} {data.get(field_name)}, "
                                f"want {bridge[key]}")
        for port in bridge.get("ports") or []:
            master = (links.get(port["name"]) or {}).get("master")
            if master != name:
                problems.append(f"linux bridge {name}: port {port['name']} has master {master}")
    return problems


def _canon(addr: str) -> str:
    return str(ipaddress.ip_interface(addr))


def host_problems(node: NodeHost, spec: dict, caps: Capabilities) -> list[str]:
    """Every way the node's host differs from the parts of `spec` that can apply here."""
    problems: list[str] = []
    if caps.sriov:
        for entry in spec.get("sriovConfig") or []:
            for pf in resolve_pfs(node, entry):
                have = node.num_vfs(pf.pci_addr)
                if entry.get("numVfs") is not None and have != int(entry["numVfs"]):
                    problems.append(f"{pf.ifname}: numVfs {have}, want {entry['numVfs']}")
                drivers = getattr(node, "vf_drivers", lambda _: None)(pf.pci_addr)
                if entry.get("vfDriver") and drivers is not None:
                    wrong = [d for d in drivers if d != entry["vfDriver"]]
                    if wrong:
                        problems.append(f"{pf.ifname}: VF drivers {drivers}, want all {entry['vfDriver']}")
    dump = node.link_dump()  # links, VLANs and addresses from one read
    links = links_of(dump)
    vlans = vlans_of(links) if caps.vlan else {}
    addresses = addresses_of(dump)
    for bond in spec.get("bondConfig") or [] if caps.bond else []:
        for member in bond["members"]:
            if links.get(member, {}).get("master") != bond["name"]:
                problems.append(f"bond {bond['name']}: member {member} has master "
                                f"{links.get(member, {}).get('master')}")
    not_here = {b["name"] for b in spec.get("linuxBridgeConfig") or []
                if not linux_bridge_can_apply(b, caps)}  # nor are their addresses
    if not caps.bond:
        not_here |= _bond_names(spec)
    for ifc in spec.get("interfaceConfig") or []:
        name = ifc["name"]
        if name in not_here:
            continue
        if name not in links:
            problems.append(f"{name}: no such link")
            continue
        if ifc.get("mtu") is not None and links[name].get("mtu") != int(ifc["mtu"]):
            problems.append(f"{name}: mtu {links[name].get('mtu')}, want {ifc['mtu']}")
        have = addresses.get(name, set())
        for family, version in (("ipv4", 4), ("ipv6", 6)):
            if ifc.get(family) is None:
                continue
            want = {_canon(a) for a in ifc[family].get("address") or []}
            got = {a for a in have if ipaddress.ip_interface(a).version == version}
            if got != want:
                problems.append(f"{name}: {family} {sorted(got)}, want exactly {sorted(want)}")
        if caps.vlan:
            for vlan in ifc.get("vlan") or []:
                vname = vlan_ifname(name, int(vlan["id"]), vlan)
                if vlans.get(vname) != (name, int(vlan["id"])):
                    problems.append(f"VLAN {vname}: have {vlans.get(vname)}, want ({name}, {vlan['id']})")
    problems.extend(_linux_bridge_problems(links, spec, caps))
    routes = node.routes()
    for family, flag in (("ipv4", "-4"), ("ipv6", "-6")):
        for route in (spec.get("routes") or {}).get(family) or []:
            dst = route.get("dst") or "default"
            match = [r for r in routes if r[0] == flag and r[1] == dst
                     and (route.get("gw") is None or r[2] == route["gw"])
                     and (route.get("dev") is None or r[3] == route["dev"])
                     and (route.get("metric") is None or r[4] == route["metric"])]
            if not match:
                problems.append(f"route {family} {route}: missing (have {sorted(r for r in routes if r[0] == flag)})")
    bridges = node.ovs_bridges()
    for bridge in spec.get("ovsConfig") or []:
        ok, _ = bridge_can_apply(bridge, spec, caps)
        if not ok:
            continue
        name = bridge["bridgeName"]
        if name not in bridges:
            problems.append(f"OVS bridge {name}: missing (have {sorted(bridges)})")
            continue
        ports = [p.strip() for p in (bridge.get("nodeInterface") or "").split(",") if p.strip()]
        if len(ports) == 1 and ports[0] not in bridges[name]:
            problems.append(f"OVS bridge {name}: ports {sorted(bridges[name])}, want {ports[0]}")
    return problems


def assert_host_has(node: NodeHost, spec: dict, caps: Capabilities) -> bool:
    """For wait_for: True when the host has everything, else AssertionError naming what is not."""
    problems = host_problems(node, spec, caps)
    if problems:
        raise AssertionError(f"{node.name}: " + "; ".join(problems))
    return True
