"""Least privilege: the ClusterRole grants exactly what the agent uses (issue 7, item 3).

Two independent derivations of "what the agent uses", each compared with
manifests/rbac/cluster_role.yaml in BOTH directions (a missing grant is a 403 in production; an
extra grant is privilege nobody needs):

1. static: the API calls in src/plumber_agent/kube/client.py (each KubeClient method maps to
   one `kubernetes` API method, hence one verb on one resource) and in kube/drain.py (DrainApi,
   the drain's Pods, Evictions and Node patches, with the DrainApi methods each one calls),
   restricted to the methods the rest of the agent actually references;
2. dynamic: a real agent process in cluster mode against the fake API server, driven through
   its life (first sync, a template created/edited/deleted, a node label change, status
   writes), then the server's request log mapped to (apiGroup, resource, verb).
The dynamic set must be within the grants; the static set must EQUAL the grants.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "src/plumber_agent/kube/client.py"
DRAIN = REPO / "src/plumber_agent/kube/drain.py"
DRAIN_MODULE = "plumber_agent.kube.drain"
PACKAGE_INIT = REPO / "src/plumber_agent/__init__.py"
ROLE = REPO / "manifests/rbac/cluster_role.yaml"
NAMESPACED_ROLE = REPO / "manifests/rbac/role.yaml"
VIEWER_ROLE = REPO / "manifests/rbac/viewer_cluster_role.yaml"
# The kubectl plugin runs with the user's credentials, not the agent's: its calls are held to
# the viewer ClusterRole instead.
PLUGIN = REPO / "src/plumber_agent/fleet/plugin.py"

# kubernetes API method -> verb (watch when called through KubeClient._watch).
_VERB_PREFIXES = (("list_", "list"), ("read_", "get"), ("get_", "get"), ("create_", "create"),
                  ("replace_", "update"), ("patch_", "patch"), ("delete_", "delete"))
_CORE_RESOURCES = {"node": "nodes", "namespaced_event": "events", "namespaced_pod": "pods",
                   "pod_for_all_namespaces": "pods", "namespaced_pod_eviction": "pods/eviction",
                   "namespace": "namespaces", "namespaced_secret": "secrets",
                   "namespaced_config_map": "configmaps"}
_GROUP_RESOURCES = {"namespaced_lease": ("coordination.k8s.io", "leases"),
                    "namespaced_endpoint_slice": ("discovery.k8s.io", "endpointslices"),
                    "token_review": ("authentication.k8s.io", "tokenreviews"),
                    "subject_access_review": ("authorization.k8s.io", "subjectaccessreviews"),
                    "custom_resource_definition": ("apiextensions.k8s.io",
                                                   "customresourcedefinitions")}
# KubeClient attributes of API groups whose method names alone are core/v1's (`self.events.
# create_namespaced_event` is events.k8s.io/v1, client.py EventsV1Calls).
_CALLS_GROUPS = {"events": "events.k8s.io"}


def granted(paths=(ROLE, NAMESPACED_ROLE), kinds=("ClusterRole", "Role")) -> set[tuple[str, str, str]]:
    """(group, resource, verb) the agent's ClusterRole and its namespaced Role grant."""
    out = set()
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in kinds:
                out |= _rules(doc)
    return out


def _rules(role: dict) -> set[tuple[str, str, str]]:
    out = set()
    for rule in role.get("rules") or []:
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    out.add((group, resource, verb))
    return out


def _module_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level string constants, including those imported from the plumber_agent package."""
    consts = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "plumber_agent":
            package = _module_constants(ast.parse(PACKAGE_INIT.read_text()))
            for alias in node.names:
                if alias.name in package:
                    consts[alias.asname or alias.name] = package[alias.name]
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    consts[target.id] = node.value.value
    return consts


def _api_call(call: ast.Call, consts: dict) -> tuple[str, str, str] | None:
    """(group, resource, verb) for `self._call(self.X.method, ...)`/`self._watch(...)`/
    `self._list(...)` (the pager)."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr in ("_call", "_watch", "_list")
            and call.args):
        return None
    target = call.args[0]
    if not isinstance(target, ast.Attribute):
        return None
    method = target.attr
    verb = next((v for prefix, v in _VERB_PREFIXES if method.startswith(prefix)), None)
    if verb is None:
        raise AssertionError(f"client.py: unknown kubernetes API method {method}")
    if func.attr == "_watch":
        verb = "watch"
    rest = method.split("_", 1)[1]
    if "custom_object" in method:
        group_arg, plural_arg = call.args[1], call.args[3]
        group = consts.get(getattr(group_arg, "id", ""), getattr(group_arg, "value", None))
        resource = consts.get(getattr(plural_arg, "id", ""), getattr(plural_arg, "value", None))
        if not (isinstance(group, str) and isinstance(resource, str)):
            raise AssertionError(f"client.py: cannot resolve the group/plural of {method}: "
                                 f"{ast.dump(group_arg)}, {ast.dump(plural_arg)}")
        if method.endswith("_status"):
            resource += "/status"
        return group, resource, verb
    calls = target.value.attr if isinstance(target.value, ast.Attribute) else ""
    if calls in _CALLS_GROUPS:
        return _CALLS_GROUPS[calls], _CORE_RESOURCES[rest], verb
    sub = ""
    if rest.endswith("_status"):
        rest, sub = rest[: -len("_status")], "/status"
    if rest in _GROUP_RESOURCES:
        group, resource = _GROUP_RESOURCES[rest]
        return group, resource + sub, verb
    resource = _CORE_RESOURCES.get(rest)
    if resource is None:
        raise AssertionError(f"client.py: map the core API method {method} to its resource")
    return "", resource + sub, verb


def class_methods(path: Path, class_name: str) -> dict[str, set[tuple[str, str, str]]]:
    """Method name -> the (group, resource, verb) it needs, with those of the class's own
    methods it calls (`self.node_cordon(...)`)."""
    tree = ast.parse(path.read_text())
    consts = _module_constants(tree)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    direct, calls = {}, {}
    for fn in cls.body:
        if isinstance(fn, ast.FunctionDef):
            direct[fn.name] = {api for node in ast.walk(fn) if isinstance(node, ast.Call)
                               for api in [_api_call(node, consts)] if api}
            calls[fn.name] = {node.func.attr for node in ast.walk(fn)
                              if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                              and isinstance(node.func.value, ast.Name)
                              and node.func.value.id == "self"}
    out = {}
    for name in direct:
        needs, seen, todo = set(), set(), [name]
        while todo:
            method = todo.pop()
            if method in seen or method not in direct:
                continue
            seen.add(method)
            needs |= direct[method]
            todo.extend(calls[method])
        if needs:
            out[name] = needs
    return out


def client_methods() -> dict[str, set[tuple[str, str, str]]]:
    """KubeClient method name -> the (group, resource, verb) it needs."""
    return class_methods(CLIENT, "KubeClient")


def drain_methods() -> dict[str, set[tuple[str, str, str]]]:
    """DrainApi (kube/drain.py) method name -> the (group, resource, verb) it needs."""
    return class_methods(DRAIN, "DrainApi")


def drain_api_is_used() -> bool:
    """Whether agent code outside kube/drain.py imports it (the drain controller)."""
    for path in (REPO / "src/plumber_agent").rglob("*.py"):
        if path == DRAIN:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == DRAIN_MODULE:
                return True
            if isinstance(node, ast.Import) and any(a.name == DRAIN_MODULE for a in node.names):
                return True
    return False


def referenced_client_methods(methods: set[str], *, only: Path | None = None,
                              defined_in: Path = CLIENT) -> set[str]:
    """KubeClient (or DrainApi) methods referenced (called or passed as functions) by the
    agent: outside the file that defines them and the kubectl plugin (or, with `only`, in that
    one file)."""
    used = set()
    paths = [only] if only else (REPO / "src/plumber_agent").rglob("*.py")
    for path in paths:
        if only is None and path in (defined_in, PLUGIN):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in methods:
                used.add(node.attr)
    return used


def drain_needs() -> set[tuple[str, str, str]]:
    """What the drain's DrainApi methods the agent calls need. Until a drain controller
    imports kube/drain.py (issue 23's controller is built beside it), the whole DrainApi
    counts: its grants are in the role for that controller, which calls every method."""
    per_method = drain_methods()
    used = referenced_client_methods(set(per_method), defined_in=DRAIN) \
        if drain_api_is_used() else set(per_method)
    return set().union(*(per_method[m] for m in used)) if used else set()


def test_static_api_calls_equal_the_cluster_role():
    per_method = client_methods()
    assert per_method, "found no API calls in kube/client.py"
    used = referenced_client_methods(set(per_method))
    needed = set().union(*(per_method[m] for m in used)) if used else set()
    needed |= drain_needs()
    grants = granted()
    missing = sorted(needed - grants)
    extra = sorted(grants - needed)
    assert not missing, f"the agent calls these but the ClusterRole does not grant them: {missing}"
    assert not extra, (f"the ClusterRole grants these but no agent code path uses them: {extra} "
                       f"(agent uses: {sorted(used)})")


def test_static_plugin_calls_equal_the_viewer_role():
    """`kubectl plumber` needs exactly what the aggregated viewer ClusterRole grants."""
    per_method = client_methods()
    used = referenced_client_methods(set(per_method), only=PLUGIN)
    assert used, "the plugin calls no KubeClient method?"
    needed = set().union(*(per_method[m] for m in used))
    viewer = granted((VIEWER_ROLE,), ("ClusterRole",))
    assert needed == viewer, (f"plugin needs {sorted(needed - viewer)} not granted; "
                              f"granted but unused: {sorted(viewer - needed)}")
    assert all(verb in ("get", "list", "watch") for _, _, verb in viewer), "the viewer only reads"


def test_the_drain_needs_pods_evictions_and_node_patches_only():
    """The drain's grants, as derived from kube/drain.py: list the pods, create Evictions (so
    every budget is respected: never `delete pods`), read and patch the Node."""
    needs = set().union(*drain_methods().values())
    assert needs == {("", "pods", "list"), ("", "pods/eviction", "create"),
                     ("", "nodes", "get"), ("", "nodes", "patch")}
    assert drain_methods()["cordon"] == {("", "nodes", "get"), ("", "nodes", "patch")}
    assert ("", "pods", "delete") not in granted()


def test_no_wildcards_and_no_secrets_in_the_role():
    for group, resource, verb in granted():
        assert "*" not in (group, resource, verb)
        assert resource not in ("secrets", "pods/exec", "clusterroles", "clusterrolebindings")
        assert verb not in ("escalate", "bind", "impersonate", "deletecollection")


# --------------------------------------------------------------------------------------------
# dynamic: the agent against the fake API server

_PATH_RE = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)"
                      r"(?:/namespaces/[^/]+)?/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?"
                      r"(?:/(?P<sub>[^/]+))?$")
_METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def request_to_permission(method: str, path: str, query: dict, watch: bool) -> tuple[str, str, str]:
    match = _PATH_RE.match(path.split("?")[0])
    assert match, f"unexpected API path {path}"
    group = match.group("group") or ""
    resource = match.group("resource") + (f"/{match.group('sub')}" if match.group("sub") else "")
    if method == "GET":
        if watch or str(query.get("watch", "")).lower() in ("true", "1"):
            verb = "watch"
        else:
            verb = "get" if match.group("name") else "list"
    else:
        verb = _METHOD_VERBS[method]
    return group, resource, verb


def test_request_path_mapping():
    assert request_to_permission("GET", "/apis/plumber.k8s.pf9.io/v1/hostnetworktemplates",
                                 {"watch": "true"}, True) == (
        "plumber.k8s.pf9.io", "hostnetworktemplates", "watch")
    assert request_to_permission("PATCH", "/apis/plumber.k8s.pf9.io/v1/hostnetworks/n1/status",
                                 {}, False) == ("plumber.k8s.pf9.io", "hostnetworks/status", "patch")
    assert request_to_permission("POST", "/api/v1/namespaces/default/events", {}, False) == (
        "", "events", "create")
    assert request_to_permission("PATCH", "/apis/events.k8s.io/v1/namespaces/default/events/e",
                                 {}, False) == ("events.k8s.io", "events", "patch")
    assert request_to_permission("GET", "/api/v1/nodes/n1", {}, False) == ("", "nodes", "get")


@pytest.mark.privileged
def test_agent_requests_stay_within_the_cluster_role(tmp_path, node_ns, static_sysfs):
    from tests.support.agent_proc import agent_argv, agent_process
    from tests.support.cluster import ClusterFixture
    from tests.helpers.wait import wait_for
    with ClusterFixture(tmp_path) as cluster:
        argv = agent_argv(netns=node_ns, state_dir=tmp_path / "state", sysfs_root=static_sysfs,
                          kubeconfig=cluster.kubeconfig, node_name=cluster.node,
                          extra=("--no-monitor",))
        with agent_process(argv, tmp_path / "agent.log") as agent:
            cluster.put_template("t1", {"interfaceConfig": [{"name": "eth1", "mtu": 1400}]})
            wait_for(lambda: cluster.template_state("t1") == "Applied", timeout_s=60,
                     what="t1 Applied", on_timeout=agent.log_text)
            # The only agent is elected status writer and counts t1 on the template itself.
            wait_for(lambda: ((cluster.server.get("hostnetworktemplates", "t1") or {}).get(
                "status") or {}).get("phase") == "Available", timeout_s=60,
                what="t1 status Available", on_timeout=agent.log_text)
            cluster.put_template("t1", {"interfaceConfig": [{"name": "eth1", "mtu": 1300}]})
            wait_for(lambda: cluster.template_state("t1", generation=2) == "Applied", timeout_s=60,
                     what="t1 generation 2 Applied", on_timeout=agent.log_text)
            cluster.set_node_labels({"role": "x"})
            cluster.put_template("t2", {"nodeSelector": {"role": "x"},
                                        "interfaceConfig": [{"name": "eth2", "mtu": 1450}]})
            wait_for(lambda: cluster.template_state("t2") == "Applied", timeout_s=60, what="t2 Applied",
                     on_timeout=agent.log_text)
            cluster.delete_template("t1")
            cluster.delete_template("t2")
            wait_for(lambda: cluster.template_state("t2") is None, timeout_s=60, what="t2 gone from status",
                     on_timeout=agent.log_text)
            assert agent.alive(), agent.log_text()[-4000:]
        used = {request_to_permission(r.method, r.path, r.query, r.watch)
                for r in cluster.server.requests()}
    over = sorted(used - granted())
    assert not over, f"the agent made requests the ClusterRole does not allow: {over}"
    # Node-scoped writes only: every write names this node's HostNetwork, an Event, a Lease in
    # the agent's namespace (rollout slots, leader election) or, as the elected status writer,
    # a template's status.
    for r in cluster.server.writes():
        assert "/events" in r.path or f"/hostnetworks/{cluster.node}" in r.path or \
            r.path.endswith("/hostnetworks") or \
            r.path.startswith("/apis/coordination.k8s.io/v1/namespaces/plumber-system/leases") or \
            re.match(r"^/apis/plumber.k8s.pf9.io/v1/hostnetworktemplates/[^/]+/status$", r.path), \
            r.path
    assert any(r.path.endswith("/hostnetworktemplates/t1/status") for r in cluster.server.writes())
