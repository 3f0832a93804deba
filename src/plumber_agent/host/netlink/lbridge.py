"""Linux bridges over rtnetlink: reading each port's VLAN entries (the AF_BRIDGE link dump with
RTEXT_FILTER_BRVLAN, as `bridge vlan show` asks), and the writes (`ip link add type bridge`,
`ip link set PORT master BR`, `bridge vlan add|del`), as a part of the netlink driver.

Why a mixin of driver.py's Netlink and not a driver of its own: the writes share its pyroute2
socket, its thread rule and its error wording; this module holds only what is about bridges.
pyroute2 is reached through the driver's `_write` (driver.py stays the one importer).

The bridge's own settings (IFLA_BR_STP_STATE, IFLA_BR_VLAN_FILTERING, IFLA_BR_VLAN_DEFAULT_PVID)
come with the ordinary link dump (messages.parse_link). A kernel built without
CONFIG_BRIDGE_VLAN_FILTERING has bridges but refuses vlan_filtering and VLAN entries with
EOPNOTSUPP: that is NotAvailable, said in words.
"""
from __future__ import annotations

import errno
import socket
from typing import Optional

from plumber_agent.errors import HostError, InvalidSpec, NotAvailable
from plumber_agent.host.netlink.messages import (IFINFOMSG, IFLA_EXT_MASK, IFLA_MASTER,
                                                 NLA_HEADER, NLA_TYPE_MASK, RTM_GETLINK,
                                                 RTM_NEWLINK, U16, U32, errno_text)
from plumber_agent.models.lbridge_spec import compress, expand
from plumber_agent.validation import check_ifname, require

IFLA_AF_SPEC = 26
IFLA_BRIDGE_VLAN_INFO = 2
RTEXT_FILTER_BRVLAN = 0x2
BRIDGE_VLAN_INFO_PVID, BRIDGE_VLAN_INFO_UNTAGGED = 0x2, 0x4
BRIDGE_VLAN_INFO_RANGE_BEGIN, BRIDGE_VLAN_INFO_RANGE_END = 0x8, 0x10
NO_VLAN_FILTERING = ("this kernel's bridge has no VLAN filtering "
                     "(CONFIG_BRIDGE_VLAN_FILTERING)")


def parse_bridge_vlans(data: bytes, pos: int, end: int) -> tuple[int, Optional[int], list]:
    """One AF_BRIDGE RTM_NEWLINK: (ifindex, IFLA_MASTER or None, [(vid, flags)]); ranges
    (RANGE_BEGIN..RANGE_END) are expanded to their ids."""
    _family, _type, index, _flags, _change = IFINFOMSG.unpack_from(data, pos)
    master = None
    entries: list[tuple[int, int]] = []
    pos += IFINFOMSG.size
    while pos + 4 <= end:
        alen, atype = NLA_HEADER.unpack_from(data, pos)
        if alen < 4:
            break
        atype &= NLA_TYPE_MASK
        if atype == IFLA_MASTER and alen >= 8:
            master = U32.unpack_from(data, pos + 4)[0]
        elif atype == IFLA_AF_SPEC:
            p, e = pos + 4, pos + alen
            begin = None
            while p + 4 <= e:
                blen, btype = NLA_HEADER.unpack_from(data, p)
                if blen < 4:
                    break
                if btype & NLA_TYPE_MASK == IFLA_BRIDGE_VLAN_INFO and blen >= 8:
                    flags, vid = U16.unpack_from(data, p + 4)[0], U16.unpack_from(data, p + 6)[0]
                    if flags & BRIDGE_VLAN_INFO_RANGE_BEGIN:
                        begin = vid
                    elif flags & BRIDGE_VLAN_INFO_RANGE_END and begin is not None:
                        entries.extend((v, flags) for v in range(begin, vid + 1))
                        begin = None
                    else:
                        entries.append((vid, flags))
                p += (blen + 3) & ~3
        pos += (alen + 3) & ~3
    return index, master, entries


def canonical_entries(entries: list) -> list[str]:
    """[(vid, flags)] -> models/lbridge_spec.py's canonical text."""
    return compress({vid: (bool(flags & BRIDGE_VLAN_INFO_PVID),
                           bool(flags & BRIDGE_VLAN_INFO_UNTAGGED)) for vid, flags in entries})


def dump_bridge_vlans(reader, memo: Optional[dict] = None) -> dict[int, list[str]]:
    """ifindex -> canonical VLAN entries of every Linux bridge port (and bridge) of the
    namespace. The kernel cannot filter this dump by index (valid_bridge_getlink_req), and
    sends nothing for interfaces in no bridge."""
    payload = (IFINFOMSG.pack(socket.AF_BRIDGE, 0, 0, 0, 0)
               + reader._nla(IFLA_EXT_MASK, U32.pack(RTEXT_FILTER_BRVLAN)))
    rows = reader.dump(RTM_GETLINK, payload, RTM_NEWLINK, parse_bridge_vlans, memo)
    return {index: canonical_entries(entries) for index, _master, entries in rows}


def _vlan_requests(entries: list[str]) -> list[dict]:
    """pyroute2 `vlan_info` arguments for canonical entries: ranges without flags in one
    request; a flagged range one id at a time (pyroute2 sends a range's begin/end flags only)."""
    out = []
    for vid_text, *words in (entry.split() for entry in entries):
        flags = ((BRIDGE_VLAN_INFO_PVID if "pvid" in words else 0)
                 | (BRIDGE_VLAN_INFO_UNTAGGED if "untagged" in words else 0))
        start, _, stop = vid_text.partition("-")
        if stop and not flags:
            out.append({"vid": f"{int(start)}-{int(stop)}"})
            continue
        out.extend({"vid": vid, "flags": flags} for vid in range(int(start),
                                                                 int(stop or start) + 1))
    return out


def _check_entries(value) -> Optional[str]:
    if not isinstance(value, (list, tuple)):
        return f"{value!r} is not a list of VLAN entries"
    try:
        expand(list(value))
    except ValueError as exc:
        return str(exc)
    return None


class LinuxBridgeDriver:
    """Linux bridge writes of the netlink driver (mixed into driver.Netlink)."""

    def _bridge_index(self, name: str, purpose: str) -> int:
        link, _parent, _extras = self._require_link(name, purpose)
        if link.kind != "bridge":
            raise HostError(f"{purpose}: {name} in {self._where} is "
                            f"{link.kind or 'a plain device'}, not a linux bridge")
        return link.index

    def ensure_linux_bridge(self, name: str, *, stp: Optional[bool] = None,
                            vlan_filtering: Optional[bool] = None) -> None:
        """ip link add NAME type bridge [stp_state S] [vlan_filtering V], or on an existing
        bridge ip link set NAME type bridge ... (None: as it is)."""
        self._enter()
        require(check_ifname, name, "name")
        for what, value in (("stp", stp), ("vlan_filtering", vlan_filtering)):
            if value is not None and not isinstance(value, bool):
                raise InvalidSpec([f"{what}: {value!r} is not true or false"])
        attrs = {key: int(value) for key, value in (("br_stp_state", stp),
                                                    ("br_vlan_filtering", vlan_filtering))
                 if value is not None}
        what = f"linux bridge {name}"
        existing = self._link(name)
        if existing is None:
            code = self._write(f"creating {what}",
                               lambda ipr: ipr.link("add", ifname=name, kind="bridge", **attrs),
                               tolerate=(errno.EEXIST, errno.EOPNOTSUPP))
            self._bridge_refused(code, what)
            if code == 0:
                self._wait_for(f"creating {what}", lambda: self._link(name) is not None)
            existing = self._link(name)
            if existing is None:
                raise HostError(f"creating {what} in {self._where}: it vanished again")
        index = self._bridge_index(name, f"setting {what}")
        if not self._bridge_differs(existing[0], stp, vlan_filtering):
            return
        code = self._write(f"setting {what}",
                           lambda ipr: ipr.link("set", index=index, kind="bridge", **attrs),
                           tolerate=(errno.EOPNOTSUPP,))
        self._bridge_refused(code, what)
        self._wait_for(f"setting {what}", lambda: not self._bridge_differs(
            (self._link(name) or existing)[0], stp, vlan_filtering))

    @staticmethod
    def _bridge_differs(link, stp, vlan_filtering) -> bool:
        info = link.linux_bridge
        if info is None:
            return True
        return ((stp is not None and info.stp != stp)
                or (vlan_filtering is not None and info.vlan_filtering != vlan_filtering))

    def _bridge_refused(self, code: int, what: str) -> None:
        if code == errno.EOPNOTSUPP:
            raise NotAvailable(f"cannot set up {what} in {self._where}: {NO_VLAN_FILTERING}; "
                               f"the kernel said {errno_text(code)}")

    def set_linux_bridge_port(self, port: str, bridge: Optional[str]) -> None:
        """ip link set PORT master BRIDGE (bridge None: ip link set PORT nomaster)."""
        self._enter()
        require(check_ifname, port, "port")
        if bridge is not None:
            require(check_ifname, bridge, "bridge")
        purpose = (f"adding {port} to linux bridge {bridge}" if bridge
                   else f"taking {port} out of its linux bridge")
        link, _parent, _extras = self._require_link(port, purpose)
        master = self._bridge_index(bridge, purpose) if bridge else 0
        index = link.index
        self._write(purpose, lambda ipr: ipr.link("set", index=index, master=master))

        def in_place() -> bool:
            found = self._link(port)
            return bool(found) and (found[2].get("master_index") or 0) == master
        self._wait_for(purpose, in_place)

    def linux_bridge_vlans(self, port: str) -> Optional[list[str]]:
        """The canonical VLAN entries of Linux bridge port `port` (None: it is in no bridge)."""
        self._enter()
        require(check_ifname, port, "port")
        link = self._link(port)
        if link is None:
            return None
        vlans = self._read("listing bridge VLANs", lambda: dump_bridge_vlans(self._reader))
        if link[0].index in vlans:
            return vlans[link[0].index]
        return [] if link[2].get("master_index") else None

    def set_linux_bridge_vlans(self, port: str, *, add: Optional[list[str]] = None,
                               delete: Optional[list[str]] = None) -> None:
        """bridge vlan del dev PORT vid V...; bridge vlan add dev PORT vid V [pvid] [untagged]
        (deletes first: a pvid moving to another id is added after the old one went)."""
        self._enter()
        require(check_ifname, port, "port")
        add, delete = list(add or []), list(delete or [])
        require(_check_entries, add, "add")
        require(_check_entries, delete, "delete")
        index = self._require_link(port, f"setting the VLANs of {port}")[0].index
        for command, entries in (("del", delete), ("add", add)):
            for info in _vlan_requests(entries):
                what = f"bridge vlan {command} dev {port} vid {info['vid']}"
                code = self._write(what, lambda ipr, c=command, i=info: ipr.vlan_filter(
                    c, index=index, vlan_info=dict(i)), tolerate=(errno.EOPNOTSUPP,)
                    + ((errno.ENOENT,) if command == "del" else ()))
                if code == errno.EOPNOTSUPP:
                    raise NotAvailable(f"{what} in {self._where}: {NO_VLAN_FILTERING}; the "
                                       f"kernel said {errno_text(code)}")
        want_gone = set(expand(delete)) - set(expand(add))
        want = expand(add)

        def visible() -> bool:
            have = expand(self.linux_bridge_vlans(port) or [])
            return (all(have.get(vid) == flags for vid, flags in want.items())
                    and not want_gone & set(have))
        self._wait_for(f"setting the VLANs of {port}", visible)

