"""The CRDs: accepted by the API server (every rule of tests/manifests/k8s_schema.py, which
test_k8s_rules.py holds to the upstream messages), useful to `kubectl get/explain`, and in
agreement with the agent's own models and validators (same fields, same bounds)."""
from __future__ import annotations

import dataclasses
import types
import typing

import pytest

from plumber_agent import validation as v
from plumber_agent.errors import InvalidSpec
from plumber_agent.models import bond_spec
from plumber_agent.models import fleet as fleet_models
from plumber_agent.models import parse as parse_models
from plumber_agent.models import spec as spec_models
from plumber_agent.models import status as status_models
from tests.manifests.conftest import MANIFESTS, crd_schema, load_all
from tests.manifests.k8s_schema import (crd_problems, iter_nodes, missing_descriptions, node_at,
                                        structural_problems, validation_errors)
from tests.helpers.paths import SEED_HOSTNETWORK_YAML

GROUP = "plumber.k8s.pf9.io"


@pytest.fixture(scope="session")
def claim_crd() -> dict:
    (crd,) = load_all(MANIFESTS / "crds" / "addressclaims.yaml")
    return crd


@pytest.fixture(scope="session")
def claim_schema(claim_crd) -> dict:
    return crd_schema(claim_crd)


@pytest.mark.parametrize("which, kind, plural, short", [
    ("template_crd", "HostNetworkTemplate", "hostnetworktemplates", "hnt"),
    ("hostnetwork_crd", "HostNetwork", "hostnetworks", "hn"),
])
def test_crd_identity(request, which, kind, plural, short):
    crd = request.getfixturevalue(which)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{plural}.{GROUP}"
    spec = crd["spec"]
    assert spec["group"] == GROUP
    assert spec["scope"] == "Cluster"
    assert spec["names"]["kind"] == kind
    assert spec["names"]["plural"] == plural
    assert spec["names"]["singular"] == kind.lower()
    assert spec["names"]["shortNames"] == [short]
    assert spec["names"]["categories"] == ["plumber"]
    (version,) = spec["versions"]
    assert version["name"] == "v1" and version["served"] is True and version["storage"] is True
    assert version["subresources"] == {"status": {}}
    # Field names the API server knows (a typo would be dropped or refused).
    assert set(crd) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(spec) == {"group", "scope", "names", "versions"}
    assert set(spec["names"]) <= {"kind", "listKind", "plural", "singular", "shortNames",
                                  "categories"}
    assert set(version) <= {"name", "served", "storage", "schema", "subresources",
                            "additionalPrinterColumns", "deprecated", "deprecationWarning"}
    assert set(version["schema"]) == {"openAPIV3Schema"}
    for column in version["additionalPrinterColumns"]:
        assert set(column) <= {"name", "type", "format", "description", "priority", "jsonPath"}


@pytest.mark.parametrize("which", ["template_crd", "hostnetwork_crd", "claim_crd"])
def test_crd_is_accepted_by_the_api_server(request, which):
    """Whole document: names, versions, scope, subresources, printer columns, schema."""
    assert crd_problems(request.getfixturevalue(which)) == []


@pytest.mark.parametrize("which", ["template_schema", "hostnetwork_schema", "claim_schema"])
def test_schema_is_structural(request, which):
    assert structural_problems(request.getfixturevalue(which)) == []


@pytest.mark.parametrize("which", ["template_schema", "hostnetwork_schema", "claim_schema"])
def test_root_metadata_is_only_an_object(request, which):
    """A description (or anything) on the root metadata made a real API server refuse both CRDs:
    `...properties[metadata]: Forbidden: must not specify anything other than name and
    generateName` (test_k8s_rules.py keeps the old snippet)."""
    assert request.getfixturevalue(which)["properties"]["metadata"] == {"type": "object"}


@pytest.mark.parametrize("which", ["template_schema", "hostnetwork_schema", "claim_schema"])
def test_every_field_has_a_description(request, which):
    assert missing_descriptions(request.getfixturevalue(which)) == []


# Conventions of ours the API server does not enforce: it accepts both, then misbehaves.
_PY_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool}


@pytest.mark.parametrize("which", ["template_schema", "hostnetwork_schema", "claim_schema"])
def test_enum_values_have_the_declared_type(request, which):
    """YAML 1.1 turns a bare off/on into a boolean: such an enum value can never match."""
    for node, path in iter_nodes(request.getfixturevalue(which)):
        for value in node.get("enum") or []:
            typ = node.get("type")
            assert not isinstance(value, bool) or typ == "boolean", (path, value)
            assert isinstance(value, _PY_TYPES[typ]), (path, value)


@pytest.mark.parametrize("which", ["template_schema", "hostnetwork_schema", "claim_schema"])
def test_required_fields_are_declared(request, which):
    """A required field missing from properties is pruned, then reported missing: unwritable."""
    for node, path in iter_nodes(request.getfixturevalue(which)):
        for name in node.get("required") or []:
            assert name in (node.get("properties") or {}), (path, name)



def _checked(schema: dict, instance: dict) -> list[tuple[str, str]]:
    """validation_errors without the note the server adds when a blocking schema error keeps
    the template's CEL rules from running (that note is tested in test_bad_inputs.py)."""
    from tests.manifests.k8s_schema import NIL_PATH, NOT_CHECKED
    return [e for e in validation_errors(schema, instance)
            if e != (NIL_PATH, f"Invalid value: null: {NOT_CHECKED}")]

def test_sriov_selector_is_value_validation_only(template_schema):
    """oneOf/not may hold only value validations; types and descriptions stay outside."""
    items = node_at(template_schema, ".spec.sriovConfig[*]")
    assert [sorted(branch["required"]) for branch in items["oneOf"]] == [
        ["pfName"], ["pciAddr"], ["deviceId", "vendorId"]]


# ----------------------------------------------------------------------------------------------
# Printer columns


def _columns(crd):
    return crd["spec"]["versions"][0]["additionalPrinterColumns"]


@pytest.mark.parametrize("which, schema_fixture", [("template_crd", "template_schema"),
                                                   ("hostnetwork_crd", "hostnetwork_schema"),
                                                   ("claim_crd", "claim_schema")])
def test_printer_columns_point_at_schema_fields(request, which, schema_fixture):
    crd, schema = request.getfixturevalue(which), request.getfixturevalue(schema_fixture)
    columns = _columns(crd)
    assert columns[-1] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    for column in columns[:-1]:
        node = node_at(schema, column["jsonPath"])
        assert column["description"]
        if column["type"] == "integer":
            assert node["type"] == "integer", column
        assert column["type"] in ("string", "integer", "number", "boolean", "date")


@pytest.mark.parametrize("which", ["template_crd", "hostnetwork_crd", "claim_crd"])
def test_printer_columns_do_not_point_into_lists(request, which):
    """The server prints only the first value a column's JSONPath finds (tableconvertor), so a
    column over `.a[*].b` would show one element of many."""
    for column in _columns(request.getfixturevalue(which)):
        assert "[" not in column["jsonPath"], column


def test_template_columns_show_rollout_progress(template_crd):
    """`kubectl get hnt`: NAME MATCHING APPLIED FAILED STATUS AGE (docs/rollout.md); the
    selector only with -o wide."""
    columns = _columns(template_crd)
    default = [(c["name"], c["jsonPath"]) for c in columns if not c.get("priority")]
    assert default == [("Matching", ".status.nodes.matching"), ("Applied", ".status.nodes.applied"),
                       ("Failed", ".status.nodes.failed"), ("Status", ".status.phase"),
                       ("Age", ".metadata.creationTimestamp")]
    wide = [(c["name"], c["jsonPath"], c["priority"]) for c in columns if c.get("priority")]
    assert wide == [("Selector", ".spec.nodeSelector", 1)]
    assert [c["type"] for c in columns if not c.get("priority")] == [
        "integer", "integer", "integer", "string", "date"]


def test_hostnetwork_columns_show_template_results(hostnetwork_crd):
    paths = {c["name"]: c["jsonPath"] for c in _columns(hostnetwork_crd)}
    for name in ("Applied", "Failed", "Conflict", "Interfaces"):
        assert paths[name] == f".status.summary.{name.lower()}"


# ----------------------------------------------------------------------------------------------
# Agreement with the agent's models


def _unwrap(tp):
    """Optional[X] -> X."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def _is_int_or_string(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and \
        set(typing.get_args(tp)) == {int, str}


def _model_mismatches(cls, node: dict, path: str) -> list[str]:
    """Compare a dataclass tree with a schema tree: same camelCase fields, compatible types."""
    out: list[str] = []
    hints = typing.get_type_hints(cls)
    fields = {}
    for f in dataclasses.fields(cls):
        head, *rest = f.name.split("_")
        fields[head + "".join(word.capitalize() for word in rest)] = _unwrap(hints[f.name])
    props = node.get("properties") or {}
    for name in sorted(set(fields) - set(props)):
        out.append(f"{path}.{name}: in the model, not in the schema")
    for name in sorted(set(props) - set(fields)):
        out.append(f"{path}.{name}: in the schema, not in the model")
    for name in sorted(set(fields) & set(props)):
        out.extend(_type_mismatches(fields[name], props[name], f"{path}.{name}"))
    return out


def _type_mismatches(tp, node: dict, path: str) -> list[str]:
    origin = typing.get_origin(tp)
    if _is_int_or_string(tp):
        return [] if node.get("x-kubernetes-int-or-string") is True else [
            f"{path}: model is int or str, schema is not x-kubernetes-int-or-string"]
    if dataclasses.is_dataclass(tp):
        if node.get("type") != "object":
            return [f"{path}: model is an object, schema says {node.get('type')}"]
        return _model_mismatches(tp, node, path)
    if origin is list:
        if node.get("type") != "array":
            return [f"{path}: model is a list, schema says {node.get('type')}"]
        return _type_mismatches(_unwrap(typing.get_args(tp)[0]), node["items"], f"{path}[]")
    if origin is dict:
        if node.get("type") != "object":
            return [f"{path}: model is a map, schema says {node.get('type')}"]
        value_tp = typing.get_args(tp)[1]
        if value_tp is typing.Any:
            return [] if node.get("x-kubernetes-preserve-unknown-fields") else [
                f"{path}: free-form map must preserve unknown fields"]
        return _type_mismatches(value_tp, node["additionalProperties"], f"{path}.*")
    expected = {str: "string", int: "integer", bool: "boolean"}[tp]
    return [] if node.get("type") == expected else [f"{path}: model {expected}, schema {node.get('type')}"]


def test_template_spec_schema_matches_the_model(template_schema):
    spec = template_schema["properties"]["spec"]
    assert _model_mismatches(spec_models.TemplateSpec, spec, "spec") == []


def test_hostnetwork_status_schema_matches_the_model(hostnetwork_schema):
    status = hostnetwork_schema["properties"]["status"]
    assert sorted(status["properties"]["summary"]["properties"]) == sorted(
        ["interfaces", "vfs", "bridges", "applied", "failed", "conflict", "invalid", "pending"])
    assert _model_mismatches(status_models.HostNetworkStatus, status, "status") == []


def test_model_checker_can_fail(template_schema):
    @dataclasses.dataclass
    class Wrong:
        node_selector: dict[str, str]
        extra_field: int
    mismatches = _model_mismatches(Wrong, template_schema["properties"]["spec"], "spec")
    assert "spec.extraField: in the model, not in the schema" in mismatches
    assert "spec.sriovConfig: in the schema, not in the model" in mismatches


def test_bounds_match_the_agent(template_schema):
    def at(path):
        return node_at(template_schema, path)

    assert (at(".spec.interfaceConfig[*].vlan[*].id")["minimum"],
            at(".spec.interfaceConfig[*].vlan[*].id")["maximum"]) == (v.VLAN_MIN, v.VLAN_MAX)
    for path in (".spec.interfaceConfig[*].mtu", ".spec.sriovConfig[*].mtu",
                 ".spec.ovsConfig[*].params.mtuRequest"):
        assert (at(path)["minimum"], at(path)["maximum"]) == (v.MTU_MIN, v.MTU_MAX), path
    assert (at(".spec.sriovConfig[*].numVfs")["minimum"],
            at(".spec.sriovConfig[*].numVfs")["maximum"]) == (0, v.NUMVFS_MAX)
    assert tuple(at(".spec.ovsConfig[*].params.bondMode")["enum"]) == v.BOND_MODES
    assert tuple(at(".spec.ovsConfig[*].params.lacp")["enum"]) == v.LACP_MODES
    assert tuple(at(".spec.ovsConfig[*].params.datapathType")["enum"]) == v.DATAPATH_TYPES
    assert at(".spec.interfaceConfig[*].name")["pattern"] == v._IFNAME_RE.pattern.replace("\\-", "-")
    spec = template_schema["properties"]["spec"]
    arrays = [(path, node) for node, path in iter_nodes(spec, "openAPIV3Schema.spec")
              if node.get("type") == "array"]
    assert len(arrays) >= 8
    for path, node in arrays:
        expected = parse_models.MAX_POOL_EXCLUDES if path.endswith(".pool.exclude") \
            else bond_spec.MAX_BOND_MEMBERS if path.endswith(".bondConfig[].members") \
            else parse_models.MAX_LIST
        assert node.get("maxItems") == expected, path
    assert tuple(at(".spec.bondConfig[*].mode")["enum"]) == bond_spec.BOND_MODES
    assert tuple(at(".spec.bondConfig[*].options.lacpRate")["enum"]) == bond_spec.LACP_RATES
    assert tuple(at(".spec.bondConfig[*].options.xmitHashPolicy")["enum"]) == \
        bond_spec.XMIT_HASH_POLICIES
    assert at(".spec.bondConfig[*].options.miimon")["maximum"] == bond_spec.MIIMON_MAX_MS


def test_list_map_keys_are_the_fields_the_agent_refuses_twice(template_schema):
    assert node_at(template_schema, ".spec.interfaceConfig")["x-kubernetes-list-map-keys"] == ["name"]
    assert node_at(template_schema, ".spec.interfaceConfig[*].vlan")["x-kubernetes-list-map-keys"] == ["id"]
    assert node_at(template_schema, ".spec.ovsConfig")["x-kubernetes-list-map-keys"] == ["bridgeName"]


# ----------------------------------------------------------------------------------------------
# HostNetwork status: what the agent publishes is accepted


def test_full_status_from_the_model_is_accepted(hostnetwork_schema):
    s = status_models
    status = s.HostNetworkStatus(
        interface_status=[s.InterfaceStatus(
            pf_name="eno2", mac="b4:96:91:70:19:39", mtu=1500, pci_addr="0000:01:00.1",
            vendor_id="8086", device_id="1572", pf_driver="i40e", sriov_enabled=True,
            sriov_status=s.SriovStatus(total_vfs=64, num_vfs=1, vfs=[s.VfStatus(
                id=0, pci_addr="0000:02:0a.0", vf_driver="iavf", mac="00:00:00:00:00:00",
                vlan=0, qos=0, spoofchk=True, trust=False)]),
            ipv4=s.AddressStatus(address=["10.0.0.1/24"]),
            ipv6=s.AddressStatus(address=["fe80::1/64"]), kind="device", oper_state="up"),
            s.InterfaceStatus(pf_name="eno2.100", kind="vlan", parent="eno2", vlan_id=100)],
        routes=s.RoutesStatus(ipv4=[s.RouteStatus(dev="eno2", gw="10.0.0.254")],
                              ipv6=[s.RouteStatus(dev="eno2", dst="fe80::/64")]),
        ovs_status=[s.OvsBridgeStatus(name="br0", datapath_type="netdev", managed=True, ports=[
            s.OvsPortStatus(name="bond0", interfaces=["eth1", "eth2"], bond_mode="balance-slb",
                            lacp="off")])],
        ovs_error="not reachable",
        templates=[s.TemplateStatus(name="t1", state="Applied", observed_generation=3,
                                    message="ok")],
        truncated={"interfaces": {"total": 5000, "listed": 1024}})
    body = s.to_api(status)
    body["summary"] = {"interfaces": 2, "vfs": 1, "bridges": 1, "applied": 1, "failed": 0,
                       "conflict": 0, "invalid": 0, "pending": 0}
    obj = {"apiVersion": "plumber.k8s.pf9.io/v1", "kind": "HostNetwork",
           "metadata": {"name": "node-1"}, "spec": {}, "status": body}
    assert validation_errors(hostnetwork_schema, obj) == []


def test_status_schema_refuses_wrong_types(hostnetwork_schema):
    obj = {"metadata": {"name": "n"}, "spec": {},
           "status": {"interfaceStatus": [{"pfName": "eno1", "mtu": "1500"}],
                      "summary": {"applied": -1}}}
    assert validation_errors(hostnetwork_schema, obj) == [
        ("status.interfaceStatus[0].mtu", 'Invalid value: "string": status.interfaceStatus[0].mtu '
                                          'in body must be of type integer: "string"'),
        ("status.summary.applied", "Invalid value: -1: status.summary.applied in body should be "
                                   "greater than or equal to 0")]


def test_spec_of_a_hostnetwork_is_empty(hostnetwork_schema):
    """kubectl's strict field validation refuses anything in spec; a lenient client's is
    pruned."""
    obj = {"metadata": {"name": "n"}, "spec": {"x": 1}}
    assert validation_errors(hostnetwork_schema, obj) == [("spec.x", 'unknown field "spec.x"')]
    assert validation_errors(hostnetwork_schema, obj, field_validation="Ignore") == []


def test_seed_hostnetwork_output_is_accepted(hostnetwork_schema):
    """The original README's `kubectl get hostnetwork -o yaml` output fits the new schema."""
    (obj,) = load_all(SEED_HOSTNETWORK_YAML)
    assert len(obj["status"]["interfaceStatus"][1]["sriovStatus"]["vfs"]) == 8
    assert validation_errors(hostnetwork_schema, obj) == []


def test_hostnetwork_states_are_the_agents(hostnetwork_schema):
    """The state enum is TemplateState: a state the agent writes and the schema refuses would
    make every status patch of that node fail."""
    state = node_at(hostnetwork_schema, ".status.templates[*].state")
    assert state["enum"] == [s.value for s in status_models.TemplateState]
    assert {"Waiting", "Applying", "Previewed"} <= set(state["enum"])


def test_planned_actions_fit_a_bounded_plan(hostnetwork_schema):
    planned = node_at(hostnetwork_schema, ".status.templates[*].plannedActions")
    assert planned["maxItems"] == status_models.MAX_PLANNED_ACTIONS + 1  # + "... and N more"
    assert planned["items"]["maxLength"] == 1024
    lines = [f"create vlan eno2.{i} on eno2" for i in range(1, 1001)]
    entry = status_models.TemplateStatus(
        name="t1", state=status_models.TemplateState.WAITING, observed_generation=2,
        planned_actions=status_models.bounded_plan(lines), planned_action_count=len(lines))
    body = status_models.to_api(status_models.HostNetworkStatus(templates=[entry]))
    assert body["templates"][0]["plannedActions"][-1] == "... and 980 more"
    assert body["templates"][0]["plannedActionCount"] == 1000
    obj = {"metadata": {"name": "node-1"}, "spec": {}, "status": body}
    assert validation_errors(hostnetwork_schema, obj) == []


def test_planned_actions_beyond_the_bound_are_refused(hostnetwork_schema):
    entry = {"name": "t1", "state": "Previewed", "plannedActions": ["x"] * 22,
             "plannedActionCount": -1}
    obj = {"metadata": {"name": "node-1"}, "spec": {}, "status": {"templates": [entry]}}
    assert validation_errors(hostnetwork_schema, obj) == [
        ("status.templates[0].plannedActions", "Too many: 22: must have at most 21 items"),
        ("status.templates[0].plannedActionCount",
         "Invalid value: -1: status.templates[0].plannedActionCount in body should be greater "
         "than or equal to 0")]


def test_unknown_template_state_is_refused(hostnetwork_schema):
    obj = {"metadata": {"name": "node-1"}, "spec": {},
           "status": {"templates": [{"name": "t1", "state": "Pending"}]}}
    assert validation_errors(hostnetwork_schema, obj) == [
        ("status.templates[0].state",
         'Unsupported value: "Pending": supported values: "Applied", "Failed", "Conflict", '
         '"Invalid", "NotSelected", "Waiting", "Applying", "Previewed"')]


# ----------------------------------------------------------------------------------------------
# HostNetworkTemplate spec.rollout: what a create gets from the API server


def _template(rollout) -> dict:
    return {"apiVersion": f"{GROUP}/v1", "kind": "HostNetworkTemplate",
            "metadata": {"name": "t1"}, "spec": {"rollout": rollout}}


_MAX_UNAVAILABLE_PATTERN = "'^([1-9][0-9]?|100)%$'"


@pytest.mark.parametrize("rollout", [
    {}, {"maxUnavailable": 1}, {"maxUnavailable": 250}, {"maxUnavailable": "1%"},
    {"maxUnavailable": "25%"}, {"maxUnavailable": "100%"}, {"dryRun": True},
    {"maxUnavailable": "50%", "dryRun": False},
    {"maxUnavailable": 2.0},  # typeValidator's isFloatInt: stored as 2
])
def test_rollout_accepted(template_schema, rollout):
    assert validation_errors(template_schema, _template(rollout)) == []


@pytest.mark.parametrize("rollout, expected", [
    # numberValidator: applies to numbers only, so `minimum` never sees a string
    ({"maxUnavailable": 0}, "Invalid value: 0: spec.rollout.maxUnavailable in body should be "
                            "greater than or equal to 1"),
    ({"maxUnavailable": -2}, "Invalid value: -2: spec.rollout.maxUnavailable in body should be "
                             "greater than or equal to 1"),
    ({"maxUnavailable": 1000000}, "Invalid value: 1000000: spec.rollout.maxUnavailable in body "
                                  "should be less than or equal to 5000"),
    # stringValidator: applies to strings only, so `pattern` never sees a number
    ({"maxUnavailable": "0%"}, 'Invalid value: "0%": spec.rollout.maxUnavailable in body should '
                               f"match {_MAX_UNAVAILABLE_PATTERN}"),
    ({"maxUnavailable": "101%"}, 'Invalid value: "101%": spec.rollout.maxUnavailable in body '
                                 f"should match {_MAX_UNAVAILABLE_PATTERN}"),
    ({"maxUnavailable": "abc"}, 'Invalid value: "abc": spec.rollout.maxUnavailable in body '
                                f"should match {_MAX_UNAVAILABLE_PATTERN}"),
    ({"maxUnavailable": "5"}, 'Invalid value: "5": spec.rollout.maxUnavailable in body should '
                              f"match {_MAX_UNAVAILABLE_PATTERN}"),
    ({"maxUnavailable": "05%"}, 'Invalid value: "05%": spec.rollout.maxUnavailable in body '
                                f"should match {_MAX_UNAVAILABLE_PATTERN}"),
    ({"maxUnavailable": "5%\n"}, 'Invalid value: "5%\\n": spec.rollout.maxUnavailable in body '
                                 f"should match {_MAX_UNAVAILABLE_PATTERN}"),
    # typeValidator with x-kubernetes-int-or-string
    ({"maxUnavailable": 2.5}, 'Invalid value: "number": spec.rollout.maxUnavailable in body '
                              'must be of type integer,string: "number"'),
    ({"maxUnavailable": True}, 'Invalid value: "boolean": spec.rollout.maxUnavailable in body '
                               'must be of type integer,string: "boolean"'),
    ({"dryRun": "yes"}, 'Invalid value: "string": spec.rollout.dryRun in body must be of type '
                        'boolean: "string"'),
    # strict decoding
    ({"maxSurge": 1}, 'unknown field "spec.rollout.maxSurge"'),
])
def test_rollout_refused(template_schema, rollout, expected):
    ((path, message),) = _checked(template_schema, _template(rollout))
    assert path == "spec.rollout." + next(iter(rollout))
    assert message == expected


@pytest.mark.parametrize("value", [
    1, 2, 99, 100, 101, 5000, 5001, 10 ** 6, 0, -1, "1%", "9%", "10%", "99%", "100%", "0%", "00%", "05%",
    "101%", "1000%", "5", "%", "", " 5%", "5% ", "5%\n", "+5%", "-5%", "5.5%", "abc", 2.5, True,
    False])
def test_schema_and_agent_agree_on_max_unavailable(template_schema, value):
    """The agent refuses exactly what the API server refuses (an integral float aside, which the
    server stores as an integer before the agent sees it)."""
    server_ok = validation_errors(template_schema, _template({"maxUnavailable": value})) == []
    agent_ok = fleet_models.check_max_unavailable(value) is None
    assert server_ok == agent_ok, (value, server_ok, agent_ok)


def test_max_unavailable_has_no_schema_default(template_schema):
    """The agent applies "25%" (a schema default would be stored into every template)."""
    node = node_at(template_schema, ".spec.rollout.maxUnavailable")
    assert "default" not in node
    assert node["x-kubernetes-int-or-string"] is True
    assert spec_models.RolloutConfig().max_unavailable == "25%"


def test_model_checker_sees_int_or_string(template_schema):
    @dataclasses.dataclass
    class Rollout:
        max_unavailable: typing.Union[int, str]
        dry_run: typing.Union[int, str]
        drain: str
        drain_timeout_seconds: int
    assert _model_mismatches(Rollout, node_at(template_schema, ".spec.rollout"),
                             "spec.rollout") == [
        "spec.rollout.dryRun: model is int or str, schema is not x-kubernetes-int-or-string"]


# ----------------------------------------------------------------------------------------------
# HostNetworkTemplate status: what the status writer publishes


def _template_status(**changes) -> dict:
    """The example of docs/rollout.md."""
    status = {
        "observedGeneration": 4, "phase": "Progressing", "maxUnavailable": 2,
        "nodes": {"matching": 10, "applied": 4, "failed": 1, "conflict": 0, "invalid": 0,
                  "waiting": 3, "applying": 1, "previewed": 0, "wouldChange": 0, "unknown": 1},
        "conditions": [
            {"type": "Available", "status": "False", "reason": "RollingOut",
             "message": "4 of 10 nodes applied", "lastTransitionTime": "2026-11-28T21:00:00Z",
             "observedGeneration": 4},
            {"type": "Progressing", "status": "True", "reason": "RollingOut", "message": "",
             "lastTransitionTime": "2026-11-28T21:00:00Z", "observedGeneration": 4},
            {"type": "Degraded", "status": "True", "reason": "NodesFailing",
             "message": "1 node failed", "lastTransitionTime": "2026-11-28T21:00:00Z",
             "observedGeneration": 4}],
        "failingNodes": [{"node": "node-3", "state": "Failed", "message": "no such device"}],
        "rollout": {"offered": [{"node": "node-7", "slot": 1}]},
    }
    status.update(changes)
    return {"apiVersion": f"{GROUP}/v1", "kind": "HostNetworkTemplate",
            "metadata": {"name": "t1"}, "spec": {}, "status": status}


def test_template_status_of_the_design_is_accepted(template_schema):
    assert validation_errors(template_schema, _template_status()) == []


def test_template_status_fields_are_the_designs(template_schema):
    status = template_schema["properties"]["status"]
    assert "x-kubernetes-preserve-unknown-fields" not in status
    assert sorted(status["properties"]) == sorted(
        ["observedGeneration", "phase", "maxUnavailable", "nodes", "conditions", "failingNodes",
         "pools", "rollout"])
    assert status["properties"]["phase"]["enum"] == [
        "Available", "Progressing", "Degraded", "Halted", "DryRun"]
    assert sorted(status["properties"]["nodes"]["properties"]) == sorted(
        ["matching", "applied", "failed", "conflict", "invalid", "waiting", "applying",
         "previewed", "wouldChange", "unknown"])
    conditions = status["properties"]["conditions"]
    assert (conditions["x-kubernetes-list-type"], conditions["x-kubernetes-list-map-keys"]) == (
        "map", ["type"])
    # metav1.Condition's required fields
    assert sorted(conditions["items"]["required"]) == [
        "lastTransitionTime", "message", "reason", "status", "type"]
    assert status["properties"]["failingNodes"]["maxItems"] == 10


@pytest.mark.parametrize("changes, expected", [
    ({"phase": "Done"},
     ("status.phase", 'Unsupported value: "Done": supported values: "Available", "Progressing", '
                      '"Degraded", "Halted", "DryRun"')),
    ({"maxUnavailable": 0},
     ("status.maxUnavailable", "Invalid value: 0: status.maxUnavailable in body should be greater "
                               "than or equal to 1")),
    ({"maxUnavailable": 1000000},
     ("status.maxUnavailable", "Invalid value: 1000000: status.maxUnavailable in body should be "
                               "less than or equal to 5000")),
    ({"rollout": {"offered": [{"node": "n1", "slot": -1}]}},
     ("status.rollout.offered[0].slot", "Invalid value: -1: status.rollout.offered[0].slot in "
                                        "body should be greater than or equal to 0")),
    ({"rollout": {"offered": [{"node": "n1", "slot": 0}, {"node": "n1", "slot": 1}]}},
     ("status.rollout.offered[1]", 'Duplicate value: map[string]interface {}{"node":"n1"}')),
    ({"rollout": {"offered": [{"node": "n1"}]}},
     ("status.rollout.offered[0].slot", "Required value")),
    ({"nodes": {"waiting": -1}},
     ("status.nodes.waiting", "Invalid value: -1: status.nodes.waiting in body should be greater "
                              "than or equal to 0")),
    ({"failingNodes": [{"node": f"n{i}", "state": "Failed"} for i in range(11)]},
     ("status.failingNodes", "Too many: 11: must have at most 10 items")),
    ({"failingNodes": [{"node": "n1", "state": "Waiting"}]},
     ("status.failingNodes[0].state", 'Unsupported value: "Waiting": supported values: "Failed", '
                                      '"Conflict", "Invalid"')),
    ({"conditions": [{"type": "Available", "status": "Yes", "reason": "Done", "message": "",
                      "lastTransitionTime": "2026-11-28T21:00:00Z"}]},
     ("status.conditions[0].status", 'Unsupported value: "Yes": supported values: "True", '
                                     '"False", "Unknown"')),
    ({"conditions": [{"type": "Available", "status": "True", "reason": "Rolled out",
                      "message": "", "lastTransitionTime": "2026-11-28T21:00:00Z"}]},
     ("status.conditions[0].reason",
      "Invalid value: \"Rolled out\": status.conditions[0].reason in body should match "
      "'^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$'")),
    ({"conditions": [{"type": "Available", "status": "True", "reason": "Done", "message": ""}]},
     ("status.conditions[0].lastTransitionTime", "Required value")),
    ({"conditions": [{"type": "Available", "status": "True", "reason": "Done", "message": "",
                      "lastTransitionTime": "2026-11-28T21:00:00Z"}] * 2},
     ("status.conditions[1]", 'Duplicate value: map[string]interface {}{"type":"Available"}')),
])
def test_template_status_refused(template_schema, changes, expected):
    assert _checked(template_schema, _template_status(**changes)) == [expected]


# ----------------------------------------------------------------------------------------------
# Address pools (docs/address-pools.md): the AddressClaim CRD, pools in a template's spec, and
# where they show in the status of templates and HostNetworks


def _claim(**spec_changes) -> dict:
    """The claim of docs/address-pools.md."""
    spec = {"address": "192.168.50.10", "prefixLength": 24, "node": "node-a",
            "nodeUID": "6c1f2a9e-0d3b-4c55-9b1e-1f6f0c2d3e4f", "template": "storage",
            "interface": "eno2", "pool": "192.168.50.0/24"}
    spec.update(spec_changes)
    return {"apiVersion": f"{GROUP}/v1", "kind": "AddressClaim",
            "metadata": {"name": "ipv4-192.168.50.10",
                         "labels": {"plumber.k8s.pf9.io/pool": "3f9a1c2b4d5e6f70",
                                    "plumber.k8s.pf9.io/node": "node-a"},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "node-a",
                                              "uid": "6c1f2a9e-0d3b-4c55-9b1e-1f6f0c2d3e4f"}]},
            "spec": {k: v for k, v in spec.items() if v is not None}}


def test_claim_crd_identity(claim_crd):
    spec = claim_crd["spec"]
    assert claim_crd["metadata"]["name"] == f"addressclaims.{GROUP}"
    assert (spec["group"], spec["scope"]) == (GROUP, "Cluster")
    assert spec["names"] == {"kind": "AddressClaim", "listKind": "AddressClaimList",
                             "plural": "addressclaims", "singular": "addressclaim",
                             "shortNames": ["addrclaim"], "categories": ["plumber"]}
    (version,) = spec["versions"]
    assert version["name"] == "v1" and version["served"] is True and version["storage"] is True
    assert "subresources" not in version  # nothing about a claim changes after its create


def test_claim_schema_uses_no_cel(claim_schema, hostnetwork_schema):
    """Immutability of a claim's spec is documented, not a CEL rule: it would be a transition
    rule (oldSelf), which the model here does not evaluate."""
    for schema in (claim_schema, hostnetwork_schema):
        assert all("x-kubernetes-validations" not in node for node, _ in iter_nodes(schema))


def test_claim_columns(claim_crd):
    """`kubectl get addressclaims`: NAME ADDRESS NODE TEMPLATE INTERFACE POOL AGE."""
    assert [(c["name"], c["jsonPath"]) for c in _columns(claim_crd)] == [
        ("Address", ".spec.address"), ("Node", ".spec.node"), ("Template", ".spec.template"),
        ("Interface", ".spec.interface"), ("Pool", ".spec.pool"),
        ("Age", ".metadata.creationTimestamp")]
    assert all(not c.get("priority") for c in _columns(claim_crd))


def test_claim_of_the_design_is_accepted(claim_schema):
    assert validation_errors(claim_schema, _claim()) == []
    ipv6 = _claim(address="fd00::a", prefixLength=64, pool="fd00::/64")
    ipv6["metadata"]["name"] = "ipv6-fd00-0-0-0-0-0-0-a"
    assert validation_errors(claim_schema, ipv6) == []


def test_claim_spec_is_all_required(claim_schema):
    required = node_at(claim_schema, ".spec")["required"]
    assert sorted(required) == sorted(
        ["address", "prefixLength", "node", "nodeUID", "template", "interface", "pool"])
    assert validation_errors(claim_schema, _claim(nodeUID=None, pool=None)) == [
        ("spec.nodeUID", "Required value"), ("spec.pool", "Required value")]


@pytest.mark.parametrize("changes, expected", [
    ({"prefixLength": 129}, ("spec.prefixLength", "Invalid value: 129: spec.prefixLength in body "
                                                  "should be less than or equal to 128")),
    ({"interface": "eno2 "}, ("spec.interface", 'Invalid value: "eno2 ": spec.interface in body '
                                                "should match '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$'")),
    ({"node": ""}, ("spec.node", 'Invalid value: "": spec.node in body should be at least 1 '
                                 "chars long")),
    ({"extra": 1}, ("spec.extra", 'unknown field "spec.extra"')),
])
def test_claim_refused(claim_schema, changes, expected):
    assert validation_errors(claim_schema, _claim(**changes)) == [expected]


def test_claim_name_must_be_a_dns_subdomain(claim_schema):
    """Why the name of an IPv6 claim is spelled with '-': ValidateObjectMeta's
    NameIsDNSSubdomain refuses ':'."""
    claim = _claim(address="fd00::a", prefixLength=64, pool="fd00::/64")
    claim["metadata"]["name"] = "fd00::a"
    ((path, message),) = validation_errors(claim_schema, claim)
    assert path == "metadata.name"
    assert message.startswith('Invalid value: "fd00::a": a lowercase RFC 1123 subdomain must '
                              "consist of lower case alphanumeric characters")


def _pool_template(family: str, pool) -> dict:
    return {"apiVersion": f"{GROUP}/v1", "kind": "HostNetworkTemplate",
            "metadata": {"name": "t1"},
            "spec": {"interfaceConfig": [{"name": "eno2", family: {"pool": pool}}]}}


_V4 = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}"
_V4_CIDR_PATTERN = f"'^{_V4}/(3[0-2]|[12]?[0-9])$'"
_V4_IP_PATTERN = f"'^{_V4}$'"
_V6_CIDR_PATTERN = "'^[0-9a-fA-F:.]*:[0-9a-fA-F:.]*/(12[0-8]|1[01][0-9]|[1-9]?[0-9])$'"


@pytest.mark.parametrize("family, pool", [
    ("ipv4", {"cidr": "192.168.50.0/24"}),
    ("ipv4", {"cidr": "192.168.50.0/24", "rangeStart": "192.168.50.10",
              "rangeEnd": "192.168.50.200", "exclude": ["192.168.50.100", "192.168.50.128/30"]}),
    ("ipv4", {"cidr": "10.0.0.7/32"}),
    ("ipv6", {"cidr": "fd00:50::/112", "rangeStart": "fd00:50::10", "exclude": ["fd00:50::20/126"]}),
])
def test_template_with_a_pool_accepted(template_schema, family, pool):
    assert validation_errors(template_schema, _pool_template(family, pool)) == []
    # ... and by the agent, with the address list beside it
    parse_models.parse_template_spec(_pool_template(family, pool)["spec"])


@pytest.mark.parametrize("family, pool, expected", [
    ("ipv4", {"rangeStart": "192.168.50.10"}, ("pool.cidr", "Required value")),
    ("ipv4", {"cidr": "192.168.50.0"},
     ("pool.cidr", 'Invalid value: "192.168.50.0": spec.interfaceConfig[0].ipv4.pool.cidr in body '
                   f"should match {_V4_CIDR_PATTERN}")),
    ("ipv4", {"cidr": "fd00::/64"},
     ("pool.cidr", 'Invalid value: "fd00::/64": spec.interfaceConfig[0].ipv4.pool.cidr in body '
                   f"should match {_V4_CIDR_PATTERN}")),
    ("ipv6", {"cidr": "10.0.0.0/24"},
     ("pool.cidr", 'Invalid value: "10.0.0.0/24": spec.interfaceConfig[0].ipv6.pool.cidr in body '
                   f"should match {_V6_CIDR_PATTERN}")),
    ("ipv4", {"cidr": "10.0.0.0/24", "rangeEnd": "10.0.0.256"},
     ("pool.rangeEnd", 'Invalid value: "10.0.0.256": spec.interfaceConfig[0].ipv4.pool.rangeEnd '
                       f"in body should match {_V4_IP_PATTERN}")),
    ("ipv4", {"cidr": "10.0.0.0/24", "exclude": [f"10.0.0.{i}" for i in range(65)]},
     ("pool.exclude", "Too many: 65: must have at most 64 items")),
    ("ipv4", {"cidr": "10.0.0.0/24", "size": 5},
     ("pool.size", 'unknown field "spec.interfaceConfig[0].ipv4.pool.size"')),
])
def test_template_with_a_pool_refused(template_schema, family, pool, expected):
    ((path, message),) = _checked(template_schema, _pool_template(family, pool))
    assert (path, message) == (f"spec.interfaceConfig[0].{family}.{expected[0]}", expected[1])


# (family, pool): every refusal a structural schema can decide, and acceptances around them.
# What only the agent decides (host bits, a range outside the CIDR, start after end, sizes,
# exclude entries' host bits, IPv6 syntax in full) is in tests/unit/test_pool_spec.py.
_SCHEMA_DECIDES = [
    ("ipv4", {"cidr": "192.168.50.0/24"}),
    ("ipv4", {"cidr": "192.168.50.0/24", "rangeStart": "192.168.50.10", "rangeEnd": "192.168.50.20"}),
    ("ipv4", {"cidr": "10.0.0.0/31"}),
    ("ipv4", {"cidr": "10.0.0.1/32"}),
    ("ipv4", {"cidr": "192.168.50.0/24", "exclude": ["192.168.50.7", "192.168.50.8/29"]}),
    ("ipv4", {}),                                    # no cidr
    ("ipv4", {"cidr": "192.168.50.0"}),              # no prefix length
    ("ipv4", {"cidr": "192.168.50.0/33"}),
    ("ipv4", {"cidr": "192.168.050.0/24"}),          # leading zero
    ("ipv4", {"cidr": "fd00::/64"}),                 # other family
    ("ipv4", {"cidr": "192.168.50.0/24", "rangeStart": "fd00::1"}),
    ("ipv4", {"cidr": "192.168.50.0/24", "rangeEnd": "192.168.50.0/24"}),
    ("ipv4", {"cidr": "192.168.50.0/24", "exclude": ["192.168.50.7/40"]}),
    ("ipv4", {"cidr": "192.168.50.0/24", "exclude": ["fd00::1"]}),
    ("ipv4", {"cidr": "192.168.50.0/24", "exclude": [f"192.168.50.{i}" for i in range(1, 66)]}),
    ("ipv4", {"cidr": "192.168.50.0/24", "exclude": [f"192.168.50.{i}" for i in range(1, 65)]}),
    ("ipv4", {"cidr": "192.168.50.0/24", "gateway": "192.168.50.1"}),  # unknown field
    ("ipv4", {"cidr": "192.168.50.0/24\n"}),
    ("ipv6", {"cidr": "fd00::/64", "rangeStart": "fd00::10", "rangeEnd": "fd00::ff"}),
    ("ipv6", {"cidr": "fd00::/120"}),
    ("ipv6", {"cidr": "fd00::/129"}),
    ("ipv6", {"cidr": "192.168.50.0/24"}),
    ("ipv6", {"cidr": "fd00::/120", "rangeStart": "192.168.50.1"}),
    ("ipv6", {"cidr": "fd00::/120", "exclude": ["fd00::8/125", "fd00::3"]}),
]


@pytest.mark.parametrize("family, pool", _SCHEMA_DECIDES)
def test_schema_and_agent_agree_on_pools(template_schema, family, pool):
    """Where the schema decides, the agent decides the same (a template created with kubectl
    and one the agent reads from a file are held to one rule)."""
    template = _pool_template(family, pool)
    server_ok = validation_errors(template_schema, template) == []
    try:
        parse_models.parse_template_spec(template["spec"])
        agent_ok = True
    except InvalidSpec:
        agent_ok = False
    assert server_ok == agent_ok, (family, pool, server_ok, agent_ok)


def test_pool_table_has_both_outcomes(template_schema):
    """The agreement above is only as good as its table: it holds acceptances and refusals."""
    outcomes = {validation_errors(template_schema, _pool_template(f, p)) == []
                for f, p in _SCHEMA_DECIDES}
    assert outcomes == {True, False}


def test_template_status_pools(template_schema):
    pools = [{"interface": "eno2", "family": "ipv4", "cidr": "192.168.50.0/24", "size": 191,
              "allocated": 12},
             {"interface": "eno2", "family": "ipv6", "cidr": "fd00:50::/112", "size": 65535,
              "allocated": 0}]
    assert _checked(template_schema, _template_status(pools=pools)) == []
    node = node_at(template_schema, ".status.pools")
    assert node["maxItems"] == 2 * parse_models.MAX_LIST  # every interface, both families
    bad = [{"interface": "eno2", "family": "IPv4", "cidr": "192.168.50.0/24", "allocated": -1}]
    assert _checked(template_schema, _template_status(pools=bad)) == [
        ("status.pools[0].family", 'Unsupported value: "IPv4": supported values: "ipv4", "ipv6"'),
        ("status.pools[0].allocated", "Invalid value: -1: status.pools[0].allocated in body should "
                                      "be greater than or equal to 0")]


def test_hostnetwork_address_claims_from_the_model(hostnetwork_schema):
    s = status_models
    claims = [s.AddressClaimStatus(address=f"192.168.50.{i}/24", interface="eno2",
                                   template="storage", pool="192.168.50.0/24")
              for i in range(s.MAX_ADDRESS_CLAIMS)]
    body = s.to_api(s.HostNetworkStatus(address_claims=claims))
    assert body["addressClaims"][0] == {"address": "192.168.50.0/24", "interface": "eno2",
                                        "template": "storage", "pool": "192.168.50.0/24"}
    obj = {"metadata": {"name": "node-1"}, "spec": {}, "status": body}
    assert validation_errors(hostnetwork_schema, obj) == []
    assert node_at(hostnetwork_schema, ".status.addressClaims")["maxItems"] == \
        s.MAX_ADDRESS_CLAIMS
    body["addressClaims"].append(body["addressClaims"][0])
    assert validation_errors(hostnetwork_schema, obj) == [
        ("status.addressClaims", "Too many: 257: must have at most 256 items")]
