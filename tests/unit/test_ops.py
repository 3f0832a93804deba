"""The ops surface (ops.py): metrics text a Prometheus parser accepts, liveness from the reconcile
loop's heartbeat, readiness after the first pass, a bounded server and a clear bind error."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from plumber_agent.clock import FakeClock
from plumber_agent.errors import UsageError
from plumber_agent.ops import LABELED_FAMILIES, METRIC_HELP, Heartbeat, Metrics, OpsServer
from tests.helpers.agent_env import REPO_ROOT, agent_env

HTTP_TIMEOUT_S = 10.0


def _families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_every_family_parses_with_its_type_before_its_samples():
    metrics = Metrics()
    metrics.inc("plumber_reconcile_duration_seconds_sum", 0.25)
    metrics.inc("plumber_reconcile_duration_seconds_count")
    metrics.set("plumber_last_reconcile_timestamp_seconds", 1_765_000_123.5)
    text = metrics.render()
    families = _families(text)
    summary = families["plumber_reconcile_duration_seconds"]
    assert summary.type == "summary"
    assert {s.name: s.value for s in summary.samples} == {
        "plumber_reconcile_duration_seconds_sum": 0.25,
        "plumber_reconcile_duration_seconds_count": 1.0}
    assert families["plumber_reconciles"].type == "counter"  # the parser drops _total
    # Every family of the registry is there, typed and described.
    for name, (kind, _) in METRIC_HELP.items():
        if name in LABELED_FAMILIES:
            continue  # no template yet, no API error yet: no sample
        parsed = families[name.removesuffix("_total")]
        assert parsed.type == kind and parsed.documentation, name
    # HELP and TYPE come once per family, before its first sample.
    lines = text.splitlines()
    for name in ("plumber_reconcile_duration_seconds", "plumber_queue_depth"):
        type_at = lines.index(next(line for line in lines if line.startswith(f"# TYPE {name} ")))
        first_sample = next(i for i, line in enumerate(lines)
                            if line.startswith(name) and not line.startswith("#"))
        assert type_at < first_sample
        assert sum(line.startswith(f"# TYPE {name} ") for line in lines) == 1


def test_a_timestamp_keeps_its_seconds():
    metrics = Metrics()
    metrics.set("plumber_last_reconcile_timestamp_seconds", 1_765_000_123)
    (sample,) = _families(metrics.render())["plumber_last_reconcile_timestamp_seconds"].samples
    assert sample.value == 1_765_000_123


def test_template_state_is_one_series_per_template_and_replaced_whole():
    metrics = Metrics()
    metrics.set_family("plumber_template_state", [
        ({"template": "mtu", "state": "Applied"}, 1), ({"template": 'odd"name\\x', "state": "Failed"}, 1)])
    family = _families(metrics.render())["plumber_template_state"]
    assert family.type == "gauge"
    assert {(s.labels["template"], s.labels["state"]) for s in family.samples} == {
        ("mtu", "Applied"), ('odd"name\\x', "Failed")}
    metrics.set_family("plumber_template_state", [({"template": "mtu", "state": "Conflict"}, 1)])
    family = _families(metrics.render())["plumber_template_state"]
    assert [(s.labels, s.value) for s in family.samples] == [
        ({"template": "mtu", "state": "Conflict"}, 1.0)]


def test_an_unknown_metric_is_untyped_but_still_parses():
    metrics = Metrics()
    metrics.inc("plumber_something_new_total", 3)
    family = _families(metrics.render())["plumber_something_new_total"]
    assert family.type == "unknown" and family.samples[0].value == 3


def test_heartbeat_goes_stale_without_beats_and_fresh_with_one():
    clock = FakeClock()
    heartbeat = Heartbeat(clock.monotonic, stale_after_s=180)
    clock.advance(179)
    assert heartbeat.fresh()
    clock.advance(2)
    assert not heartbeat.fresh()
    heartbeat.beat()
    assert heartbeat.fresh() and heartbeat.age_s() == 0


# ----------------------------------------------------------------------------------------------
# the server


def _get(url: str, headers: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def state():
    return {"healthy": True, "ready": False}


@pytest.fixture
def server(state):
    ops = OpsServer("127.0.0.1:0", health_addr="127.0.0.1:0", metrics=Metrics(),
                    healthy=lambda: state["healthy"], ready=lambda: state["ready"]).start()
    yield ops
    ops.stop()


def test_health_endpoints_follow_their_callables(server, state):
    ports = server.ports()
    for port in ports.values():
        base = f"http://127.0.0.1:{port}"
        assert _get(base + "/healthz") == (200, "ok\n")
        assert _get(base + "/readyz") == (503, "not ready\n")
    state.update(healthy=False, ready=True)
    health = f"http://127.0.0.1:{ports['health']}"
    assert _get(health + "/healthz") == (503, "unhealthy\n")
    assert _get(health + "/readyz") == (200, "ok\n")


def test_the_health_port_serves_no_metrics(server):
    ports = server.ports()
    assert _get(f"http://127.0.0.1:{ports['health']}/metrics")[0] == 404
    status, text = _get(f"http://127.0.0.1:{ports['metrics']}/metrics")
    assert status == 200 and "plumber_reconciles_total" in text


def test_idle_connections_are_capped_and_a_probe_still_answers(state):
    """Far more idle sockets than the cap: the oldest are shed, the server holds at most the
    cap, and a fresh probe is served (the agent-process version measures the memory:
    tests/security/test_ops_connections.py)."""
    cap = 16
    ops = OpsServer(None, health_addr="127.0.0.1:0", metrics=Metrics(), max_connections=cap,
                    healthy=lambda: True, ready=lambda: True).start()
    port = ops.ports()["health"]
    clients = []
    try:
        for _ in range(200):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT_S))
        assert _get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
        assert ops.held_connections() <= cap
        assert ops.metrics.get("plumber_ops_connections_shed_total") >= 200 - cap
    finally:
        for client in clients:
            client.close()
        ops.stop()


def test_a_slow_request_frees_its_worker(state):
    """A client that sends half a request is closed after request_timeout_s; the probes behind
    it are answered meanwhile by the other worker, then by both."""
    ops = OpsServer(None, health_addr="127.0.0.1:0", metrics=Metrics(), request_timeout_s=0.5,
                    healthy=lambda: True, ready=lambda: True).start()
    port = ops.ports()["health"]
    try:
        slow = socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT_S)
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert _get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
        slow.settimeout(HTTP_TIMEOUT_S)
        assert slow.recv(100) == b""  # closed by the server, unanswered
        slow.close()
    finally:
        ops.stop()


def test_a_busy_port_is_one_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(UsageError) as caught:
            OpsServer(f"127.0.0.1:{port}", metrics=Metrics(), healthy=bool, ready=bool)
        assert caught.value.problems == [
            f"--metrics-addr 127.0.0.1:{port}: cannot listen: Address already in use; another "
            f"process listens on port {port} (`ss -ltnp 'sport = :{port}'` shows which); give "
            "--metrics-addr another port"]


def test_the_agent_says_so_in_one_line_and_exits_1(tmp_path):
    """The whole command: no traceback, no silent exit, nothing started."""
    templates = tmp_path / "templates"
    templates.mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "plumber_agent", "--log-format", "text", "run",
             "--templates", str(templates), "--allow-empty-templates",
             "--state-dir", str(tmp_path / "state"),
             "--health-addr", f"127.0.0.1:{port}", "--no-monitor"],
            capture_output=True, text=True, timeout=60, env=agent_env(), cwd=str(REPO_ROOT),
            stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"plumber-agent run: error: --health-addr 127.0.0.1:{port}: cannot listen: Address "
        f"already in use; another process listens on port {port} (`ss -ltnp 'sport = :{port}'` "
        "shows which); give --health-addr another port")


def test_secure_metrics_need_the_cluster(tmp_path):
    """--metrics-secure asks the API server who a scraper is: local mode has none to ask."""
    templates = tmp_path / "templates"
    templates.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "plumber_agent", "--log-format", "text", "run",
         "--templates", str(templates), "--allow-empty-templates",
         "--state-dir", str(tmp_path / "state"),
         "--metrics-addr", "127.0.0.1:0", "--metrics-secure", "--no-monitor"],
        capture_output=True, text=True, timeout=60, env=agent_env(), cwd=str(REPO_ROOT),
        stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "plumber-agent run: error: --metrics-secure needs the cluster (TokenReview and "
        "SubjectAccessReview); local mode (--templates) has none")


def test_metrics_beyond_loopback_need_the_secure_port():
    with pytest.raises(UsageError) as caught:
        OpsServer("0.0.0.0:0", metrics=Metrics(), healthy=bool, ready=bool)
    assert "add --metrics-secure" in caught.value.problems[0]


def test_a_bad_address_is_refused():
    with pytest.raises(UsageError) as caught:
        OpsServer("localhost", metrics=Metrics(), healthy=bool, ready=bool)
    assert caught.value.problems == ["--metrics-addr 'localhost': expected HOST:PORT, e.g. "
                                     "127.0.0.1:10381"]


def test_a_port_without_host_binds_loopback():
    ops = OpsServer(":0", metrics=Metrics(), healthy=bool, ready=bool)
    try:
        assert ops._listeners[0].sock.getsockname()[0] == "127.0.0.1"
    finally:
        ops.stop()


def test_readiness_waits_for_the_first_pass_and_liveness_for_the_heartbeat():
    """The agent's worker loop (agent._worker) beats the heartbeat while idle, and sets
    `synced` only after a pass ran; the ready/healthy callables read those."""
    from plumber_agent.agent import _worker
    from plumber_agent.reconciler import SyncOutcome
    from plumber_agent.workqueue import WorkQueue
    from plumber_agent.clock import RealClock

    class Passes:
        """A reconciler seam: the first pass has no list yet (not ran), the next runs."""
        clock = RealClock()
        last_discovery_started = float("-inf")

        def __init__(self):
            self.calls = 0
            self.second = threading.Event()

        def sync(self):
            self.calls += 1
            if self.calls == 2:
                self.synced_before = synced.is_set()
                self.second.set()
            return SyncOutcome(ran=self.calls >= 2)

    clock = FakeClock()
    heartbeat = Heartbeat(clock.monotonic, stale_after_s=10)
    clock.advance(11)
    assert not heartbeat.fresh()
    synced, stop = threading.Event(), threading.Event()
    queue = WorkQueue(RealClock())
    queue.add("node")
    passes = Passes()
    metrics = Metrics()
    worker = threading.Thread(target=_worker(queue, passes, metrics, heartbeat=heartbeat,
                                             synced=synced), args=(stop,), daemon=True)
    worker.start()
    try:
        assert passes.second.wait(HTTP_TIMEOUT_S)
        assert synced.wait(HTTP_TIMEOUT_S)
        assert passes.synced_before is False  # a pass that did not run is no sync
        assert heartbeat.fresh()  # beaten by the loop, not by the test
        assert metrics.get("plumber_last_reconcile_timestamp_seconds") > 0
    finally:
        stop.set()
        worker.join(timeout=HTTP_TIMEOUT_S)


def test_liveness_must_outlast_the_longest_wait_in_a_pass(capsys):
    """A pass may wait --api-loss-rollback-s for the API server: a shorter liveness window
    would have kubelet restart an agent in the middle of that wait."""
    from plumber_agent.cli import main
    with pytest.raises(SystemExit) as exited:
        main(["run", "--templates", "unused", "--liveness-stale-s", "30"])
    assert exited.value.code == 2
    assert ("--liveness-stale-s (30) must be more than --api-loss-rollback-s (60)"
            in capsys.readouterr().err)


def test_samples_incremented_with_labels_join_their_family():
    """apierrors' counters are inc'd by name with labels: one HELP/TYPE, then every series."""
    metrics = Metrics()
    metrics.inc('plumber_api_errors_total{operation="leader_election",reason="Forbidden"}')
    metrics.inc('plumber_api_errors_total{operation="status_write",reason="Conflict"}', 2)
    metrics.inc('plumber_leader_election_failures_total{reason="Forbidden"}')
    families = {f.name: f for f in text_string_to_metric_families(metrics.render())}
    errors = families["plumber_api_errors"]
    assert errors.type == "counter" and errors.documentation
    assert sorted((s.labels["operation"], s.value) for s in errors.samples
                  if s.name.endswith("_total")) == [("leader_election", 1.0), ("status_write", 2.0)]
    assert families["plumber_leader_election_failures"].type == "counter"
