"""VF attributes (sriovConfig[].vfs) through every layer on the fake host: spec, merge and
Conflict, plan wording, apply, drift repair, re-creation by numVfs, cleanup/undo to the prior,
ownership (VFs nobody named are never touched; a typo holds) and the status."""
import errno

import pytest

from plumber_agent.desired import merge
from plumber_agent.models.actions import Verb
from plumber_agent.models.keys import key_vfattr, parse_key
from plumber_agent.models.parse import parse_template_spec
from plumber_agent.models.spec import network_spec_dict
from plumber_agent.status_builder import build_status
from tests.support.fakehost import Node, make_template, seed_host

ENO2 = "0000:01:00.1"
OLD, NEW = "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"


def tpl(name="t1", created=OLD, num_vfs=4, pf="eno2", **extra):
    entry = {"pfName": pf, **({"numVfs": num_vfs} if num_vfs is not None else {}), **extra}
    return make_template(name, {"sriovConfig": [entry]}, created=created)


def set_vf_calls(host) -> list[tuple]:
    return [call for call in host.calls if call[0] == "set_vf"]


@pytest.fixture
def node(tmp_path):
    host = seed_host()
    host.sysfs.set_num_vfs(ENO2, 4)  # VFs someone else made, before the agent
    host.calls.clear()
    return Node(host, tmp_path)


def converge(node, templates):
    rounds, final = node.reconcile(templates)
    assert final.actions == [] and not final.notes, [a.describe() for a in final.actions]
    return rounds


def settings(node, vf):
    return node.fake.pfs[ENO2].vf_settings[vf]


# -- spec ---------------------------------------------------------------------------------------

def test_a_spec_without_vfs_keeps_its_rollout_identity():
    """network_spec_dict hashes into the rollout identity: no `vfs` key unless one is given."""
    spec = parse_template_spec({"sriovConfig": [{"pfName": "eno2", "numVfs": 4}]})
    assert "vfs" not in network_spec_dict(spec)["sriovConfig"][0]
    with_vfs = parse_template_spec({"sriovConfig": [{"pfName": "eno2", "vfs": [
        {"range": "0-3", "trust": True}]}]})
    raw = network_spec_dict(with_vfs)
    assert raw["sriovConfig"][0]["vfs"][0]["range"] == "0-3"
    assert type(with_vfs).from_network_dict(raw) == with_vfs.network_part()


def test_ledger_keys_parse_back():
    key = key_vfattr(ENO2, 12, "max_tx_rate")
    assert key == "vfattr:0000:01:00.1:12:max_tx_rate"
    parsed = parse_key(key)
    assert (parsed.name, parsed.vf, parsed.attr) == (ENO2, 12, "max_tx_rate")
    with pytest.raises(ValueError):
        parse_key("vfattr:0000:01:00.1:x:mac")


# -- merge --------------------------------------------------------------------------------------

def test_different_attributes_of_one_vf_do_not_conflict_the_same_one_does(node):
    a = tpl("zz-old", OLD, vfs=[{"id": 1, "trust": True, "vlan": 10}])
    b = tpl("aa-new", NEW, vfs=[{"id": 1, "spoofchk": False, "vlan": 10, "qos": 3}])
    result = merge([b, a], {}, node.host.discover())
    dvf = result.desired.vfs[(ENO2, 1)]
    assert dvf.attrs["trust"].value is True and dvf.attrs["spoofchk"].templates == ["aa-new"]
    assert str(dvf.attrs["vlan"].value) == "vlan 10" and dvf.attrs["vlan"].templates == ["zz-old"]
    assert result.results["aa-new"].state == "Conflict"
    assert ("vlan of VF 1 of PF 0000:01:00.1 (eno2): conflicts with template 'zz-old', which is "
            "older and wins (vlan 10; this template wants vlan 10 qos 3)"
            in result.results["aa-new"].message)
    assert result.results["zz-old"].state == "Applied"


def test_a_vf_beyond_the_pfs_vfs_fails_its_template_with_the_path(node):
    result = merge([tpl(num_vfs=None, vfs=[{"range": "2-5", "trust": True}])], {},
                   node.host.discover())
    assert result.results["t1"].state == "Failed"
    assert result.results["t1"].message == (
        "spec.sriovConfig[0].vfs[0]: VFs 2-5 of PF 0000:01:00.1 (eno2): VF 4 does not exist "
        "(numVfs 4: VFs 0..3)")
    assert sorted(result.desired.vfs) == [(ENO2, 2), (ENO2, 3)]  # those that exist still apply
    # The numVfs the merge settles on counts, not the one found.
    result = merge([tpl(num_vfs=6, vfs=[{"range": "2-5", "trust": True}])], {},
                   node.host.discover())
    assert result.results["t1"].state == "Applied"
    assert sorted(result.desired.vfs) == [(ENO2, i) for i in range(2, 6)]


def test_a_pf_without_netdev_cannot_take_vf_attributes(node):
    t = make_template("t1", {"sriovConfig": [{"pciAddr": "0000:05:00.0", "vfs": [
        {"id": 0, "trust": True}]}]})
    result = merge([t], {}, node.host.discover())
    assert result.results["t1"].state == "Failed"
    assert "PF 0000:05:00.0 has no netdev" in result.results["t1"].message


# -- plan, apply, drift, cleanup ----------------------------------------------------------------

def _without_disruption(action) -> str:
    """describe() without the disruption's words (the first plan below checks those)."""
    return action.describe().split("; DISRUPTIVE: ")[0]


def test_apply_plan_wording_status_drift_and_exact_undo(node):
    fake = node.fake
    fake.netlink.set_vf("eno2", 2, {"mac": "02:00:00:00:00:99", "spoofchk": False})  # not ours
    fake.netlink.set_vf("eno2", 0, {"trust": True})  # someone's, before us
    fake.calls.clear()
    before = fake.snapshot()
    t = tpl(vfs=[{"id": 0, "mac": "02:00:00:00:00:01", "vlan": 100, "qos": 2, "trust": False},
                 {"id": 1, "maxTxRate": 1000, "linkState": "disable"}])
    merged, planned = node.plan([t])
    assert [a.describe() for a in planned.actions] == [
        "sriov_vf_attr      set_vf eno2 mac=02:00:00:00:00:01 pf=0000:01:00.1 vf=0  # template t1"
        "; DISRUPTIVE: setting mac of VF 0 (0000:02:0a.0) of PF 0000:01:00.1; pods using them "
        "not read",
        "sriov_vf_attr      set_vf eno2 pf=0000:01:00.1 qos=2 vf=0 vlan=100  # template t1"
        "; DISRUPTIVE: setting vlan of VF 0 (0000:02:0a.0) of PF 0000:01:00.1; pods using them "
        "not read",
        "sriov_vf_attr      set_vf eno2 pf=0000:01:00.1 trust=False vf=0  # template t1",
        "sriov_vf_attr      set_vf eno2 max_tx_rate=1000 pf=0000:01:00.1 vf=1  # template t1",
        "sriov_vf_attr      set_vf eno2 link_state=disable pf=0000:01:00.1 vf=1  # template t1"
        "; DISRUPTIVE: setting link_state of VF 1 (0000:02:0a.1) of PF 0000:01:00.1; pods using "
        "them not read",
    ]
    converge(node, [t])
    got = settings(node, 0)
    assert (got["mac"], got["vlan"], got["qos"], got["trust"]) == ("02:00:00:00:00:01", 100, 2,
                                                                   False)
    assert (settings(node, 1)["max_tx_rate"], settings(node, 1)["link_state"]) == (1000, 2)
    assert {call[2] for call in set_vf_calls(fake)} == {0, 1}  # VFs 2 and 3: never touched
    assert node.ledger.get(key_vfattr(ENO2, 0, "trust"))["prior"] == {"trust": True}

    status = build_status(node.host.discover())
    eno2 = next(i for i in status.interface_status if i.pf_name == "eno2")
    vfs = {vf.id: vf for vf in eno2.sriov_status.vfs}
    assert (vfs[0].mac, vfs[0].vlan, vfs[0].qos, vfs[0].trust) == ("02:00:00:00:00:01", 100, 2,
                                                                    False)
    assert (vfs[1].link_state, vfs[1].max_tx_rate, vfs[1].min_tx_rate) == ("disable", 1000, 0)
    assert (vfs[2].mac, vfs[2].spoofchk, vfs[3].link_state) == ("02:00:00:00:00:99", False, "auto")

    fake.netlink.set_vf("eno2", 1, {"link_state": 0})  # drift
    _, planned = node.plan([t])
    assert [_without_disruption(a) for a in planned.actions] == [
        "sriov_vf_attr      set_vf eno2 link_state=disable pf=0000:01:00.1 vf=1  "
        "# drift; template t1"]
    converge(node, [t])
    assert settings(node, 1)["link_state"] == 2

    _, planned = node.plan([])
    assert [_without_disruption(a) for a in planned.actions if a.verb == Verb.SET_VF] == [
        "restore_vf_attr    set_vf eno2 mac=00:00:00:00:00:00 pf=0000:01:00.1 vf=0  "
        "# cleanup (was t1)",
        "restore_vf_attr    set_vf eno2 pf=0000:01:00.1 qos=0 vf=0 vlan=0  # cleanup (was t1)",
        "restore_vf_attr    set_vf eno2 pf=0000:01:00.1 trust=True vf=0  # cleanup (was t1)",
        "restore_vf_attr    set_vf eno2 max_tx_rate=0 pf=0000:01:00.1 vf=1  # cleanup (was t1)",
        "restore_vf_attr    set_vf eno2 link_state=auto pf=0000:01:00.1 vf=1  "
        "# cleanup (was t1)",
    ]
    converge(node, [])
    assert fake.snapshot() == before  # the prior, exactly: someone's trust on VF 0 included
    assert not [k for k in node.ledger.records() if k.startswith("vfattr:")]


def test_rates_are_ordered_so_no_step_puts_the_minimum_above_the_maximum(node):
    """The fake refuses min > max (max != 0) as ice does: from 0..100 to 500..1000 the maximum
    must go first, from there to 10..20 the minimum."""
    def rate_order(spec):
        _, planned = node.plan([spec])
        return [next(k for k in a.params if k.endswith("rate")) for a in planned.actions]

    converge(node, [tpl(vfs=[{"id": 0, "maxTxRate": 100}])])
    up = tpl(vfs=[{"id": 0, "minTxRate": 500, "maxTxRate": 1000}])
    assert rate_order(up) == ["max_tx_rate", "min_tx_rate"]
    converge(node, [up])
    down = tpl(vfs=[{"id": 0, "minTxRate": 10, "maxTxRate": 20}])
    assert rate_order(down) == ["min_tx_rate", "max_tx_rate"]
    converge(node, [down])
    assert (settings(node, 0)["min_tx_rate"], settings(node, 0)["max_tx_rate"]) == (10, 20)
    converge(node, [])
    assert (settings(node, 0)["min_tx_rate"], settings(node, 0)["max_tx_rate"]) == (0, 0)


def test_attributes_follow_vfs_re_created_by_a_numvfs_change_and_behind_the_agents_back(node):
    fake = node.fake
    t = tpl(num_vfs=4, vfs=[{"range": "0-3", "trust": True}])
    converge(node, [t])
    bigger = tpl(num_vfs=6, vfs=[{"range": "0-5", "trust": True}])
    rounds = converge(node, [bigger])
    first, second = rounds[0][0].actions, rounds[1][0].actions
    assert [a.verb for a in first] == [Verb.SET_NUM_VFS]  # VFs come and go: attributes wait
    assert [(a.verb, a.params["vf"]) for a in second] == [(Verb.SET_VF, i) for i in range(6)]
    assert all(settings(node, i)["trust"] for i in range(6))
    # Someone re-creates the VFs (bare): the next pass is a drift repair.
    fake.sysfs.set_num_vfs(ENO2, 0)
    fake.sysfs.set_num_vfs(ENO2, 6)
    assert not settings(node, 3)["trust"]
    converge(node, [bigger])
    assert all(settings(node, i)["trust"] for i in range(6))
    converge(node, [])
    assert fake.pfs[ENO2].num_vfs == 4 and not any(settings(node, i)["trust"] for i in range(4))


def test_undoing_a_numvfs_change_puts_back_what_others_set_not_what_the_agent_set(node):
    """The numVfs change destroyed someone's MAC on VF 0 (collateral, put back on undo); the
    agent's own trust on the re-created VF 0 is undone by its own record, not put back."""
    fake = node.fake
    fake.netlink.set_vf("eno2", 0, {"mac": "02:00:00:00:00:77"})
    before = fake.snapshot()
    converge(node, [tpl(num_vfs=4, vfs=[{"id": 0, "trust": True}])])
    converge(node, [tpl(num_vfs=6, vfs=[{"id": 0, "trust": True}])])  # destroys VF 0 again
    converge(node, [])
    assert fake.snapshot() == before


def test_a_typo_in_the_vf_id_holds_what_the_template_applied(node):
    """(An entry with its own numVfs refuses id 30 already in the spec: Invalid, and an invalid
    edit keeps the approved spec. Here the VF count is the host's.)"""
    converge(node, [tpl(num_vfs=None, vfs=[{"id": 3, "trust": True}])])
    typo = tpl(num_vfs=None, vfs=[{"id": 30, "trust": True}])  # meant 3
    rounds, final = node.reconcile([typo])
    assert settings(node, 3)["trust"] is True  # not undone
    merged, _ = node.plan([typo])
    assert merged.results["t1"].state == "Failed"
    assert "VF 30 does not exist (numVfs 4: VFs 0..3)" in merged.results["t1"].message
    assert any("nothing it applied before is undone" in n.message for n in final.notes)


def test_a_pf_driver_without_vf_ops_fails_the_template_and_records_nothing(node):
    node.fake.pfs[ENO2].vf_ops = False
    t = tpl(vfs=[{"id": 0, "trust": True}])
    rounds, _ = node.reconcile([t])
    failed = [r for _, report in rounds for r in report.results if not r.ok]
    assert failed and failed[0].errno == errno.errorcode[errno.EOPNOTSUPP]
    assert key_vfattr(ENO2, 0, "trust") not in node.ledger.records()  # one write: certainly not


def test_the_fake_refuses_what_pf_drivers_refuse(node):
    from plumber_agent.errors import HostError
    for bad in ({"mac": "01:00:5e:00:00:01"}, {"vlan": 4096}, {"vlan": 1, "qos": 8},
                {"min_tx_rate": 100, "max_tx_rate": 10}):
        with pytest.raises(HostError) as caught:
            node.fake.netlink.set_vf("eno2", 0, bad)
        assert caught.value.errno == errno.EINVAL
    with pytest.raises(HostError):
        node.fake.netlink.set_vf("eno2", 4, {"trust": True})  # no VF 4


# -- the API-path guard -------------------------------------------------------------------------

def _vf_carrying_the_api_path():
    from plumber_agent.models.observed import ObservedPf, ObservedVf, ObservedVfInfo
    from tests.unit.test_apipath import link, node as api_node

    observed = api_node()
    # eno1, the uplink, is VF 1 of PF ens1 (the PF itself carries nothing).
    observed.links["ens1"] = link("ens1", index=9, vfs=[ObservedVfInfo(id=i, vlan=0, qos=0,
                                                                       trust=False)
                                                        for i in range(2)])
    observed.pfs = {"0000:04:00.0": ObservedPf(
        "0000:04:00.0", ifname="ens1", total_vfs=8, num_vfs=2,
        vfs=[ObservedVf(0, "0000:04:10.0", "iavf", "ens1v0"),
             ObservedVf(1, "0000:04:10.1", "iavf", "eno1")])}
    return observed


@pytest.mark.parametrize("allow", [False, True])
def test_vf_attributes_of_the_vf_under_the_api_path_need_the_opt_in(allow):
    from tests.unit.test_apipath import planned

    spec = {"sriovConfig": [{"pfName": "ens1", "vfs": [{"range": "0-1", "vlan": 7}]}],
            "allowApiServerDisruption": allow}
    result = planned(_vf_carrying_the_api_path(), spec)
    changed = [(a.params["vf"], a.api_risk) for a in result.actions]
    if allow:
        assert changed == [(0, False), (1, True)]  # let through, and probed
        assert result.refusals == []
    else:
        assert changed == [(0, False)]  # VF 0 carries nothing
        assert [r.message.split(":")[0] for r in result.refusals] == [
            "not setting qos 0 vlan 7 on VF 1 of ens1"]


def test_the_driver_keeps_the_rate_not_given_as_ip_link_does():
    from plumber_agent.host.netlink.driver import vf_request, with_current_rates
    from plumber_agent.models.observed import ObservedVfInfo

    current = ObservedVfInfo(id=3, min_tx_rate=50, max_tx_rate=900)
    filled = with_current_rates({"max_tx_rate": 400, "min_tx_rate": None}, current)
    assert vf_request(3, filled)["rate"] == {"min_tx_rate": 50, "max_tx_rate": 400}
    assert with_current_rates({"min_tx_rate": 5}, None)["max_tx_rate"] == 0  # none reported


def test_the_executor_sends_the_link_state_by_its_kernel_number(node):
    converge(node, [tpl(vfs=[{"id": 2, "linkState": "enable"}])])
    assert settings(node, 2)["link_state"] == 1


def test_a_template_of_vf_attributes_alone_hears_its_pf_and_new_vf_netdevs(node):
    """The PF netdev reports its VFs' attributes (a change there is drift), and VFs re-created
    behind the agent's back show up as new device netdevs."""
    from plumber_agent.interest import DEPENDED_ON, MANAGED, UNMANAGED, classify, interest_of
    from plumber_agent.models.events import EventKind, KernelEvent

    observed = node.host.discover()
    merged = merge([tpl(num_vfs=None, vfs=[{"id": 0, "trust": True}])], {}, observed)
    assert merged.desired.pfs == {}  # no numVfs, no vfDriver, no mtu: only VF attributes
    interest = interest_of(merged.desired, observed, {})

    def link(name, kind=None):
        return KernelEvent(EventKind.LINK, f"link {name}", ifname=name, link_kind=kind)
    assert classify(link("eno2"), interest) is MANAGED
    assert classify(link("eth7"), interest) is DEPENDED_ON
    assert classify(link("cali1a2b3c4d5e6", "veth"), interest) is UNMANAGED


def test_a_range_wider_than_the_pf_costs_only_the_vfs_it_can_have(node):
    """range "0-65534" on a PF with sriov_totalvfs 64: 64 fields offered, not 65,535 (bounded
    work), and the template fails naming the first VF that does not exist."""
    from plumber_agent.desired import vfattrs
    from plumber_agent.desired.base import MergeContext, TemplateResult
    from plumber_agent.models.status import TemplateState

    observed = node.host.discover()
    t = tpl(num_vfs=None, vfs=[{"range": "0-65534", "trust": True}])
    ctx = MergeContext(observed, {"t1": TemplateResult("t1", TemplateState.APPLIED)})
    vfattrs.offer(ctx, t.spec, "t1")
    assert len(ctx.merger.fields) == observed.pfs[ENO2].total_vfs == 64
    desired = vfattrs.assemble(ctx)
    assert sorted(desired) == [(ENO2, i) for i in range(4)]
    assert "VF 4 does not exist (numVfs 4: VFs 0..3)" in ctx.results["t1"].message


def test_overlapping_entries_are_found_however_many_there_are():
    from plumber_agent.errors import InvalidSpec

    entries = [{"range": f"{i * 10}-{i * 10 + 9}", "trust": True} for i in range(400)]
    entries.append({"range": "3995-3999", "spoofchk": False})  # another attribute: fine
    parse_template_spec({"sriovConfig": [{"pfName": "eno2", "vfs": entries}]})
    entries.append({"id": 1234, "trust": False})
    with pytest.raises(InvalidSpec) as caught:
        parse_template_spec({"sriovConfig": [{"pfName": "eno2", "vfs": entries}]})
    assert caught.value.problems == [
        "spec.sriovConfig[0].vfs[401]: the trust of VF 1234 is also set at "
        "spec.sriovConfig[0].vfs[123]"]
