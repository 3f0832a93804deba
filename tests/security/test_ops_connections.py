"""4,000 idle connections to a real agent's ops ports cost it a bounded amount of memory, and its
probes still answer (issue 21: a thread per connection held 136 MiB for them).

The bound: each listener holds at most ops.MAX_CONNECTIONS connections (the oldest idle one is
shed for a new one), each a socket object and a selector entry, well under 1 KiB of Python
memory; IDLE_RSS_GROWTH_BOUND_MIB leaves room for the allocator's arenas around that. The
kernel's socket buffers are not the agent's RSS."""
from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from plumber_agent.ops import MAX_CONNECTIONS
from tests.support.agent_proc import agent_argv, agent_process
from tests.helpers.ports import free_port
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.privileged

IDLE_CONNECTIONS = 4000
IDLE_RSS_GROWTH_BOUND_MIB = 8.0
TIMEOUT_S = 60.0


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")


def test_idle_connections_stay_within_the_memory_bound(tmp_path, node_ns, static_sysfs):
    templates = tmp_path / "templates"
    templates.mkdir()
    health, metrics = free_port(), free_port()
    argv = agent_argv(netns=node_ns, state_dir=tmp_path / "state", sysfs_root=static_sysfs,
                      templates=templates, output=tmp_path / "hostnetwork.yaml",
                      extra=("--no-monitor", "--allow-empty-templates",
                             "--health-addr", f"127.0.0.1:{health}",
                             "--metrics-addr", f"127.0.0.1:{metrics}"))
    clients: list[socket.socket] = []
    with agent_process(argv, tmp_path / "agent.log") as agent:
        wait_for(lambda: _get(f"http://127.0.0.1:{health}/readyz")[0] == 200, timeout_s=TIMEOUT_S,
                 what="agent ready", retry_on=(AssertionError, OSError),
                 on_timeout=agent.log_text)
        for _ in range(3):  # warm the answer paths before the baseline
            assert _get(f"http://127.0.0.1:{metrics}/metrics")[0] == 200
        before_mib = _rss_mib(agent.pid)
        try:
            for i in range(IDLE_CONNECTIONS):
                port = health if i % 2 else metrics
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S))
            # Every connection was accepted (the shed count says so), and the probes answer.
            wait_for(lambda: _metric(_get(f"http://127.0.0.1:{metrics}/metrics")[1],
                                     "plumber_ops_connections_shed_total")
                     >= IDLE_CONNECTIONS - 2 * MAX_CONNECTIONS, timeout_s=TIMEOUT_S,
                     what="all connections accepted", on_timeout=agent.log_text)
            assert _get(f"http://127.0.0.1:{health}/healthz") == (200, "ok\n")
            assert _get(f"http://127.0.0.1:{health}/readyz") == (200, "ok\n")
            growth_mib = _rss_mib(agent.pid) - before_mib
            print(f"RSS growth with {IDLE_CONNECTIONS} idle connections: {growth_mib:.2f} MiB "
                  f"(bound {IDLE_RSS_GROWTH_BOUND_MIB} MiB)")
            assert growth_mib < IDLE_RSS_GROWTH_BOUND_MIB
            assert agent.alive(), agent.log_text()[-3000:]
        finally:
            for client in clients:
                client.close()
