"""B21: what idle connections to the ops port cost (issue 21), beside the server before it.

Two processes that serve /healthz on a free loopback port, each importing plumber_agent.ops
(so their starting memory matches): the baseline is the server the agent had before issue 21,
http.server's ThreadingHTTPServer with a daemon thread per connection; the other is ops.OpsServer
(a selector thread, two workers, at most MAX_CONNECTIONS held, the oldest idle shed). The bench
opens BENCH_B21_CONNECTIONS idle TCP connections to each, waits until the server has accepted
them all, and reads the resident memory it gained; then a /healthz must still answer.
The test in tests/security/test_ops_connections.py asserts the bound on a whole agent.
"""
from __future__ import annotations

import socket
import sys
import time
import urllib.request

from common import Row, env_int, log, proc_stat, spawn, stop

BOUND_MIB = 8.0
SETTLE_S = 3.0  # the baseline starts a thread per accepted connection; let it catch up
READY_TIMEOUT_S = 30.0

_BASELINE = r'''
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import plumber_agent.ops  # noqa: F401  (the same imports as the other process)

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        data = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

class Server(ThreadingHTTPServer):
    request_queue_size = 1024  # the old server listened with 5: the bench would wait on SYN retries

server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
server.daemon_threads = True
server.serve_forever()
'''

_OPS = r'''
import sys, threading
from plumber_agent.ops import Metrics, OpsServer
OpsServer(None, health_addr=f"127.0.0.1:{sys.argv[1]}", metrics=Metrics(), healthy=lambda: True,
          ready=lambda: True).start()
threading.Event().wait()
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            return resp.status == 200
    except OSError:
        return False


def _measure(code: str, connections: int) -> tuple[float, bool]:
    """(MiB of RSS gained with `connections` idle clients, /healthz answered meanwhile)."""
    port = _free_port()
    proc = spawn([sys.executable, "-c", code, str(port)])
    clients: list[socket.socket] = []
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _healthz(port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)
        before = proc_stat(proc.pid)[1]
        for _ in range(connections):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        time.sleep(SETTLE_S)
        answered = _healthz(port)
        grown_mib = (proc_stat(proc.pid)[1] - before) / 2**20
        return grown_mib, answered
    finally:
        for client in clients:
            client.close()
        stop(proc)


def run_bench() -> list[Row]:
    connections = env_int("BENCH_B21_CONNECTIONS", 4000)
    baseline_mib, _ = _measure(_BASELINE, connections)
    log(f"B21 baseline (a thread per connection): +{baseline_mib:.1f} MiB")
    ops_mib, answered = _measure(_OPS, connections)
    log(f"B21 ops server: +{ops_mib:.2f} MiB, /healthz answered: {answered}")
    return [Row(id="B21", measure=f"RSS gained with {connections:,} idle connections to the "
                                  "ops port", value=ops_mib, unit="MiB", baseline=baseline_mib,
                baseline_label="thread per connection (before issue 21)",
                target=f"< {BOUND_MIB:g} MiB and /healthz answers",
                ok=ops_mib < BOUND_MIB and answered)]
