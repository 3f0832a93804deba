"""fleet/drain.py's NodeDrainApi over kube/drain.py's DrainApi: this node's pods as PodUses,
eviction outcomes in the drain's three words, the cordon under this agent's record.

Why a translation and not one shared type: kube/drain.py reads the API's shapes (it is the
only module speaking Pods, Evictions and Node patches), the disruption analysis reads PodUses
(pure, also built from a `plan --pods` file); this module is the one place they meet.
"""
from __future__ import annotations

from plumber_agent.fleet.drain import Evicted
from plumber_agent.kube.drain import (CordonResult, DrainApi, EvictionResult, NodePod, PodRef)
from plumber_agent.models.pods import PodUse, device_plugin_resource


def pod_use_of(pod: NodePod) -> PodUse:
    return PodUse(namespace=pod.ref.namespace, name=pod.ref.name, uid=pod.ref.uid,
                  pci_addrs=frozenset(a.strip().lower() for a in pod.pci_addresses),
                  resources=frozenset(n for n in pod.resources if device_plugin_resource(n)),
                  daemonset=pod.daemonset, mirror=pod.mirror, finished=pod.terminal,
                  terminating=pod.terminating)


class KubeNodeDrain:
    """The drain's requests for one node, as agent `agent` (its node's name)."""

    def __init__(self, api: DrainApi, *, node: str) -> None:
        self.api = api
        self.node = node

    def node_pods(self) -> list[PodUse]:
        return [pod_use_of(pod) for pod in self.api.list_node_pods(self.node)]

    def evict(self, pod: PodUse) -> tuple[str, str]:
        outcome = self.api.evict(PodRef(pod.namespace, pod.name, pod.uid))
        if outcome.result == EvictionResult.EVICTED:
            return Evicted.EVICTED, outcome.message
        if outcome.result == EvictionResult.GONE:
            return Evicted.GONE, outcome.message
        if outcome.result == EvictionResult.BLOCKED_BY_PDB:
            budget = f" (PodDisruptionBudget {pod.namespace}/{outcome.pdb})" if outcome.pdb else ""
            return Evicted.BLOCKED, f"{outcome.message}{budget}"
        return Evicted.BLOCKED, f"eviction {outcome.result}: {outcome.message}"

    def cordon(self) -> bool:
        result = self.api.cordon(self.node, agent=self.node).result
        return result in (CordonResult.CORDONED, CordonResult.ALREADY_CORDONED)

    def uncordon(self) -> bool:
        return self.api.uncordon(self.node, agent=self.node).result == CordonResult.UNCORDONED
