"""Operations surface: Prometheus text metrics and the /healthz, /readyz, /metrics endpoints.

Hand-rolled (a dozen counters do not justify a dependency); the registry is thread-safe and the
HTTP server runs in its own daemon thread.
"""
from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

log = logging.getLogger(__name__)

METRIC_HELP = {
    "plumber_reconciles_total": ("counter", "Reconcile passes run."),
    "plumber_reconcile_errors_total": ("counter", "Reconcile passes that ended with a failure."),
    "plumber_reconcile_duration_seconds_sum": ("counter", "Total time spent reconciling."),
    "plumber_reconcile_duration_seconds_count": ("counter", "Reconciles timed."),
    "plumber_host_actions_total": ("counter", "Host changes executed."),
    "plumber_drift_repairs_total": ("counter", "Host changes that repaired drift."),
    "plumber_status_writes_total": ("counter", "HostNetwork status writes."),
    "plumber_watch_restarts_total": ("counter", "Watch streams restarted (errors, 410, watchdog)."),
    "plumber_api_requests_total": ("counter", "Requests made to the Kubernetes API."),
    "plumber_api_throttled_requests_total": ("counter", "API requests the client-side rate limit delayed."),
    "plumber_api_throttled_seconds_total": ("counter", "Time API requests waited for the client-side rate limit."),
    "plumber_udev_events_total": ("counter", "PCI uevents about SR-IOV PFs/VFs that triggered a pass."),
    "plumber_udev_events_ignored_total": ("counter", "PCI uevents about other devices (ignored)."),
    "plumber_kernel_events_unmanaged_total": ("counter", "Kernel events about nothing a template "
                                              "manages or depends on (no pass of their own)."),
    "plumber_queue_depth": ("gauge", "Keys waiting in the work queue."),
    "plumber_templates_selected": ("gauge", "Templates selecting this node."),
}


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, float] = {name: 0.0 for name in METRIC_HELP}
        self._collectors: list[Callable[["Metrics"], None]] = []

    def inc(self, name: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0.0) + amount

    def set(self, name: str, value: float) -> None:
        with self._lock:
            self._values[name] = float(value)

    def get(self, name: str) -> float:
        with self._lock:
            return self._values.get(name, 0.0)

    def add_collector(self, collector: Callable[["Metrics"], None]) -> None:
        """Called before each scrape to refresh gauges owned elsewhere (queue depth, ...)."""
        self._collectors.append(collector)

    def render(self) -> str:
        for collector in self._collectors:
            try:
                collector(self)
            except Exception:  # a broken collector must not break the scrape
                log.exception("metrics collector failed")
        lines = []
        with self._lock:
            for name, value in sorted(self._values.items()):
                kind, text = METRIC_HELP.get(name, ("untyped", ""))
                base = name.removesuffix("_sum").removesuffix("_count")
                if not name.endswith(("_sum", "_count")):
                    lines.append(f"# HELP {name} {text}")
                    lines.append(f"# TYPE {name} {kind}")
                elif name.endswith("_sum"):
                    lines.append(f"# TYPE {base} summary")
                lines.append(f"{name} {value:g}")
        return "\n".join(lines) + "\n"


class OpsServer:
    """Serves /healthz (all threads alive), /readyz (synced and watching) and /metrics."""

    def __init__(self, addr: str, *, metrics: Metrics, healthy: Callable[[], bool],
                 ready: Callable[[], bool]) -> None:
        host, _, port = addr.rpartition(":")
        self.metrics, self.healthy, self.ready = metrics, healthy, ready
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                if self.path == "/metrics":
                    self._reply(200, outer.metrics.render(), "text/plain; version=0.0.4")
                elif self.path == "/healthz":
                    ok = outer.healthy()
                    self._reply(200 if ok else 503, "ok\n" if ok else "unhealthy\n")
                elif self.path == "/readyz":
                    ok = outer.ready()
                    self._reply(200 if ok else 503, "ok\n" if ok else "not ready\n")
                else:
                    self._reply(404, "not found\n")

            def _reply(self, code: int, body: str, ctype: str = "text/plain") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # probes every few seconds: keep logs quiet
                pass

        self._server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="ops-http",
                                        daemon=True)

    def start(self) -> "OpsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
