"""Field validators shared by the spec validator and, as a second line of defence, by every host
driver before a value reaches a path, a netlink call or an argv.

Each `check_*` returns None when the value is fine or a short message saying what is wrong;
`require_*` raises InvalidSpec. Nothing here touches the host.
"""
from __future__ import annotations

import ipaddress
import re

from plumber_agent.errors import InvalidSpec

IFNAME_MAX = 15  # IFNAMSIZ - 1
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,14}$")  # the CRD's pattern
_NETDEV_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")  # any length (altnames)
# OVS bridge/port names are netdev names too (a bridge gets an internal port of its name).
_PCI_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_HEX_ID_RE = re.compile(r"^[0-9a-f]{4}$")
_DRIVER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

VLAN_MIN, VLAN_MAX = 1, 4094
MTU_MIN, MTU_MAX = 68, 65535
MTU_MIN_IPV6 = 1280
NUMVFS_MAX = 65535  # the PCI SR-IOV capability's TotalVFs is 16 bits; the host caps it further
BOND_MODES = ("active-backup", "balance-slb", "balance-tcp")
LACP_MODES = ("active", "passive", "off")
DATAPATH_TYPES = ("system", "netdev")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_ifname(value) -> str | None:
    """A Linux netdev name: 1..15 ASCII chars, no '/', ':', whitespace, no leading '-' or '.'."""
    return check_netdev_name(value)


def check_netdev_name(value, *, max_len: int = IFNAME_MAX, what: str = "interface name"
                      ) -> str | None:
    """A netdev name (or, with max_len=127, an alternative name: same characters, longer)."""
    if not isinstance(value, str):
        return f"{value!r} is not a string"
    if value in ("", ".", ".."):
        return f"{value!r} is not a valid {what}"
    if len(value) > max_len:
        return f"{value!r} is longer than {max_len} characters"
    if not value.isascii() or not _NETDEV_NAME_RE.fullmatch(value):
        return (f"{value!r} is not a valid {what} (ASCII letters, digits, '_', '.', '-'; "
                "not starting with '-' or '.')")
    return None


def normalise_pci_addr(value) -> str | None:
    """Lower-case a PCI address; accept only the full domain form dddd:bb:dd.f."""
    if not isinstance(value, str):
        return None
    lowered = value.lower()
    return lowered if _PCI_RE.fullmatch(lowered) else None


def check_pci_addr(value) -> str | None:
    if normalise_pci_addr(value) is None:
        return f"{value!r} is not a PCI address of the form 0000:03:00.0"
    return None


def check_hex_id(value) -> str | None:
    if not isinstance(value, str) or not _HEX_ID_RE.fullmatch(value.lower()):
        return f"{value!r} is not 4 hex digits (like \"8086\")"
    return None


def check_driver(value) -> str | None:
    if not isinstance(value, str) or not _DRIVER_RE.fullmatch(value):
        return f"{value!r} is not a valid driver name"
    return None


def check_int_range(value, low: int, high: int) -> str | None:
    if not _is_int(value):
        return f"{value!r} is not an integer"
    if not low <= value <= high:
        return f"{value} is outside {low}..{high}"
    return None


def check_vlan_id(value) -> str | None:
    return check_int_range(value, VLAN_MIN, VLAN_MAX)


def check_mtu(value) -> str | None:
    return check_int_range(value, MTU_MIN, MTU_MAX)


def _strict_ip(text: str):
    """ipaddress is lenient about some forms; refuse scope ids and leading zeros explicitly."""
    if "%" in text:
        raise ValueError("scope ids (%) are not allowed")
    return ipaddress.ip_address(text)


def canonical_interface_address(value, family: int | None = None) -> str:
    """'192.168.1.7/24' -> same; IPv6 compressed. Raises ValueError with a reason."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    if value != value.strip() or not value:
        raise ValueError(f"{value!r} has surrounding whitespace or is empty")
    if "/" not in value:
        raise ValueError(f"{value!r} has no prefix length (like 192.168.1.7/24)")
    addr_text, _, prefix_text = value.partition("/")
    if not prefix_text.isdigit() or (len(prefix_text) > 1 and prefix_text[0] == "0"):
        raise ValueError(f"{value!r} has an invalid prefix length")
    ip = _strict_ip(addr_text)
    prefix = int(prefix_text)
    if prefix > ip.max_prefixlen:
        raise ValueError(f"{value!r}: prefix /{prefix} is longer than /{ip.max_prefixlen}")
    if family is not None and ip.version != family:
        raise ValueError(f"{value!r} is not an IPv{family} address")
    return f"{ip.compressed}/{prefix}"


# Addresses no template may give an interface, with why. Allowed, on purpose: private ranges,
# shared address space (100.64.0.0/10), IPv4 link-local 169.254.0.0/16 (the kernel does not
# manage it; metadata services use it), documentation ranges, unique local fc00::/7.
_NOT_FOR_INTERFACES = (
    (ipaddress.ip_network("127.0.0.0/8"), "a loopback address (127.0.0.0/8 belongs to lo)"),
    (ipaddress.ip_network("::1/128"), "the loopback address (it belongs to lo)"),
    (ipaddress.ip_network("0.0.0.0/8"), "in 0.0.0.0/8 (\"this network\", never an interface's)"),
    (ipaddress.ip_network("::/128"), "the unspecified address"),
    (ipaddress.ip_network("224.0.0.0/4"), "a multicast address (224.0.0.0/4): groups are joined, "
                                          "not assigned"),
    (ipaddress.ip_network("ff00::/8"), "a multicast address (ff00::/8): groups are joined, not "
                                       "assigned"),
    (ipaddress.ip_network("240.0.0.0/4"), "reserved (240.0.0.0/4, and 255.255.255.255 is the "
                                          "limited broadcast)"),
    (ipaddress.ip_network("fe80::/64"), "link-local: the kernel manages link-local addresses"),
    # The kernel gives all of fe80::/10 link scope (ipv6_addr_type), but only fe80::/64 is
    # link-local (RFC 4291 2.5.6: the 54 bits after fe80 are zero): fe90::1 would be a
    # link-scoped address no neighbour expects.
    (ipaddress.ip_network("fe80::/10"), "in fe80::/10, which the kernel scopes link-local, but "
                                        "not in fe80::/64, the only link-local prefix "
                                        "(RFC 4291 2.5.6)"),
    (ipaddress.ip_network("fec0::/10"), "site-local (fec0::/10), deprecated by RFC 3879; use a "
                                        "unique local address (fc00::/7)"),
    (ipaddress.ip_network("::ffff:0:0/96"), "IPv4-mapped (::ffff:0:0/96): give the IPv4 address "
                                            "under ipv4"),
)


def check_interface_ip(ip_text: str) -> str | None:
    """Why `ip_text` (canonical, no prefix) cannot be an interface's address; None if it can."""
    ip = ipaddress.ip_address(ip_text)
    for network, why in _NOT_FOR_INTERFACES:
        if ip.version == network.version and ip in network:
            return f"{ip_text} is {why}"
    return None


def check_interface_network(network) -> str | None:
    """Why no address of `network` (an ip_network) can be an interface's (a pool's CIDR)."""
    for reserved, why in _NOT_FOR_INTERFACES:
        if network.version == reserved.version and network.overlaps(reserved):
            return (f"{network.compressed} overlaps {reserved.compressed}, whose addresses no "
                    f"interface may have (each is {why})")
    return None


def check_gateway_ip(ip_text: str) -> str | None:
    """A next hop is a unicast neighbour: not loopback, multicast, unspecified or reserved."""
    ip = ipaddress.ip_address(ip_text)
    if ip.is_loopback or ip.is_multicast or ip.is_unspecified or (
            ip.version == 4 and ip in ipaddress.ip_network("240.0.0.0/4")):
        return f"{ip_text} cannot be a gateway (loopback, multicast, unspecified or reserved)"
    return None


def canonical_network(value, family: int | None = None) -> str:
    """A route destination: strict network (host bits zero), canonical text."""
    if not isinstance(value, str) or value != value.strip() or not value:
        raise ValueError(f"{value!r} is not a network")
    if "/" not in value:
        raise ValueError(f"{value!r} has no prefix length (like 10.0.0.0/8)")
    addr_text, _, prefix_text = value.partition("/")
    _strict_ip(addr_text)
    if not prefix_text.isdigit():
        raise ValueError(f"{value!r} has an invalid prefix length")
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    if family is not None and net.version != family:
        raise ValueError(f"{value!r} is not an IPv{family} network")
    return net.compressed


def canonical_ip(value, family: int | None = None) -> str:
    if not isinstance(value, str) or value != value.strip() or not value:
        raise ValueError(f"{value!r} is not an IP address")
    ip = _strict_ip(value)
    if family is not None and ip.version != family:
        raise ValueError(f"{value!r} is not an IPv{family} address")
    return ip.compressed


def check_label_selector(selector) -> list[str]:
    """Problems in a nodeSelector map (relative messages; caller adds the path)."""
    problems: list[str] = []
    if not isinstance(selector, dict):
        return [f"{selector!r} is not a map of label: value"]
    for key, value in selector.items():
        if not isinstance(key, str) or not key:
            problems.append(f"label key {key!r} is not a string")
            continue
        prefix, _, name = key.rpartition("/")
        if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.fullmatch(prefix)):
            problems.append(f"label key {key!r} has an invalid prefix")
        if not name or len(name) > 63 or not _LABEL_NAME_RE.fullmatch(name):
            problems.append(f"label key {key!r} is not a valid label name")
        if not isinstance(value, str):
            problems.append(f"label {key!r}: value {value!r} must be a string (quote it)")
        elif len(value) > 63 or not _LABEL_VALUE_RE.fullmatch(value):
            problems.append(f"label {key!r}: {value!r} is not a valid label value")
    return problems


DNS_SUBDOMAIN_MAX = 253


def check_dns_subdomain(value) -> str | None:
    """An object name as the API server's NameIsDNSSubdomain accepts it (RFC 1123 subdomain)."""
    if not isinstance(value, str) or not value:
        return "is required"
    if len(value) > DNS_SUBDOMAIN_MAX:
        return f"must be no more than {DNS_SUBDOMAIN_MAX} characters"
    if not _DNS_SUBDOMAIN_RE.fullmatch(value):
        return (f"{value!r}: a lowercase RFC 1123 subdomain must consist of lower case "
                "alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character")
    return None


_HOSTNAME_RE = re.compile(r"(?=.{1,253}\.?$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                          r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


def check_hostname_or_ip(value) -> str | None:
    """A host to probe or dial: an IP address or an RFC 1123 host name (letters, digits, '-'
    and dots; no spaces, no shell or URL characters)."""
    if not isinstance(value, str) or not value:
        return "a host name or IP address is required"
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    if not _HOSTNAME_RE.fullmatch(value):
        return f"{value!r} is neither an IP address nor a host name"
    return None


def require(check, value, what: str):
    """Drivers' second line of defence: raise InvalidSpec unless `check(value)` passes."""
    problem = check(value)
    if problem:
        raise InvalidSpec([f"{what}: {problem}"])
    return value
