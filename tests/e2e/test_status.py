"""What users read: every node's HostNetwork status matches its host, and `kubectl get hnt,hn`
columns (the CRDs' additionalPrinterColumns) say something true about the objects.

The printer columns are read from manifests/crds and their JSONPaths evaluated against the live
objects, so a column whose path is misspelt, or whose field the agent never fills, fails here.
When kubectl is installed it is also run against the cluster (the in-repo fake API server serves
discovery and Table output over an HTTPS listener for it) and its printed cells are compared with
the live status.
"""
from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess

import pytest
import yaml

from tests.e2e.cluster import (CONVERGE_TIMEOUT_S, CRDS_DIR, OVS_DATAPATH_LINKS, addresses_of, links_of,
                               template)
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]

HOSTNAME = "kubernetes.io/hostname"
KUBECTL_TIMEOUT_S = 30.0


def apply_mixed_templates(steps) -> list[dict]:
    """Something of everything on every node, plus one per-node address template each."""
    spec = {"interfaceConfig": [{"name": "enp3s0f0", "mtu": 9000, "ipv6": {"address": ["fd90::1/64"]}}]}
    if steps.caps.sriov:
        spec["sriovConfig"] = [{"vendorId": "8086", "deviceId": "1528", "numVfs": 4, "vfDriver": "ixgbevf"}]
    if steps.caps.ovs:
        spec["ovsConfig"] = [{"bridgeName": "e2e-br2", "nodeInterface": "enp3s0f1",
                              "params": {"datapathType": steps.caps.ovs_datapath}}]
    objs = [template("e2e-everywhere", spec)]
    for index, node in enumerate(steps.nodes):
        objs.append(template(f"e2e-addr-{index}", {"interfaceConfig": [{
            "name": "eno1", "ipv4": {"address": [f"10.90.{index}.1/24"]}}]},
            node_selector={HOSTNAME: steps.cluster.hostname_label(node.name)}))
    for obj in objs:
        steps.apply(obj)
    for node in steps.nodes:
        steps.wait_applied(objs[0], node)
    for index, node in enumerate(steps.nodes):
        steps.wait_applied(objs[1 + index], node)
    return objs


def _global(addrs) -> set[str]:
    return {str(ipaddress.ip_interface(a)) for a in addrs or []
            if not ipaddress.ip_interface(a).ip.is_link_local}


def status_problems(steps, node) -> list[str]:
    hn = steps.api.hostnetwork(node.name) or {}
    status = hn.get("status") or {}
    problems = []
    if hn.get("metadata", {}).get("name") != node.name:
        problems.append(f"HostNetwork name {hn.get('metadata', {}).get('name')!r}")
    by_name = {i["pfName"]: i for i in status.get("interfaceStatus") or []}
    dump = node.link_dump()  # links with their addresses, in one read
    links = {n: link for n, link in links_of(dump).items()
             if n != "lo" and n not in OVS_DATAPATH_LINKS}
    addresses = addresses_of(dump)
    missing = sorted(set(links) - set(by_name))
    if missing:
        problems.append(f"links missing from status: {missing}")
    for name, link in links.items():
        entry = by_name.get(name)
        if entry is None:
            continue
        if entry.get("mtu") != link.get("mtu"):
            problems.append(f"{name}: status mtu {entry.get('mtu')} != host {link.get('mtu')}")
        if (entry.get("mac") or "").lower() != (link.get("address") or "").lower():
            problems.append(f"{name}: status mac {entry.get('mac')} != host {link.get('address')}")
        reported = _global((entry.get("ipv4") or {}).get("address")) | _global(
            (entry.get("ipv6") or {}).get("address"))
        if reported != addresses.get(name, set()):
            problems.append(f"{name}: status addresses {sorted(reported)} != host {sorted(addresses.get(name, set()))}")
    for pf in node.pfs:
        entry = by_name.get(pf.ifname) or {}
        sriov = entry.get("sriovStatus") or {}
        have = node.num_vfs(pf.pci_addr)
        if entry.get("pciAddr") != pf.pci_addr:
            problems.append(f"{pf.ifname}: status pciAddr {entry.get('pciAddr')} != {pf.pci_addr}")
        if (sriov.get("numVfs") or 0) != (have or 0):
            problems.append(f"{pf.ifname}: status numVfs {sriov.get('numVfs')} != host {have}")
        if len(sriov.get("vfs") or []) != (have or 0):
            problems.append(f"{pf.ifname}: status lists {len(sriov.get('vfs') or [])} VFs, host has {have}")
        if sriov.get("totalVfs") != pf.total_vfs:
            problems.append(f"{pf.ifname}: status totalVfs {sriov.get('totalVfs')} != {pf.total_vfs}")
    bridges = node.ovs_bridges()
    reported_bridges = {b["name"]: {p["name"] for p in b.get("ports") or []}
                        for b in status.get("ovsStatus") or []}
    if set(reported_bridges) != set(bridges):
        problems.append(f"status bridges {sorted(reported_bridges)} != host {sorted(bridges)}")
    for name, ports in bridges.items():
        if name in reported_bridges and not ports <= reported_bridges[name]:
            problems.append(f"bridge {name}: status ports {sorted(reported_bridges[name])} lack {sorted(ports)}")
    host_routes = {r[1] for r in node.routes() if r[0] == "-4"}
    status_routes = {r.get("dst", "default") for r in (status.get("routes") or {}).get("ipv4") or []}
    if host_routes - status_routes:
        problems.append(f"IPv4 routes missing from status: {sorted(host_routes - status_routes)}")
    return problems


def test_hostnetwork_status_matches_host_on_every_node(steps):
    apply_mixed_templates(steps)
    for node in steps.nodes:
        def matches(node=node):
            problems = status_problems(steps, node)
            if problems:
                raise AssertionError(f"{node.name}: " + "; ".join(problems))
            return True
        wait_for(matches, timeout_s=CONVERGE_TIMEOUT_S, what=f"HostNetwork {node.name} == its host")


# ----------------------------------------------------------------------------- printer columns
def printer_columns(plural: str) -> list[dict]:
    for path in sorted(CRDS_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition" and \
                    doc["spec"]["names"]["plural"] == plural:
                return doc["spec"]["versions"][0].get("additionalPrinterColumns") or []
    raise LookupError(plural)


_STEP = re.compile(r"\.([A-Za-z0-9_-]+)(\[\*\])?")


def jsonpath(obj, path: str) -> list:
    """The subset of kubectl JSONPath the CRDs use: .a.b, .a[*].b. Returns every value found."""
    values = [obj]
    pos = 0
    while pos < len(path):
        match = _STEP.match(path, pos)
        if not match:
            raise ValueError(f"unsupported JSONPath {path!r} at {pos}")
        pos = match.end()
        nxt = []
        for value in values:
            if isinstance(value, dict) and match.group(1) in value:
                item = value[match.group(1)]
                if match.group(2):
                    nxt.extend(item if isinstance(item, list) else [])
                else:
                    nxt.append(item)
        values = nxt
    return values


def _one(obj, column) -> object:
    values = jsonpath(obj, column["jsonPath"])
    assert len(values) == 1, f"column {column['name']} ({column['jsonPath']}) of " \
                             f"{obj['metadata']['name']}: {values!r}"
    return values[0]


def test_printer_columns_are_meaningful(steps):
    objs = apply_mixed_templates(steps)
    templates = {t["metadata"]["name"]: t for t in steps.api.list_templates()}
    hnt_columns = {c["name"]: c for c in printer_columns("hostnetworktemplates")}
    # A real server prints only the first match of a column's JSONPath, so no column points
    # into a list: the counts are scalars the elected status writer keeps up to date.
    assert set(hnt_columns) == {"Matching", "Applied", "Failed", "Status", "Selector", "Age"}

    def template_columns_true():
        nodes = {n["metadata"]["name"]: (n["metadata"].get("labels") or {})
                 for n in steps.api.list_nodes()}
        reports = {name: steps.api.template_statuses(name) for name in nodes}
        for name in {o["metadata"]["name"] for o in objs}:
            obj = steps.api.get_template(name)
            spec, generation = obj["spec"], obj["metadata"]["generation"]
            selector = spec.get("nodeSelector") or {}
            matching = [n for n, labels in nodes.items()
                        if all(labels.get(k) == v for k, v in selector.items())]
            states = [reports[n].get(name, {}) for n in matching]
            current = [e.get("state") for e in states if e.get("observedGeneration") == generation]
            want = {"Matching": len(matching), "Applied": current.count("Applied"),
                    "Failed": current.count("Failed"),
                    "Status": (obj.get("status") or {}).get("phase")}
            assert want["Status"] in ("Available", "Progressing", "Degraded", "Halted"), \
                f"{name}: phase {want['Status']!r}"
            for column, value in want.items():
                got = jsonpath(obj, hnt_columns[column]["jsonPath"])
                assert got == [value], (f"{name}: column {column} shows {got}, the nodes say "
                                        f"{value}")
            if selector:
                assert _one(obj, hnt_columns["Selector"]) == selector
            assert _one(obj, hnt_columns["Age"])
        return True
    wait_for(template_columns_true, timeout_s=CONVERGE_TIMEOUT_S,
             what="template printer columns agree with the nodes' reports")
    assert set(templates) >= {o["metadata"]["name"] for o in objs}

    hn_columns = {c["name"]: c for c in printer_columns("hostnetworks")}
    for node in steps.nodes:
        def columns_true(node=node):
            hn = steps.api.hostnetwork(node.name)
            status = hn.get("status") or {}
            states = [t["state"] for t in status.get("templates") or []]
            want = {
                "Interfaces": len(status.get("interfaceStatus") or []),
                "VFs": sum((i.get("sriovStatus") or {}).get("numVfs") or 0
                           for i in status.get("interfaceStatus") or []),
                "Bridges": len(status.get("ovsStatus") or []),
                "Applied": states.count("Applied"), "Failed": states.count("Failed"),
                "Conflict": states.count("Conflict"), "Invalid": states.count("Invalid"),
                "Pending": states.count("Pending"),
            }
            for column, value in want.items():
                got = jsonpath(hn, hn_columns[column]["jsonPath"])
                if got != [value]:
                    raise AssertionError(f"{node.name}: column {column} ({hn_columns[column]['jsonPath']}) "
                                         f"shows {got}, the status says {value}")
            assert _one(hn, hn_columns["Age"])
            return True
        wait_for(columns_true, timeout_s=CONVERGE_TIMEOUT_S, what=f"printer columns of HostNetwork {node.name}")


def kubectl_tables(out: str) -> list[tuple[list[str], dict[str, dict[str, str]]]]:
    """kubectl's text output as (headers, {NAME cell: {HEADER: cell}}) per table (tables are
    split on blank lines). Cells are cut at the headers' offsets, so empty cells stay empty."""
    tables = []
    for block in filter(None, out.strip("\n").split("\n\n")):
        lines = block.splitlines()
        starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
        bounds = list(zip(starts, starts[1:] + [None]))
        headers = lines[0].split()
        rows = {}
        for line in lines[1:]:
            cells = [line[a:b].strip() for a, b in bounds]
            rows[cells[0]] = dict(zip(headers, cells))
        tables.append((headers, rows))
    return tables


def kubectl_kubeconfig(steps, tmp_path) -> str:
    """The in-repo fake API server gets an HTTPS listener for kubectl, which sends the token only
    over TLS; a real cluster's kubeconfig is used as it is."""
    server = getattr(steps.cluster, "server", None)
    if server is None:
        return steps.cluster.kubeconfig
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed, so the fake API server cannot serve kubectl over HTTPS")
    return server.kubectl_kubeconfig(tmp_path / "kubectl.kubeconfig")


def _cell_text(value) -> str:
    """How a Table cell of a CRD column prints: first value only, maps as compact JSON, nothing
    as an empty cell."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), sort_keys=True)


def test_kubectl_get_hnt_hn(steps, tmp_path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the JSONPath columns are checked by test_printer_columns_are_meaningful")
    objs = apply_mixed_templates(steps)
    kubeconfig = kubectl_kubeconfig(steps, tmp_path)
    argv = [kubectl, "--kubeconfig", kubeconfig, "--cache-dir", str(tmp_path / "kubectl-cache"),
            "get", "hnt,hn", "-o", "wide", f"--request-timeout={int(KUBECTL_TIMEOUT_S)}s"]
    hn_columns = {c["name"]: c for c in printer_columns("hostnetworks")}

    def kubectl_shows_the_status():
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S + 10, check=False)
        if proc.returncode != 0:  # fails at once (not an AssertionError, so not polled again)
            pytest.fail(f"{' '.join(argv)} failed: {proc.stderr}")
        (hnt_headers, hnt_rows), (hn_headers, hn_rows) = kubectl_tables(proc.stdout)
        assert hnt_headers == ["NAME"] + [c["name"].upper() for c in printer_columns("hostnetworktemplates")], proc.stdout
        assert hn_headers == ["NAME"] + [c["name"].upper() for c in printer_columns("hostnetworks")], proc.stdout
        for obj in objs:
            name = obj["metadata"]["name"]
            row = hnt_rows.get(f"hostnetworktemplate.plumber.k8s.pf9.io/{name}")
            assert row is not None, f"template {name} missing from kubectl output:\n{proc.stdout}"
            spec = obj["spec"]
            assert row["SELECTOR"] == _cell_text(spec.get("nodeSelector")), proc.stdout
            assert row["AGE"], proc.stdout
        for node in steps.nodes:
            row = hn_rows.get(f"hostnetwork.plumber.k8s.pf9.io/{node.name}")
            assert row is not None, f"HostNetwork {node.name} missing from kubectl output:\n{proc.stdout}"
            status = (steps.api.hostnetwork(node.name) or {}).get("status") or {}
            states = [t["state"] for t in status.get("templates") or []]
            want = {
                "INTERFACES": len(status.get("interfaceStatus") or []),
                "VFS": sum((i.get("sriovStatus") or {}).get("numVfs") or 0 for i in status.get("interfaceStatus") or []),
                "BRIDGES": len(status.get("ovsStatus") or []),
                "APPLIED": states.count("Applied"), "FAILED": states.count("Failed"),
                "CONFLICT": states.count("Conflict"), "INVALID": states.count("Invalid"),
                "PENDING": states.count("Pending"),
            }
            # Every template selecting this node (e2e-everywhere and its own e2e-addr-*) is applied.
            assert want["APPLIED"] >= 2 and want["INTERFACES"] > 0, f"{node.name}: {want}"
            got = {column: row[column] for column in want}
            assert got == {k: str(v) for k, v in want.items()}, \
                f"{node.name}: kubectl shows {got}, the status says {want} ({hn_columns['Applied']['jsonPath']}...)"
            assert re.fullmatch(r"\d+[smhdy]\S*", row["AGE"]), proc.stdout
        return proc.stdout

    out = wait_for(kubectl_shows_the_status, timeout_s=CONVERGE_TIMEOUT_S, what="kubectl get hnt,hn -o wide == the status")
    print(out)
