"""The disruption analysis (planner/disruption.py, models/pods.py): which planned actions are
disruptive, which VFs they take away and which pods of the node they hit."""
from __future__ import annotations

import json

from plumber_agent.desired import merge
from plumber_agent.models.actions import Action, Phase, Verb
from plumber_agent.models.observed import ObservedHost, ObservedLink, ObservedPf, ObservedVf
from plumber_agent.models.pods import NETWORK_STATUS_ANNOTATION, PodUse, pod_use
from plumber_agent.planner import plan
from plumber_agent.planner.disruption import annotate
from tests.support.fakehost import make_template

ENO1, ENO2 = "0000:01:00.0", "0000:01:00.1"
ENO1_VFS = ("0000:02:02.0", "0000:02:02.1")
ENO2_VFS = ("0000:02:0a.0", "0000:02:0a.1", "0000:02:0a.2")


def host() -> ObservedHost:
    """eno1 with 2 VFs, eno2 with 3, enp3s0f0 with none; eno3 a plain NIC."""
    h = ObservedHost()
    for pci, ifname, vfs in ((ENO1, "eno1", ENO1_VFS), (ENO2, "eno2", ENO2_VFS),
                             ("0000:03:00.0", "enp3s0f0", ())):
        h.pfs[pci] = ObservedPf(pci, ifname, "8086", "1572", "i40e", total_vfs=64,
                                num_vfs=len(vfs),
                                vfs=[ObservedVf(i, a, "iavf") for i, a in enumerate(vfs)])
        h.links[ifname] = ObservedLink(ifname, index=len(h.links) + 2, mtu=1500, pci_addr=pci)
    h.links["eno3"] = ObservedLink("eno3", index=9, mtu=1500)
    return h


def pod(name: str, *pcis: str, resource: str = "", namespace: str = "apps",
        owner: str = "ReplicaSet", **meta) -> dict:
    """A Pod as the API serves it, with Multus's network-status naming each VF."""
    status = [{"name": "cluster-default", "interface": "eth0", "ips": ["10.0.0.5"]}] + [
        {"name": f"apps/sriov-{i}", "interface": f"net{i}",
         "device-info": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": pci}}}
        for i, pci in enumerate(pcis)]
    resources = {"requests": {resource: "1"}, "limits": {resource: "1"}} if resource else {}
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                         "annotations": {NETWORK_STATUS_ANNOTATION: json.dumps(status),
                                         **meta.pop("annotations", {})},
                         "ownerReferences": [{"kind": owner, "name": "x", "controller": True}],
                         **meta},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "resources": resources}]},
            "status": {"phase": "Running"}}


def uses(*pods: dict) -> list[PodUse]:
    return [pod_use(p) for p in pods]


def numvfs(pci: str, count: int) -> Action:
    return Action(Phase.SRIOV_NUMVFS, Verb.SET_NUM_VFS, pci, {"num_vfs": count},
                  templates=["t"])


def test_a_numvfs_change_destroys_every_vf_of_its_pf_and_hits_only_their_pods():
    pods = uses(pod("on-eno2", ENO2_VFS[1], resource="intel.com/sriov_a"),
                pod("on-eno1", ENO1_VFS[0], resource="intel.com/sriov_b"),
                pod("plain"))
    [action] = annotate([numvfs(ENO2, 4)], host(), pods)
    assert action.disruption.vfs == ENO2_VFS
    assert action.disruption.pods == ("apps/on-eno2",)
    assert action.disruption.hit == ("apps/on-eno2",)
    assert "DISRUPTIVE: numVfs 3 -> 4 destroys the 3 VF(s) of PF 0000:01:00.1" in action.describe()
    assert "pods apps/on-eno2" in action.describe()


def test_numvfs_from_zero_destroys_nothing():
    [action] = annotate([numvfs("0000:03:00.0", 8)], host(), uses(pod("a", ENO2_VFS[0])))
    assert action.disruption is None
    assert "DISRUPTIVE" not in action.describe()


def test_a_vf_driver_rebind_hits_only_the_pod_on_that_vf():
    pods = uses(pod("a", ENO2_VFS[0]), pod("b", ENO2_VFS[2]))
    bind = Action(Phase.SRIOV_VF_DRIVER, Verb.BIND_VF_DRIVER, ENO2_VFS[2],
                  {"driver": "vfio-pci", "pf": ENO2}, templates=["t"])
    [action] = annotate([bind], host(), pods)
    assert action.disruption.vfs == (ENO2_VFS[2],)
    assert action.disruption.pods == ("apps/b",)
    assert "rebinding VF 0000:02:0a.2 from iavf to vfio-pci" in action.disruption.what


def test_the_mtu_of_an_uplink_with_vfs_is_disruptive_and_of_a_plain_nic_is_not():
    pods = uses(pod("a", ENO1_VFS[1]))
    pf_mtu = Action(Phase.SRIOV_MTU, Verb.SET_MTU, "eno1", {"mtu": 9000}, templates=["t"])
    nic_mtu = Action(Phase.LINK_MTU, Verb.SET_MTU, "eno3", {"mtu": 9000}, templates=["t"])
    no_vfs = Action(Phase.SRIOV_MTU, Verb.SET_MTU, "enp3s0f0", {"mtu": 9000}, templates=["t"])
    first, second, third = annotate([pf_mtu, nic_mtu, no_vfs], host(), pods)
    assert first.disruption.vfs == ENO1_VFS and first.disruption.pods == ("apps/a",)
    assert second.disruption is None and third.disruption is None


def test_a_master_change_of_an_uplink_with_vfs_is_disruptive():
    port = Action(Phase.OVS_PORT, Verb.ENSURE_PORT, "eno2", {"bridge": "br0",
                                                              "interfaces": ["eno2"]},
                  templates=["t"])
    other = Action(Phase.OVS_PORT, Verb.ENSURE_PORT, "eno3", {"bridge": "br0",
                                                               "interfaces": ["eno3"]},
                   templates=["t"])
    first, second = annotate([port, other], host(), uses(pod("a", ENO2_VFS[0])))
    assert "master change of uplink eno2" in first.disruption.what
    assert first.disruption.pods == ("apps/a",)
    assert second.disruption is None


def test_a_bond_or_a_linux_bridge_taking_an_uplink_with_vfs_is_disruptive():
    """Enslaving the PF netdev to a bond, releasing it, or making it a Linux bridge port moves
    its VFs' traffic with it; the same on a NIC without VFs disrupts no pod."""
    pods = uses(pod("a", ENO2_VFS[0]))
    actions = [Action(Phase.LINK_CREATE, Verb.ENSLAVE, "eno2", {"bond": "bond0"}, templates=["t"]),
               Action(Phase.RELEASE_MEMBER, Verb.RELEASE_MEMBER, "eno2",
                      {"bond": "bond0", "up": True}, templates=["t"]),
               Action(Phase.LINUX_BRIDGE_PORT, Verb.SET_LINUX_BRIDGE_PORT, "eno2",
                      {"bridge": "br1"}, templates=["t"]),
               Action(Phase.LINK_CREATE, Verb.ENSLAVE, "eno3", {"bond": "bond0"}, templates=["t"])]
    *taken, plain = annotate(actions, host(), pods)
    for action in taken:
        assert "master change of uplink eno2" in action.disruption.what, action.verb
        assert action.disruption.pods == ("apps/a",)
    assert plain.disruption is None


def test_a_vf_attribute_cutting_traffic_is_disruptive_and_a_policing_one_is_not():
    """A VF's MAC, VLAN or link state changes what its pod sends and receives; its rates,
    spoofchk and trust do not take a working network away."""
    pods = uses(pod("a", ENO2_VFS[1]), pod("b", ENO2_VFS[2]))

    def set_vf(vf: int, **settings) -> Action:
        return Action(Phase.SRIOV_VF_ATTR, Verb.SET_VF, "eno2", {"pf": ENO2, "vf": vf, **settings},
                      templates=["t"])
    vlan, mac, down, trust, rate, missing = annotate([
        set_vf(1, vlan=100, qos=0), set_vf(2, mac="02:00:00:00:00:01"),
        set_vf(2, link_state="disable"), set_vf(1, trust=True), set_vf(1, max_tx_rate=100),
        set_vf(7, vlan=5, qos=0)], host(), pods)
    assert vlan.disruption.vfs == (ENO2_VFS[1],) and vlan.disruption.pods == ("apps/a",)
    assert "setting vlan of VF 1" in vlan.disruption.what
    assert mac.disruption.pods == ("apps/b",) and down.disruption.pods == ("apps/b",)
    assert trust.disruption is None and rate.disruption is None
    assert missing.disruption is None  # no such VF: nothing of anyone's is cut


def test_a_pod_whose_allocation_cannot_be_read_counts_as_hit():
    """It requests a device-plugin resource but its network-status names no PCI address."""
    unread = pod("unread", resource="intel.com/sriov_netdevice")
    gpu_free = pod("cpu-only", resource="")
    gpu_free["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "1", "memory": "1Gi",
                                                                   "hugepages-1Gi": "2Gi"}}
    [action] = annotate([numvfs(ENO1, 4)], host(), uses(unread, gpu_free))
    assert action.disruption.pods == ()
    assert action.disruption.uncertain == ("apps/unread",)
    assert action.disruption.hit == ("apps/unread",)
    assert "apps/unread (allocation unread)" in action.describe()


def test_finished_pods_are_not_hit_and_unread_pods_are_said_so():
    done = pod("done", ENO2_VFS[0])
    done["status"]["phase"] = "Succeeded"
    [action] = annotate([numvfs(ENO2, 1)], host(), uses(done))
    assert action.disruption.hit == () and "no pod uses them" in action.describe()
    [unknown] = annotate([numvfs(ENO2, 1)], host(), None)
    assert "pods using them not read" in unknown.describe()


def test_pod_use_reads_owners_mirror_and_malformed_annotations():
    ds = pod_use(pod("ds", ENO2_VFS[0], owner="DaemonSet"))
    mirror = pod_use(pod("static", annotations={"kubernetes.io/config.mirror": "abc"}))
    broken = pod("broken")
    broken["metadata"]["annotations"][NETWORK_STATUS_ANNOTATION] = "{not json"
    odd = pod("odd")
    odd["metadata"]["annotations"][NETWORK_STATUS_ANNOTATION] = json.dumps(
        [{"device-info": {"type": "pci", "pci": {"pci-address": " 0000:02:0A.1 "}}},
         {"device-info": {"type": "vdpa", "vdpa": {"pci-address": "0000:02:0a.2"}}},
         "junk", {"device-info": None}])
    assert ds.daemonset and ds.pci_addrs == {ENO2_VFS[0]}
    assert mirror.mirror and not mirror.daemonset
    assert pod_use(broken).pci_addrs == frozenset()
    assert pod_use(odd).pci_addrs == {"0000:02:0a.1"}  # canonical; only type pci counts
    assert pod_use({"metadata": {}}) is None and pod_use({}) is None


def test_the_planner_marks_a_planned_numvfs_change_disruptive():
    observed = host()
    template = make_template("vfs", {"sriovConfig": [{"pfName": "eno2", "numVfs": 8}]})
    merged = merge([template], {}, observed)
    result = plan(merged.desired, observed, {})
    [action] = [a for a in result.actions if a.verb == Verb.SET_NUM_VFS]
    assert action.disruption is not None and action.disruption.vfs == ENO2_VFS
    assert not action.disruption.pods_known
    grow = make_template("vfs", {"sriovConfig": [{"pfName": "enp3s0f0", "numVfs": 8}]})
    result = plan(merge([grow], {}, observed).desired, observed, {})
    assert [a.disruption for a in result.actions] == [None]
