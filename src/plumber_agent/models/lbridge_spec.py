"""spec.linuxBridgeConfig: Linux bridges (kernel `bridge` devices, not Open vSwitch) with STP,
VLAN filtering and, per port, its pvid and its untagged and tagged VLAN ranges.

Why its own module: one kind, one room (README "Adding a kind of host object"); models/spec.py
only calls `validate_linux_bridges` and holds the field.

VLAN sets are canonical text, the same in the spec, the desired state, the ledger and the plan:
one entry per run of VLAN ids with the same flags, "10 pvid untagged", "100-199",
"200-210 untagged" (`compress` / `expand`). The pvid VLAN is egress-untagged unless it is also
listed in `tagged` (an access port is just `pvid: 10`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from plumber_agent import validation as v
from plumber_agent.models.codec import camel_json
from plumber_agent.models.ifref import canonical_ifref, check_ifref

VLAN_MIN, VLAN_MAX = 1, 4094  # 802.1Q ids a bridge port accepts (0 and 4095 are reserved)
MAX_VLAN_RANGES = 4096  # entries of one untagged/tagged list
_RANGE_RE = re.compile(r"\s*([0-9]{1,4})\s*(?:-\s*([0-9]{1,4})\s*)?")
PVID, UNTAGGED = "pvid", "untagged"

LINUX_BRIDGE_KEYS = {"name", "stp", "vlanFiltering", "ports"}
PORT_KEYS = {"name", "pvid", "untagged", "tagged"}


@camel_json
@dataclass
class LinuxBridgePort:
    name: str
    pvid: Optional[int] = None
    # Written as ids or ranges (the schema's int-or-string); validated into canonical range
    # text: "100-199", "300".
    untagged: list[Union[int, str]] = field(default_factory=list)
    tagged: list[Union[int, str]] = field(default_factory=list)

    def manages_vlans(self) -> bool:
        """A port without pvid/untagged/tagged leaves its VLAN entries as the kernel has them."""
        return self.pvid is not None or bool(self.untagged) or bool(self.tagged)

    def vlans(self) -> list[str]:
        """The port's VLAN entries, canonical (see the module docstring)."""
        flags: dict[int, tuple[bool, bool]] = {}
        for text in self.tagged:
            for vid in _ids(str(text)):
                flags[vid] = (False, False)
        for text in self.untagged:
            for vid in _ids(str(text)):
                flags[vid] = (False, True)
        if self.pvid is not None:
            untagged = flags[self.pvid][1] if self.pvid in flags else True
            flags[self.pvid] = (True, untagged)
        return compress(flags)


@camel_json
@dataclass
class LinuxBridgeConfig:
    name: str
    stp: Optional[bool] = None  # None: as the kernel has it (off for a bridge we create)
    vlan_filtering: Optional[bool] = None
    ports: list[LinuxBridgePort] = field(default_factory=list)


# -- VLAN entry text -------------------------------------------------------------------------

def _ids(text: str) -> range:
    match = _RANGE_RE.fullmatch(text)
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else start
    return range(start, end + 1)


def expand(entries: list[str]) -> dict[int, tuple[bool, bool]]:
    """["10 pvid untagged", "100-101"] -> {10: (True, True), 100: (False, False), 101: ...}:
    vid -> (pvid, untagged). Raises ValueError on text `compress` would not write."""
    out: dict[int, tuple[bool, bool]] = {}
    for entry in entries:
        ids, *words = str(entry).split()
        unknown = set(words) - {PVID, UNTAGGED}
        if unknown or _RANGE_RE.fullmatch(ids) is None:
            raise ValueError(f"{entry!r} is not a VLAN entry like '10 pvid untagged'")
        for vid in _ids(ids):
            if not VLAN_MIN <= vid <= VLAN_MAX:
                raise ValueError(f"{entry!r}: VLAN {vid} is outside {VLAN_MIN}..{VLAN_MAX}")
            out[vid] = (PVID in words, UNTAGGED in words)
    return out


def compress(flags: dict[int, tuple[bool, bool]]) -> list[str]:
    """The inverse of `expand`: runs of consecutive ids with equal flags, by id."""
    out: list[str] = []
    run: Optional[list] = None  # [start, end, flags]
    for vid in sorted(flags):
        if run and vid == run[1] + 1 and flags[vid] == run[2]:
            run[1] = vid
            continue
        if run:
            out.append(_entry(*run))
        run = [vid, vid, flags[vid]]
    if run:
        out.append(_entry(*run))
    return out


def _entry(start: int, end: int, flags: tuple[bool, bool]) -> str:
    text = str(start) if start == end else f"{start}-{end}"
    return " ".join([text] + ([PVID] if flags[0] else []) + ([UNTAGGED] if flags[1] else []))


# -- validation ------------------------------------------------------------------------------

def _check_bool(value: Any) -> Optional[str]:
    return None if isinstance(value, bool) else f"{value!r} is not true or false"


def _ranges(p, path: str, raw: Any, seen: dict[int, str]) -> list[str]:
    """A list of VLAN ids (1..4094) and ranges ("100-199") as canonical range text; each id
    at most once per port (`seen`: id -> where it was listed)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        p.add(path, f"must be a list of VLAN ids or ranges like \"100-199\", not "
                    f"{type(raw).__name__}")
        return []
    if len(raw) > MAX_VLAN_RANGES:
        p.add(path, f"has {len(raw)} entries; at most {MAX_VLAN_RANGES} are allowed")
        return []
    ids: dict[int, tuple[bool, bool]] = {}
    for i, item in enumerate(raw):
        where = f"{path}[{i}]"
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            p.add(where, f"{item!r} is not a VLAN id or a range like \"100-199\"")
            continue
        text = str(item)
        match = _RANGE_RE.fullmatch(text)
        if match is None:
            p.add(where, f"{item!r} is not a VLAN id or a range like \"100-199\"")
            continue
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else start
        if not (VLAN_MIN <= start <= VLAN_MAX and VLAN_MIN <= end <= VLAN_MAX):
            p.add(where, f"{item!r}: VLAN ids are {VLAN_MIN}..{VLAN_MAX}")
            continue
        if start > end:
            p.add(where, f"{item!r}: the range starts after it ends")
            continue
        twice = next((vid for vid in range(start, end + 1) if vid in seen), None)
        if twice is not None:
            p.add(where, f"VLAN {twice} is already listed at {seen[twice]}")
            continue
        for vid in range(start, end + 1):
            seen[vid] = where
            ids[vid] = (False, False)
    return compress(ids)


def _validate_port(p, path: str, raw: dict, bridge: Optional[str],
                   filtering: Optional[bool]) -> Optional[LinuxBridgePort]:
    before = len(p.items)
    name = raw.get("name")
    if name is None:
        p.add(f"{path}.name", "is required")
    elif p.check(f"{path}.name", check_ifref(name)):
        name = canonical_ifref(name)  # a NIC by pci:, mac: or altname: (models/ifref.py)
        if name == bridge:
            p.add(f"{path}.name", "a bridge cannot be its own port")
    pvid = raw.get("pvid")
    if pvid is not None:
        p.check(f"{path}.pvid", v.check_int_range(pvid, VLAN_MIN, VLAN_MAX))
    seen: dict[int, str] = {}
    untagged = _ranges(p, f"{path}.untagged", raw.get("untagged"), seen)
    tagged = _ranges(p, f"{path}.tagged", raw.get("tagged"), seen)
    port = LinuxBridgePort(name=name, pvid=pvid, untagged=untagged, tagged=tagged)
    if len(p.items) == before and port.manages_vlans() and filtering is not True:
        # Without vlan_filtering the kernel keeps the entries but forwards every VLAN: a
        # port's VLANs would say something the bridge does not do.
        p.add(path, "pvid, untagged and tagged need vlanFiltering: true on the bridge")
    if len(p.items) != before:
        return None
    return port


def validate_linux_bridges(p, path: str, raw: Any) -> list[LinuxBridgeConfig]:
    """spec.linuxBridgeConfig -> typed bridges; problems go to `p` (models/parse.py's
    collector, whose `objects` walks the lists, so errors read the same everywhere)."""
    out: list[LinuxBridgeConfig] = []
    seen_bridges: dict[str, str] = {}
    seen_ports: dict[str, str] = {}
    for bpath, m in p.objects(path, raw, LINUX_BRIDGE_KEYS):
        before = len(p.items)
        name = m.get("name")
        if name is None:
            p.add(f"{bpath}.name", "is required")
        elif p.check(f"{bpath}.name", v.check_ifname(name)) and name in seen_bridges:
            p.add(f"{bpath}.name", f"{name!r} is already configured at {seen_bridges[name]}")
        for key in ("stp", "vlanFiltering"):
            if m.get(key) is not None:
                p.check(f"{bpath}.{key}", _check_bool(m[key]))
        filtering = m.get("vlanFiltering")
        ports: list[LinuxBridgePort] = []
        for ppath, pm in p.objects(f"{bpath}.ports", m.get("ports"), PORT_KEYS,
                                   "must be an object with a name"):
            port = _validate_port(p, ppath, pm, name, filtering)
            if port is None:
                continue
            if port.name in seen_ports:
                p.add(f"{ppath}.name", f"{port.name!r} is already a port at "
                                       f"{seen_ports[port.name]}")
                continue
            seen_ports[port.name] = ppath
            ports.append(port)
        if len(p.items) != before:
            continue
        seen_bridges[name] = bpath
        out.append(LinuxBridgeConfig(name=name, stp=m.get("stp"),
                                     vlan_filtering=filtering, ports=ports))
    for bridge in out:  # a bridge of this template as a port of another: the kernel refuses
        for port in bridge.ports:
            if port.name in seen_bridges:
                p.add(f"{seen_ports[port.name]}.name",
                      f"{port.name!r} is a Linux bridge of this template; a bridge cannot be "
                      "a port of another bridge")
    return out
