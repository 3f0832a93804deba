"""Which planned actions are disruptive, and what they disrupt: the VFs a change takes away
from whoever uses them, and the pods of this node that use those VFs.

Disruptive (each names the VFs it disrupts; a change that disrupts no existing VF is not):
- `set_num_vfs` on a PF that has VFs: every existing VF is destroyed (the kernel needs 0
  between two non-zero counts, docs/pitfalls.md 22); 0 -> N destroys nothing;
- `bind_vf_driver`: that VF (its netdev or vfio device goes with the old driver);
- a change of an uplink that carries pod traffic: an uplink carries pod traffic when it is the
  PF netdev of VFs (the pods' VFs send and receive through it). Its MTU (`set_mtu`: some PF
  drivers reset their VFs on an MTU change, pitfalls 28) or its master (an OVS port taking it
  in or letting it go, a bond enslaving or releasing it, a Linux bridge taking it as a port or
  giving it back, or any action with a `master` param) disrupts all its VFs;
- `set_vf` of an attribute that changes what a VF's user sends or receives (its MAC, its VLAN
  and qos, its link state) on a VF that exists: that VF. Its rates, spoofchk and trust bound or
  police traffic a working pod keeps, so they are not disruptive.
Everything else (VLANs, addresses, routes, bridges on links without VFs) is not disruptive:
the API-path guard and the rollout limit are what bound those.

A pod is hit when its network-status names the PCI address of a disrupted VF. A pod that
requests a device-plugin resource but whose network-status names no PCI address cannot be
placed, so it is counted as hit by every disruptive action of the node (`uncertain`): a pod
silently left with a dead VF is the worse mistake. `pods=None`: the pods were not read (local
mode without a pods file), said so in the words.

Pure: data in, the same actions out with `disruption` set.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Optional, Sequence

from plumber_agent.models.actions import Action, Verb
from plumber_agent.models.observed import ObservedHost
from plumber_agent.models.pods import PodUse

VFS_LISTED = 4
"""VF addresses named in an action's words (the rest are counted)."""
PODS_LISTED = 5


@dataclass(frozen=True)
class Disruption:
    """What one action disrupts: `what` for people, the VFs, and the pods that use them."""

    what: str
    vfs: tuple[str, ...]
    pods: tuple[str, ...] = ()  # namespace/name, sorted: their VF is named in network-status
    uncertain: tuple[str, ...] = ()  # their allocation cannot be read: counted as hit
    pods_known: bool = True  # False: the pods were not read

    @property
    def hit(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.pods) | set(self.uncertain)))

    def words(self) -> str:
        """The action's line in `plan` and in the rollout preview ends with this."""
        if not self.pods_known:
            who = "pods using them not read"
        elif not self.hit:
            who = "no pod uses them"
        else:
            names = list(self.pods) + [f"{p} (allocation unread)" for p in self.uncertain]
            who = f"pods {', '.join(names[:PODS_LISTED])}" + (
                f" and {len(names) - PODS_LISTED} more" if len(names) > PODS_LISTED else "")
        return f"DISRUPTIVE: {self.what}; {who}"


def _listed(vfs: Sequence[str]) -> str:
    shown = ", ".join(vfs[:VFS_LISTED])
    return shown + (f", ... ({len(vfs)} in all)" if len(vfs) > VFS_LISTED else "")


def _uplink_vfs(observed: ObservedHost, ifname: Optional[str]) -> tuple[Optional[str], tuple]:
    pf = observed.pf_by_ifname(ifname) if ifname else None
    if pf is None or not pf.vfs:
        return None, ()
    return pf.pci_addr, tuple(sorted(vf.pci_addr for vf in pf.vfs))


def disrupted(action: Action, observed: ObservedHost) -> Optional[tuple[str, tuple[str, ...]]]:
    """(what, VF addresses) the action disrupts, None when it disrupts no existing VF."""
    if action.verb == Verb.SET_NUM_VFS:
        pf = observed.pfs.get(action.target)
        if pf is None or not pf.vfs or action.params.get("num_vfs") == pf.num_vfs:
            return None
        vfs = tuple(sorted(vf.pci_addr for vf in pf.vfs))
        return (f"numVfs {pf.num_vfs} -> {action.params.get('num_vfs')} destroys the "
                f"{len(vfs)} VF(s) of PF {pf.pci_addr} ({_listed(vfs)})"), vfs
    if action.verb == Verb.BIND_VF_DRIVER:
        for pf in observed.pfs.values():
            for vf in pf.vfs:
                if vf.pci_addr == action.target:
                    return (f"rebinding VF {vf.pci_addr} from {vf.driver or 'no driver'} to "
                            f"{action.params.get('driver')}"), (vf.pci_addr,)
        return None
    if action.verb == Verb.SET_MTU:
        pf_pci, vfs = _uplink_vfs(observed, action.target)
        if vfs:
            return (f"the MTU change of uplink {action.target} (PF {pf_pci}) disrupts its "
                    f"{len(vfs)} VF(s) ({_listed(vfs)})"), vfs
        return None
    if action.verb == Verb.SET_VF:
        return _vf_attribute_change(action, observed)
    uplinks = list(action.params.get("interfaces") or []) if action.verb in (
        Verb.ENSURE_PORT, Verb.DELETE_PORT) else []
    if "master" in action.params or action.verb in _MASTER_VERBS:
        uplinks.append(action.target)
    for ifname in uplinks:
        pf_pci, vfs = _uplink_vfs(observed, ifname)
        if vfs:
            return (f"the master change of uplink {ifname} (PF {pf_pci}) disrupts its "
                    f"{len(vfs)} VF(s) ({_listed(vfs)})"), vfs
    return None


# Verbs that give their target a master or take it away (bonds, Linux bridges).
_MASTER_VERBS = (Verb.ENSLAVE, Verb.RELEASE_MEMBER, Verb.SET_LINUX_BRIDGE_PORT)
# VF attributes (planner/vfattrs.py ATTRS names) whose change cuts the VF user's traffic.
_DISRUPTIVE_VF_SETTINGS = ("mac", "vlan", "link_state")


def _vf_attribute_change(action: Action, observed: ObservedHost):
    pf = observed.pfs.get(action.params.get("pf") or "")
    vf = next((v for v in (pf.vfs if pf else []) if v.id == action.params.get("vf")), None)
    changed = [name for name in _DISRUPTIVE_VF_SETTINGS if action.params.get(name) is not None]
    if vf is None or not changed:
        return None
    return (f"setting {', '.join(changed)} of VF {vf.id} ({vf.pci_addr}) of PF {pf.pci_addr}"
            ), (vf.pci_addr,)


def hit_by(vfs: Iterable[str], pods: Sequence[PodUse]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(pods whose network-status names one of `vfs`, pods whose allocation is unread)."""
    wanted = set(vfs)
    named = sorted(p.ref for p in pods if not p.finished and p.pci_addrs & wanted)
    unread = sorted(p.ref for p in pods if not p.finished and p.allocation_unread)
    return tuple(named), tuple(unread)


def annotate(actions: list[Action], observed: ObservedHost,
             pods: Optional[Sequence[PodUse]]) -> list[Action]:
    """The actions with `disruption` set on each disruptive one (others: None)."""
    out = []
    for action in actions:
        found = disrupted(action, observed)
        disruption = None
        if found is not None:
            what, vfs = found
            named, unread = hit_by(vfs, pods or ())
            disruption = Disruption(what=what, vfs=vfs, pods=named, uncertain=unread,
                                    pods_known=pods is not None)
        out.append(action if action.disruption == disruption
                   else replace(action, disruption=disruption))
    return out


def any_disruptive(actions: Iterable[Action]) -> bool:
    return any(a.disruption is not None for a in actions)
