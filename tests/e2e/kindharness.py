"""KIND target: the same scenarios against a real kind cluster prepared by scripts/e2e-kind.sh.

Why a second target: the fake API server and simulated nodes cannot prove the manifests, RBAC,
the image and a real API server's validation and table printing work; a kind cluster can. The
agents run as the DaemonSet from `kubectl apply -k manifests/`; every kind node is a container
whose network namespace is the agent's host network, so host checks are
`docker exec NODE ip -j ...` / `ovs-vsctl` -- read-only, except the two faults scenarios inject
on purpose (an address removed behind the agent's back, an agent pod killed).

What differs from LOCAL, and how scenarios cope (see Capabilities):
- No SR-IOV: kind nodes share the machine's real /sys, so the script points the agents at an
  empty sysfs root (--sysfs-root) and an e2e run can never touch the developer's real NICs.
  SR-IOV parts must then be reported Failed (no PF matches) while the rest applies.
- The test NICs are dummy links the script created (eno1, eno2, enp3s0f0, enp3s0f1).
- 802.1Q: kind nodes run the machine's kernel, which usually has 8021q; the script probes it and
  exports E2E_VLAN=1/0.
- OVS: only if the script could start a userspace OVS in the nodes (E2E_KIND_OVS=1); bridges
  then need datapathType netdev unless the kernel has the openvswitch module.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Optional

from tests.e2e.cluster import (AGENT_START_TIMEOUT_S, BRIDGE_VLAN_FILTERING_MISSING, Capabilities,
                               Cluster, HostCommandError, kernel_has_feature,
                               KubeApi, NodeHost)
from tests.helpers.wait import wait_for

AGENT_NAMESPACE = "plumber-system"
AGENT_LABEL = "app.kubernetes.io/name=plumber-agent"
NIC_NAMES = ("eno1", "eno2", "enp3s0f0", "enp3s0f1")
COMMAND_TIMEOUT_S = 30.0


def container_runtime() -> Optional[str]:
    preferred = os.environ.get("E2E_CONTAINER_RUNTIME")
    for candidate in ([preferred] if preferred else []) + ["docker", "podman"]:
        if candidate and shutil.which(candidate):
            return candidate
    return None


def kind_skip_reason() -> Optional[str]:
    if not os.environ.get("KUBECONFIG"):
        return "E2E_TARGET=kind needs KUBECONFIG (run scripts/e2e-kind.sh, or `make e2e`)"
    if container_runtime() is None:
        return "E2E_TARGET=kind needs docker or podman to inspect the kind node containers"
    return None


def _env_flag(name: str) -> Optional[bool]:
    value = os.environ.get(name)
    return None if value is None else value.strip() in ("1", "true", "yes")


class KindNode(NodeHost):
    def __init__(self, *, name: str, runtime: str, api: KubeApi) -> None:
        self.name = name
        self.runtime = runtime
        self.api = api
        self.nics = list(NIC_NAMES)
        self.pfs = []  # no SR-IOV in kind (empty sysfs root, see the module docstring)

    def run(self, argv: list[str], *, check: bool = True) -> str:
        full = [self.runtime, "exec", self.name, *argv]
        proc = subprocess.run(full, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                              check=False)
        if check and proc.returncode != 0:
            raise HostCommandError(f"{full} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def num_vfs(self, pci_addr: str) -> Optional[int]:
        return None

    def ovs_vsctl(self, *args: str) -> Optional[str]:
        full = [self.runtime, "exec", self.name, "ovs-vsctl", "--timeout=5", *args]
        proc = subprocess.run(full, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                              check=False)
        return proc.stdout if proc.returncode == 0 else None

    # -- the agent pod -------------------------------------------------------------------------
    def _pods(self) -> list[dict]:
        data = self.api.core.list_namespaced_pod(
            AGENT_NAMESPACE, label_selector=AGENT_LABEL, field_selector=f"spec.nodeName={self.name}",
            _preload_content=False)
        return json.loads(data.data).get("items") or []

    def _ready_pod(self) -> Optional[dict]:
        for pod in self._pods():
            if (pod.get("metadata") or {}).get("deletionTimestamp"):
                continue
            conditions = (pod.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                return pod
        return None

    def kill_agent(self) -> None:
        """Delete the agent pod with no grace period: the container gets SIGKILL; the DaemonSet
        starts a new one (the ledger on the node's hostPath survives)."""
        for pod in self._pods():
            self.api.core.delete_namespaced_pod(pod["metadata"]["name"], AGENT_NAMESPACE,
                                                grace_period_seconds=0, _preload_content=False)

    def ensure_agent_running(self) -> None:
        wait_for(self._ready_pod, timeout_s=AGENT_START_TIMEOUT_S * 3, what=f"agent pod on {self.name} Ready")

    def agent_log(self) -> str:
        texts = []
        for pod in self._pods():
            try:
                resp = self.api.core.read_namespaced_pod_log(pod["metadata"]["name"], AGENT_NAMESPACE,
                                                             _preload_content=False)
                texts.append(resp.data.decode(errors="replace"))
            except Exception as exc:
                texts.append(f"(no log for {pod['metadata']['name']}: {exc})")
        return "\n".join(texts)


class KindCluster(Cluster):
    target = "kind"

    def __init__(self, kubeconfig: str, runtime: str) -> None:
        self.kubeconfig = kubeconfig
        self.api = KubeApi(kubeconfig)
        self.nodes = [KindNode(name=n["metadata"]["name"], runtime=runtime, api=self.api)
                      for n in sorted(self.api.list_nodes(), key=lambda n: n["metadata"]["name"])]
        # Workers first: scenarios pick nodes[0] for single-node targets; keep the control
        # plane last so it is the "unselected" node in subset scenarios.
        self.nodes.sort(key=lambda n: ("control-plane" in n.name, n.name))
        vlan = _env_flag("E2E_VLAN")
        if vlan is None:
            # /proc/net/vlan exists once 8021q is loaded (the script's probe loads it).
            vlan = subprocess.run([runtime, "exec", self.nodes[0].name, "test", "-e",
                                   "/proc/net/vlan/config"], capture_output=True, check=False,
                                  timeout=COMMAND_TIMEOUT_S).returncode == 0
        ovs = bool(_env_flag("E2E_KIND_OVS")) and self.nodes[0].ovs_vsctl("show") is not None
        why = {"sriov": "kind nodes have no (emulated) SR-IOV PFs: the agents use an empty sysfs root"}
        if not vlan:
            why["vlan"] = "the kernel under kind has no 802.1Q VLAN support (module 8021q)"
        if not ovs:
            why["ovs"] = "no Open vSwitch in the kind nodes (set E2E_KIND_OVS=1 in scripts/e2e-kind.sh)"
        system_dp = bool(_env_flag("E2E_OVS_SYSTEM_DATAPATH"))
        if not system_dp:
            why["ovs_system_datapath"] = "no openvswitch kernel module under kind"
        bond = _env_flag("E2E_BOND")
        if bond is None:
            # bonding_masters exists once the bonding module is loaded.
            bond = subprocess.run([runtime, "exec", self.nodes[0].name, "test", "-e",
                                   "/sys/class/net/bonding_masters"], capture_output=True,
                                  check=False, timeout=COMMAND_TIMEOUT_S).returncode == 0
        if not bond:
            why["bond"] = "the kernel under kind has no bonding module loaded"
        # Kind nodes run on this machine's kernel: its bridge is theirs.
        bridge_vlans = kernel_has_feature("bridge_vlan_filtering")
        if not bridge_vlans:
            why["bridge_vlan_filtering"] = BRIDGE_VLAN_FILTERING_MISSING
        self.caps = Capabilities(vlan=bool(vlan), sriov=False, ovs=ovs, ovs_datapath="netdev",
                                 ovs_system_datapath=system_dp, bridge_vlan_filtering=bridge_vlans,
                                 why_not=why, bond=bool(bond))

    @classmethod
    def from_env(cls) -> "KindCluster":
        return cls(os.environ["KUBECONFIG"], container_runtime() or "docker")

    def close(self) -> None:
        try:
            self.api.close()
        except Exception:
            pass
