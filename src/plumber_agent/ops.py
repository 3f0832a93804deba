"""Operations surface: Prometheus text metrics and the /healthz, /readyz, /metrics endpoints.

Hand-rolled metrics (a few dozen series do not justify a dependency); the registry is
thread-safe. The text follows the exposition format 0.0.4 as prometheus_client's parser reads it
(tests/unit/test_ops.py): `# HELP` and `# TYPE` once per family, before its samples.

The server is built like a Kubernetes component's serving, at a bounded cost (README "Ops
endpoints"):
- one selector thread accepts connections and holds the idle ones (a socket each, no thread);
  each listener has a fixed pool of worker threads that read one request, answer it and close
  the connection (`Connection: close`), so N clients never cost N threads;
- a listener holds at most `max_connections`; one more closes its oldest idle connection
  (plumber_ops_connections_shed_total), so a flood of idle sockets costs what the cap does and a
  probe's fresh connection is still served; a connection that sends no request within
  `idle_timeout_s`, or not all of it within `request_timeout_s`, is closed;
- /metrics can be HTTPS with every request authenticated and authorized by the API server
  (`authorize`: TokenReview + SubjectAccessReview, kube/review.py), as controller-runtime's
  WithAuthenticationAndAuthorization; /healthz and /readyz never ask for credentials (kubelet's
  probes send none), like the always-allowed health paths of kube-scheduler's secure port.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import math
import queue
import selectors
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Callable, Iterable, Optional
from urllib.parse import urlsplit

from plumber_agent.errors import UsageError

log = logging.getLogger(__name__)

METRIC_HELP = {
    "plumber_reconciles_total": ("counter", "Reconcile passes run."),
    "plumber_reconcile_errors_total": ("counter", "Reconcile passes that ended with a failure."),
    # A summary without quantiles: its samples are the _sum and _count the reconciler adds to.
    "plumber_reconcile_duration_seconds": ("summary", "Time spent in reconcile passes."),
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
    "plumber_template_state": ("gauge", "1 for each template selecting this node, labelled with "
                                        "its state on this node (status.templates[].state)."),
    "plumber_last_reconcile_timestamp_seconds": ("gauge", "Unix time the last reconcile pass "
                                                          "ended (0: none yet)."),
    "plumber_rollbacks_total": ("counter", "Template changes rolled back because the API server "
                                           "stopped answering after them."),
    "plumber_events_dropped_total": ("counter", "Events dropped because the queue of Events "
                                                "waiting to be sent was full (a slow API server)."),
    "plumber_ops_connections_shed_total": ("counter", "Ops-endpoint connections closed because a "
                                                      "listener held its maximum."),
    # Labelled counters incremented by name with their labels (apierrors.metric_name): a
    # series exists once its first error happened.
    "plumber_api_errors_total": ("counter", "Failed Kubernetes API requests, by what the agent "
                                            "was doing (operation) and the error's class (reason)."),
    "plumber_leader_election_failures_total": ("counter", "Failures of the status writer's "
                                                          "leader election, by reason."),
}
# Families whose samples carry labels: set whole with Metrics.set_family (no sample until then).
LABELED_FAMILIES = frozenset({"plumber_template_state", "plumber_api_errors_total",
                              "plumber_leader_election_failures_total"})
_SUFFIXED_KINDS = {"summary": ("_sum", "_count"), "histogram": ("_sum", "_count", "_bucket")}


def _sample_names(name: str, kind: str) -> tuple[str, ...]:
    return tuple(name + suffix for suffix in _SUFFIXED_KINDS.get(kind, ("",)))


def _format_value(value: float) -> str:
    """Go's strconv for the exposition format: integers without an exponent (a timestamp in
    `%g` would lose its seconds), +Inf/-Inf/NaN spelled as Prometheus spells them."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, float] = {
            sample: 0.0 for name, (kind, _) in METRIC_HELP.items() if name not in LABELED_FAMILIES
            for sample in _sample_names(name, kind) if not sample.endswith("_bucket")}
        self._labeled: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
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

    def set_family(self, name: str, samples: Iterable[tuple[dict[str, str], float]]) -> None:
        """Replace every sample of a labelled family: a series no longer given (a template
        deleted, a state left) is gone from the next scrape instead of lingering."""
        series = {tuple(sorted(labels.items())): float(value) for labels, value in samples}
        with self._lock:
            self._labeled[name] = series

    def add_collector(self, collector: Callable[["Metrics"], None]) -> None:
        """Called before each scrape to refresh gauges owned elsewhere (queue depth, ...)."""
        self._collectors.append(collector)

    @staticmethod
    def _family_of(sample: str) -> str:
        sample = sample.split("{", 1)[0]  # a labelled sample inc'd by name: its family's name
        if sample in METRIC_HELP:
            return sample
        for kind, suffixes in _SUFFIXED_KINDS.items():
            for suffix in suffixes:
                base = sample.removesuffix(suffix)
                if base != sample and METRIC_HELP.get(base, ("",))[0] == kind:
                    return base
        return sample

    def render(self) -> str:
        for collector in self._collectors:
            try:
                collector(self)
            except Exception:  # a broken collector must not break the scrape
                log.exception("metrics collector failed")
        families: dict[str, list[str]] = {}
        with self._lock:
            for sample, value in sorted(self._values.items()):
                families.setdefault(self._family_of(sample), []).append(
                    f"{sample} {_format_value(value)}")
            for name, series in sorted(self._labeled.items()):
                lines = families.setdefault(name, [])
                for labels, value in sorted(series.items()):
                    text = ",".join(f'{key}="{_escape_label(val)}"' for key, val in labels)
                    lines.append(f"{name}{{{text}}} {_format_value(value)}")
        out = []
        for name in sorted(families):
            kind, text = METRIC_HELP.get(name, ("untyped", ""))
            if text:
                out.append(f"# HELP {name} {_escape_help(text)}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(families[name])
        return "\n".join(out) + "\n"


class Heartbeat:
    """The reconcile loop's pulse, for liveness: the loop beats on every turn, also while it
    waits idle for work (its queue wait is bounded), so a loop stuck in a pass or dead stops
    beating and /healthz fails after `stale_after_s`; a live thread that makes no progress is
    exactly what "a thread is alive" missed."""

    def __init__(self, monotonic: Callable[[], float], *, stale_after_s: float) -> None:
        self._monotonic = monotonic
        self.stale_after_s = stale_after_s
        self._last = monotonic()  # the loop gets stale_after_s to start (host discovery, ...)
        self._warned = False

    def beat(self) -> None:
        self._last = self._monotonic()
        self._warned = False

    def age_s(self) -> float:
        return self._monotonic() - self._last

    def fresh(self) -> bool:
        age_s = self.age_s()
        if age_s <= self.stale_after_s:
            return True
        if not self._warned:
            self._warned = True
            log.error("the reconcile loop made no progress for %.0f s (more than %g s): /healthz "
                      "fails so that kubelet restarts the agent", age_s, self.stale_after_s)
        return False


# ----------------------------------------------------------------------------------------------
# The server

DEFAULT_HEALTH_PORT = 10380
DEFAULT_METRICS_PORT = 10381
LOOPBACK = "127.0.0.1"
LISTEN_BACKLOG = 128
SELECT_POLL_S = 0.5
MAX_CONNECTIONS = 256
"""Per listener. An idle connection costs a socket object and a selector entry (under 1 KiB of
Python memory; its kernel buffers are not the agent's RSS): the cap bounds what any number of
clients can make the agent hold."""
WORKERS = 2
"""Per listener: a scrape renders in well under a millisecond, a probe is cheaper still."""
IDLE_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 5.0
"""Whole request (TLS handshake, request line and headers), and each write of the answer."""
MAX_REQUEST_HEAD_BYTES = 8192
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
METRICS_PATHS = HEALTH_PATHS | {"/metrics"}


@dataclass(frozen=True)
class AuthDecision:
    """What `authorize(token)` answers for a /metrics request: 200 lets it through, anything
    else is sent as is (401 no or bad token, 403 not allowed, 500 the API server failed)."""

    code: int
    message: str = ""


Authorizer = Callable[[Optional[str]], AuthDecision]


def parse_addr(addr: str, *, flag: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or :PORT (host 127.0.0.1: nothing is served beyond the node
    unless asked for)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError([f"{flag} {addr!r}: expected HOST:PORT, e.g. {LOOPBACK}:{DEFAULT_METRICS_PORT}"])
    host = host.strip("[]") or LOOPBACK
    return host, int(port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _bind(addr: str, *, flag: str) -> socket.socket:
    """A listening socket, or UsageError: one line saying what failed and what to do."""
    host, port = parse_addr(addr, flag=flag)
    sock = None
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
        return sock
    except OSError as exc:
        if sock is not None:
            sock.close()
        hint = {
            errno.EADDRINUSE: f"another process listens on port {port} (`ss -ltnp 'sport = :{port}'` "
                              f"shows which); give {flag} another port",
            errno.EACCES: "ports below 1024 need CAP_NET_BIND_SERVICE; use a higher port",
            errno.EADDRNOTAVAIL: "no interface of this host has that address",
        }.get(exc.errno, f"check {flag}")
        raise UsageError([f"{flag} {addr}: cannot listen: {exc.strerror or exc}; {hint}"]) from None


@dataclass(eq=False)
class _Listener:
    name: str
    sock: socket.socket
    paths: frozenset
    tls: Optional[ssl.SSLContext]
    authorize: Optional[Authorizer]
    max_connections: int
    work: "queue.Queue[Optional[socket.socket]]" = field(default_factory=queue.Queue)
    idle: dict = field(default_factory=dict)  # socket -> accepted at (monotonic), oldest first
    inflight: int = 0  # handed to the workers, not yet closed (under the server's lock)


class OpsServer:
    """Serves /healthz (`healthy()`), /readyz (`ready()`) and /metrics on `addr`, and only the
    first two on `health_addr` when given. With `tls` the `addr` listener is HTTPS; with
    `authorize` its /metrics needs a bearer token the authorizer lets through."""

    def __init__(self, addr: Optional[str], *, metrics: Metrics, healthy: Callable[[], bool],
                 ready: Callable[[], bool], health_addr: Optional[str] = None,
                 tls: Optional[ssl.SSLContext] = None, authorize: Optional[Authorizer] = None,
                 max_connections: int = MAX_CONNECTIONS, workers: int = WORKERS,
                 idle_timeout_s: float = IDLE_TIMEOUT_S,
                 request_timeout_s: float = REQUEST_TIMEOUT_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.metrics, self.healthy, self.ready = metrics, healthy, ready
        self.idle_timeout_s, self.request_timeout_s = idle_timeout_s, request_timeout_s
        self._monotonic = monotonic
        self._workers = workers
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listeners: list[_Listener] = []
        try:
            if addr:
                host, _ = parse_addr(addr, flag="--metrics-addr")
                if tls is None and not _is_loopback(host):
                    raise UsageError([
                        f"--metrics-addr {addr}: not a loopback address, and /metrics would be "
                        "open to the network without authentication; add --metrics-secure "
                        f"(HTTPS, TokenReview + SubjectAccessReview) or bind {LOOPBACK}"])
                self._listeners.append(_Listener(
                    "metrics", _bind(addr, flag="--metrics-addr"), METRICS_PATHS, tls, authorize,
                    max_connections))
            if health_addr:
                self._listeners.append(_Listener(
                    "health", _bind(health_addr, flag="--health-addr"), HEALTH_PATHS, None, None,
                    max_connections))
        except UsageError:
            self._close_listeners()
            raise
        self._selector = selectors.DefaultSelector()
        for listener in self._listeners:
            self._selector.register(listener.sock, selectors.EVENT_READ, listener)
        self._threads: list[threading.Thread] = [
            threading.Thread(target=self._loop, name="ops-accept", daemon=True)]
        for listener in self._listeners:
            self._threads += [threading.Thread(target=self._work, args=(listener,),
                                               name=f"ops-{listener.name}-{i}", daemon=True)
                              for i in range(workers)]

    @property
    def port(self) -> int:
        """The first listener's port (the metrics one when both are served)."""
        return self._listeners[0].sock.getsockname()[1]

    def ports(self) -> dict[str, int]:
        return {listener.name: listener.sock.getsockname()[1] for listener in self._listeners}

    def start(self) -> "OpsServer":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        for listener in self._listeners:
            for _ in range(self._workers):
                listener.work.put(None)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=REQUEST_TIMEOUT_S + 1)
        for listener in self._listeners:
            for conn in list(listener.idle):
                conn.close()
            listener.idle.clear()
        self._close_listeners()
        self._selector.close()

    def held_connections(self) -> int:
        """Connections held now, idle or being answered (for tests and the bound)."""
        with self._lock:
            return sum(len(listener.idle) + listener.inflight for listener in self._listeners)

    def _close_listeners(self) -> None:
        for listener in self._listeners:
            listener.sock.close()

    # -- the selector thread ------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._turn()
            except Exception:  # keep serving: a dead loop would fail every probe
                log.exception("ops server: selector loop")
                self._stopping.wait(SELECT_POLL_S)

    def _turn(self) -> None:
        """One select: accept, hand readable connections to the workers, expire idle ones."""
        for key, _ in self._selector.select(timeout=SELECT_POLL_S):
            if isinstance(key.data, _Listener):
                self._accept(key.data)
            else:  # an idle connection sent its request (or closed): a worker reads it
                conn, listener = key.fileobj, key.data[1]
                self._selector.unregister(conn)
                with self._lock:
                    del listener.idle[conn]
                    listener.inflight += 1
                listener.work.put(conn)
        self._expire_idle()

    def _accept(self, listener: _Listener) -> None:
        while True:
            try:
                conn, _ = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: try again on the next readiness
                log.warning("ops %s listener: accept failed: %s", listener.name, exc)
                return
            with self._lock:
                full = len(listener.idle) + listener.inflight >= listener.max_connections
                oldest = next(iter(listener.idle), None) if full else None
            if full:
                self.metrics.inc("plumber_ops_connections_shed_total")
                if oldest is None:  # every held connection is being answered: refuse this one
                    conn.close()
                    continue
                self._drop_idle(listener, oldest)
            conn.setblocking(False)
            with self._lock:
                listener.idle[conn] = self._monotonic()
            self._selector.register(conn, selectors.EVENT_READ, ("conn", listener))

    def _drop_idle(self, listener: _Listener, conn: socket.socket) -> None:
        self._selector.unregister(conn)
        with self._lock:
            del listener.idle[conn]
        conn.close()

    def _expire_idle(self) -> None:
        deadline = self._monotonic() - self.idle_timeout_s
        for listener in self._listeners:
            while True:
                with self._lock:
                    oldest = next(iter(listener.idle.items()), None)
                if oldest is None or oldest[1] > deadline:
                    break
                self._drop_idle(listener, oldest[0])

    # -- the workers --------------------------------------------------------------------------
    def _work(self, listener: _Listener) -> None:
        while True:
            conn = listener.work.get()
            if conn is None:
                return
            try:
                self._serve(listener, conn)
            except (OSError, ssl.SSLError, ValueError) as exc:  # a client gone, slow or not TLS
                log.debug("ops %s: connection dropped: %s", listener.name, exc)
            finally:
                conn.close()
                with self._lock:
                    listener.inflight -= 1

    def _serve(self, listener: _Listener, conn: socket.socket) -> None:
        conn.setblocking(True)
        conn.settimeout(self.request_timeout_s)
        deadline = self._monotonic() + self.request_timeout_s
        stream = conn
        if listener.tls is not None:
            stream = listener.tls.wrap_socket(conn, server_side=True)
        try:
            head = self._read_head(stream, deadline)
            if head is None:
                return
            code, body, ctype = self._answer(listener, head)
            self._reply(stream, code, body, ctype)
        finally:
            if stream is not conn:
                stream.close()

    def _read_head(self, stream: socket.socket, deadline: float) -> Optional[bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > MAX_REQUEST_HEAD_BYTES:
                self._reply(stream, 431, "request header fields too large\n")
                return None
            remaining_s = deadline - self._monotonic()
            if remaining_s <= 0:
                return None  # a slow client: the worker is freed, the connection closed
            stream.settimeout(remaining_s)
            chunk = stream.recv(4096)
            if not chunk:
                return None
            data += chunk
        stream.settimeout(self.request_timeout_s)
        return data.split(b"\r\n\r\n", 1)[0]

    def _answer(self, listener: _Listener, head: bytes) -> tuple[int, str, str]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, "bad request\n", "text/plain"
        method, target = parts[0], parts[1]
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        path = urlsplit(target).path
        if path not in listener.paths:
            return 404, "not found\n", "text/plain"
        if method != "GET":
            return 405, "method not allowed\n", "text/plain"
        if path == "/healthz":
            ok = self.healthy()
            return (200, "ok\n", "text/plain") if ok else (503, "unhealthy\n", "text/plain")
        if path == "/readyz":
            ok = self.ready()
            return (200, "ok\n", "text/plain") if ok else (503, "not ready\n", "text/plain")
        if listener.authorize is not None:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            decision = listener.authorize(token.strip() if scheme.lower() == "bearer" else None)
            if decision.code != 200:
                return decision.code, decision.message + "\n", "text/plain"
        return 200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8"

    @staticmethod
    def _reply(stream: socket.socket, code: int, body: str, ctype: str = "text/plain") -> None:
        data = body.encode()
        phrase = HTTPStatus(code).phrase
        head = (f"HTTP/1.1 {code} {phrase}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
        stream.sendall(head + data)
