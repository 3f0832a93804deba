"""Install manifests (namespace, RBAC, DaemonSet, kustomization, optional admission policy) and the
Containerfile: least privilege, the agent's runtime contract, and that everything renders."""
from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from plumber_agent import __version__
from tests.manifests.conftest import MANIFESTS, REPO, load_all

KUBECTL_TIMEOUT_S = 60
NAMESPACE = "plumber-system"
SERVICE_ACCOUNT = "plumber-agent"


def _one(path: str, kind: str) -> dict:
    (doc,) = [d for d in load_all(MANIFESTS / path) if d["kind"] == kind]
    return doc


def test_every_manifest_is_valid_yaml_with_identity():
    files = sorted(MANIFESTS.rglob("*.yaml"))
    assert len(files) >= 15
    for path in files:
        docs = load_all(path)
        assert docs, path
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind"), path
            if doc["kind"] not in ("Kustomization", "Component"):
                assert doc["metadata"]["name"], path


# ----------------------------------------------------------------------------------------------
# RBAC (docs/pitfalls.md 39: never cluster-admin for a node agent)


@pytest.fixture(scope="module")
def cluster_role() -> dict:
    return _one("rbac/cluster_role.yaml", "ClusterRole")


def _grants(role: dict) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule  # no resourceNames/urls
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def test_cluster_role_is_least_privilege(cluster_role):
    grants = _grants(cluster_role)
    assert grants == {
        ("plumber.k8s.pf9.io", "hostnetworktemplates"): {"get", "list", "watch"},
        ("plumber.k8s.pf9.io", "hostnetworktemplates/status"): {"patch"},
        ("plumber.k8s.pf9.io", "hostnetworks"): {"get", "create", "list", "watch", "patch"},
        ("plumber.k8s.pf9.io", "hostnetworks/status"): {"patch"},
        ("plumber.k8s.pf9.io", "addressclaims"): {"get", "list", "watch", "create", "delete"},
        # patch: the drain's cordon (spec.unschedulable and its record only, on its own node:
        # manifests/admission/node_cordon_policy.yaml)
        ("", "nodes"): {"get", "list", "watch", "patch"},
        ("", "pods"): {"list"},                    # the drain: the pods on its node
        ("", "pods/eviction"): {"create"},         # the drain: PDBs respected, never delete
        ("discovery.k8s.io", "endpointslices"): {"list", "watch"},  # the API-path guard
        ("authentication.k8s.io", "tokenreviews"): {"create"},
        ("authorization.k8s.io", "subjectaccessreviews"): {"create"},
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"get"},
        ("events.k8s.io", "events"): {"create", "patch"},
    }


def test_leases_only_in_the_agent_namespace():
    """Deleting and updating Leases (rollout slots, leader election) is granted by a Role in the
    agent's namespace only, never cluster-wide."""
    role = _one("rbac/role.yaml", "Role")
    binding = _one("rbac/role.yaml", "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE
    assert _grants(role) == {("coordination.k8s.io", "leases"):
                             {"list", "watch", "create", "update", "delete"}}
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT,
                                    "namespace": NAMESPACE}]


def test_viewer_role_only_reads_and_aggregates_to_view():
    viewer = _one("rbac/viewer_cluster_role.yaml", "ClusterRole")
    assert viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert all(verbs <= {"get", "list", "watch"} for verbs in _grants(viewer).values())


def test_cluster_role_has_no_wildcards_secrets_or_deletes(cluster_role):
    for (group, resource), verbs in _grants(cluster_role).items():
        assert "*" not in group and "*" not in resource and "*" not in verbs
        assert resource not in ("secrets", "configmaps", "pods/exec", "nodes/proxy")
        assert not verbs & {"deletecollection", "escalate", "bind", "impersonate"}
        # The one delete: an agent releases its own address claims.
        assert "delete" not in verbs or (group, resource) == ("plumber.k8s.pf9.io", "addressclaims")
    assert "aggregationRule" not in cluster_role


def test_binding_ties_the_role_to_the_agent_service_account():
    binding = _one("rbac/cluster_role_binding.yaml", "ClusterRoleBinding")
    account = _one("rbac/service_account.yaml", "ServiceAccount")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "plumber-agent"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT,
                                    "namespace": NAMESPACE}]
    assert account["metadata"] == {**account["metadata"], "name": SERVICE_ACCOUNT,
                                   "namespace": NAMESPACE}


# ----------------------------------------------------------------------------------------------
# DaemonSet


@pytest.fixture(scope="module")
def daemonset() -> dict:
    return _one("agent/daemonset.yaml", "DaemonSet")


@pytest.fixture(scope="module")
def pod(daemonset) -> dict:
    return daemonset["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    (only,) = pod["containers"]
    return only


def test_daemonset_runs_everywhere_on_the_host_network(daemonset, pod):
    assert daemonset["metadata"]["namespace"] == NAMESPACE
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert daemonset["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert pod["hostNetwork"] is True
    assert "hostPID" not in pod
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["terminationGracePeriodSeconds"] == 30
    assert pod["tolerations"] == [{"operator": "Exists"}]


CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")


def _control_plane_excluded(pod: dict) -> bool:
    """True when the pod's required node affinity keeps it off nodes with a control-plane role
    label (every term must demand the labels' absence: terms are ORed)."""
    terms = (((pod.get("affinity") or {}).get("nodeAffinity") or {})
             .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms")
    if not terms:
        return False
    return all({(e["key"], e["operator"]) for e in term.get("matchExpressions") or []}
               >= {(label, "DoesNotExist") for label in CONTROL_PLANE_LABELS} for term in terms)


def test_control_plane_nodes_are_excluded_by_default(pod):
    assert _control_plane_excluded(pod)


def test_the_control_plane_component_puts_the_agent_there_too(tmp_path):
    """The switch (README "Control-plane nodes"): manifests/ + components/control-plane."""
    rel = Path(os.path.relpath(MANIFESTS, tmp_path))
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [str(rel)], "components": [str(rel / "components" / "control-plane")]}))
    (ds,) = [d for d in _kustomize(tmp_path) if d["kind"] == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    assert not _control_plane_excluded(pod)
    assert pod["tolerations"] == [{"operator": "Exists"}]  # the control-plane taint included


def test_rolling_update_takes_a_quarter_of_the_nodes_without_surge(daemonset):
    """An agent restart leaves its host alone (tests/e2e/test_lifecycle.py), so a wide
    maxUnavailable costs nothing on the hosts; no surge: two agents would share a ledger."""
    rolling = daemonset["spec"]["updateStrategy"]["rollingUpdate"]
    assert rolling == {"maxUnavailable": "25%"}


def test_agent_container_contract(container):
    assert container["image"] == f"hostplumber/plumber-agent:{__version__}"
    assert container["args"] == ["run", "--state-dir", "/var/lib/plumber-agent",
                                 "--health-addr", "127.0.0.1:10380",
                                 "--metrics-addr", "127.0.0.1:10381"]
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} \
        in container["env"]
    assert container["securityContext"]["privileged"] is True
    assert container["resources"] == {"requests": {"cpu": "10m", "memory": "64Mi"},
                                      "limits": {"memory": "112Mi"}}


# The measurements the DaemonSet's memory is sized on (bench/RESULTS.md, README "Footprint").
BUSY_NODE_P95_MIB = 61.1      # bench B4 idle max / B10 churn p95 (60.3), in-cluster config
LEADER_GROWTH_MIB = 16.0      # bench B9's bound: the status writer from 100 to 5,000 nodes
LIMIT_MARGIN_MIB = 29.0       # the stated margin above both (README "Footprint")


def _mebibytes(quantity: str) -> float:
    assert quantity.endswith("Mi"), quantity
    return float(quantity[:-2])


def test_memory_request_and_limit_follow_the_measurements(container):
    """The request covers a busy node's p95; the limit leaves the leader's growth plus the
    margin on top (the reasoning is in the manifest's comment)."""
    requested = _mebibytes(container["resources"]["requests"]["memory"])
    limit = _mebibytes(container["resources"]["limits"]["memory"])
    assert requested >= BUSY_NODE_P95_MIB
    assert limit >= BUSY_NODE_P95_MIB + LEADER_GROWTH_MIB + LIMIT_MARGIN_MIB


def _arg(container: dict, flag: str) -> str:
    args = container["args"]
    return args[len(args) - 1 - args[::-1].index(flag) + 1]  # argparse: the last one wins


def test_probes_hit_the_health_port_on_loopback(container):
    """With hostNetwork the node's loopback is the pod's, and kubelet (on the node) probes
    `host: 127.0.0.1`: the health port is never on the network."""
    host, port = _arg(container, "--health-addr").rsplit(":", 1)
    assert host == "127.0.0.1"
    assert {"name": "health", "containerPort": int(port), "protocol": "TCP"} in container["ports"]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert (get["host"], get["path"], get["port"], get["scheme"]) == (
            "127.0.0.1", path, int(port), "HTTP"), probe


def test_metrics_stay_on_loopback_by_default(container):
    host, port = _arg(container, "--metrics-addr").rsplit(":", 1)
    assert host == "127.0.0.1" and "--metrics-secure" not in container["args"]
    assert {"name": "metrics", "containerPort": int(port), "protocol": "TCP"} in container["ports"]


def test_host_mounts(pod, container):
    volumes = {vol["name"]: vol["hostPath"] for vol in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    expected = {"/sys": ("/sys", "Directory"),
                "/var/run/openvswitch": ("/var/run/openvswitch", "DirectoryOrCreate"),
                "/var/lib/plumber-agent": ("/var/lib/plumber-agent", "DirectoryOrCreate"),
                "/lib/modules": ("/lib/modules", "Directory")}
    assert set(mounts) == set(expected)
    for mount_path, (host_path, host_type) in expected.items():
        mount = mounts[mount_path]
        # /sys must be writable for SR-IOV; the kernel's modules are only read (modules.alias)
        assert bool(mount.get("readOnly")) == (mount_path == "/lib/modules"), mount_path
        assert volumes[mount["name"]] == {"path": host_path, "type": host_type}


# ----------------------------------------------------------------------------------------------
# Kustomizations


def _kustomization(directory: Path) -> dict:
    return yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("directory", [MANIFESTS, MANIFESTS / "admission", MANIFESTS / "apf",
                                       MANIFESTS / "monitoring"])
def test_kustomization_lists_existing_files(directory):
    resources = _kustomization(directory)["resources"]
    assert resources and len(set(resources)) == len(resources)
    for resource in resources:
        assert (directory / resource).is_file(), resource


def test_default_install_excludes_examples_and_admission():
    resources = _kustomization(MANIFESTS)["resources"]
    assert not [r for r in resources if r.startswith(("examples", "admission", "apf",
                                                       "monitoring"))]
    on_disk = {str(p.relative_to(MANIFESTS)) for p in MANIFESTS.rglob("*.yaml")
               if p.parts[len(MANIFESTS.parts)] not in ("examples", "admission", "apf",
                                                        "monitoring")
               and p.name != "kustomization.yaml"}
    assert set(resources) == on_disk  # nothing forgotten


def _kustomize(directory: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: cannot render the kustomization")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                            text=True, timeout=KUBECTL_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_kubectl_kustomize_renders_the_install():
    docs = _kustomize(MANIFESTS)
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == sorted([
        ("Namespace", NAMESPACE),
        ("CustomResourceDefinition", "hostnetworktemplates.plumber.k8s.pf9.io"),
        ("CustomResourceDefinition", "hostnetworks.plumber.k8s.pf9.io"),
        ("CustomResourceDefinition", "addressclaims.plumber.k8s.pf9.io"),
        ("ServiceAccount", SERVICE_ACCOUNT), ("ClusterRole", "plumber-agent"),
        ("ClusterRoleBinding", "plumber-agent"), ("Role", "plumber-agent"),
        ("RoleBinding", "plumber-agent"), ("ClusterRole", "plumber-viewer"),
        ("DaemonSet", "plumber-agent")])
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == \
        f"hostplumber/plumber-agent:{__version__}"
    for doc in docs:
        if doc["kind"] in ("ServiceAccount", "DaemonSet", "Role", "RoleBinding"):
            assert doc["metadata"]["namespace"] == NAMESPACE


def test_kubectl_kustomize_renders_the_admission_policies():
    kinds = sorted(d["kind"] for d in _kustomize(MANIFESTS / "admission"))
    assert kinds == ["ValidatingAdmissionPolicy"] * 7 + ["ValidatingAdmissionPolicyBinding"] * 7


# ----------------------------------------------------------------------------------------------
# Admission policies (what each decides: tests/security/test_admission_cel.py)

# policy -> (the resources it matches, operations, its paramKind or None)
ADMISSION_POLICIES = {
    "plumber-agent-own-hostnetwork": (
        [("plumber.k8s.pf9.io", "hostnetworks"), ("plumber.k8s.pf9.io", "hostnetworks/status")],
        {"CREATE", "UPDATE", "DELETE"}, None),
    "plumber-agent-own-leases": (
        [("coordination.k8s.io", "leases")], {"CREATE", "UPDATE", "DELETE"}, None),
    "plumber-agent-stale-slots": (
        [("coordination.k8s.io", "leases")], {"UPDATE", "DELETE"},
        {"apiVersion": "plumber.k8s.pf9.io/v1", "kind": "HostNetworkTemplate"}),
    "plumber-agent-own-address-claims": (
        [("plumber.k8s.pf9.io", "addressclaims")], {"CREATE", "UPDATE", "DELETE"}, None),
    "plumber-agent-template-status-by-leader": (
        [("plumber.k8s.pf9.io", "hostnetworktemplates/status")], {"UPDATE"},
        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease"}),
    "plumber-agent-own-events": (
        [("", "events"), ("events.k8s.io", "events")], {"CREATE", "UPDATE"}, None),
    "plumber-agent-own-node-cordon": ([("", "nodes")], {"UPDATE"}, None),
}


def _admission_docs() -> list[dict]:
    docs = []
    for name in _kustomization(MANIFESTS / "admission")["resources"]:
        docs.extend(load_all(MANIFESTS / "admission" / name))
    return docs


@pytest.mark.parametrize("name", sorted(ADMISSION_POLICIES))
def test_admission_policy_matches_the_agents_writes(name):
    docs = _admission_docs()
    (policy,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"
                 and d["metadata"]["name"] == name]
    (binding,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"
                  and d["spec"]["policyName"] == name]
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["spec"]["validationActions"] == ["Deny"]
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    resources, operations, param_kind = ADMISSION_POLICIES[name]
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert sorted((g, r) for g in rule["apiGroups"] for r in rule["resources"]) == \
        sorted(resources)
    assert set(rule["operations"]) == operations and rule["apiVersions"] == ["v1"]
    assert spec["matchConditions"][0]["expression"] == (
        f"request.userInfo.username == 'system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}'")
    assert spec.get("paramKind") == param_kind
    if param_kind is not None and param_kind["kind"] == "Lease":
        assert binding["spec"]["paramRef"]["namespace"] == NAMESPACE
    # The node comes from the token, never from what the agent writes.
    if name != "plumber-agent-stale-slots":
        (node_names,) = [v for v in spec["variables"] if v["name"] == "nodeNames"]
        assert "request.userInfo.extra['authentication.kubernetes.io/node-name']" in \
            node_names["expression"]


# ----------------------------------------------------------------------------------------------
# Containerfile and build context


def _instructions() -> list[tuple[str, str]]:
    text = (REPO / "Containerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_containerfile_stages_and_entrypoint():
    instructions = _instructions()
    # The base names its Debian release: a bare python:3.11-slim moves to each new Debian.
    assert ("ARG", "BASE_IMAGE=python:3.11-slim-bookworm") in instructions
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert froms and all(f.startswith("${BASE_IMAGE}") for f in froms)
    assert len(froms) >= 2  # multi-stage
    final = instructions[max(i for i, (w, _) in enumerate(instructions) if w == "FROM"):]
    assert ("ENTRYPOINT", json.dumps(["plumber-agent"])) in final
    assert ("CMD", json.dumps(["run"])) in final
    assert not [w for w, _ in instructions if w == "USER"]  # root on purpose (documented)
    # Only the venv and the OVS client reach the runtime stage: no wheels layer, no apt lists.
    copies = [rest for word, rest in final if word in ("COPY", "ADD")]
    assert copies == ["--from=ovs-tools /ovs/ /", "--from=build /opt/plumber-agent /opt/plumber-agent"]
    runs = " ".join(rest for word, rest in final if word == "RUN")
    assert "apt-get" not in runs and "pip install" not in runs
    build = instructions[:[i for i, (w, _) in enumerate(instructions) if w == "FROM"][1]]
    # Transitive dependencies are pinned in the image as in CI.
    assert "PIP_CONSTRAINT=/src/constraints.txt" in " ".join(rest for w, rest in build if w == "RUN")


def _context_files() -> set[str]:
    """Files a Docker/Podman build would send, per .containerignore (last match wins)."""
    rules = []
    for line in (REPO / ".containerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    included = set()
    for path in REPO.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(REPO)
        keep = True
        for negated, pattern in rules:
            prefixes = ["/".join(rel.parts[:n]) for n in range(1, len(rel.parts) + 1)]
            pattern = pattern.replace("**/", "*")
            if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
                keep = negated
        if keep:
            included.add(str(rel))
    return included


def test_build_context_is_only_the_package():
    assert (REPO / ".dockerignore").read_text() == (REPO / ".containerignore").read_text()
    files = _context_files()
    assert "setup.cfg" in files and "setup.py" in files
    assert "src/plumber_agent/cli.py" in files
    # The packaged examples: src/plumber_agent/examples is a symlink to manifests/examples.
    assert "manifests/examples/01-hostconfig-kernel-eno2.yaml" in files
    assert not [f for f in files if f.startswith((".git/", "tests/", ".ci/"))]
    assert not [f for f in files
                if f.startswith("manifests/") and not f.startswith("manifests/examples/")]
    assert not [f for f in files if "__pycache__" in f or ".egg-info" in f]
