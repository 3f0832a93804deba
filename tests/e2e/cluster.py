"""The `Cluster` abstraction the e2e scenarios are written against, and what both targets share.

Why: one scenario suite must run in two places -- simulated nodes on this machine (harness.py,
`make e2e-local`) and a real kind cluster (kindharness.py, `make e2e`). Scenarios therefore see
only three things:

- `cluster.api` (`KubeApi`): the Kubernetes API through the REAL `kubernetes` Python client, used
  the way a user uses kubectl: create/patch/delete HostNetworkTemplates, label Nodes, read
  HostNetworks and Events. Nothing here talks to an agent directly.
- `cluster.nodes` (`NodeHost`): a read-only view of each node's host state (links, MTUs,
  addresses, VLANs via `ip -j`; numVfs via sysfs; OVS bridges via `ovs-vsctl`), plus the two
  deliberate faults scenarios inject: a command run behind the agent's back (drift) and killing
  the node's agent.
- `cluster.caps` (`Capabilities`): what this target can do (802.1Q VLANs, SR-IOV, OVS), so a
  scenario asserts the right outcome instead of skipping wholesale: without 8021q a VLAN template
  must be reported Failed with the kernel's message while everything else is applied.

`wait_for` (tests/helpers/wait.py) is the only way scenarios wait: bounded polling, never a blind
sleep; only AssertionError means "not yet". Host reads are therefore race-free: each accessor reads
in one command (`ip -j -d addr` for links with their addresses, one `ovs-vsctl` transaction for
bridges with their ports), so the agent changing the host meanwhile gives a different answer,
never an error.
"""
from __future__ import annotations

import abc
import datetime
import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional


from plumber_agent.sources import load_yaml_documents

GROUP = "plumber.k8s.pf9.io"
VERSION = "v1"
TEMPLATES = "hostnetworktemplates"
HOSTNETWORKS = "hostnetworks"
EVENTS_NAMESPACE = "default"  # where the agent records its Events

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO_ROOT / "manifests" / "examples"
CRDS_DIR = REPO_ROOT / "manifests" / "crds"

API_TIMEOUT_S = 15.0  # one HTTP request
# Agents reconcile within seconds; these bounds are generous so a slow CI machine does not flake.
CONVERGE_TIMEOUT_S = 90.0
# Drift is repaired on the kernel's netlink event, at the latest on the 60 s resync.
DRIFT_TIMEOUT_S = 90.0
AGENT_START_TIMEOUT_S = 60.0

# OVS creates these datapath devices itself; they are not ours to compare.
OVS_DATAPATH_LINKS = frozenset({"ovs-netdev", "ovs-system"})

VLAN_MISSING_TEXT = "802.1Q"  # the agent's message names the missing kernel feature
BOND_MISSING_TEXT = "bonding"  # ... and for bonds (host/netlink/bond.py BOND_MISSING_MESSAGE)
BRIDGE_VLAN_FILTERING_MISSING = "CONFIG_BRIDGE_VLAN_FILTERING"  # likewise, for Linux bridges


def kernel_has_feature(feature: str) -> bool:
    """tests/fullkernel/vm.py's kernel probe (False when it cannot run: never a false yes)."""
    try:
        from tests.fullkernel.vm import kernel_has
        return kernel_has(feature)
    except Exception:  # the probe module is optional
        return False


class HostCommandError(RuntimeError):
    """A command run on a node failed: a real error, never a "not yet" (reads are race-free)."""


class HostChanging(AssertionError):
    """A read of several host objects saw one vanish half way (the agent is changing the host):
    "not yet" for wait_for, which retries AssertionError."""


# One `ovs-vsctl` call, one OVSDB transaction: every bridge with the uuids of its ports, and the
# Port table to name them. Two calls (list-br, then list-ports BRIDGE) race the agent: a bridge
# deleted in between made `list-ports` fail with "no bridge named ...".
OVS_SNAPSHOT_ARGS = ("--format=json", "--", "--columns=name,ports", "list", "Bridge",
                     "--", "--columns=_uuid,name", "list", "Port")


def _ovsdb_set(value) -> list:
    """The members of an OVSDB JSON set (a single member is sent bare)."""
    if isinstance(value, list) and value and value[0] == "set":
        return list(value[1])
    return [value]


def parse_ovs_bridges(text: str) -> dict[str, set[str]]:
    """Bridge -> port names from OVS_SNAPSHOT_ARGS' output, like `list-ports` (the bridge's own
    local port left out)."""
    tables = [json.loads(line) for line in text.splitlines() if line.strip()]
    if len(tables) != 2:
        raise HostCommandError(f"ovs-vsctl: expected 2 JSON tables, got {len(tables)}: {text[:500]!r}")
    bridges_table, ports_table = tables
    port_names = {row[0][1]: row[1] for row in ports_table["data"]}  # ["uuid", U] -> name
    out: dict[str, set[str]] = {}
    for name, ports in bridges_table["data"]:
        members = {port_names[ref[1]] for ref in _ovsdb_set(ports) if ref}
        out[name] = members - {name}
    return out


# ----------------------------------------------------------------------------------- templates
def load_examples() -> list[tuple[str, dict]]:
    """Every HostNetworkTemplate document in manifests/examples/, as (file name, object), read
    as kubectl reads them (a bare PCI address such as 0000:03:00.0 is text, not base 60)."""
    out = []
    for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
        for doc in load_yaml_documents(path.read_text()):
            if doc and doc.get("kind") == "HostNetworkTemplate":
                out.append((path.name, doc))
    return out


def template(name: str, spec: dict, *, node_selector: Optional[dict] = None) -> dict:
    body = dict(spec)
    if node_selector is not None:
        body["nodeSelector"] = node_selector
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "HostNetworkTemplate",
            "metadata": {"name": name}, "spec": body}


def vlan_ifname(parent: str, vlan_id: int, entry: Optional[dict] = None) -> str:
    return (entry or {}).get("name") or f"{parent}.{vlan_id}"


def rfc3339_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------------- API
class KubeApi:
    """The API as a user drives it, through the real `kubernetes` client (never patched).

    Reads return plain dicts (`_preload_content=False` + json): the 37.x pydantic models reject
    fields they do not know, and a user's kubectl does not care either.
    """

    def __init__(self, kubeconfig: str) -> None:
        from kubernetes import client, config

        self.kubeconfig = kubeconfig
        self._client_mod = client
        self.api_client = config.new_client_from_config(config_file=kubeconfig)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    @property
    def ApiException(self):  # noqa: N802 - mirrors kubernetes.client.ApiException
        return self._client_mod.ApiException

    def close(self) -> None:
        self.api_client.close()

    @staticmethod
    def _json(response) -> dict:
        return json.loads(response.data or b"{}")

    # -- templates ---------------------------------------------------------------------
    def create_template(self, obj: dict) -> dict:
        return self.custom.create_cluster_custom_object(GROUP, VERSION, TEMPLATES, obj,
                                                        _request_timeout=API_TIMEOUT_S)

    def apply_template(self, obj: dict) -> dict:
        """Like `kubectl apply`: create, or replace the spec of the existing object."""
        try:
            return self.create_template(obj)
        except self.ApiException as exc:
            if exc.status != 409:
                raise
        name = obj["metadata"]["name"]
        for _ in range(5):  # 409 on a concurrent write: re-read and retry
            current = self.get_template(name)
            body = dict(obj)
            body["metadata"] = dict(obj["metadata"], resourceVersion=current["metadata"]["resourceVersion"])
            try:
                return self.custom.replace_cluster_custom_object(GROUP, VERSION, TEMPLATES, name, body,
                                                                 _request_timeout=API_TIMEOUT_S)
            except self.ApiException as exc:
                if exc.status != 409:
                    raise
        raise AssertionError(f"could not replace template {name}: repeated 409 Conflict")

    def patch_template(self, name: str, patch: dict) -> dict:
        """A merge patch (lists are replaced wholesale, like `kubectl patch --type merge`)."""
        return self.custom.patch_cluster_custom_object(
            GROUP, VERSION, TEMPLATES, name, patch, _content_type="application/merge-patch+json",
            _request_timeout=API_TIMEOUT_S)

    def get_template(self, name: str) -> Optional[dict]:
        try:
            return self.custom.get_cluster_custom_object(GROUP, VERSION, TEMPLATES, name,
                                                         _request_timeout=API_TIMEOUT_S)
        except self.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_templates(self) -> list[dict]:
        return self.custom.list_cluster_custom_object(
            GROUP, VERSION, TEMPLATES, _request_timeout=API_TIMEOUT_S).get("items") or []

    def delete_template(self, name: str) -> bool:
        try:
            self.custom.delete_cluster_custom_object(GROUP, VERSION, TEMPLATES, name,
                                                     _request_timeout=API_TIMEOUT_S)
            return True
        except self.ApiException as exc:
            if exc.status == 404:
                return False
            raise

    # -- HostNetworks --------------------------------------------------------------------
    def hostnetwork(self, node: str) -> Optional[dict]:
        try:
            return self.custom.get_cluster_custom_object(GROUP, VERSION, HOSTNETWORKS, node,
                                                         _request_timeout=API_TIMEOUT_S)
        except self.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_hostnetworks(self) -> list[dict]:
        return self.custom.list_cluster_custom_object(
            GROUP, VERSION, HOSTNETWORKS, _request_timeout=API_TIMEOUT_S).get("items") or []

    def template_statuses(self, node: str) -> dict[str, dict]:
        """status.templates[] of the node's HostNetwork, by template name."""
        hn = self.hostnetwork(node) or {}
        return {t["name"]: t for t in (hn.get("status") or {}).get("templates") or []}

    # -- Nodes -----------------------------------------------------------------------------
    def get_node(self, name: str) -> Optional[dict]:
        try:
            return self._json(self.core.read_node(name, _preload_content=False,
                                                  _request_timeout=API_TIMEOUT_S))
        except self.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_nodes(self) -> list[dict]:
        return self._json(self.core.list_node(_preload_content=False,
                                              _request_timeout=API_TIMEOUT_S)).get("items") or []

    def ensure_node(self, name: str, labels: dict[str, str]) -> dict:
        """Create a Node object (simulated nodes only); an existing one gets the labels."""
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
        try:
            return self._json(self.core.create_node(body, _preload_content=False,
                                                    _request_timeout=API_TIMEOUT_S))
        except self.ApiException as exc:
            if exc.status != 409:
                raise
        return self.label_node(name, labels)

    def delete_node(self, name: str) -> None:
        try:
            self.core.delete_node(name, _preload_content=False, _request_timeout=API_TIMEOUT_S)
        except self.ApiException as exc:
            if exc.status != 404:
                raise

    def node_labels(self, name: str) -> dict[str, str]:
        node = self.get_node(name) or {}
        return dict((node.get("metadata") or {}).get("labels") or {})

    def label_node(self, name: str, labels: dict[str, Optional[str]]) -> dict:
        """`kubectl label node NAME k=v k2-`: a value of None removes the label."""
        return self._json(self.core.patch_node(
            name, {"metadata": {"labels": labels}}, _preload_content=False,
            _content_type="application/merge-patch+json", _request_timeout=API_TIMEOUT_S))

    # -- Events ------------------------------------------------------------------------------
    def events(self, *, reason: Optional[str] = None, involved_name: Optional[str] = None,
               namespace: str = EVENTS_NAMESPACE) -> list[dict]:
        items = self._json(self.core.list_namespaced_event(
            namespace, _preload_content=False, _request_timeout=API_TIMEOUT_S)).get("items") or []
        out = []
        for event in items:
            involved = event.get("involvedObject") or event.get("regarding") or {}
            if reason is not None and event.get("reason") != reason:
                continue
            if involved_name is not None and involved.get("name") != involved_name:
                continue
            out.append(event)
        return out

    def occurrences(self, *, reason: str, involved_name: str, note_has: str = "") -> int:
        """How often an Event was reported, counting a series by its count: a repeat of the
        same note patches one Event (events/v1 series) rather than adding one."""
        total = 0
        for event in self.events(reason=reason, involved_name=involved_name):
            if note_has not in (event.get("note") or event.get("message") or ""):
                continue
            total += max(int((event.get("series") or {}).get("count") or 0),
                         int(event.get("count") or 0), 1)
        return total


# ----------------------------------------------------------------------------------- hosts
@dataclass
class Capabilities:
    """What the target can do; `why_not` explains every False for skip/expectation messages."""

    vlan: bool
    sriov: bool
    ovs: bool
    ovs_datapath: str = "netdev"  # what our own OVS templates ask for on this target
    ovs_system_datapath: bool = False  # can OVS create default (kernel datapath) bridges?
    bridge_vlan_filtering: bool = False  # CONFIG_BRIDGE_VLAN_FILTERING (Linux bridges)
    why_not: dict[str, str] = field(default_factory=dict)
    bond: bool = False  # Linux bonds (the bonding module); why_not["bond"] says why not


@dataclass(frozen=True)
class PfLayout:
    """One emulated (or real) PF a node has: the seed's names and ids."""

    ifname: str
    pci_addr: str
    vendor: str
    device: str
    total_vfs: int


def is_link_local(addr: str) -> bool:
    return ipaddress.ip_interface(addr).ip.is_link_local


class NodeHost(abc.ABC):
    """One node's host, seen read-only (plus the faults scenarios inject on purpose)."""

    name: str
    pfs: list[PfLayout]
    nics: list[str]  # the test "NICs" every node has (eno1, eno2, enp3s0f0, enp3s0f1)

    # -- primitives each target implements --------------------------------------------------
    @abc.abstractmethod
    def run(self, argv: list[str], *, check: bool = True) -> str:
        """Run a command in the node's network context (netns / kind node container)."""

    @abc.abstractmethod
    def num_vfs(self, pci_addr: str) -> Optional[int]:
        """sriov_numvfs of a PF (None when the node has no such PF)."""

    @abc.abstractmethod
    def ovs_vsctl(self, *args: str) -> Optional[str]:
        """Read-only ovs-vsctl against the node's OVS; None when the node has no OVS."""

    @abc.abstractmethod
    def kill_agent(self) -> None:
        """SIGKILL this node's agent (no graceful shutdown)."""

    @abc.abstractmethod
    def ensure_agent_running(self) -> None:
        """(Re)start the agent if it is not running; wait until it is up."""

    @abc.abstractmethod
    def agent_log(self) -> str:
        """The agent's log so far (for failure reports)."""

    # -- derived read-only accessors ---------------------------------------------------------
    # A seam for race tests: called after every host read with what was read, so a test can
    # change the host deterministically between two reads of one snapshot.
    after_read: Optional[Callable[[str], None]] = None

    def _read_done(self, what: str) -> None:
        if self.after_read is not None:
            self.after_read(what)

    def ip_json(self, *args: str) -> list:
        out = self.run(["ip", "-j", *args]).strip()
        return json.loads(out) if out else []

    def _ip_read(self, *args: str) -> list:
        out = self.ip_json(*args)
        self._read_done("ip " + " ".join(args))
        return out

    def link_dump(self) -> list[dict]:
        """Every link with its details (linkinfo) AND its addresses, in one `ip -j -d addr show`:
        a link and its addresses are read together, so one that vanished is simply absent."""
        return self._ip_read("-d", "addr", "show")

    def links(self) -> dict[str, dict]:
        """By ifname (the detail has linkinfo for VLAN id/kind)."""
        return links_of(self.link_dump())

    def mtu(self, ifname: str) -> Optional[int]:
        link = self.links().get(ifname)
        return link.get("mtu") if link else None

    def addresses(self, ifname: Optional[str] = None, *, link_local: bool = False) -> dict[str, set[str]]:
        """Addresses as 'addr/prefix' by ifname (link-local left out unless asked for)."""
        out = addresses_of(self.link_dump(), link_local=link_local)
        if ifname is None:
            return out
        return {ifname: out[ifname]} if ifname in out else {}

    def addrs_of(self, ifname: str) -> set[str]:
        """The link's addresses; empty when there is no such link (one read, no race)."""
        return self.addresses().get(ifname, set())

    def vlans(self) -> dict[str, tuple[str, int]]:
        """VLAN links: ifname -> (parent ifname, VLAN id)."""
        return vlans_of(self.links())

    def routes(self) -> set[tuple]:
        """Main-table routes (IPv6 link-local and multicast left out): (family, dst, gw, dev, metric).
        A route dump never fails on a link that vanished; mixed with other reads it can only
        differ (a "not yet"), never raise."""
        out = set()
        for family in ("-4", "-6"):
            for route in self._ip_read(family, "route", "show", "table", "main"):
                dst = route.get("dst", "default")
                if family == "-6" and (dst.startswith("fe80") or dst.startswith("ff00")):
                    continue
                out.add((family, dst, route.get("gateway"), route.get("dev"), route.get("metric")))
        return out

    def pf(self, ifname: str) -> PfLayout:
        for pf in self.pfs:
            if pf.ifname == ifname:
                return pf
        raise KeyError(f"{self.name} has no PF {ifname}")

    def ovs_bridges(self) -> dict[str, set[str]]:
        """OVS bridge -> its ports ({} when the node has no OVS), read in ONE ovs-vsctl call."""
        out = self.ovs_vsctl(*OVS_SNAPSHOT_ARGS)
        self._read_done("ovs-vsctl list Bridge, list Port")
        if out is None:
            return {}
        return parse_ovs_bridges(out)

    def snapshot(self) -> dict:
        """Everything a template can change, canonical, for "back to what it was" checks.

        Sections are read one after the other (links with addresses in one dump, routes,
        numVfs, OVS in one transaction); none of the reads fails when the agent removes
        something meanwhile, so a snapshot taken mid-change just differs from the baseline.
        """
        dump = self.link_dump()
        links = {}
        for name, link in links_of(dump).items():
            if name in OVS_DATAPATH_LINKS:
                continue
            links[name] = {"mtu": link.get("mtu"),
                           "kind": (link.get("linkinfo") or {}).get("info_kind")}
        return {
            "links": links,
            "addresses": {k: sorted(v) for k, v in addresses_of(dump).items()
                          if k not in OVS_DATAPATH_LINKS},
            "routes": sorted(self.routes(), key=repr),
            "num_vfs": {pf.ifname: self.num_vfs(pf.pci_addr) for pf in self.pfs},
            "ovs": {k: sorted(v) for k, v in self.ovs_bridges().items()},
        }


def links_of(dump: list[dict]) -> dict[str, dict]:
    """`ip -j -d addr show` (or `link show`) output by ifname."""
    return {link["ifname"]: link for link in dump}


def addresses_of(dump: list[dict], *, link_local: bool = False) -> dict[str, set[str]]:
    """'addr/prefix' by ifname from `ip -j addr show` output (link-local only when asked)."""
    out: dict[str, set[str]] = {}
    for link in dump:
        addrs = set()
        for info in link.get("addr_info") or []:
            text = f"{info['local']}/{info['prefixlen']}"
            if link_local or not is_link_local(text):
                addrs.add(str(ipaddress.ip_interface(text)))
        out[link["ifname"]] = addrs
    return out


def vlans_of(links: dict[str, dict]) -> dict[str, tuple[str, int]]:
    """VLAN links of one dump: ifname -> (parent ifname, VLAN id)."""
    by_index = {link.get("ifindex"): name for name, link in links.items()}
    out = {}
    for name, link in links.items():
        info = link.get("linkinfo") or {}
        if info.get("info_kind") != "vlan":
            continue
        parent = link.get("link") or by_index.get(link.get("link_index"))
        out[name] = (parent, int((info.get("info_data") or {}).get("id", -1)))
    return out


def snapshot_diff(before: dict, after: dict) -> list[str]:
    """Human-readable differences between two snapshots ([] when equal)."""
    diffs = []
    for section in sorted(set(before) | set(after)):
        a, b = before.get(section), after.get(section)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                if a.get(key) != b.get(key):
                    diffs.append(f"{section}[{key}]: {a.get(key)!r} -> {b.get(key)!r}")
        else:
            diffs.append(f"{section}: {a!r} -> {b!r}")
    return diffs


class Cluster(abc.ABC):
    """A cluster to run the scenarios on (LocalCluster or KindCluster)."""

    target: str
    api: KubeApi
    nodes: list[NodeHost]
    caps: Capabilities
    kubeconfig: str

    def node(self, name: str) -> NodeHost:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def hostname_label(self, node: str) -> str:
        return self.api.node_labels(node).get("kubernetes.io/hostname", node)

    def collect_logs(self) -> str:
        parts = []
        for node in self.nodes:
            try:
                text = node.agent_log()
            except Exception as exc:  # a report must never fail on log collection
                text = f"(could not read the log: {exc})"
            parts.append(f"===== agent log of {node.name} (last 200 lines) =====\n"
                         + "\n".join(text.splitlines()[-200:]))
        return "\n".join(parts)

    @abc.abstractmethod
    def close(self) -> None:
        """Tear everything down (idempotent, never raises)."""


def names(objs: Iterable[dict]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in objs)
