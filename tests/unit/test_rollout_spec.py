"""spec.rollout (docs/rollout.md): what the agent accepts and refuses, with the JSON path; how a
limit resolves against the matching nodes; and the network part of a spec, which decides
whether an edit is a new rollout and is what a node keeps in its rollout state file."""
from __future__ import annotations

import json

import pytest

from plumber_agent.errors import InvalidSpec
from plumber_agent.models.fleet import resolve_max_unavailable
from plumber_agent.models.parse import parse_template_spec
from plumber_agent.models.spec import RolloutConfig, TemplateSpec, network_spec_dict
from plumber_agent.models.status import (MAX_PLANNED_ACTIONS, HostNetworkStatus, TemplateState,
                                         TemplateStatus, bounded_plan, to_api)
from plumber_agent.sources import load_yaml_documents
from tests.helpers.paths import EXAMPLES_DIR as EXAMPLES


def _problems(spec) -> list[str]:
    with pytest.raises(InvalidSpec) as info:
        parse_template_spec(spec)
    return info.value.problems


def _example_specs() -> list[tuple[str, dict]]:
    return [(path.name, doc["spec"]) for path in sorted(EXAMPLES.glob("*.yaml"))
            for doc in load_yaml_documents(path.read_text(encoding="utf-8"))]


# ----------------------------------------------------------------------------------------------
# Parsing


def test_absent_rollout_is_the_default():
    spec = parse_template_spec({"nodeSelector": {"a": "b"}})
    assert spec.rollout == RolloutConfig(max_unavailable="25%", dry_run=False)
    assert parse_template_spec({"rollout": {}}).rollout == RolloutConfig()
    assert parse_template_spec({"rollout": None}).rollout == RolloutConfig()


@pytest.mark.parametrize("raw, expected", [
    ({"maxUnavailable": 2}, RolloutConfig(max_unavailable=2)),
    ({"maxUnavailable": 1}, RolloutConfig(max_unavailable=1)),
    ({"maxUnavailable": 5000}, RolloutConfig(max_unavailable=5000)),
    ({"maxUnavailable": "1%"}, RolloutConfig(max_unavailable="1%")),
    ({"maxUnavailable": "100%"}, RolloutConfig(max_unavailable="100%")),
    ({"maxUnavailable": "25%", "dryRun": True}, RolloutConfig(max_unavailable="25%", dry_run=True)),
    ({"dryRun": False}, RolloutConfig()),
])
def test_rollout_accepted(raw, expected):
    assert parse_template_spec({"rollout": raw}).rollout == expected


@pytest.mark.parametrize("value, problem", [
    (0, "0 is not at least 1"),
    (-3, "-3 is not at least 1"),
    (True, "True is not an integer or a percentage string"),
    (False, "False is not an integer or a percentage string"),
    (2.0, "2.0 is not an integer or a percentage string"),
    (2.5, "2.5 is not an integer or a percentage string"),
    ([1], "[1] is not an integer or a percentage string"),
    ("0%", "'0%' is not a percentage from \"1%\" to \"100%\""),
    ("101%", "'101%' is not a percentage from \"1%\" to \"100%\""),
    ("05%", "'05%' is not a percentage from \"1%\" to \"100%\""),
    ("5", "'5' is not a percentage from \"1%\" to \"100%\""),
    (" 5%", "' 5%' is not a percentage from \"1%\" to \"100%\""),
    ("5% ", "'5% ' is not a percentage from \"1%\" to \"100%\""),
    ("5%\n", "'5%\\n' is not a percentage from \"1%\" to \"100%\""),
    ("abc", "'abc' is not a percentage from \"1%\" to \"100%\""),
    ("", "'' is not a percentage from \"1%\" to \"100%\""),
])
def test_max_unavailable_refused_with_its_path(value, problem):
    assert _problems({"rollout": {"maxUnavailable": value}}) == [
        f"spec.rollout.maxUnavailable: {problem}"]


def test_rollout_shape_refused_with_paths():
    assert _problems({"rollout": {"dryRun": "yes", "maxSurge": 1}}) == [
        "spec.rollout.maxSurge: unknown field",
        "spec.rollout.dryRun: 'yes' is not true or false"]
    assert _problems({"rollout": "25%"}) == ["spec.rollout: must be an object, not str"]


def test_rollout_problems_are_reported_with_the_others():
    problems = _problems({"interfaceConfig": [{"name": "eno2", "mtu": 10}],
                          "rollout": {"maxUnavailable": 0}})
    assert problems == ["spec.interfaceConfig[0].mtu: 10 is outside 68..65535",
                        "spec.rollout.maxUnavailable: 0 is not at least 1"]


# ----------------------------------------------------------------------------------------------
# resolve_max_unavailable


@pytest.mark.parametrize("value, matching, expected", [
    ("25%", 10, 2),     # 2.5 rounded down
    ("25%", 3, 1),      # 0.75 rounded down is 0: at least 1
    ("25%", 4, 1),
    ("25%", 8, 2),
    ("25%", 100, 25),
    ("25%", 0, 1),      # nothing matches yet: still 1, never 0
    ("1%", 1000, 10),
    ("1%", 99, 1),
    ("100%", 7, 7),
    ("50%", 5, 2),
    ("99%", 100, 99),
    (3, 10, 3),         # an integer as is
    (3, 1, 3),          # ... even above the matching count
    (1, 0, 1),
])
def test_resolve_max_unavailable(value, matching, expected):
    assert resolve_max_unavailable(value, matching) == expected


# ----------------------------------------------------------------------------------------------
# The network part of a spec


_NETWORK = {"nodeSelector": {"role": "edge"},
            "interfaceConfig": [{"name": "eno2", "mtu": 9000, "vlan": [{"id": 100}]}]}


def test_network_part_ignores_rollout():
    a = parse_template_spec({**_NETWORK, "rollout": {"maxUnavailable": 1, "dryRun": True}})
    b = parse_template_spec({**_NETWORK, "rollout": {"maxUnavailable": "100%"}})
    c = parse_template_spec(_NETWORK)
    assert a != b
    assert a.network_part() == b.network_part() == c.network_part() == c
    assert a.network_part().rollout == RolloutConfig()
    assert a.rollout == RolloutConfig(max_unavailable=1, dry_run=True)  # the original is unchanged
    assert network_spec_dict(a) == network_spec_dict(b) == network_spec_dict(c)


def test_network_part_sees_a_network_change():
    a = parse_template_spec(_NETWORK)
    b = parse_template_spec({**_NETWORK, "interfaceConfig": [{"name": "eno2", "mtu": 1500}]})
    assert a.network_part() != b.network_part()
    assert network_spec_dict(a) != network_spec_dict(b)


def test_network_spec_dict_is_plain_stable_json():
    spec = parse_template_spec({**_NETWORK, "rollout": {"dryRun": True}})
    raw = network_spec_dict(spec)
    assert "rollout" not in raw
    assert raw["interfaceConfig"][0]["vlan"] == [{"id": 100, "name": None}]
    text = json.dumps(raw, sort_keys=True)
    assert text == json.dumps(network_spec_dict(parse_template_spec(_NETWORK)), sort_keys=True)


@pytest.mark.parametrize("name, raw", _example_specs(), ids=[n for n, _ in _example_specs()])
@pytest.mark.parametrize("rollout", [None, {"maxUnavailable": 3, "dryRun": True}])
def test_network_dict_round_trips_every_example(name, raw, rollout):
    """Through JSON text, as the rollout state file holds it."""
    spec = parse_template_spec({**raw, "rollout": rollout} if rollout else raw)
    stored = json.loads(json.dumps(network_spec_dict(spec)))
    back = TemplateSpec.from_network_dict(stored)
    assert back == spec.network_part()
    assert back.rollout == RolloutConfig()
    assert network_spec_dict(back) == stored


def test_examples_cover_every_part_of_a_spec():
    """The round trip above is only as good as the examples: every list kind is in one."""
    specs = [parse_template_spec(raw) for _, raw in _example_specs()]
    assert any(s.sriov_config for s in specs)
    assert any(iface.vlan for s in specs for iface in s.interface_config)
    assert any(iface.ipv4 or iface.ipv6 for s in specs for iface in s.interface_config)
    assert any(s.ovs_config for s in specs)
    assert any(s.routes and (s.routes.ipv4 or s.routes.ipv6) for s in specs)


# ----------------------------------------------------------------------------------------------
# Per-node status of a rollout


def test_bounded_plan():
    assert bounded_plan([]) == []
    exact = [f"line {i}" for i in range(MAX_PLANNED_ACTIONS)]
    assert bounded_plan(exact) == exact
    long = [f"line {i}" for i in range(25)]
    assert bounded_plan(long) == long[:20] + ["... and 5 more"]
    assert bounded_plan(long, limit=3) == ["line 0", "line 1", "line 2", "... and 22 more"]
    assert len(bounded_plan([f"l{i}" for i in range(10_000)])) == MAX_PLANNED_ACTIONS + 1


def test_rollout_states():
    assert (TemplateState.WAITING, TemplateState.APPLYING, TemplateState.PREVIEWED) == (
        "Waiting", "Applying", "Previewed")


def test_planned_actions_are_camel_case_and_absent_when_unset():
    statuses = HostNetworkStatus(templates=[
        TemplateStatus(name="t1", state=TemplateState.PREVIEWED, observed_generation=3,
                       planned_actions=["set eno2 mtu 9000"], planned_action_count=1),
        TemplateStatus(name="t2", state=TemplateState.APPLIED, observed_generation=1)])
    assert to_api(statuses)["templates"] == [
        {"name": "t1", "state": "Previewed", "observedGeneration": 3,
         "plannedActions": ["set eno2 mtu 9000"], "plannedActionCount": 1},
        {"name": "t2", "state": "Applied", "observedGeneration": 1}]
