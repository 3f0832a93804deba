"""The optional monitoring component (manifests/monitoring/, a kustomize Component): rendered with
the install, its Prometheus Operator objects validated as the custom objects they are
(monitoring_crds.py), its Service and ServiceMonitor pointing at the secured metrics port the
component turns on, its scraper ClusterRole granting exactly what the agent's
SubjectAccessReview asks, and its alerts naming only metrics the agent exports."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from plumber_agent.cli import build_parser
from plumber_agent.kube.review import METRICS_PATH, METRICS_VERB
from plumber_agent.models.status import TemplateState
from plumber_agent.ops import METRIC_HELP
from tests.fakeapi.rbac import Rbac, service_account_user
from tests.manifests.conftest import MANIFESTS
from tests.manifests.k8s_schema import object_errors
from tests.manifests.monitoring_crds import SCHEMAS

KUBECTL_TIMEOUT_S = 60
COMPONENT = MANIFESTS / "monitoring"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> list[dict]:
    """`kubectl kustomize` of a kustomization with the install as resource and the component."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: cannot render the kustomization")
    workdir = tmp_path_factory.mktemp("with-monitoring")
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(MANIFESTS, workdir)],
        "components": [os.path.relpath(COMPONENT, workdir)]}))
    result = subprocess.run([kubectl, "kustomize", str(workdir)], capture_output=True, text=True,
                            timeout=KUBECTL_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return doc


def test_the_component_is_a_component():
    kustomization = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())
    assert (kustomization["apiVersion"], kustomization["kind"]) == (
        "kustomize.config.k8s.io/v1alpha1", "Component")


def test_the_agent_serves_secured_metrics_on_the_node(rendered):
    container = _one(rendered, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(container["args"])  # the agent's own parser: last one wins
    assert (args.metrics_addr, args.metrics_secure) == ("0.0.0.0:10381", True)
    assert args.health_addr == "127.0.0.1:10380"  # the probes' port is untouched
    port = int(args.metrics_addr.rsplit(":", 1)[1])
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]


def test_service_and_service_monitor_reach_that_port(rendered):
    pod = _one(rendered, "DaemonSet")["spec"]["template"]
    service = _one(rendered, "Service", "plumber-agent-metrics")
    monitor = _one(rendered, "ServiceMonitor")
    assert service["metadata"]["namespace"] == monitor["metadata"]["namespace"] == "plumber-system"
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == 10381
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["scheme"]) == (port["name"], METRICS_PATH,
                                                                         "https")
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"


@pytest.mark.parametrize("kind", ["ServiceMonitor", "PrometheusRule"])
def test_operator_objects_are_valid_custom_objects(rendered, kind):
    doc = _one(rendered, kind)
    schema = SCHEMAS[(doc["apiVersion"], kind)]
    assert [str(e) for e in object_errors(schema, doc, namespaced=True)] == []


def test_the_scraper_role_grants_what_the_agent_asks(rendered):
    """Evaluated with the fake API server's port of the RBAC authorizer (tests/fakeapi/rbac.py)
    for the SubjectAccessReview kube/review.py sends."""
    role = _one(rendered, "ClusterRole", "plumber-metrics-reader")
    assert role["rules"] == [{"nonResourceURLs": [METRICS_PATH], "verbs": [METRICS_VERB]}]
    binding = _one(rendered, "ClusterRoleBinding", "plumber-metrics-reader")
    rbac = Rbac()
    rbac.add(role, binding)
    (subject,) = binding["subjects"]
    user = service_account_user(subject["namespace"], subject["name"])
    review = {"user": user["username"], "groups": user["groups"],
              "nonResourceAttributes": {"path": METRICS_PATH, "verb": METRICS_VERB}}
    assert rbac.authorize(review)[0] is True
    assert rbac.authorize({**review, "nonResourceAttributes": {"path": "/metrics",
                                                              "verb": "post"}})[0] is False
    other = service_account_user("default", "default")
    assert rbac.authorize({**review, "user": other["username"], "groups": other["groups"]})[0] is False


def test_alerts_cover_the_issue_and_name_only_exported_metrics(rendered):
    rule = _one(rendered, "PrometheusRule")
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert {r["alert"] for r in rules} == {"PlumberTemplateDegraded", "PlumberTemplateConflict",
                                           "PlumberAgentNotReconciling", "PlumberRollback"}
    states = {str(s) for s in TemplateState}
    for alert in rules:
        for name in re.findall(r"\bplumber_[a-z_]+", alert["expr"]):
            assert name in METRIC_HELP, (alert["alert"], name)
        for quoted in re.findall(r'state=~?"([^"]+)"', alert["expr"]):
            assert set(quoted.split("|")) <= states, (alert["alert"], quoted)
        assert alert["labels"]["severity"] in ("warning", "critical")
