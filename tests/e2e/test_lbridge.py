"""Linux bridges across real agents: a bridge with STP, two ports and an address applied, a port
taken out behind the agent's back put back (drift), a newer template disagreeing on the bridge's
settings in Conflict, and both templates deleted (the host returns exactly to its baseline).

VLAN filtering is left out here: the CI kernel has no CONFIG_BRIDGE_VLAN_FILTERING (the agent's
loop over port VLANs runs on a real kernel in the full-kernel VM: tests/host/test_lbridge.py;
example 09 covers the Failed outcome here).
"""
from __future__ import annotations

import pytest

from tests.e2e.cluster import DRIFT_TIMEOUT_S, template
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]

HOSTNAME = "kubernetes.io/hostname"
BRIDGE = "e2e-br"
PORTS = ("enp3s0f0", "enp3s0f1")


def _on(steps, node) -> dict:
    return {HOSTNAME: steps.cluster.hostname_label(node.name)}


def test_bridge_applied_drift_repaired_conflict_reported_and_undone(steps):
    node = steps.nodes[0]
    spec = {"linuxBridgeConfig": [{"name": BRIDGE, "stp": True,
                                   "ports": [{"name": p} for p in PORTS]}],
            "interfaceConfig": [{"name": BRIDGE, "ipv4": {"address": ["10.80.0.1/24"]}}]}
    older = template("zz-e2e-lbridge", spec, node_selector=_on(steps, node))
    created = steps.apply(older)
    steps.wait_applied(older, node)  # the bridge, stp on, both ports' master, its address

    repaired_before = len(steps.api.events(reason="DriftRepaired", involved_name=node.name))
    node.run(["ip", "link", "set", PORTS[0], "nomaster"])  # behind the agent's back
    wait_for(lambda: node.links()[PORTS[0]].get("master") == BRIDGE, timeout_s=DRIFT_TIMEOUT_S,
             what=f"{PORTS[0]} back in {BRIDGE}")
    wait_for(lambda: len(steps.api.events(reason="DriftRepaired", involved_name=node.name))
             > repaired_before, timeout_s=DRIFT_TIMEOUT_S,
             what=f"a DriftRepaired event for {node.name}")

    steps.wait_next_second(created)
    newer = template("aa-e2e-lbridge", {"linuxBridgeConfig": [
        {"name": BRIDGE, "stp": False, "ports": [{"name": PORTS[1]}]}]},
        node_selector=_on(steps, node))
    steps.apply(newer)
    entry = steps.wait_state(node.name, "aa-e2e-lbridge", "Conflict", contains=["zz-e2e-lbridge"])
    assert f"linux bridge {BRIDGE}" in entry["message"], entry
    steps.wait_state(node.name, "zz-e2e-lbridge", "Applied")
    assert node.links()[BRIDGE]["linkinfo"]["info_data"]["stp_state"] == 1  # the older wins

    steps.delete("aa-e2e-lbridge")
    steps.delete("zz-e2e-lbridge")
    steps.wait_baseline(node)  # bridge deleted (it was ours), ports free again
