"""B6: size of the published HostNetwork for a big node, against etcd's request limit.

Why: etcd refuses objects over ~1.5 MB (docs/pitfalls.md 40); a status that grows with the host (thousands
of VLANs, a full routing table) would make the node's status unwritable exactly when it matters.
The observed host is synthesised (no kernel needed), in two shapes:

- nominal: the issue's node: 1,000 interfaces (one IPv4 and one IPv6 address each), 256 VFs on
  4 PFs, 50k routes (80 % IPv4) with gateways, 20 templates, 10 OVS bridges of 10 ports;
- adversarial: the same but 5,000 interfaces with 32 addresses each, 4 x 1,024 VFs with MACs and
  VLANs, 50k routes with gateway and source, 500 templates with 1 KiB messages, 100 bridges
  of 100 ports: it shows whether the size policy bounds the status whatever the host holds.

The size is that of the whole HostNetwork object as compact JSON (what the API server stores).
The time to build and serialise the nominal status is reported too: it is paid on every pass.
"""
from __future__ import annotations

import json
import time

from common import Row, env_int, median, timed

ETCD_LIMIT_BYTES = 1_572_864  # 1.5 MiB, etcd's default --max-request-bytes
NODE_NAME = "worker-0123456789.example.internal"


def _v4(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def synth_host(*, interfaces: int, addrs_per_if: int, pfs: int, vfs_per_pf: int, routes: int,
               with_src: bool, bridges: int, ports_per_bridge: int):
    from plumber_agent.models.observed import (ObservedBridge, ObservedHost, ObservedLink,
                                               ObservedOvsInterface, ObservedOvsPort, ObservedPf,
                                               ObservedRoute, ObservedVf, ObservedVfInfo)
    host = ObservedHost()
    host.links["lo"] = ObservedLink(ifname="lo", index=1, mtu=65536, ipv4=["127.0.0.1/8"])
    for p in range(pfs):
        pci = f"0000:{0x3b + p:02x}:00.0"
        name = f"ens{p}f0np0"
        vfs = [ObservedVf(id=v, pci_addr=f"0000:{0x3b + p:02x}:{(v // 8) + 1:02x}.{v % 8}",
                          driver="iavf", ifname=f"ens{p}f0v{v}") for v in range(vfs_per_pf)]
        host.pfs[pci] = ObservedPf(pci_addr=pci, ifname=name, vendor_id="8086", device_id="158b",
                                   driver="i40e", total_vfs=max(64, vfs_per_pf),
                                   num_vfs=vfs_per_pf, vfs=vfs)
        host.links[name] = ObservedLink(
            ifname=name, index=10 + p, kind=None, mtu=9000, mac=f"3c:fd:fe:00:00:{p:02x}",
            oper_state="UP", admin_up=True, pci_addr=pci, vendor_id="8086", device_id="158b",
            driver="i40e", ipv4=[f"192.168.{p}.10/24"],
            vfs=[ObservedVfInfo(id=v, mac=f"02:00:00:{p:02x}:{v >> 8:02x}:{v & 255:02x}",
                                vlan=100 + v % 4000, qos=0, spoofchk=True, trust=False)
                 for v in range(vfs_per_pf)])
    for i in range(interfaces - len(host.links) + 1):
        name = f"vlan{i:05d}.bond0"[-15:]
        host.links[name] = ObservedLink(
            ifname=name, index=1000 + i, kind="vlan", mtu=1500, mac=f"3c:fd:fe:{i >> 16 & 255:02x}:"
            f"{i >> 8 & 255:02x}:{i & 255:02x}", oper_state="UP", admin_up=True,
            parent="ens0f0np0", vlan_id=1 + i % 4094,
            ipv4=[f"172.{16 + (i >> 16 & 15)}.{i >> 8 & 255}.{i & 255}/32"] + [
                f"100.{64 + a}.{i >> 8 & 255}.{i & 255}/32" for a in range(max(0, addrs_per_if // 2 - 1))],
            ipv6=[f"fd00:{i:x}::{a + 1:x}/64" for a in range(max(1, addrs_per_if // 2))])
    for r in range(routes):
        if r % 5 == 4:
            host.routes.append(ObservedRoute(
                family=6, dst=f"2001:db8:{r >> 16:x}:{r & 0xFFFF:x}::/64",
                gw=f"fe80::{r & 0xFF:x}:1", dev="ens0f0np0", proto="bgp",
                src=f"2001:db8::{r & 0xFFFF:x}" if with_src else None))
        else:
            host.routes.append(ObservedRoute(
                family=4, dst=f"{_v4(r)}/32", gw="192.168.0.1", dev="ens0f0np0", proto="bgp",
                src="192.168.0.10" if with_src else None))
    if bridges:
        host.bridges = {}
        for b in range(bridges):
            name = f"br-ex{b:04d}"
            ports = [ObservedOvsPort(name=f"p{b:03d}-{p:05d}", interfaces=[ObservedOvsInterface(
                name=f"p{b:03d}-{p:05d}", ofport=p + 1)], external_ids={"plumber-managed": "true"})
                for p in range(ports_per_bridge)]
            host.bridges[name] = ObservedBridge(name=name, datapath_type="netdev", ports=ports,
                                                external_ids={"plumber-managed": "true"})
    return host


def synth_templates(count: int, message_bytes: int):
    from plumber_agent.models.status import TemplateStatus
    return [TemplateStatus(name=f"template-{i:04d}-" + "x" * 40, state="Failed" if i % 2 else "Applied",
                           observed_generation=i + 1,
                           message=("m" * message_bytes) if (i % 2 and message_bytes) else None)
            for i in range(count)]


def status_object(host, templates) -> tuple[dict, float]:
    from plumber_agent.models.status import to_api
    from plumber_agent.status_builder import build_status
    started = time.perf_counter()
    status = to_api(build_status(host, templates, managed_ifnames=[]))
    elapsed = time.perf_counter() - started
    obj = {"apiVersion": "plumber.k8s.pf9.io/v1", "kind": "HostNetwork",
           "metadata": {"name": NODE_NAME, "uid": "0" * 36, "resourceVersion": "123456789",
                        "generation": 1, "creationTimestamp": "2025-01-01T00:00:00Z",
                        "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": NODE_NAME,
                                             "uid": "0" * 36}]},
           "spec": {}, "status": status}
    return obj, elapsed


def size_of(obj: dict) -> int:
    return len(json.dumps(obj, separators=(",", ":")).encode())


SCENARIOS = {
    "nominal": dict(host=dict(interfaces=1000, addrs_per_if=2, pfs=4, vfs_per_pf=64, routes=50_000,
                              with_src=False, bridges=10, ports_per_bridge=10),
                    templates=dict(count=20, message_bytes=200)),
    "adversarial": dict(host=dict(interfaces=5000, addrs_per_if=32, pfs=4, vfs_per_pf=1024,
                                  routes=50_000, with_src=True, bridges=100, ports_per_bridge=100),
                        templates=dict(count=500, message_bytes=1024)),
}


def _encode_row(host, templates, repeats: int) -> Row:
    """to_api (the agent's encoder) vs dataclasses-json's to_dict on the same status."""
    from plumber_agent.models.status import drop_none, to_api
    from plumber_agent.status_builder import build_status
    status = build_status(host, templates, managed_ifnames=[])
    assert to_api(status) == drop_none(status.to_dict(encode_json=False)), "encoders differ"
    ours = timed(lambda: to_api(status), max(3, repeats // 2))
    generic = timed(lambda: drop_none(status.to_dict(encode_json=False)), max(3, repeats // 2))
    return Row(id="B6", measure="to_api of the nominal status (identical to dataclasses-json's)",
               value=median(ours) * 1000, unit="ms", baseline=median(generic) * 1000,
               baseline_label="dataclasses-json to_dict, ms", ok=None)


def run_bench() -> list[Row]:
    repeats = env_int("BENCH_REPEATS", 7)
    rows = []
    for name, shape in SCENARIOS.items():
        host = synth_host(**shape["host"])
        templates = synth_templates(**shape["templates"])
        obj, _ = status_object(host, templates)
        size = size_of(obj)
        truncated = obj["status"].get("truncated") or {}
        summary = ", ".join(f"{k}={v if not isinstance(v, dict) else len(v)}" for k, v in truncated.items())
        nominal = name == "nominal"
        rows.append(Row(id="B6", measure=f"status bytes, {name} node (truncated: {summary or 'none'})"
                                         + ("" if nominal else "; beyond the issue's shape, info"),
                        value=size / 1024, unit="KiB", baseline=ETCD_LIMIT_BYTES / 1024,
                        baseline_label="etcd limit KiB", target="< limit" if nominal else "",
                        ok=(size < ETCD_LIMIT_BYTES) if nominal else None))
        if nominal:
            times = [status_object(host, templates)[1] for _ in range(max(3, repeats // 2))]
            rows.append(Row(id="B6", measure="build+to_api of the nominal status (every pass)",
                            value=median(times) * 1000, unit="ms", ok=None))
            rows.append(_encode_row(host, templates, repeats))
    return rows


if __name__ == "__main__":
    from common import table
    print(table(run_bench()))
