"""The netlink driver against the real kernel, in throw-away namespaces, checked with `ip -j`.

Only the raw-reader tests at the bottom use scripted kernel answers: they exercise our own seam
(the socket RtnlReader reads from) for what the kernel cannot be made to do on demand here
(interrupted dumps, SR-IOV VF info).
"""
from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import threading

import pytest

from plumber_agent.errors import HostError, InvalidSpec, NotAvailable
from plumber_agent.host.netlink import messages as nl_mod
from plumber_agent.host.netlink import Netlink, RtnlReader, parse_link
from plumber_agent.host.netlink.reader import DUMP_INTR_RETRIES
from plumber_agent.models.observed import ObservedRoute
from tests.helpers.netns import (IpCommandError, ip, ip_json, netns_exists, unique_netns_name,
                                 veth_pair)
from tests.helpers.wait import wait_for

WAIT_BOUND_S = 10.0
privileged = pytest.mark.privileged

SCOPES = {"global": 0, "universe": 0, "site": 200, "link": 253, "host": 254}


def canonical_cidr(text: str) -> str:
    iface = ipaddress.ip_interface(text)
    return f"{iface.ip.compressed}/{iface.network.prefixlen}"


def ip_addresses(ns: str, ifname: str, family: str) -> list[str]:
    rows = ip_json(ns, "addr", "show", "dev", ifname)
    return sorted(canonical_cidr(f"{a['local']}/{a['prefixlen']}")
                  for row in rows for a in row.get("addr_info", []) if a["family"] == family)


def ip_routes(ns: str, family: int) -> set[tuple]:
    """Main-table unicast routes as `ip -j route` shows them, in ObservedRoute's terms."""
    out = set()
    for row in ip_json(ns, *(["-6"] if family == 6 else []), "route", "show", "table", "main"):
        if row.get("type", "unicast") != "unicast":
            continue
        dst = row["dst"]
        if dst == "default":
            dst = None
        else:
            dst = ipaddress.ip_network(dst if "/" in dst else
                                       f"{dst}/{32 if family == 4 else 128}").compressed
        out.add((family, dst, row.get("gateway"), row.get("dev"), row.get("prefsrc"),
                 row.get("metric"), row.get("protocol", "boot"),
                 SCOPES.get(row.get("scope", "global"), row.get("scope"))))
    return out


def observed_routes(routes: list[ObservedRoute], family: int) -> set[tuple]:
    return {(r.family, r.dst, r.gw, r.dev, r.src, r.metric, r.proto, r.scope)
            for r in routes if r.family == family}


def has_link_local(ns: str, ifname: str) -> bool:
    return any(a.startswith("fe80:") for a in ip_addresses(ns, ifname, "inet6"))


@pytest.fixture
def lab(netns_name):
    """A namespace with veth va<->vb up, va carrying v4 + v6 addresses, link-locals settled."""
    ns = netns_name
    veth_pair(ns, "va", "vb")
    ip(ns, "addr", "add", "10.1.0.1/24", "dev", "va")
    ip(ns, "addr", "add", "2001:db8:0:0::1/64", "dev", "va", "nodad")
    assert wait_for(lambda: has_link_local(ns, "va") and has_link_local(ns, "vb"),
                    timeout_s=WAIT_BOUND_S, what="link-local addresses on va and vb")
    return ns


@pytest.fixture
def driver(lab):
    drv = Netlink(lab, wait_timeout_s=WAIT_BOUND_S)
    yield drv
    drv.close()


# ---- discovery ----------------------------------------------------------------------------------

@privileged
def test_discover_links_match_ip_json(lab, driver):
    ip(lab, "link", "set", "va", "mtu", "1400")
    ip(lab, "link", "add", "name", "vc", "type", "veth", "peer", "name", "vd")  # left down
    links, _routes = driver.discover()
    detailed = {row["ifname"]: row for row in ip_json(lab, "-d", "link", "show")}
    assert set(links) == set(detailed) == {"lo", "va", "vb", "vc", "vd"}
    for name, row in detailed.items():
        link = links[name]
        assert link.index == row["ifindex"]
        assert link.mtu == row["mtu"]
        assert link.mac == row["address"].lower()
        assert link.oper_state == row["operstate"]
        assert link.admin_up == ("UP" in row["flags"])
        assert link.kind == row.get("linkinfo", {}).get("info_kind")
        assert link.parent == row.get("link")
        assert link.ipv4 == ip_addresses(lab, name, "inet")
        assert link.ipv6 == ip_addresses(lab, name, "inet6")
    assert links["va"].mtu == 1400
    assert links["va"].kind == "veth" and links["va"].parent == "vb"
    assert links["lo"].kind is None and links["lo"].ipv4 == ["127.0.0.1/8"]
    assert links["vc"].admin_up is False and links["vc"].oper_state == "DOWN"
    assert links["va"].vlan_id is None and links["va"].vfs == []


@privileged
def test_discover_addresses_canonical_with_link_local(lab, driver):
    ip(lab, "addr", "add", "2001:DB8:0:0:0:0:0:A/64", "dev", "vb", "nodad")
    ip(lab, "addr", "add", "192.168.7.9/16", "dev", "vb")
    ip(lab, "addr", "add", "10.200.0.1/8", "dev", "vb")
    links, _ = driver.discover()
    vb = links["vb"]
    assert vb.ipv4 == ["10.200.0.1/8", "192.168.7.9/16"]  # sorted, host bits kept
    global_v6 = [a for a in vb.ipv6 if not a.startswith("fe80:")]
    assert global_v6 == ["2001:db8::a/64"]  # compressed, lower case
    link_local = [a for a in vb.ipv6 if a.startswith("fe80:")]
    assert len(link_local) == 1 and link_local[0].endswith("/64")
    assert vb.ipv6 == sorted(vb.ipv6)
    assert links["va"].ipv6 == sorted(["2001:db8::1/64"] + [
        a for a in ip_addresses(lab, "va", "inet6") if a.startswith("fe80:")])


@privileged
def test_discover_routes_match_ip_json(lab, driver):
    ip(lab, "route", "add", "10.9.0.0/16", "via", "10.1.0.2")
    ip(lab, "route", "add", "10.8.0.0/16", "dev", "va", "metric", "7")  # no gateway
    ip(lab, "route", "add", "default", "via", "10.1.0.254", "metric", "100")
    ip(lab, "route", "add", "10.7.0.0/24", "via", "10.1.0.3", "src", "10.1.0.1", "proto",
       "static")
    ip(lab, "-6", "route", "add", "2001:db8:9::/48", "via", "2001:db8::2", "dev", "va")
    ip(lab, "-6", "route", "add", "default", "via", "2001:db8::fe", "dev", "va")
    _links, routes = driver.discover()
    assert observed_routes(routes, 4) == ip_routes(lab, 4)
    assert observed_routes(routes, 6) == ip_routes(lab, 6)
    by_dst = {(r.family, r.dst): r for r in routes}
    assert by_dst[(4, None)].gw == "10.1.0.254" and by_dst[(4, None)].metric == 100
    assert by_dst[(4, "10.8.0.0/16")].gw is None and by_dst[(4, "10.8.0.0/16")].metric == 7
    assert by_dst[(4, "10.1.0.0/24")].proto == "kernel"
    assert by_dst[(4, "10.1.0.0/24")].src == "10.1.0.1"
    assert by_dst[(4, "10.7.0.0/24")].proto == "static"
    assert by_dst[(6, None)].gw == "2001:db8::fe"
    assert (6, "fe80::/64") in by_dst  # link-local prefix routes are reported as they are
    assert all(r.table == 254 for r in routes)
    # The local table (local/broadcast routes of 10.1.0.1) is not reported.
    assert not any(r.dst in ("10.1.0.1/32", "10.1.0.255/32") for r in routes)


@privileged
def test_route_to(lab, driver):
    ip(lab, "route", "add", "10.9.0.0/16", "via", "10.1.0.2")
    found = driver.route_to("10.9.3.4")
    assert (found.dev, found.gw, found.src) == ("va", "10.1.0.2", "10.1.0.1")
    direct = driver.route_to("10.1.0.77")
    assert (direct.dev, direct.gw) == ("va", None)
    assert driver.route_to("192.0.2.1") is None  # no default route in this namespace
    with pytest.raises(InvalidSpec):
        driver.route_to("10.1.0.1/24")


# ---- the namespace --------------------------------------------------------------------------

@privileged
def test_missing_netns_is_not_available_and_not_created(netns_name):
    missing = unique_netns_name()
    with pytest.raises(NotAvailable, match="does not exist"):
        Netlink(missing)
    assert not netns_exists(missing)


@pytest.mark.parametrize("bad", ["", "..", "a/b", "../../etc/x", "with space", "-x", "n\0ul"])
def test_bad_netns_name_is_invalid(bad):
    with pytest.raises(InvalidSpec):
        Netlink(bad)


# ---- mutations ----------------------------------------------------------------------------------

@privileged
def test_set_mtu(lab, driver):
    driver.set_mtu("va", 1400)
    assert ip_json(lab, "link", "show", "va")[0]["mtu"] == 1400
    driver.set_mtu("va", 1400)  # idempotent
    assert ip_json(lab, "link", "show", "va")[0]["mtu"] == 1400
    with pytest.raises(InvalidSpec):
        driver.set_mtu("va", 67)
    with pytest.raises(NotAvailable, match="nosuch"):
        driver.set_mtu("nosuch", 1400)
    # A macvlan cannot exceed its lower device's MTU: the kernel refuses, the message says why.
    ip(lab, "link", "add", "link", "va", "name", "mv0", "type", "macvlan")
    with pytest.raises(HostError, match=r"mv0.*EINVAL"):
        driver.set_mtu("mv0", 9000)
    assert ip_json(lab, "link", "show", "mv0")[0]["mtu"] == 1400


@privileged
def test_set_up(lab, driver):
    ip(lab, "link", "set", "vb", "down")
    driver.set_up("vb")
    assert "UP" in ip_json(lab, "link", "show", "vb")[0]["flags"]
    driver.set_up("vb")
    assert "UP" in ip_json(lab, "link", "show", "vb")[0]["flags"]


@privileged
@pytest.mark.parametrize("cidr, family", [("10.2.0.1/24", "inet"),
                                          ("2001:db8:5::7/64", "inet6")])
def test_address_add_idempotent_delete_tolerant(lab, driver, cidr, family):
    driver.add_address("vb", cidr)
    assert cidr in ip_addresses(lab, "vb", family)
    driver.add_address("vb", cidr)  # already there: fine
    assert ip_addresses(lab, "vb", family).count(cidr) == 1
    driver.delete_address("vb", cidr)
    assert cidr not in ip_addresses(lab, "vb", family)
    driver.delete_address("vb", cidr)  # already gone: fine
    driver.delete_address("nosuch", cidr)  # no such link: fine
    assert "10.1.0.1/24" in ip_addresses(lab, "va", "inet")  # nothing else touched


@privileged
def test_address_add_to_missing_link_and_bad_input(driver):
    with pytest.raises(NotAvailable):
        driver.add_address("nosuch", "10.3.0.1/24")
    for bad in ("10.0.0.1/33", "010.0.0.1/24", " 10.0.0.1/24", "10.0.0.1", "fe80::1%va/64"):
        with pytest.raises(InvalidSpec):
            driver.add_address("va", bad)
    for bad_name in ("../x", "eth0;reboot", "a" * 16, "-va", ""):
        with pytest.raises(InvalidSpec):
            driver.add_address(bad_name, "10.3.0.1/24")


@privileged
def test_routes_add_replace_delete(lab, driver):
    route = ObservedRoute(family=4, dst="10.50.0.0/16", gw="10.1.0.3", dev="va", metric=5)
    driver.add_route(route)
    assert [r for r in ip_json(lab, "route", "show", "10.50.0.0/16")] == [
        {"dst": "10.50.0.0/16", "gateway": "10.1.0.3", "dev": "va", "protocol": "static",
         "metric": 5, "flags": []}]
    driver.add_route(route)  # idempotent
    replaced = ObservedRoute(family=4, dst="10.50.0.0/16", gw="10.1.0.4", dev="va", metric=5)
    driver.add_route(replaced)
    rows = ip_json(lab, "route", "show", "10.50.0.0/16")
    assert [(r["gateway"], r["metric"]) for r in rows] == [("10.1.0.4", 5)]
    driver.delete_route(replaced)
    assert ip_json(lab, "route", "show", "10.50.0.0/16") == []
    driver.delete_route(replaced)  # absent: fine

    default = ObservedRoute(family=4, dst=None, gw="10.1.0.254", dev="va")
    driver.add_route(default)
    assert [r["gateway"] for r in ip_json(lab, "route", "show", "default")] == ["10.1.0.254"]
    driver.delete_route(default)
    assert ip_json(lab, "route", "show", "default") == []

    v6 = ObservedRoute(family=6, dst="2001:db8:77::/48", gw="2001:db8::9", dev="va")
    driver.add_route(v6)
    rows = ip_json(lab, "-6", "route", "show", "2001:db8:77::/48")
    assert [(r["gateway"], r["dev"]) for r in rows] == [("2001:db8::9", "va")]
    driver.delete_route(v6)
    assert ip_json(lab, "-6", "route", "show", "2001:db8:77::/48") == []
    driver.delete_route(ObservedRoute(family=4, dst="10.51.0.0/16", dev="nosuch"))


@privileged
def test_route_errors_are_clear(driver):
    with pytest.raises(HostError, match=r"10\.60\.0\.0/16.*ENETUNREACH"):
        driver.add_route(ObservedRoute(family=4, dst="10.60.0.0/16", gw="192.0.2.1", dev="va"))
    with pytest.raises(NotAvailable, match="nosuch"):
        driver.add_route(ObservedRoute(family=4, dst="10.60.0.0/16", dev="nosuch"))
    with pytest.raises(InvalidSpec):
        driver.add_route(ObservedRoute(family=4, dst="10.60.0.1/16", dev="va"))  # host bits
    with pytest.raises(InvalidSpec):
        driver.add_route(ObservedRoute(family=4, dst="2001:db8::/64", dev="va"))
    with pytest.raises(InvalidSpec):
        driver.add_route(ObservedRoute(family=5, dst=None, dev="va"))


@privileged
def test_delete_link_of_a_veth(lab, driver):
    driver.delete_link("va")
    names = {row["ifname"] for row in ip_json(lab, "link", "show")}
    assert names == {"lo"}  # the peer goes with it
    driver.delete_link("va")  # absent: fine
    driver.delete_link("vb")


# ---- VLANs --------------------------------------------------------------------------------------

def kernel_has_8021q(ns: str) -> bool:
    ip(ns, "link", "add", "name", "probe0", "type", "veth", "peer", "name", "probe1")
    try:
        ip(ns, "link", "add", "link", "probe0", "name", "probe0.2", "type", "vlan", "id", "2")
    except IpCommandError:
        return False
    finally:
        ip(ns, "link", "del", "probe0")
    return True


@privileged
def test_vlan_without_8021q_is_not_available(lab, driver):
    if kernel_has_8021q(lab):
        pytest.skip("this kernel has 8021q; test_vlan_lifecycle covers it")
    with pytest.raises(NotAvailable, match=r"802\.1Q.*8021q"):
        driver.ensure_vlan("va.100", "va", 100)
    assert "va.100" not in {row["ifname"] for row in ip_json(lab, "link", "show")}


@privileged
def test_vlan_name_taken_by_another_link_is_left_alone(lab, driver):
    with pytest.raises(HostError, match="left untouched"):
        driver.ensure_vlan("vb", "va", 100)
    assert ip_json(lab, "-d", "link", "show", "vb")[0]["linkinfo"]["info_kind"] == "veth"
    with pytest.raises(InvalidSpec):
        driver.ensure_vlan("va.0", "va", 0)
    with pytest.raises(InvalidSpec):
        driver.ensure_vlan("va.x", "../va", 5)


@privileged
@pytest.mark.fullkernel
def test_vlan_lifecycle(lab, driver):
    if not kernel_has_8021q(lab):
        pytest.skip("needs 8021q (runs in the full-kernel VM tier)")
    driver.ensure_vlan("va.100", "va", 100)
    row = ip_json(lab, "-d", "link", "show", "va.100")[0]
    assert row["linkinfo"]["info_kind"] == "vlan"
    assert row["linkinfo"]["info_data"]["id"] == 100
    assert row["link"] == "va" and "UP" in row["flags"]
    driver.ensure_vlan("va.100", "va", 100)  # idempotent
    with pytest.raises(HostError, match="left untouched"):
        driver.ensure_vlan("va.100", "va", 101)
    with pytest.raises(HostError, match="left untouched"):
        driver.ensure_vlan("va.100", "vb", 100)
    driver.set_mtu("va.100", 1400)
    driver.add_address("va.100", "10.100.0.1/24")
    driver.add_address("va.100", "2001:db8:100::1/64")
    links, _ = driver.discover()
    vlan = links["va.100"]
    assert (vlan.kind, vlan.parent, vlan.vlan_id, vlan.mtu) == ("vlan", "va", 100, 1400)
    assert vlan.ipv4 == ["10.100.0.1/24"] and "2001:db8:100::1/64" in vlan.ipv6
    assert ip_json(lab, "link", "show", "va.100")[0]["mtu"] == 1400
    driver.delete_link("va.100")
    assert "va.100" not in {r["ifname"] for r in ip_json(lab, "link", "show")}
    driver.delete_link("va.100")


# ---- threads ------------------------------------------------------------------------------------

@privileged
def test_threaded_use_one_instance_per_thread(lab):
    """Two threads, each with its own Netlink on one namespace, opened while others run."""
    stop = threading.Event()
    errors: list[BaseException] = []
    done: dict[str, list[str]] = {}

    def busy_reader():
        try:
            with Netlink(lab) as drv:
                while not stop.is_set():
                    drv.discover()
        except BaseException as exc:
            errors.append(exc)

    def worker(ifname: str, third_octet: int):
        try:
            with Netlink(lab, wait_timeout_s=WAIT_BOUND_S) as drv:
                for host in range(1, 6):
                    drv.add_address(ifname, f"10.{third_octet}.0.{host}/24")
                links, _ = drv.discover()
                done[ifname] = links[ifname].ipv4
        except BaseException as exc:
            errors.append(exc)

    background = threading.Thread(target=busy_reader)
    background.start()
    try:
        workers = [threading.Thread(target=worker, args=("va", 20)),
                   threading.Thread(target=worker, args=("vb", 21))]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(60)
        assert not any(thread.is_alive() for thread in workers)
    finally:
        stop.set()
        background.join(60)
    assert errors == []
    assert set(done["vb"]) == {f"10.21.0.{h}/24" for h in range(1, 6)}
    assert set(f"10.20.0.{h}/24" for h in range(1, 6)) <= set(done["va"])
    assert set(ip_addresses(lab, "vb", "inet")) == set(done["vb"])


@privileged
def test_instance_refuses_a_second_thread(driver):
    driver.discover()
    caught: list[BaseException] = []

    def other():
        try:
            driver.discover()
        except BaseException as exc:
            caught.append(exc)
    thread = threading.Thread(target=other)
    thread.start()
    thread.join(30)
    assert len(caught) == 1 and isinstance(caught[0], RuntimeError)


# ---- the raw reader against scripted kernel answers ---------------------------------------------

def _nla(atype: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, atype) + value + b"\0" * ((4 - length % 4) % 4)


def _msg(msg_type: int, seq: int, body: bytes, flags: int = 0) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), msg_type, flags, seq, 0) + body


def _link_body(index: int, name: str, extra: bytes = b"") -> bytes:
    return (struct.pack("=BxHiII", 0, 1, index, 1, 0)
            + _nla(nl_mod.IFLA_IFNAME, name.encode() + b"\0")
            + _nla(nl_mod.IFLA_ADDRESS, bytes.fromhex("AABBCC000001")) + extra)


class ScriptedKernel:
    """Stands in for the netlink socket RtnlReader owns: answers each request with the next
    scripted list of messages (built with the request's sequence number)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.pending: list[bytes] = []
        self.requests = 0

    def settimeout(self, _timeout):
        pass

    def send(self, data: bytes) -> int:
        seq = struct.unpack_from("=I", data, 8)[0]
        self.requests += 1
        self.pending = [build(seq) for build in self.answers.pop(0)]
        return len(data)

    def recv_into(self, buffer, _nbytes=0, _flags=0) -> int:
        data = self.pending.pop(0)
        buffer[:len(data)] = data
        return len(data)

    def close(self):
        pass


def test_dump_restarts_when_interrupted():
    def done(seq):
        return _msg(nl_mod.NLMSG_DONE, seq, struct.pack("=i", 0), nl_mod.NLM_F_MULTI)

    first = [lambda seq: _msg(nl_mod.RTM_NEWLINK, seq, _link_body(1, "stale"),
                              nl_mod.NLM_F_MULTI | nl_mod.NLM_F_DUMP_INTR), done]
    second = [lambda seq: _msg(nl_mod.RTM_NEWLINK, seq, _link_body(1, "lo"), nl_mod.NLM_F_MULTI),
              lambda seq: _msg(nl_mod.RTM_NEWLINK, seq, _link_body(2, "eth0"),
                               nl_mod.NLM_F_MULTI),
              done]
    kernel = ScriptedKernel([first, second])
    rows = RtnlReader(kernel).dump_links()
    assert kernel.requests == 2
    assert [link.ifname for link, _parent, _extras in rows] == ["lo", "eth0"]


def test_dump_that_never_settles_fails_clearly():
    def done(seq):
        return _msg(nl_mod.NLMSG_DONE, seq, struct.pack("=i", 0), nl_mod.NLM_F_MULTI)

    interrupted = [lambda seq: _msg(nl_mod.RTM_NEWLINK, seq, _link_body(1, "lo"),
                                    nl_mod.NLM_F_MULTI | nl_mod.NLM_F_DUMP_INTR), done]
    kernel = ScriptedKernel([interrupted] * DUMP_INTR_RETRIES)
    with pytest.raises(HostError, match="NLM_F_DUMP_INTR"):
        RtnlReader(kernel).dump_links()


def test_kernel_error_in_dump_is_raised_with_errno():
    error = [lambda seq: _msg(nl_mod.NLMSG_ERROR, seq,
                              struct.pack("=i", -errno.EPERM) + b"\0" * 16)]
    with pytest.raises(OSError) as info:
        RtnlReader(ScriptedKernel([error])).dump_links()
    assert info.value.errno == errno.EPERM


def test_vf_info_is_parsed_and_unknown_settings_stay_none():
    def vf(vf_id, mac, vlan, qos, spoofchk, trust):
        return _nla(nl_mod.IFLA_VF_INFO,
                    _nla(nl_mod.IFLA_VF_MAC, struct.pack("=I", vf_id) + bytes.fromhex(mac)
                         + b"\0" * 26)
                    + _nla(nl_mod.IFLA_VF_VLAN, struct.pack("=III", vf_id, vlan, qos))
                    + _nla(nl_mod.IFLA_VF_SPOOFCHK, struct.pack("=II", vf_id, spoofchk))
                    + _nla(nl_mod.IFLA_VF_TRUST, struct.pack("=II", vf_id, trust)))
    vf_list = _nla(nl_mod.IFLA_VFINFO_LIST | 0x8000,
                   vf(1, "0000000000AA", 0, 0, 0xFFFFFFFF, 0xFFFFFFFF)
                   + vf(0, "52540000FF01", 100, 3, 1, 0))
    body = _link_body(5, "eno2", _nla(nl_mod.IFLA_MTU, struct.pack("=I", 9000)) + vf_list)
    link, parent, _extras = parse_link(body, 0, len(body))
    assert (link.ifname, link.mtu, link.mac, parent) == ("eno2", 9000, "aa:bb:cc:00:00:01", None)
    assert [(v.id, v.mac, v.vlan, v.qos, v.spoofchk, v.trust) for v in link.vfs] == [
        (0, "52:54:00:00:ff:01", 100, 3, True, False),
        (1, "00:00:00:00:00:aa", 0, 0, None, None)]


def test_vlan_attributes_are_parsed():
    linkinfo = _nla(nl_mod.IFLA_LINKINFO | 0x8000,
                    _nla(nl_mod.IFLA_INFO_KIND, b"vlan\0")
                    + _nla(nl_mod.IFLA_INFO_DATA | 0x8000,
                           _nla(nl_mod.IFLA_VLAN_ID, struct.pack("=H", 42))))
    body = _link_body(7, "eth0.42", _nla(nl_mod.IFLA_LINK, struct.pack("=I", 3)) + linkinfo)
    link, parent, _extras = parse_link(body, 0, len(body))
    assert (link.kind, link.vlan_id, parent) == ("vlan", 42, 3)


def test_ipv4_mapped_addresses_use_the_validators_canonical_form():
    raw = ipaddress.IPv6Address("::ffff:1.2.3.4").packed
    assert nl_mod._ip_text(raw) == ipaddress.IPv6Address(raw).compressed
    assert nl_mod._ip_text(socket.inet_pton(socket.AF_INET6, "2001:db8:0:0:1:0:0:1")) == \
        "2001:db8::1:0:0:1"


def test_only_the_driver_imports_pyroute2_and_the_monitor_uses_public_names():
    """The package boundaries: pyroute2 stays in driver.py; the monitor imports no underscored
    name from the netlink package."""
    import ast
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "src" / "plumber_agent"
    importers = set()
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name == "pyroute2" or name.startswith("pyroute2.") for name in names):
                importers.add(path.relative_to(src).as_posix())
    assert importers == {"host/netlink/driver.py"}
    monitor = ast.parse((src / "host" / "monitor.py").read_text())
    private = [alias.name for node in ast.walk(monitor) if isinstance(node, ast.ImportFrom)
               and (node.module or "").startswith("plumber_agent.host.netlink")
               for alias in node.names if alias.name.startswith("_")]
    assert private == []
