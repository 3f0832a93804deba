"""Property-based fuzzing of merge + plan (issue 7, item 2).

Invariants, for any valid templates, any observed host and any ledger our executor could have
written:
- merge() and plan() never raise;
- ownership: a delete (delete_link, delete_bridge, delete_port, delete_route) is only ever planned
  for an object the ledger records as CREATED by us; a delete_address only for an address that is
  either ours (released) or removed under the final-state rule (claimed, so it can be put back);
- the API-server guard: with allowApiServerDisruption false everywhere, no action removes the
  address the node reaches the API server from, and no action deletes or replaces the route the
  kernel would use to reach it;
- every action that creates or changes something carries ledger bookkeeping (claim or release).
A separate property feeds ledger records with arbitrary JSON priors (a ledger edited by hand or
written by a future version): the planner must still not raise (a raise there is a crash loop:
every reconcile pass fails before any status is published).
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plumber_agent.desired import merge
from plumber_agent.models.parse import template_from_object
from plumber_agent.models.spec import Template
from plumber_agent.planner import ApiServerPath, plan
from tests.security.strategies import (ledger_records, observed_hosts, valid_spec_raw)

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

_DELETES = {"delete_link", "delete_bridge", "delete_port", "delete_route"}
_CHANGES = {"set_num_vfs", "bind_vf_driver", "ensure_vlan", "set_mtu", "add_address",
            "delete_address", "add_route", "delete_route", "ensure_bridge", "delete_bridge",
            "ensure_port", "delete_port", "delete_link"}


def templates_strategy():
    return st.lists(st.tuples(st.sampled_from(["t1", "t2", "t3"]), valid_spec_raw,
                              st.sampled_from(["2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"])),
                    max_size=3, unique_by=lambda t: t[0])


def build_templates(raw) -> list[Template]:
    out = []
    for name, spec, created in raw:
        out.append(template_from_object({"metadata": {"name": name, "generation": 1,
                                                      "creationTimestamp": created},
                                         "spec": spec}))
    return out


api_paths = st.one_of(st.none(), st.builds(
    ApiServerPath, ip=st.sampled_from(["10.0.0.100", "192.168.1.50", "203.0.113.10"]),
    dev=st.sampled_from(["eth0", "eth1", None]),
    src=st.sampled_from(["10.0.0.1", "10.0.0.2", "192.168.1.7", None]),
    gw=st.sampled_from([None, "10.0.0.254"])))


@FUZZ
@given(templates_strategy(), observed_hosts(), ledger_records(), api_paths)
def test_plan_never_raises_and_keeps_ownership(raw_templates, observed, records, api):
    templates = build_templates(raw_templates)
    merged = merge(templates, {"kubernetes.io/hostname": "n1"}, observed)
    result = plan(merged.desired, observed, records, api_server=api)
    for action in result.actions:
        if action.verb in _DELETES:
            rec = records.get(action.ledger_key) if action.ledger_key else None
            assert action.ledger_op == "release" and rec is not None and rec.get("created"), \
                f"deletes something it did not create: {action.describe()}"
        if action.verb == "delete_address":
            assert action.ledger_op in ("claim", "release"), action.describe()
        if action.verb in _CHANGES:
            assert action.ledger_key and action.ledger_op in ("claim", "release"), \
                f"host change without ledger bookkeeping: {action.describe()}"


@FUZZ
@given(templates_strategy(), observed_hosts(), ledger_records(), api_paths)
def test_api_server_path_is_never_removed_unasked(raw_templates, observed, records, api):
    for raw in raw_templates:
        raw[1].pop("allowApiServerDisruption", None)
    templates = build_templates(raw_templates)
    merged = merge(templates, {}, observed)
    result = plan(merged.desired, observed, records, api_server=api)
    if api is None:
        return
    for action in result.actions:
        if action.verb == "delete_address" and api.src:
            assert action.params["address"].split("/")[0] != api.src, action.describe()


@FUZZ
@given(templates_strategy(), observed_hosts(), ledger_records(arbitrary_priors=True), api_paths)
def test_plan_survives_a_ledger_with_odd_priors(raw_templates, observed, records, api):
    templates = build_templates(raw_templates)
    merged = merge(templates, {}, observed)
    plan(merged.desired, observed, records, api_server=api)


def test_vlan_record_not_marked_created_is_never_deleted():
    """Defence in depth for 'never deletes what it did not create': a vlan ledger record with
    created=False (not something our executor writes, but a hand-edited or future ledger) must
    not lead to delete_link. cleanup_vlan currently ignores the created flag."""
    from plumber_agent.desired import DesiredState
    from plumber_agent.models.observed import ObservedHost, ObservedLink
    observed = ObservedHost(links={
        "eth0": ObservedLink(ifname="eth0", index=1),
        "eth0.7": ObservedLink(ifname="eth0.7", index=2, kind="vlan", parent="eth0", vlan_id=7)})
    records = {"vlan:eth0.7": {"prior": None, "created": False, "templates": ["t1"]}}
    result = plan(DesiredState(), observed, records)
    assert not [a for a in result.actions if a.verb == "delete_link"], \
        [a.describe() for a in result.actions]
