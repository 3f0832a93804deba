"""Every template-level row of the bad-input table (docs/pitfalls.md) is refused twice: by the
CRD schema where a schema can say it (the API server refuses the object), and always by the
agent's own parser with the JSON path of the bad field (templates read from files, or written
before the CRD was updated, never pass through the API server's validation).

Where the schema cannot express a rule, the test asserts that the schema *accepts* the value, so
the gap is written down and noticed if it ever closes; the agent must refuse it.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plumber_agent import validation as v
from plumber_agent.errors import InvalidSpec
from plumber_agent.models.parse import MAX_LIST, parse_template_spec, template_from_object
from tests.manifests.conftest import REPO
from tests.manifests.k8s_schema import K8sValidator, node_at, to_jsonschema, validation_errors

PITFALLS = REPO / "docs" / "pitfalls.md"


def obj(spec: dict) -> dict:
    return {"apiVersion": "plumber.k8s.pf9.io/v1", "kind": "HostNetworkTemplate",
            "metadata": {"name": "bad-input"}, "spec": spec}


def sriov(**fields):
    return {"sriovConfig": [fields]}


def iface(**fields):
    return {"interfaceConfig": [{"name": "eno2", **fields}]}


def vlan(**fields):
    return {"interfaceConfig": [{"name": "eno2", "vlan": [fields]}]}


def ovs(**fields):
    return {"ovsConfig": [{"bridgeName": "br0", **fields}]}


def route(family: str, **fields):
    return {"routes": {family: [fields]}}


BAD_IFNAMES = {
    "empty": "", "dot": ".", "dotdot": "..", "16chars": "a" * 16, "slash": "a/b",
    "traversal": "../../etc", "colon": "eth0:1", "space": "eth 0", "newline": "eth0\n",
    "nul": "eth\x000", "leading-dash": "-eth0", "option": "--help", "shell": "eth0;reboot",
    "cyrillic-e": "\u0435th0", "fullwidth": "\uff45th0",
}

# (id, spec, path the schema refuses at, path the agent refuses at)
CASES: list[tuple[str, dict, str, str]] = []
for key, bad in BAD_IFNAMES.items():
    CASES += [
        (f"pfName-{key}", sriov(pfName=bad, numVfs=1), "spec.sriovConfig[0].pfName",
         "spec.sriovConfig[0].pfName"),
        (f"interface-{key}", {"interfaceConfig": [{"name": bad, "mtu": 1500}]},
         "spec.interfaceConfig[0].name", "spec.interfaceConfig[0].name"),
        (f"vlan-name-{key}", vlan(id=100, name=bad), "spec.interfaceConfig[0].vlan[0].name",
         "spec.interfaceConfig[0].vlan[0].name"),
        (f"bridge-{key}", {"ovsConfig": [{"bridgeName": bad}]}, "spec.ovsConfig[0].bridgeName",
         "spec.ovsConfig[0].bridgeName"),
        (f"route-dev-{key}", route("ipv4", dev=bad), "spec.routes.ipv4[0].dev",
         "spec.routes.ipv4[0].dev"),
    ]
    if key != "newline":  # stripped, not refused, by the agent: see test_port_names_are_stripped
        CASES.append((f"port-{key}", ovs(nodeInterface=bad), "spec.ovsConfig[0].nodeInterface",
                      "spec.ovsConfig[0].nodeInterface"))
for key, bad in {"traversal": "../", "path-suffix": "0000:3b:00.0/../..",
                 "newline": "0000:3b:00.0\n", "no-domain": "3b:00.0", "function-8": "0000:3b:00.8",
                 "empty": "", "number": 180.0}.items():
    CASES.append((f"pciAddr-{key}", sriov(pciAddr=bad, numVfs=1), "spec.sriovConfig[0].pciAddr",
                  "spec.sriovConfig[0].pciAddr"))
for key, bad in {"0x": "0x8086", "5-digits": "80866", "not-hex": "zzzz", "empty": "",
                 "unquoted": 8086}.items():
    CASES += [
        (f"vendorId-{key}", sriov(vendorId=bad, deviceId="1528"), "spec.sriovConfig[0].vendorId",
         "spec.sriovConfig[0].vendorId"),
        (f"deviceId-{key}", sriov(vendorId="8086", deviceId=bad), "spec.sriovConfig[0].deviceId",
         "spec.sriovConfig[0].deviceId"),
    ]
for key, bad in {"negative": -1, "65536": 65536, "octal-text": "010", "hex-text": "0x10",
                 "bool": True}.items():
    CASES.append((f"numVfs-{key}", sriov(pfName="eno2", numVfs=bad), "spec.sriovConfig[0].numVfs",
                  "spec.sriovConfig[0].numVfs"))
for key, bad in {"traversal": "../vfio", "newline": "vfio-pci\n", "4KiB": "v" * 4096,
                 "empty": ""}.items():
    CASES.append((f"vfDriver-{key}", sriov(pfName="eno2", vfDriver=bad),
                  "spec.sriovConfig[0].vfDriver", "spec.sriovConfig[0].vfDriver"))
for bad in (0, 4095, 4096, -1, "100"):
    CASES.append((f"vlan-id-{bad!r}", vlan(id=bad), "spec.interfaceConfig[0].vlan[0].id",
                  "spec.interfaceConfig[0].vlan[0].id"))
for bad in (0, 67, 65536, "9000"):
    CASES += [
        (f"mtu-{bad!r}", iface(mtu=bad), "spec.interfaceConfig[0].mtu", "spec.interfaceConfig[0].mtu"),
        (f"pf-mtu-{bad!r}", sriov(pfName="eno2", mtu=bad), "spec.sriovConfig[0].mtu",
         "spec.sriovConfig[0].mtu"),
        (f"ovs-mtu-{bad!r}", ovs(params={"mtuRequest": bad}), "spec.ovsConfig[0].params.mtuRequest",
         "spec.ovsConfig[0].params.mtuRequest"),
    ]
for key, family, bad in [("prefix-33", "ipv4", "10.0.0.1/33"), ("prefix-129", "ipv6", "::1/129"),
                         ("leading-zero", "ipv4", "010.0.0.1/24"),
                         ("scope-id", "ipv6", "fe80::1%eth0/64"), ("space", "ipv4", " 10.0.0.1/24"),
                         ("no-prefix", "ipv4", "10.0.0.1"), ("no-prefix6", "ipv6", "fc00::1"),
                         ("v6-in-v4", "ipv4", "fc00::1/64"), ("v4-in-v6", "ipv6", "10.0.0.1/24"),
                         ("prefix-leading-zero", "ipv4", "10.0.0.1/024")]:
    CASES.append((f"address-{key}", iface(**{family: {"address": [bad]}}),
                  f"spec.interfaceConfig[0].{family}.address[0]",
                  f"spec.interfaceConfig[0].{family}.address[0]"))
CASES += [
    ("route-no-gw-no-dev", route("ipv4", dst="10.0.0.0/8"), "spec.routes.ipv4[0]",
     "spec.routes.ipv4[0]"),
    ("route-bad-dst", route("ipv4", dst="10.0.0.0/33", dev="eno2"), "spec.routes.ipv4[0].dst",
     "spec.routes.ipv4[0].dst"),
    ("route-bad-gw", route("ipv4", gw="10.0.0.256"), "spec.routes.ipv4[0].gw",
     "spec.routes.ipv4[0].gw"),
    ("route-v6-gw-in-v4", route("ipv4", gw="fc00::1"), "spec.routes.ipv4[0].gw",
     "spec.routes.ipv4[0].gw"),
    ("route-scope-id", route("ipv6", gw="fe80::1%eth0"), "spec.routes.ipv6[0].gw",
     "spec.routes.ipv6[0].gw"),
    ("route-metric-negative", route("ipv4", dev="eno2", metric=-1), "spec.routes.ipv4[0].metric",
     "spec.routes.ipv4[0].metric"),
    ("route-metric-2^32", route("ipv4", dev="eno2", metric=2**32), "spec.routes.ipv4[0].metric",
     "spec.routes.ipv4[0].metric"),
]
for key, bad in {"two-bridges": "br0,br1", "map-syntax": "a=b", "option": "--if-exists",
                 "double-quotes": '"br0"', "single-quotes": "'br0'", "16chars": "b" * 16}.items():
    CASES.append((f"ovs-bridge-{key}", {"ovsConfig": [{"bridgeName": bad}]},
                  "spec.ovsConfig[0].bridgeName", "spec.ovsConfig[0].bridgeName"))
for key, bad in {"empty-member": "eth1,,eth2", "map-syntax": "eth1,a=b", "option": "eth1,--help",
                 "trailing-comma": "eth1,"}.items():
    CASES.append((f"ovs-port-{key}", ovs(nodeInterface=bad), "spec.ovsConfig[0].nodeInterface",
                  "spec.ovsConfig[0].nodeInterface"))
for key, params in {"bondMode": {"bondMode": "balance-rr"}, "lacp": {"lacp": "fast"},
                    "lacp-bare-off": {"lacp": False}, "datapath": {"datapathType": "dpdk"}}.items():
    field = next(iter(params))
    CASES.append((f"ovs-{key}", ovs(nodeInterface="eth1,eth2", params=params),
                  f"spec.ovsConfig[0].params.{field}", f"spec.ovsConfig[0].params.{field}"))
CASES += [
    ("selector-none", sriov(numVfs=1), "spec.sriovConfig[0]", "spec.sriovConfig[0]"),
    ("selector-pf-and-pci", sriov(pfName="eno2", pciAddr="0000:03:00.0"), "spec.sriovConfig[0]",
     "spec.sriovConfig[0]"),
    ("selector-vendor-alone", sriov(vendorId="8086"), "spec.sriovConfig[0]",
     "spec.sriovConfig[0].deviceId"),
    ("selector-device-alone", sriov(deviceId="1528"), "spec.sriovConfig[0]",
     "spec.sriovConfig[0].vendorId"),
    ("selector-pf-and-ids", sriov(pfName="eno2", vendorId="8086", deviceId="1528"),
     "spec.sriovConfig[0]", "spec.sriovConfig[0]"),
    ("selector-pf-and-vendor", sriov(pfName="eno2", vendorId="8086"), "spec.sriovConfig[0]",
     "spec.sriovConfig[0]"),
    ("selector-pf-and-device", sriov(pfName="eno2", deviceId="1528"), "spec.sriovConfig[0]",
     "spec.sriovConfig[0]"),
    ("selector-pci-and-vendor", sriov(pciAddr="0000:03:00.0", vendorId="8086"),
     "spec.sriovConfig[0]", "spec.sriovConfig[0]"),
    ("interface-twice", {"interfaceConfig": [{"name": "eno2"}, {"name": "eno2", "mtu": 9000}]},
     "spec.interfaceConfig[1]", "spec.interfaceConfig[1].name"),
    ("vlan-twice", {"interfaceConfig": [{"name": "eno2", "vlan": [{"id": 10}, {"id": 10}]}]},
     "spec.interfaceConfig[0].vlan[1]", "spec.interfaceConfig[0].vlan[1].id"),
    ("bridge-twice", {"ovsConfig": [{"bridgeName": "br0"}, {"bridgeName": "br0"}]},
     "spec.ovsConfig[1]", "spec.ovsConfig[1].bridgeName"),
    ("10000-interfaces", {"interfaceConfig": [{"name": f"e{i}"} for i in range(10_000)]},
     "spec.interfaceConfig", "spec.interfaceConfig"),
    ("unknown-field", {"sriovConfig": [], "hostname": "x"}, "spec.hostname", "spec.hostname"),
    ("unknown-nested-field", sriov(pfName="eno2", numvfs=4), "spec.sriovConfig[0].numvfs",
     "spec.sriovConfig[0].numvfs"),
    ("selector-value-not-string", {"nodeSelector": {"sriov": True}}, "spec.nodeSelector.sriov",
     "spec.nodeSelector"),
    ("selector-value-invalid", {"nodeSelector": {"role": "a b"}}, "spec.nodeSelector.role",
     "spec.nodeSelector"),
    ("allow-disruption-not-bool", {"allowApiServerDisruption": "yes"},
     "spec.allowApiServerDisruption", "spec.allowApiServerDisruption"),
    # Strict decoding prunes an object where a list belongs: its keys are unknown fields.
    ("list-not-list", {"interfaceConfig": {"name": "eno2"}}, "spec.interfaceConfig.name",
     "spec.interfaceConfig"),
]



def vfs(*entries, **fields):
    return sriov(pfName="eno2", numVfs=4, vfs=list(entries), **fields)


VF0 = "spec.sriovConfig[0].vfs[0]"
CASES += [
    ("vf-id-and-range", vfs({"id": 0, "range": "0-1", "trust": True}), VF0, VF0),
    ("vf-no-id", vfs({"trust": True}), VF0, VF0),
    ("vf-range-bad", vfs({"range": "0..3", "trust": True}), f"{VF0}.range", f"{VF0}.range"),
    ("vf-id-negative", vfs({"id": -1, "trust": True}), f"{VF0}.id", f"{VF0}.id"),
    ("vf-mac-dashes", vfs({"id": 0, "mac": "02-00-00-00-00-01"}), f"{VF0}.mac", f"{VF0}.mac"),
    ("vf-vlan-4095", vfs({"id": 0, "vlan": 4095}), f"{VF0}.vlan", f"{VF0}.vlan"),
    ("vf-qos-8", vfs({"id": 0, "vlan": 1, "qos": 8}), f"{VF0}.qos", f"{VF0}.qos"),
    ("vf-qos-without-vlan", vfs({"id": 0, "qos": 3}), VF0, f"{VF0}.qos"),
    ("vf-rate-negative", vfs({"id": 0, "maxTxRate": -1}), f"{VF0}.maxTxRate", f"{VF0}.maxTxRate"),
    ("vf-link-state-up", vfs({"id": 0, "linkState": "up"}), f"{VF0}.linkState",
     f"{VF0}.linkState"),
    ("vf-trust-string", vfs({"id": 0, "trust": "yes"}), f"{VF0}.trust", f"{VF0}.trust"),
    ("vf-unknown-field", vfs({"id": 0, "vlanId": 3}), f"{VF0}.vlanId", f"{VF0}.vlanId"),
    ("vf-sets-nothing", vfs({"id": 0}), VF0, VF0),
]

# Rules only the agent can check: the schema accepts these, the agent refuses at the path.
AGENT_ONLY: list[tuple[str, dict, str]] = [
    # kube-openapi takes an integral float for an integer (and stores it as 5); a template file
    # never passes the API server, so the agent refuses it.
    ("numVfs-integral-float", sriov(pfName="eno2", numVfs=5.0), "spec.sriovConfig[0].numVfs"),
    ("vlan-default-name-too-long", {"interfaceConfig": [{"name": "abcdefghijklmn",
                                                          "vlan": [{"id": 1000}]}]},
     "spec.interfaceConfig[0].vlan[0]"),
    ("vlan-above-parent-mtu", {"interfaceConfig": [{"name": "eno2", "mtu": 1500,
                                                     "vlan": [{"id": 100}]},
                                                    {"name": "eno2.100", "mtu": 9000}]},
     "spec.interfaceConfig[1].mtu"),
    ("mtu-below-ipv6-minimum", iface(mtu=1279, ipv6={"address": ["fc00::1/64"]}),
     "spec.interfaceConfig[0].mtu"),
    ("ipv6-too-many-groups", iface(ipv6={"address": ["1:2:3:4:5:6:7:8:9/64"]}),
     "spec.interfaceConfig[0].ipv6.address[0]"),
    ("ipv6-triple-colon", iface(ipv6={"address": [":::/64"]}),
     "spec.interfaceConfig[0].ipv6.address[0]"),
    ("ipv6-link-local", iface(ipv6={"address": ["fe80::1/64"]}),
     "spec.interfaceConfig[0].ipv6.address[0]"),
    ("ipv4-loopback", iface(ipv4={"address": ["127.0.0.1/8"]}),
     "spec.interfaceConfig[0].ipv4.address[0]"),
    ("address-twice", iface(ipv4={"address": ["10.0.0.1/24", "10.0.0.1/24"]}),
     "spec.interfaceConfig[0].ipv4.address[1]"),
    ("route-dst-host-bits", route("ipv4", dst="10.0.0.1/8", dev="eno2"), "spec.routes.ipv4[0].dst"),
    ("route-twice", {"routes": {"ipv4": [{"dst": "10.0.0.0/8", "dev": "eno2"},
                                         {"dst": "10.0.0.0/8", "gw": "10.1.1.1"}]}},
     "spec.routes.ipv4[1]"),
    ("route6-bad-gw", route("ipv6", gw="1:2:3"), "spec.routes.ipv6[0].gw"),
    ("bond-with-one-port", ovs(nodeInterface="eth1", params={"bondMode": "balance-slb"}),
     "spec.ovsConfig[0].params"),
    ("port-listed-twice", ovs(nodeInterface="eth1,eth1"), "spec.ovsConfig[0].nodeInterface"),
    ("bridge-as-its-own-port", ovs(nodeInterface="br0"), "spec.ovsConfig[0].nodeInterface"),
    ("selector-key-invalid", {"nodeSelector": {"-bad": "x"}}, "spec.nodeSelector"),
    ("vf-range-backwards", vfs({"range": "3-1", "trust": True}), f"{VF0}.range"),
    ("vf-beyond-numvfs", vfs({"id": 4, "trust": True}), VF0),
    ("vf-multicast-mac", vfs({"id": 0, "mac": "01:00:5e:00:00:01"}), f"{VF0}.mac"),
    ("vf-zero-mac", vfs({"id": 0, "mac": "00:00:00:00:00:00"}), f"{VF0}.mac"),
    ("vf-one-mac-for-a-range", vfs({"range": "0-1", "mac": "02:00:00:00:00:01"}), f"{VF0}.mac"),
    ("vf-min-above-max", vfs({"id": 0, "minTxRate": 100, "maxTxRate": 10}), f"{VF0}.minTxRate"),
    ("vf-attribute-twice", vfs({"range": "0-3", "trust": True}, {"id": 2, "trust": False}),
     "spec.sriovConfig[0].vfs[1]"),
]

# Rows of the table that are not about one template's values, and where they are tested.
ELSEWHERE = {
    "numVfs above totalVfs": "host: the SR-IOV driver reads sriov_totalvfs (ERANGE)",
    "unknown vfDriver": "host: the driver must exist under /sys/bus/pci/drivers",
    "route: default route where not allowed / gateway not on any link / unknown dev":
        "host: depends on the node's links and its route to the API server",
    "templates: conflicts, deletion mid-apply, selector matching nothing": "reconciler tests",
    "API objects: Node with unknown fields, HostNetwork named differently": "kube layer tests",
}
# The table's first column -> where each is covered (this module's cases, or ELSEWHERE).
TABLE_FIELDS = {"interface / pfName", "pciAddr", "vendorId / deviceId", "numVfs", "vfDriver",
                "VLAN id", "VF attributes", "MTU", "address", "route", "OVS bridge / port", "templates",
                "API objects"}


def _agent_problems(spec: dict) -> list[str]:
    with pytest.raises(InvalidSpec) as caught:
        parse_template_spec(spec)
    return caught.value.problems


def _refused_at(problems: list[str], path: str) -> bool:
    return any(problem.startswith(f"{path}: ") for problem in problems)


@pytest.mark.parametrize("spec, schema_path", [pytest.param(c[1], c[2], id=c[0]) for c in CASES])
def test_schema_refuses(template_schema, spec, schema_path):
    errors = validation_errors(template_schema, obj(spec))
    # oneOf/anyOf failures are reported at <nil>, naming the path in the message.
    assert any(path == schema_path or (path == "<nil>" and message.startswith(
        f'Invalid value: "": "{schema_path}" must validate')) for path, message in errors), errors


@pytest.mark.parametrize("spec, agent_path", [pytest.param(c[1], c[3], id=c[0]) for c in CASES])
def test_agent_refuses_too(spec, agent_path):
    problems = _agent_problems(spec)
    assert _refused_at(problems, agent_path), problems


@pytest.mark.parametrize("spec, agent_path", [pytest.param(c[1], c[2], id=c[0]) for c in AGENT_ONLY])
def test_agent_refuses_what_the_schema_cannot_express(template_schema, spec, agent_path):
    assert validation_errors(template_schema, obj(spec)) == []
    problems = _agent_problems(spec)
    assert _refused_at(problems, agent_path), problems


def test_every_problem_is_reported_at_once():
    """One bad template gets every problem in one message, not just the first."""
    problems = _agent_problems({"sriovConfig": [{"pfName": "a/b", "numVfs": -1}],
                                "interfaceConfig": [{"name": "eno2", "mtu": 0}]})
    assert _refused_at(problems, "spec.sriovConfig[0].pfName")
    assert _refused_at(problems, "spec.sriovConfig[0].numVfs")
    assert _refused_at(problems, "spec.interfaceConfig[0].mtu")


@pytest.mark.parametrize("value", [68, 65535])
def test_mtu_bounds_are_inclusive(template_schema, value):
    spec = iface(mtu=value)
    assert validation_errors(template_schema, obj(spec)) == []
    assert parse_template_spec(spec).interface_config[0].mtu == value


def test_maxitems_is_inclusive(template_schema):
    spec = {"interfaceConfig": [{"name": f"e{i}"} for i in range(MAX_LIST)]}
    assert validation_errors(template_schema, obj(spec)) == []
    assert len(parse_template_spec(spec).interface_config) == MAX_LIST


def test_upper_case_ids_are_accepted_and_normalised(template_schema):
    spec = {"sriovConfig": [{"pciAddr": "0000:3B:00.0", "numVfs": 2},
                            {"vendorId": "8086", "deviceId": "15B3"}]}
    assert validation_errors(template_schema, obj(spec)) == []
    parsed = parse_template_spec(spec)
    assert parsed.sriov_config[0].pci_addr == "0000:3b:00.0"
    assert parsed.sriov_config[1].device_id == "15b3"


def test_port_names_are_stripped_not_refused(template_schema):
    """The one whitespace the agent normalises rather than refuses: around nodeInterface members
    (so "eth1, eth2" works). The schema refuses a trailing newline; the agent strips it, and only
    the stripped name is ever used."""
    spec = ovs(nodeInterface="eth0\n")
    assert ("spec.ovsConfig[0].nodeInterface" in
            {path for path, _ in validation_errors(template_schema, obj(spec))})
    assert parse_template_spec(spec).ovs_config[0].interfaces() == ["eth0"]


def test_bond_with_spaces_after_commas_agrees(template_schema):
    spec = ovs(nodeInterface="eth1, eth2", params={"bondMode": "balance-tcp", "lacp": "active"})
    assert validation_errors(template_schema, obj(spec)) == []
    assert parse_template_spec(spec).ovs_config[0].interfaces() == ["eth1", "eth2"]


def test_user_written_template_status_is_ignored(template_schema):
    """A template with `status` set by a user: the status subresource drops it on create, but
    strict decoding sees it first, so fields the status schema lacks are refused (pruned under
    fieldValidation=Ignore); the agent ignores status either way."""
    body = obj({"interfaceConfig": [{"name": "eno2", "mtu": 9000}]})
    body["status"] = {"phase": "Available", "nodes": {"matching": 2}}
    assert validation_errors(template_schema, body) == []
    body["status"] = {"applied": "everywhere", "nodes": {"matching": 2}}
    assert validation_errors(template_schema, body) == [
        ("status.applied", 'unknown field "status.applied"')]
    assert validation_errors(template_schema, body, field_validation="Ignore") == []
    template = template_from_object(body)
    assert template.problems == [] and template.spec.interface_config[0].mtu == 9000


def test_every_row_of_the_bad_input_table_is_covered():
    text = PITFALLS.read_text(encoding="utf-8").split("## Bad inputs to try", 1)[1]
    rows = [line.split("|")[1].strip() for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|---")][1:]
    assert set(rows) == TABLE_FIELDS


# ----------------------------------------------------------------------------------------------
# Field by field, the schema's patterns and the agent's validators agree on arbitrary strings.

_ALPHABET = st.sampled_from(list("aZ09_.-:/ ,;=\n\t\x00%\"'") + ["\u0435", "\uff45"])
_TEXT = st.text(alphabet=_ALPHABET, max_size=20)


def _schema_accepts(template_schema, path: str, value) -> bool:
    return K8sValidator(to_jsonschema(node_at(template_schema, path))).is_valid(value)


@settings(max_examples=300, deadline=None)
@given(value=_TEXT | st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,16}\Z"))
def test_ifname_schema_and_agent_agree(template_schema, value):
    accepted_by_schema = _schema_accepts(template_schema, ".spec.interfaceConfig[*].name", value)
    assert accepted_by_schema == (v.check_ifname(value) is None)


@settings(max_examples=300, deadline=None)
@given(value=st.from_regex(r"\A[0-9a-fA-Fxg:./]{0,14}\Z") | _TEXT)
def test_pci_addr_schema_and_agent_agree(template_schema, value):
    accepted_by_schema = _schema_accepts(template_schema, ".spec.sriovConfig[*].pciAddr", value)
    assert accepted_by_schema == (v.check_pci_addr(value) is None)


@settings(max_examples=300, deadline=None)
@given(value=st.from_regex(r"\A[0-9a-fA-Fxz]{0,5}\n?\Z") | _TEXT)
def test_hex_id_schema_and_agent_agree(template_schema, value):
    accepted_by_schema = _schema_accepts(template_schema, ".spec.sriovConfig[*].vendorId", value)
    assert accepted_by_schema == (v.check_hex_id(value) is None)


@settings(max_examples=300, deadline=None)
@given(value=_TEXT | st.from_regex(r"\A[A-Za-z0-9_-]{0,70}\Z"))
def test_driver_schema_and_agent_agree(template_schema, value):
    accepted_by_schema = _schema_accepts(template_schema, ".spec.sriovConfig[*].vfDriver", value)
    assert accepted_by_schema == (v.check_driver(value) is None)


@settings(max_examples=300, deadline=None)
@given(value=st.from_regex(r"\A[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}\Z") | _TEXT)
def test_ipv4_address_schema_and_agent_agree(template_schema, value):
    """The IPv4 pattern is exact: the schema accepts precisely what the agent parses (the agent
    then refuses loopback/link-local on its own; those are AGENT_ONLY cases)."""
    accepted_by_schema = _schema_accepts(
        template_schema, ".spec.interfaceConfig[*].ipv4.address[*]", value)
    try:
        v.canonical_interface_address(value, 4)
        accepted_by_agent = True
    except ValueError:
        accepted_by_agent = False
    assert accepted_by_schema == accepted_by_agent


@settings(max_examples=300, deadline=None)
@given(value=st.ip_addresses(v=6).map(str), prefix=st.integers(0, 128))
def test_every_valid_ipv6_address_passes_the_schema(template_schema, value, prefix):
    """The IPv6 pattern is coarse but never refuses a real address (the agent parses strictly)."""
    text = f"{value}/{prefix}"
    assert _schema_accepts(template_schema, ".spec.interfaceConfig[*].ipv6.address[*]", text)
    assert v.canonical_interface_address(text, 6)



@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_an_empty_address_block_is_refused_by_the_crd_rule_and_the_agent(template_schema, family):
    """Issue 20: `ipv4: {}` (what pruning a misspelt `adress` leaves) read as "no addresses
    wanted" and removed every address. The CRD's CEL rule and the agent refuse it alike; an
    explicit empty list still means "remove them all"."""
    path = f"spec.interfaceConfig[0].{family}"
    message = (f"an empty {family} block would remove every IPv{family[-1]} address of the "
               f"interface: give address (an empty list to remove them all) or pool, or leave "
               f"{family} out to leave its addresses alone")
    assert validation_errors(template_schema, obj(iface(**{family: {}}))) == [
        (path, f'Invalid value: "object": {message}')]
    assert _agent_problems(iface(**{family: {}})) == [f"{path}: {message}"]
    explicit = iface(**{family: {"address": []}})
    assert validation_errors(template_schema, obj(explicit)) == []
    assert parse_template_spec(explicit).interface_config[0].ipv4 is not None or family == "ipv6"


def test_a_pruned_misspelling_leaves_the_empty_block_the_rule_refuses(template_schema):
    """With fieldValidation Ignore (no strict decoding) the server drops `adress` silently and
    then evaluates the rule on what is left."""
    spec = iface(ipv4={"adress": ["192.0.2.7/24"]})
    assert validation_errors(template_schema, obj(spec), field_validation="Ignore") == [
        ("spec.interfaceConfig[0].ipv4", 'Invalid value: "object": an empty ipv4 block would '
         "remove every IPv4 address of the interface: give address (an empty list to remove them "
         "all) or pool, or leave ipv4 out to leave its addresses alone")]


def test_no_rule_is_evaluated_when_the_schema_already_failed(template_schema):
    """strategy.go hasBlockingErr: a type error elsewhere stops CEL, with upstream's note."""
    spec = {"interfaceConfig": [{"name": "eno2", "mtu": "big", "ipv4": {}}]}
    errors = validation_errors(template_schema, obj(spec))
    assert not any(path.endswith(".ipv4") for path, _ in errors), errors
    assert errors[-1][1].endswith("some validation rules were not checked because the object "
                                  "was invalid; correct the existing errors to complete validation")


def test_a_pruned_misspelt_vf_attribute_leaves_an_entry_the_schema_refuses(template_schema):
    """`trsut` dropped by the server (fieldValidation Ignore) leaves {id: 0}: minProperties
    refuses it rather than storing an entry that sets nothing."""
    spec = vfs({"id": 0, "trsut": True})
    errors = validation_errors(template_schema, obj(spec), field_validation="Ignore")
    assert [path for path, _ in errors] == ["spec.sriovConfig[0].vfs[0]"], errors
    assert "should have at least 2 properties" in errors[0][1]
