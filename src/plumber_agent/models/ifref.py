"""Interface references: a template field that names an interface may name it by what does not
change across kernels and firmware instead of by its kernel name (README "Stable NIC names").

  eth1                      the kernel name, as before
  pci:0000:3b:00.0          the netdev whose PCI device (sysfs .../net/X/device) is this function
  mac:52:54:00:12:34:56     the netdev whose PERMANENT MAC (IFLA_PERM_ADDRESS) is this one
  altname:enp59s0f0np0      the netdev that carries this alternative name (IFLA_ALT_IFNAME)

Why a prefixed string and not an object: the kernel never allows ':' in an interface name
(dev_valid_name), so a value with a known prefix and a ':' can never be a kernel name, and the
same string fits every field that names an interface today -- the CRD's `type: string`,
ovsConfig's comma-separated nodeInterface, a route's dev -- with no schema union (a structural
CRD schema cannot say "a string or an object").

This module is the spec side (what a reference is, its strict validation and canonical text);
plumber_agent.desired.ifref resolves references against the observed host on every pass. A
field that may hold a reference validates with `check_ifref`, stores `canonical_ifref(value)`
and is declared in its kind's `interface_refs` (kinds/), from which the resolver's walk comes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from plumber_agent import validation as v

PCI, MAC, ALTNAME = "pci", "mac", "altname"
REFERENCE_KINDS = (PCI, MAC, ALTNAME)
ALTNAME_MAX = 127  # ALTIFNAMSIZ - 1: the kernel's longest alternative name
IFREF_MAX = len(ALTNAME) + 1 + ALTNAME_MAX  # the longest reference text (for the CRD)
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")  # EUI-48, colon-separated

# The CRD's pattern for a field holding one reference (tests/manifests checks the schema uses it
# and agrees with `check_ifref`, which also refuses a multicast or all-zero MAC).
_IFNAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}"
_REF_PATTERN = (rf"({_IFNAME_PATTERN}|pci:[0-9a-fA-F]{{4}}:[0-9a-fA-F]{{2}}:[0-9a-fA-F]{{2}}\.[0-7]"
                rf"|mac:[0-9a-fA-F]{{2}}(:[0-9a-fA-F]{{2}}){{5}}"
                rf"|altname:[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{ALTNAME_MAX - 1}}})")
IFREF_PATTERN = f"^{_REF_PATTERN}$"
IFREF_CSV_PATTERN = f"^{_REF_PATTERN}( *, *{_REF_PATTERN})*$"


@dataclass(frozen=True)
class IfRef:
    """A parsed reference; `kind` None means a plain kernel name (`value` is that name)."""

    kind: Optional[str]
    value: str

    @property
    def text(self) -> str:
        return self.value if self.kind is None else f"{self.kind}:{self.value}"


def parse_ifref(text: str) -> IfRef:
    """The reference in canonical form. `text` must have passed `check_ifref`."""
    kind, sep, rest = text.partition(":")
    if not sep or kind not in REFERENCE_KINDS:
        return IfRef(None, text)
    if kind in (PCI, MAC):
        rest = rest.lower()
    return IfRef(kind, rest)


def is_reference(text: str) -> bool:
    """Does `text` (a checked value) name an interface by reference, not by kernel name?"""
    return parse_ifref(text).kind is not None


def canonical_ifref(text: str) -> str:
    return parse_ifref(text).text


def check_ifref(value) -> str | None:
    """None when `value` is a kernel name or a well-formed reference, else why not."""
    if not isinstance(value, str):
        return f"{value!r} is not a string"
    kind, sep, rest = value.partition(":")
    if not sep:
        return v.check_ifname(value)
    if kind == PCI:
        if v.normalise_pci_addr(rest) is None:
            return f"{value!r}: {rest!r} is not a PCI address of the form 0000:3b:00.0"
        return None
    if kind == MAC:
        mac = rest.lower()
        if not _MAC_RE.fullmatch(mac):
            return f"{value!r}: {rest!r} is not a MAC address of the form 52:54:00:12:34:56"
        if int(mac[:2], 16) & 1:
            return f"{value!r}: {rest} is a multicast address, never a NIC's permanent MAC"
        if mac == "00:00:00:00:00:00":
            return f"{value!r}: the all-zero address is no NIC's permanent MAC"
        return None
    if kind == ALTNAME:
        problem = v.check_netdev_name(rest, max_len=ALTNAME_MAX, what="alternative name")
        return f"{value!r}: {problem}" if problem else None
    return (f"{value!r} is neither an interface name (no ':' allowed) nor a reference "
            f"({', '.join(k + ':...' for k in REFERENCE_KINDS)})")
