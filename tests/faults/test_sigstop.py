"""The API server process frozen with SIGSTOP for longer than the watch inactivity watchdog.

Invariants: the agent neither hangs nor crashes while the server is frozen (its watches are
declared dead by the watchdog, /readyz says not ready, /healthz stays ok); after SIGCONT it
reconnects by itself and a template created then is applied; nothing owned by someone else is
touched meanwhile.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.agent_env import REPO_ROOT, agent_env
from tests.helpers.netns import ip_json, netns, privileged_skip_reason, veth_pair
from tests.helpers.ports import free_port
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.fault, pytest.mark.privileged]
NODE = "node-stop"
WATCHDOG_S = 4  # the agent's --watch-inactivity-timeout-s here
BOUND_S = 60.0
TOKEN = "stop-token"


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _wait(predicate, what: str, log: Path) -> None:
    wait_for(predicate, timeout_s=BOUND_S, interval_s=0.2, what=what,
             on_timeout=lambda: log.read_text()[-3000:])


def _api(base: str, method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(base + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {TOKEN}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"{}")


def test_frozen_api_server_is_survived(tmp_path):
    reason = privileged_skip_reason()
    if reason:
        pytest.skip(reason)
    kubeconfig = tmp_path / "kubeconfig"
    env = agent_env()
    server = subprocess.Popen([sys.executable, "-m", "tests.fakeapi", "--kubeconfig", str(kubeconfig),
                               "--token", TOKEN, "--node", NODE, "--bookmark-interval", "1"],
                              cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    agent = None
    log_path = tmp_path / "agent.log"
    try:
        base = server.stdout.readline().strip()
        assert base.startswith("http"), base
        with netns() as ns:
            veth_pair(ns, "eth1", "peer1")
            port = free_port()
            (tmp_path / "sysfs").mkdir()
            with open(log_path, "w") as log:
                agent = subprocess.Popen(
                    [sys.executable, "-m", "plumber_agent", "--log-format", "text", "run",
                     "--node-name", NODE, "--kubeconfig", str(kubeconfig), "--netns", ns,
                     "--sysfs-root", str(tmp_path / "sysfs"), "--state-dir", str(tmp_path / "state"),
                     "--metrics-addr", f"127.0.0.1:{port}",
                     "--watch-inactivity-timeout-s", str(WATCHDOG_S)],
                    env=env, stdout=log, stderr=subprocess.STDOUT)
            ops = f"http://127.0.0.1:{port}"
            _wait(lambda: _status(ops + "/readyz") == 200, "ready", log_path)

            server.send_signal(signal.SIGSTOP)
            try:
                _wait(lambda: _status(ops + "/readyz") == 503, "not ready while frozen", log_path)
                time.sleep(WATCHDOG_S)  # well past the watchdog: the agent keeps running
                assert agent.poll() is None, log_path.read_text()[-3000:]
                assert _status(ops + "/healthz") == 200
            finally:
                server.send_signal(signal.SIGCONT)

            _wait(lambda: _status(ops + "/readyz") == 200, "ready again after SIGCONT", log_path)
            _api(base, "POST", "/apis/plumber.k8s.pf9.io/v1/hostnetworktemplates", {
                "apiVersion": "plumber.k8s.pf9.io/v1", "kind": "HostNetworkTemplate",
                "metadata": {"name": "after-stall"},
                "spec": {"interfaceConfig": [{"name": "eth1", "mtu": 1300}]}})
            _wait(lambda: ip_json(ns, "link", "show", "dev", "eth1")[0]["mtu"] == 1300,
                  "template created after the stall applied", log_path)
            assert ip_json(ns, "link", "show", "dev", "peer1")[0]["mtu"] == 1500  # not ours
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(30) == 0, log_path.read_text()[-3000:]
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
        server.send_signal(signal.SIGCONT)
        server.terminate()
        server.wait(10)
