"""The optional API Priority and Fairness objects (manifests/apf/): accepted by the API server's
validation (a port of the rules they touch from pkg/apis/flowcontrol/validation/validation.go:
ValidateFlowSchemaSpec, ValidateFlowSchemaResourcePolicyRule, ValidateServiceAccountSubject,
ValidatePriorityLevelConfigurationSpec, ValidateLimitedPriorityLevelConfiguration,
ValidatePriorityLevelQueuingConfiguration) and aimed at the agents: the DaemonSet's
ServiceAccount, every verb the agent uses, Leases on their own level, matched before the
built-in `service-accounts` FlowSchema."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
APF = MANIFESTS / "apf"
API_VERSION = "flowcontrol.apiserver.k8s.io/v1"
# pkg/apis/flowcontrol/types.go and util/shufflesharding.
MAX_MATCHING_PRECEDENCE = 10000
MAX_QUEUES = 128
MAX_HASH_BITS = 60
SUPPORTED_VERBS = {"*", "get", "list", "watch", "create", "update", "delete", "deletecollection",
                   "patch"}
# The built-in FlowSchema that takes every ServiceAccount not matched earlier (suggested config).
SERVICE_ACCOUNTS_PRECEDENCE = 9000
# What the agent sends (kube/client.py): verbs per API group and resource.
AGENT_REQUESTS = {("plumber.k8s.pf9.io", "hostnetworktemplates"): {"get", "list", "watch", "patch"},
                  ("plumber.k8s.pf9.io", "hostnetworks"): {"get", "list", "watch", "create",
                                                           "update", "patch", "delete"},
                  ("plumber.k8s.pf9.io", "addressclaims"): {"get", "list", "watch", "create",
                                                            "delete"},
                  ("", "nodes"): {"get", "list", "watch"},
                  ("events.k8s.io", "events"): {"create", "patch"},
                  ("coordination.k8s.io", "leases"): {"get", "list", "watch", "create", "update",
                                                      "delete"}}


def load(kind: str) -> list[dict]:
    docs = []
    for path in sorted(APF.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return [d for d in docs if d.get("kind") == kind]


def flow_schema_errors(fs: dict) -> list[str]:
    """ValidateFlowSchemaSpec and the rules below it, as `path: detail`."""
    errors, spec = [], fs.get("spec") or {}
    precedence = spec.get("matchingPrecedence", 0)
    if precedence <= 0:
        errors.append("spec.matchingPrecedence: must be a positive value")
    if precedence > MAX_MATCHING_PRECEDENCE:
        errors.append(f"spec.matchingPrecedence: must not be greater than {MAX_MATCHING_PRECEDENCE}")
    if precedence == 1 and fs["metadata"]["name"] != "exempt":
        errors.append("spec.matchingPrecedence: only the schema named 'exempt' may have "
                      "matchingPrecedence 1")
    method = (spec.get("distinguisherMethod") or {}).get("type")
    if method is not None and method not in ("ByNamespace", "ByUser"):
        errors.append("spec.distinguisherMethod.type: Unsupported value")
    if not (spec.get("priorityLevelConfiguration") or {}).get("name"):
        errors.append("spec.priorityLevelConfiguration.name: Required value")
    for i, rule in enumerate(spec.get("rules") or []):
        path = f"spec.rules[{i}]"
        if not rule.get("subjects"):
            errors.append(f"{path}.subjects: subjects must contain at least one value")
        for j, subject in enumerate(rule.get("subjects") or []):
            sa = subject.get("serviceAccount")
            if subject.get("kind") == "ServiceAccount":
                if not sa:
                    errors.append(f"{path}.subjects[{j}].serviceAccount: Required value")
                elif not sa.get("namespace"):
                    errors.append(f"{path}.subjects[{j}].serviceAccount.namespace: must specify "
                                  "namespace for service account")
            elif subject.get("kind") not in ("User", "Group"):
                errors.append(f"{path}.subjects[{j}].kind: Unsupported value")
        if not rule.get("resourceRules") and not rule.get("nonResourceRules"):
            errors.append(f"{path}: at least one of resourceRules and nonResourceRules has to "
                          "be non-empty")
        for j, rr in enumerate(rule.get("resourceRules") or []):
            errors += _resource_rule_errors(rr, f"{path}.resourceRules[{j}]")
    return errors


def _resource_rule_errors(rule: dict, path: str) -> list[str]:
    """ValidateFlowSchemaResourcePolicyRule."""
    errors = []
    verbs = rule.get("verbs") or []
    if not verbs:
        errors.append(f"{path}.verbs: verbs must contain at least one value")
    elif "*" in verbs and len(verbs) > 1:
        errors.append(f"{path}.verbs: if '*' is present, must not specify other verbs")
    elif not set(verbs) <= SUPPORTED_VERBS:
        errors.append(f"{path}.verbs: Unsupported value")
    for key, what in (("apiGroups", "api group"), ("resources", "resource")):
        values = rule.get(key) or []
        if not values:
            errors.append(f"{path}.{key}: resource rules must supply at least one {what}")
        elif "*" in values and len(values) > 1:
            errors.append(f"{path}.{key}: if '*' is present, must not specify other {what}s")
    namespaces = rule.get("namespaces") or []
    if not namespaces and not rule.get("clusterScope"):
        errors.append(f"{path}.namespaces: resource rules that are not cluster scoped must "
                      "supply at least one namespace")
    elif "*" in namespaces and len(namespaces) > 1:
        errors.append(f"{path}.namespaces: if '*' is present, must not specify other namespaces")
    return errors


def priority_level_errors(pl: dict) -> list[str]:
    """ValidatePriorityLevelConfigurationSpec (v1: nominalConcurrencyShares, lendablePercent)."""
    errors, spec = [], pl.get("spec") or {}
    if (pl["metadata"]["name"] == "exempt") != (spec.get("type") == "Exempt"):
        errors.append("spec.type: type must be 'Exempt' if and only if name is 'exempt'")
    if spec.get("type") != "Limited":
        return errors
    limited = spec.get("limited")
    if not limited:
        return errors + ["spec.limited: must not be empty when type is Limited"]
    if limited.get("nominalConcurrencyShares", 0) < 0:
        errors.append("spec.limited.nominalConcurrencyShares: must be a non-negative integer")
    if not 0 <= limited.get("lendablePercent", 0) <= 100:
        errors.append("spec.limited.lendablePercent: must be between 0 and 100, inclusive")
    response = limited.get("limitResponse") or {}
    if response.get("type") == "Queue":
        queuing = response.get("queuing")
        if not queuing:
            return errors + ["spec.limited.limitResponse.queuing: must not be empty if "
                             "limited.limitResponse.type is Limited"]
        queues, hand = queuing.get("queues", 0), queuing.get("handSize", 0)
        if queuing.get("queueLengthLimit", 0) <= 0:
            errors.append("spec.limited.limitResponse.queuing.queueLengthLimit: must be positive")
        if queues <= 0 or queues > MAX_QUEUES:
            errors.append("spec.limited.limitResponse.queuing.queues: out of range")
        if hand <= 0:
            errors.append("spec.limited.limitResponse.queuing.handSize: must be positive")
        elif hand > queues:
            errors.append(f"spec.limited.limitResponse.queuing.handSize: should not be greater "
                          f"than queues ({queues})")
        elif math.ceil(math.log2(queues) * hand) > MAX_HASH_BITS:  # RequiredEntropyBits
            errors.append(f"spec.limited.limitResponse.queuing.handSize: required entropy bits "
                          f"of deckSize {queues} and handSize {hand} should not be greater than "
                          f"{MAX_HASH_BITS}")
    elif response.get("type") != "Reject":
        errors.append("spec.limited.limitResponse.type: Unsupported value")
    return errors


def test_the_objects_pass_the_api_servers_validation():
    schemas, levels = load("FlowSchema"), load("PriorityLevelConfiguration")
    assert len(schemas) == 2 and len(levels) == 2
    for obj in schemas + levels:
        assert obj["apiVersion"] == API_VERSION
    assert [e for fs in schemas for e in flow_schema_errors(fs)] == []
    assert [e for pl in levels for e in priority_level_errors(pl)] == []
    names = {pl["metadata"]["name"] for pl in levels}
    assert {fs["spec"]["priorityLevelConfiguration"]["name"] for fs in schemas} == names


@pytest.mark.parametrize("break_it, expected", [
    (lambda pl: pl["spec"]["limited"]["limitResponse"]["queuing"].update(handSize=9),
     "handSize: should not be greater than queues (8)"),
    (lambda pl: pl["spec"]["limited"]["limitResponse"]["queuing"].update(queues=128, handSize=9),
     "required entropy bits of deckSize 128 and handSize 9 should not be greater than 60"),
    (lambda pl: pl["spec"]["limited"].update(lendablePercent=101), "between 0 and 100"),
    (lambda pl: pl["spec"].update(type="Exempt"), "type must be 'Exempt' if and only if"),
])
def test_the_priority_level_model_refuses_what_the_server_refuses(break_it, expected):
    broken = copy.deepcopy(load("PriorityLevelConfiguration")[0])
    break_it(broken)
    assert any(expected in e for e in priority_level_errors(broken))


@pytest.mark.parametrize("break_it, expected", [
    (lambda fs: fs["spec"].update(matchingPrecedence=1), "only the schema named 'exempt'"),
    (lambda fs: fs["spec"]["rules"][0]["resourceRules"][0].update(verbs=["*", "get"]),
     "if '*' is present, must not specify other verbs"),
    (lambda fs: fs["spec"]["rules"][0]["subjects"][0]["serviceAccount"].pop("namespace"),
     "must specify namespace for service account"),
    (lambda fs: fs["spec"]["rules"][0]["resourceRules"][0].update(namespaces=[],
                                                                  clusterScope=False),
     "must supply at least one namespace"),
])
def test_the_flow_schema_model_refuses_what_the_server_refuses(break_it, expected):
    broken = copy.deepcopy(load("FlowSchema")[0])
    break_it(broken)
    assert any(expected in e for e in flow_schema_errors(broken))


def _daemonset_subject() -> tuple[str, str]:
    (ds,) = [d for d in yaml.safe_load_all((MANIFESTS / "agent" / "daemonset.yaml").read_text(
        encoding="utf-8")) if d and d.get("kind") == "DaemonSet"]
    return ds["spec"]["template"]["spec"]["serviceAccountName"], ds["metadata"]["namespace"]


def _matches(rule: dict, group: str, resource: str, verb: str, namespace: str) -> bool:
    return (rule["apiGroups"] in (["*"], [group]) or group in rule["apiGroups"]) and \
        ("*" in rule["resources"] or resource in rule["resources"]) and \
        ("*" in rule["verbs"] or verb in rule["verbs"]) and \
        ("*" in rule.get("namespaces", []) or namespace in rule.get("namespaces", [])
         or (not namespace and rule.get("clusterScope")))


def _level_of(group: str, resource: str, verb: str, namespace: str) -> str:
    """The priority level the first matching FlowSchema (lowest precedence) picks."""
    name, namespace_of_sa = _daemonset_subject()
    for fs in sorted(load("FlowSchema"), key=lambda f: f["spec"]["matchingPrecedence"]):
        for rule in fs["spec"]["rules"]:
            subjects = [(s["serviceAccount"]["name"], s["serviceAccount"]["namespace"])
                        for s in rule["subjects"] if s["kind"] == "ServiceAccount"]
            if (name, namespace_of_sa) in subjects and any(
                    _matches(r, group, resource, verb, namespace) for r in rule["resourceRules"]):
                return fs["spec"]["priorityLevelConfiguration"]["name"]
    return "workload-low"  # the built-in service-accounts FlowSchema


def test_every_agent_request_goes_to_the_agents_levels_and_leases_to_their_own():
    _, agent_namespace = _daemonset_subject()
    for (group, resource), verbs in AGENT_REQUESTS.items():
        namespace = agent_namespace if resource == "leases" else \
            ("default" if resource == "events" else "")
        for verb in verbs:
            expected = "plumber-agent-leases" if resource == "leases" else "plumber-agent"
            assert _level_of(group, resource, verb, namespace) == expected, (resource, verb)
    for fs in load("FlowSchema"):
        assert 1 < fs["spec"]["matchingPrecedence"] < SERVICE_ACCOUNTS_PRECEDENCE


def test_apf_is_optional_and_its_kustomization_lists_its_files():
    kustomization = yaml.safe_load((APF / "kustomization.yaml").read_text(encoding="utf-8"))
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in APF.glob("*.yaml") if p.name != "kustomization.yaml")
    default = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text(encoding="utf-8"))
    assert not [r for r in default["resources"] if r.startswith("apf")]
