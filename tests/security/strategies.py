"""Hypothesis strategies shared by the security tests: arbitrary JSON, template-shaped JSON
(known keys, hostile values, so the fuzzer gets past the first type check), valid specs, and
random observed hosts and ledgers for the planner.

Why template-shaped as well as arbitrary: an arbitrary JSON document is refused at the top level
almost always; the interesting crashes hide one or two levels down (a list where a map is
expected, a bool where an int is, a name with a NUL byte).
"""
from __future__ import annotations

import string

from hypothesis import strategies as st

from plumber_agent.models.observed import (ObservedBridge, ObservedHost, ObservedLink,
                                           ObservedOvsInterface, ObservedOvsPort, ObservedPf,
                                           ObservedRoute, ObservedVf)

# --- hostile scalars ---------------------------------------------------------------------------

NASTY_STRINGS = [
    "", ".", "..", "a/b", "../../etc", "eth0:1", "eth 0", "eth0\n", "eth0\0", "-eth0", "--help",
    "eth0;reboot", "еth0", "eth0\u200b", "x" * 16, "x" * 4096, "br0,br1", "a=b", "--if-exists",
    '"quoted"', "'q'", "0000:3b:00.0/../..", "../", "3b:00.0", "0000:3B:00.0", "0000:3b:00.8",
    "0x8086", "80866", "zzzz", "010", "0x10", "10.0.0.1/33", "::1/129", "010.0.0.1",
    "fe80::1%eth0", " 10.0.0.1/24", "10.0.0.1", "vfio-pci\n", "../vfio", "${IFS}", "$(reboot)",
    "\udcff", "eth0\t", "\x7f", "eth0/", "/", "\\", "*", "[", "{}", "eth0 ",
]
NASTY_NUMBERS = [-1, 0, 1, 67, 68, 4094, 4095, 4096, 65535, 65536, 2**31, 2**63, -2**63,
                 5.0, 1e308, float("inf"), float("-inf"), True, False]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(NASTY_STRINGS), st.sampled_from(NASTY_NUMBERS))

json_like = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=12), children, max_size=4)),
    max_leaves=20)


def _obj(keys: list[str], value=json_like) -> st.SearchStrategy:
    """A dict using (mostly) the known keys, with hostile values; sometimes an unknown key."""
    return st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=8)), value,
                           max_size=len(keys) + 1)


def _maybe_list(item) -> st.SearchStrategy:
    return st.one_of(st.lists(item, max_size=3), json_like)


_name_like = st.one_of(st.sampled_from(NASTY_STRINGS), st.sampled_from(
    ["eth0", "eno2", "br-ex", "eth1.100", "ovs-br01"]), scalars)
_field_value = st.one_of(_name_like, json_like)

sriov_shaped = _obj(["pfName", "pciAddr", "vendorId", "deviceId", "numVfs", "vfDriver", "mtu"],
                    _field_value)
vlan_shaped = _obj(["id", "name"], _field_value)
addr_shaped = _obj(["address"], st.one_of(st.lists(_field_value, max_size=3), _field_value))
iface_shaped = st.fixed_dictionaries(
    {"name": _name_like},
    optional={"mtu": _field_value, "vlan": _maybe_list(vlan_shaped),
              "ipv4": st.one_of(addr_shaped, _field_value),
              "ipv6": st.one_of(addr_shaped, _field_value)})
params_shaped = _obj(["mtuRequest", "bondMode", "lacp", "datapathType"], st.one_of(
    st.sampled_from(["active-backup", "balance-slb", "balance-tcp", "active", "passive", "off",
                     "system", "netdev"]), _field_value))
ovs_shaped = st.fixed_dictionaries(
    {"bridgeName": _name_like},
    optional={"nodeInterface": st.one_of(_name_like, st.sampled_from(
        ["eth0,eth1", "eth0, eth1", "eth0,eth0", "eth0,", ",", "eth0,-x", "br0,br1"])),
              "params": st.one_of(params_shaped, _field_value)})
route_shaped = _obj(["dst", "gw", "dev", "src", "metric"], st.one_of(st.sampled_from(
    ["0.0.0.0/0", "10.0.0.0/8", "10.0.0.1/8", "::/0", "2001:db8::/64", "10.0.0.1", "fe80::1"]),
    _field_value))
routes_shaped = _obj(["ipv4", "ipv6"], _maybe_list(route_shaped))

spec_shaped = st.fixed_dictionaries({}, optional={
    "nodeSelector": st.one_of(st.dictionaries(st.text(max_size=20), _field_value, max_size=3),
                              _field_value),
    "sriovConfig": _maybe_list(st.one_of(sriov_shaped, _field_value)),
    "interfaceConfig": _maybe_list(st.one_of(iface_shaped, _field_value)),
    "ovsConfig": _maybe_list(st.one_of(ovs_shaped, _field_value)),
    "routes": st.one_of(routes_shaped, _field_value),
    "allowApiServerDisruption": _field_value,
})

# --- valid specs over a small pool of names (so templates collide and conflict) ----------------

IFNAMES = ["eth0", "eth1", "eth2", "eno1", "eno2", "eno2.100", "ens1f0", "vl7"]
PCIS = ["0000:01:00.0", "0000:01:00.1", "0000:3b:00.0"]
VF_PCIS = [f"0000:02:0a.{i}" for i in range(8)]
BRIDGES = ["br-ex", "ovs-br01", "br0"]
V4_ADDRS = ["10.0.0.1/24", "10.0.0.2/24", "192.168.1.7/24", "172.16.0.1/16", "10.9.9.9/32"]
V6_ADDRS = ["2001:db8::1/64", "2001:db8::2/64", "fd00::1/48"]
V4_NETS = [None, "10.0.0.0/8", "10.1.0.0/16", "192.168.0.0/16", "203.0.113.0/24"]
V6_NETS = [None, "2001:db8::/32", "fd00::/8"]
V4_GWS = ["10.0.0.254", "192.168.1.1", "172.16.0.254"]
V6_GWS = ["2001:db8::fe", "fd00::fe"]

_mtu = st.sampled_from([1280, 1400, 1500, 9000, 68])
_vlan = st.builds(lambda i, n: {"id": i} if n is None else {"id": i, "name": n},
                  st.integers(1, 4094), st.sampled_from([None, "vl7", "vlan100", "v1"]))
valid_sriov = st.one_of(
    st.fixed_dictionaries({"pfName": st.sampled_from(IFNAMES)}, optional={
        "numVfs": st.integers(0, 16), "vfDriver": st.sampled_from(["i40evf", "vfio-pci", "iavf"]),
        "mtu": _mtu}),
    st.fixed_dictionaries({"pciAddr": st.sampled_from(PCIS)}, optional={
        "numVfs": st.integers(0, 16), "vfDriver": st.sampled_from(["i40evf", "vfio-pci"])}),
    st.fixed_dictionaries({"vendorId": st.just("8086"), "deviceId": st.sampled_from(
        ["1572", "1528"])}, optional={"numVfs": st.integers(0, 16)}))
valid_iface = st.fixed_dictionaries({"name": st.sampled_from(IFNAMES)}, optional={
    "mtu": _mtu,
    "vlan": st.lists(_vlan, max_size=2, unique_by=lambda v: (v["id"], v.get("name"))),
    "ipv4": st.fixed_dictionaries({"address": st.lists(st.sampled_from(V4_ADDRS), max_size=3,
                                                       unique=True)}),
    "ipv6": st.fixed_dictionaries({"address": st.lists(st.sampled_from(V6_ADDRS), max_size=2,
                                                       unique=True)})})
valid_ovs = st.fixed_dictionaries({"bridgeName": st.sampled_from(BRIDGES)}, optional={
    "nodeInterface": st.sampled_from(["eth1", "eth2", "eno2.100", "eth1,eth2"]),
    "params": st.fixed_dictionaries({}, optional={
        "mtuRequest": _mtu, "datapathType": st.sampled_from(["system", "netdev"])})})


def _route(family: int):
    nets, gws = (V4_NETS, V4_GWS) if family == 4 else (V6_NETS, V6_GWS)
    return st.builds(
        lambda dst, gw, dev, metric: {k: v for k, v in
                                      {"dst": dst, "gw": gw, "dev": dev, "metric": metric}.items()
                                      if v is not None} or {"dev": "eth0"},
        st.sampled_from(nets), st.sampled_from(gws + [None]),
        st.sampled_from([None] + IFNAMES[:4]), st.sampled_from([None, 0, 100, 1024]))


valid_spec_raw = st.fixed_dictionaries({}, optional={
    "sriovConfig": st.lists(valid_sriov, max_size=2),
    "interfaceConfig": st.lists(valid_iface, max_size=3),
    "ovsConfig": st.lists(valid_ovs, max_size=2),
    "routes": st.fixed_dictionaries({}, optional={"ipv4": st.lists(_route(4), max_size=3),
                                                  "ipv6": st.lists(_route(6), max_size=2)}),
    "allowApiServerDisruption": st.booleans(),
})

# --- random observed hosts ---------------------------------------------------------------------


@st.composite
def observed_links(draw):
    links = {}
    names = draw(st.lists(st.sampled_from(IFNAMES + ["lo", "eno2v0", "eno2v1"]), unique=True,
                          max_size=8))
    for index, name in enumerate(names, start=1):
        kind = draw(st.sampled_from([None, None, "vlan", "veth", "bridge", "openvswitch"]))
        parent = draw(st.sampled_from(names)) if kind == "vlan" and names else None
        links[name] = ObservedLink(
            ifname=name, index=index, kind=kind, mtu=draw(st.sampled_from([None, 1500, 9000, 1400])),
            admin_up=draw(st.sampled_from([None, True, False])), parent=parent,
            vlan_id=draw(st.integers(1, 4094)) if kind == "vlan" else None,
            ipv4=sorted(draw(st.lists(st.sampled_from(V4_ADDRS), unique=True, max_size=3))),
            ipv6=sorted(draw(st.lists(st.sampled_from(V6_ADDRS + ["fe80::1/64"]), unique=True,
                                      max_size=2))))
    return links


@st.composite
def observed_hosts(draw):
    links = draw(observed_links())
    routes = []
    for _ in range(draw(st.integers(0, 5))):
        family = draw(st.sampled_from([4, 6]))
        nets, gws = (V4_NETS, V4_GWS) if family == 4 else (V6_NETS, V6_GWS)
        routes.append(ObservedRoute(
            family=family, dst=draw(st.sampled_from(nets)), gw=draw(st.sampled_from(gws + [None])),
            dev=draw(st.sampled_from(list(links) or [None])), src=None,
            metric=draw(st.sampled_from([None, 0, 100, 1024])),
            table=draw(st.sampled_from([254, 254, 255]))))
    pfs = {}
    for pci in draw(st.lists(st.sampled_from(PCIS), unique=True, max_size=3)):
        num = draw(st.integers(0, 4))
        pfs[pci] = ObservedPf(
            pci_addr=pci, ifname=draw(st.sampled_from([None, "eno1", "eno2", "ens1f0"])),
            vendor_id="8086", device_id=draw(st.sampled_from(["1572", "1528"])),
            driver="i40e", total_vfs=draw(st.sampled_from([0, 8, 64])), num_vfs=num,
            vfs=[ObservedVf(id=i, pci_addr=VF_PCIS[i],
                            driver=draw(st.sampled_from([None, "i40evf", "vfio-pci"])),
                            ifname=draw(st.sampled_from([None, f"eno2v{i}"])))
                 for i in range(min(num, 2))])
    bridges = None
    if draw(st.booleans()):
        bridges = {}
        for name in draw(st.lists(st.sampled_from(BRIDGES), unique=True, max_size=2)):
            ports = [ObservedOvsPort(name=p, interfaces=[ObservedOvsInterface(name=p, ofport=1)],
                                     external_ids=draw(st.sampled_from(
                                         [{}, {"plumber-managed": "true"}])))
                     for p in draw(st.lists(st.sampled_from(["eth1", "eth2"]), unique=True,
                                            max_size=2))]
            bridges[name] = ObservedBridge(name=name, datapath_type=draw(st.sampled_from(
                ["", "system", "netdev"])), ports=ports)
    return ObservedHost(links=links, routes=routes, pfs=pfs, bridges=bridges,
                        ovs_error=None if bridges is not None else "not running")


def ledger_keys():
    from plumber_agent.models import keys as p
    return st.one_of(
        st.sampled_from(PCIS).map(p.key_numvfs), st.sampled_from(VF_PCIS).map(p.key_vfdriver),
        st.sampled_from(IFNAMES).map(p.key_mtu), st.sampled_from(IFNAMES).map(p.key_vlan),
        st.builds(p.key_addr, st.sampled_from(IFNAMES), st.sampled_from(V4_ADDRS + V6_ADDRS)),
        st.builds(p.key_route, st.sampled_from([4]), st.sampled_from(V4_NETS),
                  st.sampled_from([0, 100])),
        st.builds(p.key_route, st.sampled_from([6]), st.sampled_from(V6_NETS),
                  st.sampled_from([1024])),
        st.sampled_from(BRIDGES).map(p.key_bridge),
        st.builds(p.key_port, st.sampled_from(BRIDGES), st.sampled_from(["eth1", "eth2"])))


def _prior_for(key: str):
    """A prior of the type our own executor records for this kind of key."""
    kind = key.split(":", 1)[0]
    if kind in ("numvfs", "mtu"):
        return st.one_of(st.none(), st.integers(0, 9000))
    if kind == "vfdriver":
        return st.sampled_from([None, "i40evf", "vfio-pci"])
    if kind == "addr":
        return st.one_of(st.none(), st.just(key.split(":", 2)[2]))
    if kind == "route":
        return st.one_of(st.none(), st.fixed_dictionaries({
            "family": st.just(6 if key.startswith("route:6") else 4),
            "dst": st.none(), "gw": st.sampled_from(V4_GWS + V6_GWS + [None]),
            "dev": st.sampled_from(IFNAMES + [None]), "src": st.none(),
            "metric": st.sampled_from([0, 100, 1024])}))
    if kind == "bridge":
        return st.one_of(st.none(), st.fixed_dictionaries(
            {"datapath_type": st.sampled_from([None, "system", "netdev"])}))
    if kind == "port":
        return st.one_of(st.none(), st.fixed_dictionaries({
            "interfaces": st.lists(st.sampled_from(["eth1", "eth2"]), unique=True, min_size=1),
            "bond_mode": st.none(), "lacp": st.none(), "mtu_request": st.none()}))
    return st.none()


@st.composite
def ledger_records(draw, *, arbitrary_priors: bool = False):
    records = {}
    for key in draw(st.lists(ledger_keys(), unique=True, max_size=6)):
        prior = draw(json_like if arbitrary_priors else _prior_for(key))
        # Our executor records every VLAN as created (ensure_vlan claims with prior None).
        created = True if key.startswith("vlan:") else draw(st.booleans())
        records[key] = {"prior": prior, "created": created,
                        "templates": draw(st.lists(st.sampled_from(["t1", "t2"]), unique=True)),
                        "since": "2024-01-01T00:00:00Z",
                        "value": draw(json_like) if arbitrary_priors else None}
    return records


IFNAME_ALPHABET = string.ascii_letters + string.digits + "_.-/: \t\n\0,=;$`'\"\\еш"
