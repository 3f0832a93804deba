"""A real cluster-mode agent with --metrics-secure: its self-signed HTTPS port refuses a scrape
without a token (401) and with a token RBAC does not allow (403), serves one the shipped
plumber-metrics-reader ClusterRole allows (200, text prometheus_client parses, the template's
state in it), and keeps the probes' port plain and open (kubelet sends no token)."""
from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from plumber_agent.sources import load_yaml_documents
from tests.support.agent_proc import agent_argv, agent_process
from tests.support.cluster import ClusterFixture
from tests.helpers.ports import free_port
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.privileged

REPO = Path(__file__).resolve().parents[2]
READER = REPO / "manifests/monitoring/metrics_reader_cluster_role.yaml"
TIMEOUT_S = 60.0


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # self-signed at start
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10,
                                    context=context) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_secured_metrics_of_a_real_agent(tmp_path, node_ns, static_sysfs):
    health, metrics = free_port(), free_port()
    with ClusterFixture(tmp_path) as cluster:
        cluster.server.add_service_account_token("scraper", "monitoring", "prometheus-k8s")
        cluster.server.add_service_account_token("stranger", "default", "default")
        cluster.server.add_rbac(*load_yaml_documents(READER.read_text()))
        argv = agent_argv(netns=node_ns, state_dir=tmp_path / "state", sysfs_root=static_sysfs,
                          kubeconfig=cluster.kubeconfig, node_name=cluster.node,
                          extra=("--no-monitor", "--health-addr", f"127.0.0.1:{health}",
                                 "--metrics-addr", f"127.0.0.1:{metrics}", "--metrics-secure"))
        with agent_process(argv, tmp_path / "agent.log") as agent:
            cluster.put_template("t1", {"interfaceConfig": [{"name": "eth1", "mtu": 1400}]})
            wait_for(lambda: cluster.template_state("t1") == "Applied", timeout_s=TIMEOUT_S,
                     what="t1 Applied", on_timeout=agent.log_text)
            wait_for(lambda: _get(f"http://127.0.0.1:{health}/readyz") == (200, "ok\n"),
                     timeout_s=TIMEOUT_S, what="ready", retry_on=(AssertionError, OSError),
                     on_timeout=agent.log_text)
            base = f"https://127.0.0.1:{metrics}"
            assert _get(base + "/metrics") == (401, "Unauthorized\n")
            assert _get(base + "/metrics", "stranger") == (
                403, "Authorization denied for user system:serviceaccount:default:default\n")
            status, text = _get(base + "/metrics", "scraper")
            assert status == 200, agent.log_text()[-3000:]
            families = {f.name: f for f in text_string_to_metric_families(text)}
            states = {(s.labels["template"], s.labels["state"], s.value)
                      for s in families["plumber_template_state"].samples}
            assert states == {("t1", "Applied", 1.0)}
            assert families["plumber_last_reconcile_timestamp_seconds"].samples[0].value > 0
            assert _get(base + "/healthz") == (200, "ok\n")
            assert _get(f"http://127.0.0.1:{health}/metrics")[0] == 404
            assert agent.alive(), agent.log_text()[-3000:]
        reviews = [r.path for r in cluster.server.requests(path_contains="review")]
        assert "/apis/authentication.k8s.io/v1/tokenreviews" in reviews
        assert "/apis/authorization.k8s.io/v1/subjectaccessreviews" in reviews
