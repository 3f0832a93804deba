"""merge(): selection, SR-IOV selector resolution and the conflict rule (oldest template wins)."""
from plumber_agent.desired import merge
from plumber_agent.models.observed import ObservedHost, ObservedLink, ObservedPf
from tests.support.fakehost import make_template

OLD, NEW, NEWER = "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"


def observed_host() -> ObservedHost:
    pfs = {
        "0000:01:00.0": ObservedPf("0000:01:00.0", ifname="eno1", vendor_id="8086",
                                   device_id="1572", driver="i40e", total_vfs=64),
        "0000:01:00.1": ObservedPf("0000:01:00.1", ifname="eno2", vendor_id="8086",
                                   device_id="1572", driver="i40e", total_vfs=64),
        "0000:03:00.0": ObservedPf("0000:03:00.0", ifname="enp3s0f0", vendor_id="8086",
                                   device_id="1528", driver="ixgbe", total_vfs=63),
        # Same model, but its netdev is gone (moved to another namespace): still a PF.
        "0000:05:00.0": ObservedPf("0000:05:00.0", ifname=None, vendor_id="8086",
                                   device_id="1528", driver="ixgbe", total_vfs=63),
    }
    links = {name: ObservedLink(name, i, mtu=1500) for i, name in
             enumerate(["eno1", "eno2", "enp3s0f0", "bond0"], start=1)}
    return ObservedHost(links=links, pfs=pfs, bridges={})


def sriov(name, created, **entry):
    return make_template(name, {"sriovConfig": [entry]}, created=created)


def test_two_templates_disagreeing_on_numvfs_oldest_wins_and_both_are_reported():
    old = sriov("zz-old", OLD, pfName="eno2", numVfs=4)
    new = sriov("aa-new", NEW, pfName="eno2", numVfs=8)
    for order in ([old, new], [new, old]):  # input order does not matter
        result = merge(order, {}, observed_host())
        pf = result.desired.pfs["0000:01:00.1"]
        assert pf.num_vfs.value == 4 and pf.num_vfs.templates == ["zz-old"]
        loser, winner = result.results["aa-new"], result.results["zz-old"]
        assert loser.state == "Conflict"
        assert "numVfs of PF 0000:01:00.1 (eno2)" in loser.message
        assert "'zz-old'" in loser.message and "wants 8" in loser.message
        assert winner.state == "Applied"
        assert "wins over template 'aa-new'" in winner.message


def test_same_timestamp_tie_is_broken_by_name():
    a = sriov("a", OLD, pfName="eno2", numVfs=2)
    b = sriov("b", OLD, pfName="eno2", numVfs=6)
    result = merge([b, a], {}, observed_host())
    assert result.desired.pfs["0000:01:00.1"].num_vfs.value == 2
    assert result.results["b"].state == "Conflict"


def test_agreeing_templates_share_the_field_without_conflict():
    a = sriov("a", OLD, pfName="eno2", numVfs=4, vfDriver="iavf")
    b = sriov("b", NEW, pciAddr="0000:01:00.1", numVfs=4)
    result = merge([a, b], {}, observed_host())
    pf = result.desired.pfs["0000:01:00.1"]
    assert pf.num_vfs.templates == ["a", "b"]
    assert pf.vf_driver.templates == ["a"]
    assert [(r.state, r.message) for r in result.results.values()] == [("Applied", ""), ("Applied", "")]


def test_selector_matching_nothing_fails_that_template_only():
    bad = sriov("bad", OLD, pfName="eno9", numVfs=4)
    good = sriov("good", NEW, pfName="eno1", numVfs=2)
    result = merge([bad, good], {}, observed_host())
    assert result.results["bad"].state == "Failed"
    assert result.results["bad"].message == \
        "spec.sriovConfig[0]: no PF matches pfName eno9 on this node"
    assert result.results["good"].state == "Applied"
    assert list(result.desired.pfs) == ["0000:01:00.0"]


def test_vendor_device_selects_every_matching_pf_including_one_without_netdev():
    t = sriov("dev1528", OLD, vendorId="8086", deviceId="1528", numVfs=32, vfDriver="vfio-pci")
    result = merge([t], {}, observed_host())
    assert sorted(result.desired.pfs) == ["0000:03:00.0", "0000:05:00.0"]
    assert result.desired.pfs["0000:05:00.0"].ifname is None
    assert result.results["dev1528"].state == "Applied"


def test_not_selected_and_invalid_templates_contribute_nothing():
    other = make_template("other-node", {"nodeSelector": {"kubernetes.io/hostname": "n2"},
                                         "interfaceConfig": [{"name": "eno1", "mtu": 9000}]},
                          generation=3)
    invalid = make_template("broken", {"interfaceConfig": [{"name": "../etc", "mtu": 10}]},
                            generation=7)
    result = merge([other, invalid], {"kubernetes.io/hostname": "n1"}, observed_host())
    assert result.desired.is_empty()
    assert result.results["other-node"].state == "NotSelected"
    assert result.results["other-node"].observed_generation == 3
    assert result.results["broken"].state == "Invalid"
    assert "spec.interfaceConfig[0].name" in result.results["broken"].message
    assert result.results["broken"].observed_generation == 7


def test_selected_by_labels():
    t = make_template("t", {"nodeSelector": {"foo": "bar", "feature.node.kubernetes.io/"
                                             "network-sriov.capable": "true"},
                            "interfaceConfig": [{"name": "eno1", "mtu": 9000}]})
    labels = {"foo": "bar", "feature.node.kubernetes.io/network-sriov.capable": "true", "x": "y"}
    assert merge([t], labels, observed_host()).desired.links["eno1"].mtu.value == 9000
    assert merge([t], {"foo": "bar"}, observed_host()).results["t"].state == "NotSelected"


def test_sriov_mtu_and_interface_mtu_of_the_same_pf_netdev_conflict():
    a = make_template("a", {"interfaceConfig": [{"name": "eno2", "mtu": 9000}]}, created=OLD)
    b = sriov("b", NEW, pfName="eno2", mtu=1500)
    result = merge([a, b], {}, observed_host())
    assert result.desired.links["eno2"].mtu.value == 9000
    assert result.results["b"].state == "Conflict"
    assert "MTU of interface eno2" in result.results["b"].message
    # the VF MTU field itself had no rival: the VFs still get 1500
    assert result.desired.pfs["0000:01:00.1"].mtu.value == 1500


def test_loser_keeps_its_other_fields():
    a = make_template("a", {"interfaceConfig": [{"name": "eno1", "mtu": 9000}]}, created=OLD)
    b = make_template("b", {"interfaceConfig": [{"name": "eno1", "mtu": 1500,
                                                 "vlan": [{"id": 10}]}]}, created=NEW)
    result = merge([a, b], {}, observed_host())
    assert result.desired.links["eno1"].mtu.templates == ["a"]
    assert result.desired.vlans["eno1.10"].templates == ["b"]
    assert result.results["b"].state == "Conflict"


def test_address_vlan_route_and_bridge_conflicts():
    a = make_template("a", {
        "interfaceConfig": [{"name": "eno1", "ipv4": {"address": ["10.0.0.1/24"]},
                             "vlan": [{"id": 10, "name": "v10"}]}],
        "routes": {"ipv4": [{"dst": "10.8.0.0/16", "gw": "10.0.0.254"}]},
        "ovsConfig": [{"bridgeName": "br1", "nodeInterface": "eno1"}]}, created=OLD)
    b = make_template("b", {
        "interfaceConfig": [{"name": "eno1", "ipv4": {"address": ["10.0.0.2/24"]}},
                            {"name": "eno2", "vlan": [{"id": 11, "name": "v10"}]}],
        "routes": {"ipv4": [{"dst": "10.8.0.0/16", "gw": "10.0.0.253"}]},
        "ovsConfig": [{"bridgeName": "br1", "nodeInterface": "eno2"}]}, created=NEW)
    result = merge([b, a], {}, observed_host())
    d = result.desired
    assert d.links["eno1"].ipv4.value == ["10.0.0.1/24"]
    assert (d.vlans["v10"].parent, d.vlans["v10"].vlan_id) == ("eno1", 10)
    assert d.routes[(4, "10.8.0.0/16", 0)].gw == "10.0.0.254"
    assert d.bridges["br1"].interfaces == ["eno1"]
    msg = result.results["b"].message
    for field in ("IPv4 addresses of interface eno1", "VLAN interface v10",
                  "route to 10.8.0.0/16", "OVS bridge br1"):
        assert field in msg
    assert result.results["b"].state == "Conflict"
    assert result.results["a"].state == "Applied"


def test_address_lists_compare_as_sets():
    a = make_template("a", {"interfaceConfig": [{"name": "eno1", "ipv6": {
        "address": ["fc00:1::3/112", "fc00::1/64"]}}]}, created=OLD)
    b = make_template("b", {"interfaceConfig": [{"name": "eno1", "ipv6": {
        "address": ["fc00:0::1/64", "FC00:1:0::3/112"]}}]}, created=NEW)
    result = merge([a, b], {}, observed_host())
    assert result.results["b"].state == "Applied"
    assert result.desired.links["eno1"].ipv6.value == ["fc00:1::3/112", "fc00::1/64"]


def test_mark_failed_downgrades_applied_and_keeps_the_message():
    t = sriov("t", OLD, pfName="eno2", numVfs=4)
    result = merge([t], {}, observed_host())
    result.mark_failed("t", "set_num_vfs 0000:01:00.1: EBUSY")
    assert result.results["t"].state == "Failed"
    assert result.results["t"].message == "set_num_vfs 0000:01:00.1: EBUSY"


def test_allow_api_server_disruption_is_collected():
    t = make_template("t", {"allowApiServerDisruption": True,
                            "interfaceConfig": [{"name": "eno1", "mtu": 9000}]})
    assert merge([t], {}, observed_host()).desired.allow_api_server_disruption == {"t"}


def test_result_to_status():
    t = sriov("t", OLD, pfName="eno9", numVfs=4)
    status = merge([t], {}, observed_host()).results["t"].to_status()
    assert (status.name, status.state, status.observed_generation) == ("t", "Failed", 1)
    assert status.message.startswith("spec.sriovConfig[0]: no PF matches")


def test_an_ipv6_route_without_a_metric_is_the_kernels_route_of_metric_1024():
    """Issue 20: desired with metric None, read back as 1024. Keyed apart, a template naming
    metric 1024 and another naming none both 'owned' the one kernel route, and the planner
    rewrote it with each one's gateway on every pass. Keyed as the kernel reads it, they meet:
    the older wins and the newer is a Conflict."""
    route = {"dst": "2001:db8:9::/64", "dev": "eno1"}
    old = make_template("old", {"routes": {"ipv6": [dict(route, gw="fe80::1")]}}, created=OLD)
    new = make_template("new", {"routes": {"ipv6": [dict(route, gw="fe80::2", metric=1024)]}},
                        created=NEW)
    result = merge([old, new], {}, observed_host())
    assert list(result.desired.routes) == [(6, "2001:db8:9::/64", 1024)]
    assert result.desired.routes[(6, "2001:db8:9::/64", 1024)].gw == "fe80::1"
    assert result.results["new"].state == "Conflict"
    assert "route to 2001:db8:9::/64 (IPv6, metric 1024)" in result.results["new"].message


def test_one_template_naming_the_same_ipv6_route_with_and_without_metric_is_invalid():
    template = make_template("t", {"routes": {"ipv6": [
        {"dst": "2001:db8:9::/64", "gw": "fe80::1", "dev": "eno1"},
        {"dst": "2001:db8:9::/64", "gw": "fe80::2", "dev": "eno1", "metric": 1024}]}})
    assert template.spec is None
    assert template.problems == ["spec.routes.ipv6[1]: a route to 2001:db8:9::/64 is listed twice"]


def test_a_pf_that_is_not_a_network_device_is_refused():
    """Issue 20: any PCI function with sriov_totalvfs was a PF, an NVMe drive among them."""
    host = observed_host()
    host.pfs["0000:03:00.0"].pci_class = "0x010802"  # NVMe
    host.pfs["0000:01:00.1"].pci_class = "0x020000"
    template = sriov("t", OLD, pciAddr="0000:03:00.0", numVfs=4)
    result = merge([template], {}, host)
    assert result.desired.pfs == {}
    assert result.results["t"].state == "Failed"
    assert result.results["t"].message == (
        "spec.sriovConfig[0]: 0000:03:00.0 is PCI class 0x010802, not a network device "
        "(class 0x02); left alone (--pf-pci-classes accepts other classes)")
    network = merge([sriov("n", OLD, pfName="eno2", numVfs=4)], {}, host)
    assert network.desired.pfs["0000:01:00.1"].num_vfs.value == 4


def test_a_pf_of_a_class_the_operator_accepted_gets_its_vfs():
    """--pf-pci-classes 0x02,0x0108: discovery marks the classes accepted, and the NVMe PF
    (the full-kernel VM's only real SR-IOV device) is configured like a NIC."""
    host = observed_host()
    host.pfs["0000:03:00.0"].pci_class = "0x010802"
    host.pfs["0000:03:00.0"].accepted_classes = ("0x02", "0x0108")
    result = merge([sriov("t", OLD, pciAddr="0000:03:00.0", numVfs=4)], {}, host)
    assert result.results["t"].state != "Failed", result.results["t"].message
    assert result.desired.pfs["0000:03:00.0"].num_vfs.value == 4


def test_pf_pci_classes_are_parsed_strictly():
    import argparse

    import pytest

    from plumber_agent.cli import pci_class_prefixes
    assert pci_class_prefixes("0x02, 0x0108") == ("0x02", "0x0108")
    for bad in ("", "02", "0x2", "0x02,zz", "0x0201080", "0x02;reboot"):
        with pytest.raises(argparse.ArgumentTypeError):
            pci_class_prefixes(bad)
