"""The agent as a process against the fake API server, managing a throw-away namespace:
/healthz, /readyz and /metrics; applied with the right observedGeneration; an idle agent makes
zero API writes over many resyncs; SIGTERM drains and exits 0 (a dead thread making the
process exit non-zero is tested on the Supervisor in tests/unit/test_agent.py)."""
from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.fakeapi.server import HOSTNETWORKS, NODES, TEMPLATES, FakeApiServer
from tests.helpers.agent_env import agent_env
from tests.helpers.netns import ip_json, netns, privileged_skip_reason, veth_pair
from tests.helpers.ports import free_port
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]
NODE = "node-ops"
TIMEOUT_S = 60.0
# Passes without a write that mean the apply's writes have landed: at the 0.5 s resync, 2 s, past
# the status writer's 1 s coalescing of the template's status.
SETTLED_PASSES = 4


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


@pytest.fixture
def running_agent(tmp_path):
    reason = privileged_skip_reason()
    if reason:
        pytest.skip(reason)
    server = FakeApiServer(bookmark_interval_s=1.0)
    server.start()
    kubeconfig = server.kubeconfig(tmp_path / "kubeconfig")
    server.put_object(NODES, {"apiVersion": "v1", "kind": "Node",
                              "metadata": {"name": NODE, "labels": {"role": "worker"}}})
    (tmp_path / "sysfs").mkdir()
    with netns() as ns:
        veth_pair(ns, "eth1", "peer1")
        port = free_port()
        argv = [sys.executable, "-m", "plumber_agent", "--log-format", "text", "run",
                "--node-name", NODE, "--kubeconfig", str(kubeconfig), "--netns", ns,
                "--sysfs-root", str(tmp_path / "sysfs"), "--ovsdb", f"unix:{tmp_path}/no-ovs.sock",
                "--state-dir", str(tmp_path / "state"), "--metrics-addr", f"127.0.0.1:{port}",
                "--resync-period-s", "0.5"]
        log = open(tmp_path / "agent.log", "w")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=agent_env())
        try:
            yield server, ns, proc, f"http://127.0.0.1:{port}", tmp_path / "agent.log"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            log.close()
            server.stop()


def _template_state(server, name):
    hn = server.get(HOSTNETWORKS, NODE) or {}
    for entry in (hn.get("status") or {}).get("templates") or []:
        if entry["name"] == name:
            return entry
    return {}


def test_operations_idle_writes_and_sigterm(running_agent):
    server, ns, proc, base, log = running_agent
    wait_for(lambda: _get(base + "/readyz")[0] == 200, timeout_s=TIMEOUT_S, what="ready",
             interval_s=0.1)
    assert _get(base + "/healthz") == (200, "ok\n")

    server.put_object(TEMPLATES, {"apiVersion": "plumber.k8s.pf9.io/v1",
                                  "kind": "HostNetworkTemplate",
                                  "metadata": {"name": "mtu"},
                                  "spec": {"nodeSelector": {"role": "worker"},
                                           "interfaceConfig": [{"name": "eth1", "mtu": 1400}]}})
    wait_for(lambda: _template_state(server, "mtu").get("state") == "Applied", timeout_s=TIMEOUT_S,
             what="template applied", interval_s=0.1)
    assert _template_state(server, "mtu")["observedGeneration"] == 1
    assert ip_json(ns, "link", "show", "dev", "eth1")[0]["mtu"] == 1400
    hn = server.get(HOSTNETWORKS, NODE)
    assert hn["metadata"]["ownerReferences"][0]["kind"] == "Node"

    # Idle: many resyncs (0.5 s period) and bookmarks (1 s), not a single write.
    resyncs_wanted = 12

    def reconciles():
        text = _get(base + "/metrics")[1]
        line = next(row for row in text.splitlines()
                    if row.startswith("plumber_reconciles_total "))
        return float(line.split()[1])

    def quiet_for(passes: int) -> bool:
        """No write (but the status writer's Lease renewals) while the agent ran `passes`
        passes: what the apply wrote (status, its Event, the template's status) has landed."""
        writes, start = len(server.writes()), reconciles()
        wait_for(lambda: reconciles() >= start + passes, timeout_s=TIMEOUT_S, interval_s=0.1,
                 what=f"{passes} passes")
        return not [w for w in server.writes()[writes:]
                    if not w.path.endswith("/leases/plumber-status-writer")]
    wait_for(lambda: quiet_for(SETTLED_PASSES), timeout_s=TIMEOUT_S, what="the apply's writes landed")
    writes_before = len(server.writes())
    metrics_before = _get(base + "/metrics")[1]
    start = reconciles()
    wait_for(lambda: reconciles() >= start + resyncs_wanted, timeout_s=TIMEOUT_S, interval_s=0.2,
             what=f"{resyncs_wanted} idle resyncs")
    assert reconciles() >= start + resyncs_wanted
    # Not a single write, except the elected status writer renewing its Lease (one agent in the
    # fleet does that; here the only agent is the writer).
    idle_writes = [w.path for w in server.writes()[writes_before:]]
    assert [p for p in idle_writes if not p.endswith("/leases/plumber-status-writer")] == [], \
        idle_writes
    assert "plumber_status_writes_total" in metrics_before
    assert "plumber_queue_depth" in metrics_before and "plumber_watch_restarts_total" in metrics_before

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, Path(log).read_text()[-3000:]
