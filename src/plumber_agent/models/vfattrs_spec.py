"""sriovConfig[].vfs: per-VF attributes set on the PF (`ip link set PF vf N mac .. vlan .. qos ..
spoofchk on trust on min_tx_rate .. max_tx_rate .. state ..`), for one VF (`id`) or a range
(`range: "0-7"`).

Why a module of its own: the VF attributes are one kind with their own validation; models/spec.py
only hooks `vfs` into an sriovConfig entry (parse_vfs) and the dataclass below.

What is refused, path-annotated, before anything reaches the host: a MAC that is not a unicast
address (or is given to a range of more than one VF: every VF would carry it), a VLAN outside
0..4094 (0 = none), a qos outside 0..7 or without a vlan (IFLA_VF_VLAN carries both: `ip link`'s
`vlan V` alone means qos 0), rates outside 0..MAX_TX_RATE_MBPS or a minimum above a non-zero
maximum, an unknown link state, an entry that sets nothing, the same attribute of one VF set
twice, and a VF at or beyond the entry's own numVfs (beyond the PF's is found on the host).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from plumber_agent import validation as v
from plumber_agent.kinds import spec_keys
from plumber_agent.models.codec import camel_json

VF_ID_MAX = v.NUMVFS_MAX - 1  # VFs are numbered 0..numVfs-1
VF_VLAN_MAX = 4094  # 0 = no VLAN (what the kernel reports for an untagged VF)
VF_QOS_MAX = 7  # the 802.1p priority bits
MAX_TX_RATE_MBPS = 2**32 - 1  # struct ifla_vf_rate's __u32, in Mbit/s; 0 = no limit
LINK_STATES = ("auto", "enable", "disable")  # IFLA_VF_LINK_STATE_AUTO/ENABLE/DISABLE = 0/1/2

VF_KEYS = spec_keys("sriovConfig[].vfs[]")  # declared by kinds/vfattrs.py
# The attributes, as the merge, planner and ledger name them (ObservedVfInfo's names; vlan
# carries its qos, as the kernel's IFLA_VF_VLAN does), with their spec keys.
ATTRS = (("mac", ("mac",)), ("vlan", ("vlan", "qos")), ("spoofchk", ("spoofchk",)),
         ("trust", ("trust",)), ("min_tx_rate", ("minTxRate",)),
         ("max_tx_rate", ("maxTxRate",)), ("link_state", ("linkState",)))

_RANGE_RE = re.compile(r"([0-9]{1,5})-([0-9]{1,5})")
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@camel_json
@dataclass
class VfConfig:
    """One sriovConfig[].vfs entry: exactly one of id / range, and the attributes it sets."""

    id: Optional[int] = None
    range: Optional[str] = None  # "first-last", both included, canonical ("2-5")
    mac: Optional[str] = None  # lower-case
    vlan: Optional[int] = None
    qos: Optional[int] = None
    spoofchk: Optional[bool] = None
    trust: Optional[bool] = None
    min_tx_rate: Optional[int] = None
    max_tx_rate: Optional[int] = None
    link_state: Optional[str] = None  # one of LINK_STATES

    def ids(self) -> range:
        if self.id is not None:
            return range(self.id, self.id + 1)
        first, last = (int(part) for part in (self.range or "0-0").split("-"))
        return range(first, last + 1)

    def describe_ids(self) -> str:
        ids = self.ids()
        return f"VF {ids[0]}" if len(ids) == 1 else f"VFs {ids[0]}-{ids[-1]}"

    def attributes(self) -> dict[str, Any]:
        """The attributes this entry sets, by ATTRS name (vlan as VfVlan)."""
        out: dict[str, Any] = {}
        if self.mac is not None:
            out["mac"] = self.mac
        if self.vlan is not None:
            out["vlan"] = VfVlan(self.vlan, self.qos or 0)
        for name in ("spoofchk", "trust", "min_tx_rate", "max_tx_rate", "link_state"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


def link_state_name(value: Optional[int]) -> Optional[str]:
    """IFLA_VF_LINK_STATE's number as the spec and status name it (a number unknown here as
    its decimal text)."""
    if value is None:
        return None
    return LINK_STATES[value] if 0 <= value < len(LINK_STATES) else str(value)


@dataclass(frozen=True)
class VfVlan:
    """IFLA_VF_VLAN: a VF's VLAN and priority, one attribute in the kernel and here."""

    vlan: int
    qos: int = 0

    def __str__(self) -> str:
        return f"vlan {self.vlan}" + (f" qos {self.qos}" if self.qos else "")


def check_mac(value) -> Optional[str]:
    """A unicast, non-zero MAC (what the kernel's is_valid_ether_addr accepts)."""
    if not isinstance(value, str) or not _MAC_RE.fullmatch(value.lower()):
        return f"{value!r} is not a MAC address of the form 02:00:00:00:00:01"
    if int(value[:2], 16) & 1:
        return f"{value} is a multicast address; a VF needs a unicast one"
    if value == "00:00:00:00:00:00":
        return f"{value} is the all-zero address"
    return None


def _check_bool(value) -> Optional[str]:
    return None if isinstance(value, bool) else f"{value!r} is not true or false"


def _ids(p, path: str, raw: dict) -> Optional[range]:
    if ("id" in raw) == ("range" in raw):
        p.add(path, "exactly one of id or range must be given")
        return None
    if "id" in raw:
        if not p.check(f"{path}.id", v.check_int_range(raw["id"], 0, VF_ID_MAX)):
            return None
        return range(raw["id"], raw["id"] + 1)
    text = raw["range"]
    match = _RANGE_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        p.add(f"{path}.range", f"{text!r} is not a VF range of the form \"0-7\"")
        return None
    first, last = int(match.group(1)), int(match.group(2))
    if first > last or last > VF_ID_MAX:
        p.add(f"{path}.range", f"{text!r} is not first-last with first <= last <= {VF_ID_MAX}")
        return None
    return range(first, last + 1)


def parse_vfs(p, path: str, raw_list: list, num_vfs: Optional[int]) -> list[VfConfig]:
    """Validate sriovConfig[i].vfs (`p` is models.spec's problem collector); the entries, or
    [] when one is refused (the problems are in `p`). `num_vfs`: the entry's own numVfs."""
    out: list[VfConfig] = []
    spans: dict[str, list[tuple[int, int, int]]] = {}  # attribute -> (first, last, entry index)
    before = len(p.items)
    for j, raw in enumerate(raw_list):
        vpath = f"{path}[{j}]"
        if not isinstance(raw, dict):
            p.add(vpath, "must be an object with an id or a range")
            continue
        for key in raw:
            if key not in VF_KEYS:
                p.add(f"{vpath}.{key}" if isinstance(key, str) else vpath, "unknown field")
        ids = _ids(p, vpath, raw)
        if ids is not None and isinstance(num_vfs, int) and ids[-1] >= num_vfs:
            p.add(vpath, f"VF {ids[-1]} is beyond this entry's numVfs {num_vfs} (its VFs are "
                         f"numbered 0..{num_vfs - 1})" if num_vfs else
                  f"VF {ids[-1]} is beyond this entry's numVfs 0 (it has no VFs)")
        entry = _attributes(p, vpath, raw, ids)
        if entry is None or ids is None:
            continue
        for attr in entry.attributes():
            spans.setdefault(attr, []).append((ids[0], ids[-1], j))
        out.append(entry)
    _overlaps(p, path, spans)
    return out if len(p.items) == before else []


def _overlaps(p, path: str, spans: dict[str, list[tuple[int, int, int]]]) -> None:
    """One attribute of one VF set by two entries: reported at the later entry (sorted spans,
    so thousands of wide ranges cost no more than sorting them)."""
    for attr, items in spans.items():
        reach: Optional[tuple[int, int]] = None  # (last VF covered so far, its entry index)
        for first, last, j in sorted(items):
            if reach is not None and first <= reach[0]:
                later, other = max(j, reach[1]), min(j, reach[1])
                p.add(f"{path}[{later}]", f"the {attr} of VF {first} is also set at "
                                          f"{path}[{other}]")
            if reach is None or last > reach[0]:
                reach = (last, j)


def _attributes(p, vpath: str, raw: dict, ids: Optional[range]) -> Optional[VfConfig]:
    before = len(p.items)
    mac = raw.get("mac")
    if mac is not None and p.check(f"{vpath}.mac", check_mac(mac)) \
            and ids is not None and len(ids) > 1:
        p.add(f"{vpath}.mac", f"one MAC for {len(ids)} VFs would give each the same address; "
                              "set it per VF (id)")
    if raw.get("vlan") is not None:
        p.check(f"{vpath}.vlan", v.check_int_range(raw["vlan"], 0, VF_VLAN_MAX))
    if raw.get("qos") is not None:
        p.check(f"{vpath}.qos", v.check_int_range(raw["qos"], 0, VF_QOS_MAX))
        if raw.get("vlan") is None:
            p.add(f"{vpath}.qos", "needs a vlan (the kernel sets both together; vlan 0 for "
                                  "priority-tagged frames)")
    for key in ("spoofchk", "trust"):
        if raw.get(key) is not None:
            p.check(f"{vpath}.{key}", _check_bool(raw[key]))
    for key in ("minTxRate", "maxTxRate"):
        if raw.get(key) is not None:
            p.check(f"{vpath}.{key}", v.check_int_range(raw[key], 0, MAX_TX_RATE_MBPS))
    low, high = raw.get("minTxRate"), raw.get("maxTxRate")
    if v._is_int(low) and v._is_int(high) and high and low > high:
        p.add(f"{vpath}.minTxRate", f"{low} is above maxTxRate {high} (0 = no limit)")
    state = raw.get("linkState")
    if state is not None and state not in LINK_STATES:
        p.add(f"{vpath}.linkState", f"{state!r} is not one of {', '.join(LINK_STATES)}")
    if len(p.items) != before:
        return None
    entry = VfConfig(mac=mac.lower() if mac else None, vlan=raw.get("vlan"), qos=raw.get("qos"),
                     spoofchk=raw.get("spoofchk"), trust=raw.get("trust"),
                     min_tx_rate=low, max_tx_rate=high, link_state=state)
    if ids is not None:
        if "id" in raw:
            entry.id = ids[0]
        else:
            entry.range = f"{ids[0]}-{ids[-1]}"
    if not entry.attributes():
        p.add(vpath, "sets no attribute (mac, vlan, qos, spoofchk, trust, minTxRate, "
                     "maxTxRate or linkState)")
        return None
    return entry
