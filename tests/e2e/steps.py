"""Scenario steps: what a user does (apply/patch/delete templates, label nodes) and the bounded
waits for what the agents must then report and do; plus the per-test cleanup that returns the
cluster to its baseline so scenarios do not depend on each other's leftovers.

Every wait checks BOTH sides: the HostNetwork status (state, observedGeneration == the template's
current generation, message) and the host itself, because a status that says Applied while the
host differs is exactly the bug class (errors swallowed, docs/pitfalls.md 36) e2e exists to catch.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import os
from typing import Iterable, Optional

from tests.e2e.cluster import CONVERGE_TIMEOUT_S, Cluster, NodeHost, rfc3339_now, snapshot_diff
from tests.e2e.expect import Expected, assert_host_has, expected
from tests.helpers.wait import wait_for

CLEANUP_TIMEOUT_S = 120.0
# Host snapshots run ip/ovs-vsctl processes: polled every 50 ms they steal the CPU the agent needs
# under software emulation (the full-kernel VM), so waits on the host back off to this interval.
HOST_POLL_MAX_INTERVAL_S = 2.0 if os.environ.get("PLUMBER_IN_VM") == "1" else 0.5


class Steps:
    def __init__(self, cluster: Cluster, baseline: dict) -> None:
        self.cluster = cluster
        self.api = cluster.api
        self.caps = cluster.caps
        self.baseline = baseline  # {"snapshots": {node: snapshot}, "labels": {node: labels}}
        self.created: list[str] = []

    @property
    def nodes(self) -> list[NodeHost]:
        return self.cluster.nodes

    # -- user actions ------------------------------------------------------------------------
    def apply(self, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        name = obj["metadata"]["name"]
        if name not in self.created:
            self.created.append(name)
        return self.api.apply_template(obj)

    def patch(self, name: str, patch: dict) -> dict:
        return self.api.patch_template(name, patch)

    def delete(self, name: str) -> None:
        self.api.delete_template(name)

    def label(self, node: str, labels: dict[str, Optional[str]]) -> None:
        self.api.label_node(node, labels)

    def wait_next_second(self, obj: dict) -> None:
        """Bounded wait until the API clock (second resolution) is past obj's creationTimestamp,
        so the next object is strictly younger (the conflict rule orders by age)."""
        created = obj["metadata"]["creationTimestamp"]
        wait_for(lambda: rfc3339_now() > created, timeout_s=5.0, what="the clock to pass " + created,
                 interval_s=0.05)

    # -- status reads ------------------------------------------------------------------------
    def template_entry(self, node: str, name: str) -> Optional[dict]:
        return self.api.template_statuses(node).get(name)

    def _generation(self, name: str) -> Optional[int]:
        obj = self.api.get_template(name)
        return (obj or {}).get("metadata", {}).get("generation")

    def assert_state(self, node: str, name: str, state: str, contains: Iterable[str] = ()) -> dict:
        entry = self.template_entry(node, name)
        if entry is None:
            raise AssertionError(f"{node}: template {name} not in HostNetwork status "
                                 f"(have {sorted(self.api.template_statuses(node))})")
        generation = self._generation(name)
        if entry.get("state") != state or (state != "NotSelected"
                                           and entry.get("observedGeneration") != generation):
            raise AssertionError(f"{node}: {name} is {entry} ; want state {state} at generation {generation}")
        message = entry.get("message") or ""
        missing = [text for text in contains if text not in message]
        if missing:
            raise AssertionError(f"{node}: {name} message {message!r} lacks {missing}")
        return entry

    def wait_state(self, node: str, name: str, state: str, *, contains: Iterable[str] = (),
                   timeout_s: float = CONVERGE_TIMEOUT_S) -> dict:
        contains = list(contains)
        return wait_for(lambda: self.assert_state(node, name, state, contains), timeout_s=timeout_s,
                        what=f"{name} {state} on {node}")

    def wait_not_selected(self, node: str, name: str, timeout_s: float = CONVERGE_TIMEOUT_S) -> None:
        def check():
            entry = self.template_entry(node, name)
            if entry is not None and entry.get("state") != "NotSelected":
                raise AssertionError(f"{node}: {name} is {entry}")
            return True
        wait_for(check, timeout_s=timeout_s, what=f"{name} not selected on {node}")

    def expectation(self, obj: dict, node: NodeHost) -> Expected:
        return expected(obj["spec"], self.caps, node)

    def wait_applied(self, obj: dict, node: NodeHost, *, timeout_s: float = CONVERGE_TIMEOUT_S) -> dict:
        """The template reaches the state this target allows, and the host has what can apply."""
        exp = self.expectation(obj, node)
        entry = self.wait_state(node.name, obj["metadata"]["name"], exp.state,
                                contains=exp.message_contains, timeout_s=timeout_s)
        wait_for(lambda: assert_host_has(node, obj["spec"], self.caps), timeout_s=timeout_s,
                 max_interval_s=HOST_POLL_MAX_INTERVAL_S,
                 what=f"{node.name} host has {obj['metadata']['name']}")
        return entry

    # -- host vs baseline ----------------------------------------------------------------------
    def assert_at_baseline(self, node: NodeHost) -> bool:
        diff = snapshot_diff(self.baseline["snapshots"][node.name], node.snapshot())
        if diff:
            raise AssertionError(f"{node.name} differs from its baseline: " + "; ".join(diff))
        return True

    def wait_baseline(self, node: NodeHost, timeout_s: float = CONVERGE_TIMEOUT_S) -> None:
        wait_for(lambda: self.assert_at_baseline(node), timeout_s=timeout_s,
                 max_interval_s=HOST_POLL_MAX_INTERVAL_S, what=f"{node.name} back to its baseline")

    # -- cleanup -------------------------------------------------------------------------------
    def restore_labels(self) -> None:
        for node in self.nodes:
            want = self.baseline["labels"][node.name]
            have = self.api.node_labels(node.name)
            patch: dict[str, Optional[str]] = {k: None for k in have if k not in want}
            patch.update({k: v for k, v in want.items() if have.get(k) != v})
            if patch:
                self.api.label_node(node.name, patch)

    def cleanup(self) -> None:
        """Delete what the test created, restore labels, restart dead agents, and wait until
        every node is back to its baseline with no template left in its status."""
        for name in self.created:
            with contextlib.suppress(Exception):
                self.api.delete_template(name)
        self.restore_labels()
        for node in self.nodes:
            node.ensure_agent_running()
        for node in self.nodes:
            def clean(node=node):
                left = self.api.template_statuses(node.name)
                if left:
                    raise AssertionError(f"{node.name} still reports templates {sorted(left)}")
                return self.assert_at_baseline(node)
            wait_for(clean, timeout_s=CLEANUP_TIMEOUT_S, max_interval_s=HOST_POLL_MAX_INTERVAL_S,
                     what=f"cleanup of {node.name}")


def take_baseline(cluster: Cluster) -> dict:
    """Wait for every agent's first HostNetwork, then record labels and host snapshots."""
    leftovers = [t["metadata"]["name"] for t in cluster.api.list_templates()]
    if leftovers:
        raise RuntimeError("the e2e suite needs a cluster without HostNetworkTemplates; found "
                           + ", ".join(leftovers))
    for node in cluster.nodes:
        wait_for(lambda node=node: (cluster.api.hostnetwork(node.name) or {}).get("status"),
                 timeout_s=CONVERGE_TIMEOUT_S, what=f"first HostNetwork of {node.name}")
    return {"snapshots": {n.name: n.snapshot() for n in cluster.nodes},
            "labels": {n.name: cluster.api.node_labels(n.name) for n in cluster.nodes},
            "taken": datetime.datetime.now(datetime.timezone.utc).isoformat()}
