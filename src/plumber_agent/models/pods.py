"""The few facts about a pod that the disruption analysis and the drain need, read from a plain
Pod dict (docs/pitfalls.md 10: never the `kubernetes` models).

Why these and nothing more: a pod is hit by a host change when it uses a VF the change destroys
or rebinds. The SR-IOV device plugin allocates VFs by resource name (container resources) and
Multus reports what each attachment got in the `k8s.v1.cni.cncf.io/network-status` annotation
(the network-plumbing-wg "Kubernetes Network Custom Resource Definition De-facto Standard",
device-info v1.1: `{"type": "pci", "pci": {"pci-address": ...}}`). What the drain must never
evict is read here too: DaemonSet pods (the controller puts them back at once, on the cordoned
node too), mirror pods (static pods: the API cannot evict them) and pods already done.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

NETWORK_STATUS_ANNOTATION = "k8s.v1.cni.cncf.io/network-status"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"  # set by the kubelet on a static pod's mirror
FINISHED_PHASES = ("Succeeded", "Failed")
# Resource names of the cluster itself (cpu, memory, hugepages-*, ephemeral-storage,
# kubernetes.io/...): never a device plugin's.
KUBERNETES_DOMAIN = "kubernetes.io"


@dataclass(frozen=True)
class PodUse:
    """One pod of this node: who it is, which VFs it holds, whether a drain may evict it."""

    namespace: str
    name: str
    uid: str = ""
    pci_addrs: frozenset[str] = frozenset()  # from network-status device-info
    resources: frozenset[str] = frozenset()  # device-plugin resource names it requests
    daemonset: bool = False
    mirror: bool = False
    finished: bool = False
    terminating: bool = False  # deletionTimestamp set: already going

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def allocation_unread(self) -> bool:
        """It requests a device-plugin resource but its network-status names no PCI address
        (not written yet, or a CNI that reports no device-info): which VF it holds is unknown."""
        return bool(self.resources) and not self.pci_addrs


def device_plugin_resource(name: str) -> bool:
    """A domain-qualified extended resource outside kubernetes.io (`intel.com/sriov_netdevice`),
    the only kind a device plugin advertises."""
    domain, slash, _ = name.partition("/")
    return bool(slash) and domain != KUBERNETES_DOMAIN and not domain.endswith("." + KUBERNETES_DOMAIN)


def _pci_addrs(annotations: dict) -> frozenset[str]:
    raw = annotations.get(NETWORK_STATUS_ANNOTATION)
    if not isinstance(raw, str):
        return frozenset()
    try:
        entries = json.loads(raw)
    except ValueError:
        return frozenset()
    out = set()
    for entry in entries if isinstance(entries, list) else ():
        info = entry.get("device-info") if isinstance(entry, dict) else None
        pci = info.get("pci") if isinstance(info, dict) and info.get("type") == "pci" else None
        address = pci.get("pci-address") if isinstance(pci, dict) else None
        if isinstance(address, str) and address.strip():
            out.add(address.strip().lower())
    return frozenset(out)


def _resources(spec: dict) -> frozenset[str]:
    names = set()
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or ():
            resources = (container or {}).get("resources") or {}
            for part in ("requests", "limits"):
                names.update(n for n in (resources.get(part) or {}) if device_plugin_resource(n))
    return frozenset(names)


def _get(obj: Any, key: str) -> dict:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else {}


def pod_use(obj: dict) -> Optional[PodUse]:
    """The PodUse of a Pod object (None for something that is not one: no name)."""
    meta, spec, status = _get(obj, "metadata"), _get(obj, "spec"), _get(obj, "status")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        return None
    annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
    owners = meta.get("ownerReferences") if isinstance(meta.get("ownerReferences"), list) else []
    return PodUse(
        namespace=str(meta.get("namespace") or "default"), name=name, uid=str(meta.get("uid") or ""),
        pci_addrs=_pci_addrs(annotations), resources=_resources(spec),
        daemonset=any(isinstance(o, dict) and o.get("kind") == "DaemonSet" and o.get("controller")
                      for o in owners),
        mirror=MIRROR_ANNOTATION in annotations,
        finished=status.get("phase") in FINISHED_PHASES,
        terminating=bool(meta.get("deletionTimestamp")))
