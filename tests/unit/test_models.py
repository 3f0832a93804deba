"""Models: the seed's sample status round-trips losslessly; the spec validator reports every
problem at once with its JSON path and refuses each bad input of the bad-input table of docs/pitfalls.md."""
import pytest
import yaml

from plumber_agent.errors import InvalidSpec
from plumber_agent.models.fleet import selects
from plumber_agent.models.parse import parse_template_spec, template_from_object
from plumber_agent.models.status import (StatusSummary, TemplateStatus, drop_none, from_api,
                                         to_api)
from tests.helpers.paths import SEED_HOSTNETWORK_YAML


def test_seed_sample_status_round_trips_losslessly():
    seed = yaml.safe_load(SEED_HOSTNETWORK_YAML.read_text())
    status = from_api(seed["status"])
    assert status.interface_status[1].sriov_status.vfs[7].pci_addr == "0000:02:0a.7"
    assert status.interface_status[1].sriov_status.vfs[0].spoofchk is True
    assert status.routes.ipv4[0].gw == "145.40.65.94"
    assert to_api(status) == seed["status"]


def test_fast_encoder_matches_dataclasses_json():
    seed = yaml.safe_load(SEED_HOSTNETWORK_YAML.read_text())
    status = from_api(seed["status"])
    status.templates = [TemplateStatus(name="t", state="Applied", observed_generation=2)]
    status.summary = StatusSummary(interfaces=2, applied=1)
    assert to_api(status) == drop_none(status.to_dict(encode_json=False))


def test_unknown_values_are_absent_not_false():
    status = from_api({"interfaceStatus": [{"pfName": "eth0", "sriovStatus": {"totalVfs": 4,
                       "vfs": [{"id": 0, "pciAddr": "0000:02:0a.0"}]}}]})
    vf = to_api(status)["interfaceStatus"][0]["sriovStatus"]["vfs"][0]
    assert vf == {"id": 0, "pciAddr": "0000:02:0a.0"}


def _problems(spec) -> list[str]:
    with pytest.raises(InvalidSpec) as info:
        parse_template_spec(spec)
    return info.value.problems


def test_every_problem_reported_with_its_path():
    problems = _problems({
        "interfaceConfig": [{"name": "eno1"}, {"name": "eno2", "vlan": [{"id": 4095}], "mtu": 67}],
        "sriovConfig": [{"pfName": "eno2", "numVfs": -1}],
    })
    assert "spec.interfaceConfig[1].vlan[0].id: 4095 is outside 1..4094" in problems
    assert "spec.interfaceConfig[1].mtu: 67 is outside 68..65535" in problems
    assert "spec.sriovConfig[0].numVfs: -1 is outside 0..65535" in problems
    assert len(problems) == 3


IFNAME_BAD = ["", ".", "..", "a" * 16, "a/b", "../../etc", "eth0:1", "eth 0", "eth0\n", "eth\x000",
              "-eth0", "--help", "eth0;reboot", "eth\u04300"]


@pytest.mark.parametrize("name", IFNAME_BAD)
def test_bad_interface_names_refused(name):
    problems = _problems({"interfaceConfig": [{"name": name, "mtu": 1500}]})
    assert problems and problems[0].startswith("spec.interfaceConfig[0].name: ")
    problems = _problems({"sriovConfig": [{"pfName": name, "numVfs": 1}]})
    assert problems[0].startswith("spec.sriovConfig[0].pfName: ")


@pytest.mark.parametrize("pci", ["../", "0000:3b:00.0/../..", "0000:3b:00.0\n", "3b:00.0",
                                 "0000:3b:00.8", ""])
def test_bad_pci_addresses_refused(pci):
    assert _problems({"sriovConfig": [{"pciAddr": pci, "numVfs": 1}]})[0].startswith(
        "spec.sriovConfig[0].pciAddr: ")


def test_upper_case_pci_address_normalised():
    spec = parse_template_spec({"sriovConfig": [{"pciAddr": "0000:3B:00.0", "numVfs": 2}]})
    assert spec.sriov_config[0].pci_addr == "0000:3b:00.0"


@pytest.mark.parametrize("value", ["0x8086", "80866", "zzzz", ""])
def test_bad_hex_ids_refused(value):
    problems = _problems({"sriovConfig": [{"vendorId": value, "deviceId": "1528", "numVfs": 1}]})
    assert problems[0].startswith("spec.sriovConfig[0].vendorId: ")


@pytest.mark.parametrize("value", [-1, 65536, "010", "0x10", 5.0, True])
def test_bad_numvfs_refused(value):
    assert _problems({"sriovConfig": [{"pfName": "eno1", "numVfs": value}]})[0].startswith(
        "spec.sriovConfig[0].numVfs: ")


@pytest.mark.parametrize("value", ["../vfio", "vfio-pci\n", "x" * 4096])
def test_bad_vf_driver_refused(value):
    assert _problems({"sriovConfig": [{"pfName": "eno1", "vfDriver": value}]})[0].startswith(
        "spec.sriovConfig[0].vfDriver: ")


def test_exactly_one_sriov_selector():
    assert "exactly one of" in _problems({"sriovConfig": [{"numVfs": 1}]})[0]
    assert "exactly one of" in _problems({"sriovConfig": [{"pfName": "a", "pciAddr": "0000:01:00.0"}]})[0]
    assert _problems({"sriovConfig": [{"vendorId": "8086", "numVfs": 1}]}) == [
        "spec.sriovConfig[0].deviceId: is required with vendorId"]


@pytest.mark.parametrize("vid", [0, 4095, 4096, -1, "100"])
def test_bad_vlan_ids_refused(vid):
    assert _problems({"interfaceConfig": [{"name": "eno1", "vlan": [{"id": vid}]}]})[0].startswith(
        "spec.interfaceConfig[0].vlan[0].id: ")


@pytest.mark.parametrize("mtu", [0, 67, 65536])
def test_bad_mtu_refused(mtu):
    assert _problems({"interfaceConfig": [{"name": "eno1", "mtu": mtu}]})[0].startswith(
        "spec.interfaceConfig[0].mtu: ")


@pytest.mark.parametrize("mtu", [68, 65535])
def test_mtu_bounds_accepted(mtu):
    assert parse_template_spec({"interfaceConfig": [{"name": "eno1", "mtu": mtu}]}).interface_config[0].mtu == mtu


def test_ipv6_needs_mtu_1280_and_vlan_not_above_parent():
    problems = _problems({"interfaceConfig": [
        {"name": "eno1", "mtu": 1500, "vlan": [{"id": 10}]},
        {"name": "eno1.10", "mtu": 9000},
        {"name": "eno2", "mtu": 1000, "ipv6": {"address": ["fc00::1/64"]}}]})
    assert problems == ["spec.interfaceConfig[2].mtu: 1000 is below 1280, the minimum for IPv6",
                        "spec.interfaceConfig[1].mtu: 9000 is above the MTU 1500 of its parent eno1"]


@pytest.mark.parametrize("addr,family", [("10.0.0.1/33", "ipv4"), ("::1/129", "ipv6"),
                                         ("010.0.0.1/24", "ipv4"), ("fe80::1%eth0/64", "ipv6"),
                                         (" 10.0.0.1/24", "ipv4"), ("10.0.0.1", "ipv4"),
                                         ("fc00::1/64", "ipv4"), ("10.0.0.1/24", "ipv6")])
def test_bad_addresses_refused(addr, family):
    assert _problems({"interfaceConfig": [{"name": "eno1", family: {"address": [addr]}}]})[0].startswith(
        f"spec.interfaceConfig[0].{family}.address[0]: ")


def test_addresses_canonicalised():
    spec = parse_template_spec({"interfaceConfig": [{"name": "eno1", "ipv6": {
        "address": ["FC00:1:0:0::3/112"]}}]})
    assert spec.interface_config[0].ipv6.address == ["fc00:1::3/112"]


def test_routes_validated():
    problems = _problems({"routes": {"ipv4": [{"dst": "10.0.0.1/8", "gw": "10.0.0.1"},
                                              {"dst": "10.1.0.0/16"}],
                                     "ipv6": [{"gw": "10.0.0.1"}]}})
    assert problems[0].startswith("spec.routes.ipv4[0].dst: ")
    assert problems[1] == "spec.routes.ipv4[1]: a route needs a gw, a dev, or both"
    assert problems[2].startswith("spec.routes.ipv6[0].gw: ")


@pytest.mark.parametrize("name", ["br0,br1", "a=b", "--if-exists", "br\"0", "b" * 16])
def test_bad_ovs_names_refused(name):
    assert _problems({"ovsConfig": [{"bridgeName": name}]})[0].startswith("spec.ovsConfig[0].bridgeName: ")


def test_ovs_bond_and_params():
    spec = parse_template_spec({"ovsConfig": [{"bridgeName": "br-ex", "nodeInterface": "eth1, eth2",
                                               "params": {"bondMode": "balance-slb", "lacp": "active",
                                                          "mtuRequest": 9000}}]})
    assert spec.ovs_config[0].interfaces() == ["eth1", "eth2"]
    assert "bondMode/lacp need two" in _problems({"ovsConfig": [{"bridgeName": "b", "nodeInterface": "e",
                                                                 "params": {"lacp": "active"}}]})[0]


def test_unknown_fields_and_wrong_types_are_reported_not_crashing():
    problems = _problems({"interfaceConfig": "eno1", "sriovConfig": [None, 3], "bogus": 1,
                          "nodeSelector": {"foo": 1}})
    assert "spec.bogus: unknown field" in problems
    assert "spec.interfaceConfig: must be a list, not str" in problems
    assert "spec.sriovConfig[0]: must be an object" in problems
    assert "spec.sriovConfig[1]: must be an object, not int" in problems
    assert any(p.startswith("spec.nodeSelector: label 'foo'") for p in problems)


def test_template_from_object_never_raises_and_selector_semantics():
    template = template_from_object({"metadata": {"name": "t", "generation": 3},
                                     "spec": {"interfaceConfig": [{"name": "../x"}]},
                                     "status": {"bogus": True}})
    assert template.spec is None and template.problems and template.generation == 3
    assert selects({}, {"a": "b"})
    assert selects({"a": "b"}, {"a": "b", "c": "d"})
    assert not selects({"a": "b", "foo": "bar"}, {"a": "b"})


def test_too_many_entries_bounded():
    problems = _problems({"interfaceConfig": [{"name": f"e{i}"} for i in range(10000)]})
    assert problems == ["spec.interfaceConfig: has 10000 entries; at most 4096 are allowed"]



@pytest.mark.parametrize("family, address, why", [
    (4, "127.0.0.2/8", "127.0.0.2 is a loopback address"),
    (4, "224.0.0.1/4", "224.0.0.1 is a multicast address"),
    (4, "240.0.0.1/24", "240.0.0.1 is reserved"),
    (4, "255.255.255.255/32", "255.255.255.255 is reserved"),
    (4, "0.0.0.5/8", "0.0.0.5 is in 0.0.0.0/8"),
    (6, "ff02::1/64", "ff02::1 is a multicast address"),
    (6, "::/64", ":: is the unspecified address"),
    (6, "fe80::5/64", "fe80::5 is link-local"),
    (6, "fe90::1/64", "fe90::1 is in fe80::/10, which the kernel scopes link-local, but not in "
                      "fe80::/64"),
    (6, "fec0::1/64", "fec0::1 is site-local (fec0::/10), deprecated"),
    (6, "::ffff:10.0.0.1/96", "::ffff:a00:1 is IPv4-mapped"),
])
def test_addresses_no_interface_may_have_are_refused_with_their_path(family, address, why):
    """Issue 20: 127.0.0.2/8, fe90::1/64 and 224.0.0.1/4 were accepted."""
    key = f"ipv{family}"
    with pytest.raises(InvalidSpec) as caught:
        parse_template_spec({"interfaceConfig": [{"name": "eth1", key: {"address": [address]}}]})
    (problem,) = caught.value.problems
    assert problem.startswith(f"spec.interfaceConfig[0].{key}.address[0]: {why}"), problem


@pytest.mark.parametrize("family, address", [
    (4, "10.1.2.3/8"), (4, "100.64.0.1/10"), (4, "169.254.10.1/16"), (4, "192.0.2.7/24"),
    (6, "fd00::1/64"), (6, "2001:db8::1/64"),
])
def test_private_shared_documentation_and_unique_local_addresses_are_allowed(family, address):
    key = f"ipv{family}"
    spec = parse_template_spec({"interfaceConfig": [{"name": "eth1", key: {"address": [address]}}]})
    assert getattr(spec.interface_config[0], key).address == [address]


def test_a_route_to_the_whole_address_space_is_the_default_route():
    """`dst: 0.0.0.0/0` (or `::/0`) is how many write the default route; the kernel keeps it
    without a destination, so it must be the same route as one written without dst (else the
    agent would own a route the kernel never reports and add it again every pass)."""
    spec = parse_template_spec({"routes": {
        "ipv4": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}],
        "ipv6": [{"dst": "::/0", "gw": "fd00::1"}, {"dst": "0::0/0", "dev": "eno1", "metric": 5}]}})
    assert [r.dst for r in spec.routes.ipv4 + spec.routes.ipv6] == [None, None, None]
    assert spec.routes.ipv4[0].gw == "10.0.0.1"


def test_a_route_gateway_must_be_a_unicast_neighbour():
    with pytest.raises(InvalidSpec) as caught:
        parse_template_spec({"routes": {"ipv4": [{"dst": "10.0.0.0/8", "gw": "224.0.0.9"},
                                                 {"dst": "10.1.0.0/16", "gw": "127.0.0.1"}]}})
    assert caught.value.problems == [
        "spec.routes.ipv4[0].gw: 224.0.0.9 cannot be a gateway (loopback, multicast, "
        "unspecified or reserved)",
        "spec.routes.ipv4[1].gw: 127.0.0.1 cannot be a gateway (loopback, multicast, "
        "unspecified or reserved)"]
    ok = parse_template_spec({"routes": {"ipv6": [{"dst": "2001:db8::/32", "gw": "fe80::1",
                                                   "dev": "eth1"}]}})
    assert ok.routes.ipv6[0].gw == "fe80::1"
