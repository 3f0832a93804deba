"""A small Kubernetes API server over real HTTP, so the agent's kube layer is tested with the real
`kubernetes` client against real semantics instead of mocks.

What it implements (the parts the agent relies on, and the ways real servers misbehave):

- cluster-scoped custom resources `hostnetworktemplates` and `hostnetworks`
  (plumber.k8s.pf9.io/v1), core/v1 `nodes`, and namespaced `events` (core/v1 and events.k8s.io/v1);
- list with resourceVersion (410 below the compaction floor for Exact lists, or for any list
  when `list_too_old_410` is on), fieldSelector `metadata.name=`/`metadata.namespace=`, simple
  equality labelSelector;
- watch as chunked JSON lines: initial ADDED events when no resourceVersion is given, replay
  from a resourceVersion, BOOKMARKs when `allowWatchBookmarks` (every `bookmark_interval_s`),
  `timeoutSeconds`, and ERROR 410 when the start is below the compaction floor;
- POST (409 AlreadyExists), PUT with resourceVersion precondition (409 Conflict), PATCH with
  merge patch (RFC 7386) and JSON patch (RFC 6902); strategic merge patch is refused with 415
  on custom resources (as the real server does) and treated as a merge patch on built-ins;
- `/status` isolation: writes to the main resource keep the old status, writes to /status
  keep the old spec and metadata; a spec change bumps metadata.generation;
- uid, creationTimestamp, generation and a global resourceVersion counter (a string);
- bearer-token check (401) on every path, token changeable at runtime (rotation);
- what `kubectl get` needs (printing.py): legacy API discovery (/api, /apis, ...) with the
  CRDs' shortNames and categories, and meta.k8s.io/v1 Table output built from their
  additionalPrinterColumns; an optional HTTPS listener (tls.py), because kubectl sends the
  kubeconfig's token only over TLS;
- faults at runtime: stalled streams, dropped streams, garbage lines, the next N requests
  failing (429 + Retry-After, 500, ...), a CRD not installed (404), compaction, expiring open
  watches with ERROR 410;
- a request log so tests count requests and writes.
"""
from __future__ import annotations

import bisect
import copy
import datetime
import json
import re
import base64
import select
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

import yaml

from tests.fakeapi import printing

GROUP = "plumber.k8s.pf9.io"
VERSION = "v1"
TEMPLATES = "hostnetworktemplates"
HOSTNETWORKS = "hostnetworks"
NODES = "nodes"
EVENTS = "events"

# How often a stream loop wakes to check faults, timeouts and client disconnects.
STREAM_POLL_S = 0.02
# Default bookmark interval: the real API server sends one about every minute; tests shorten it.
DEFAULT_BOOKMARK_INTERVAL_S = 60.0
# Longest watch when the client gives no timeoutSeconds (the real server picks 30-60 min).
DEFAULT_MAX_WATCH_S = 1800.0

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class ResourceType:
    plural: str
    kind: str
    api_version: str
    namespaced: bool
    has_status: bool       # has a /status subresource
    tracks_generation: bool
    custom: bool           # a CRD (strategic merge patch refused, can be "not installed")


RESOURCE_TYPES = {
    TEMPLATES: ResourceType(TEMPLATES, "HostNetworkTemplate", f"{GROUP}/{VERSION}", False,
                            True, True, True),
    HOSTNETWORKS: ResourceType(HOSTNETWORKS, "HostNetwork", f"{GROUP}/{VERSION}", False,
                               True, True, True),
    NODES: ResourceType(NODES, "Node", "v1", False, True, False, False),
    EVENTS: ResourceType(EVENTS, "Event", "v1", True, False, False, False),
}


@dataclass
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    time: float
    status: int = 0
    watch: bool = False
    content_type: str = ""
    body_bytes: int = 0


@dataclass
class _Failure:
    remaining: int
    code: int
    retry_after: Optional[int]
    method: Optional[str]
    path_contains: Optional[str]


@dataclass
class _Stream:
    """One open watch, as the server sees it."""

    resource: str
    peer: str
    garbage: list[str] = field(default_factory=list)
    expire: bool = False
    drop: bool = False
    stalled_now: bool = False


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, headers: Optional[dict] = None):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.headers = headers or {}


def _clone(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, scalars); 3x faster than copy.deepcopy, which
    made every write of a 300 KB HostNetwork cost the fake server ~50 ms (bench B2)."""
    kind = type(value)
    if kind is dict:
        return {key: _clone(item) for key, item in value.items()}
    if kind is list:
        return [_clone(item) for item in value]
    if kind in (str, int, float, bool) or value is None:
        return value
    return copy.deepcopy(value)


def status_object(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, anything else
    (lists included) replaces wholesale."""
    if not isinstance(patch, dict):
        return _clone(patch)
    result = _clone(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer_parts(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer {pointer!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]


def _index(part: str) -> int:
    """A JSON pointer array index (digits only, as RFC 6901 says; no negatives)."""
    if not part.isdigit() or (part != "0" and part.startswith("0")):
        raise ApiError(422, "Invalid", f"invalid array index {part!r}")
    return int(part)


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, test (enough for the client's needs)."""
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
    doc = _clone(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ApiError(400, "BadRequest", f"invalid JSON patch operation {op!r}")
        parts = _pointer_parts(op["path"])
        if not parts:
            raise ApiError(422, "Invalid", "cannot patch the document root")
        parent = doc
        try:
            for part in parts[:-1]:
                parent = parent[_index(part)] if isinstance(parent, list) \
                    else parent.get(part)
                if parent is None:
                    raise ApiError(422, "Invalid", f"path {op['path']} does not exist")
        except (IndexError, AttributeError):
            raise ApiError(422, "Invalid", f"path {op['path']} does not exist") from None
        last = parts[-1]
        kind = op["op"]
        if kind == "test":
            try:
                current = parent[_index(last)] if isinstance(parent, list) \
                    else parent.get(last)
            except IndexError:
                raise ApiError(422, "Invalid", f"path {op['path']} does not exist") from None
            if current != op.get("value"):
                raise ApiError(422, "Invalid", f"test failed at {op['path']}")
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-" and kind == "add":
                    parent.append(op.get("value"))
                elif kind == "add":
                    index = _index(last)
                    if index > len(parent):
                        raise ApiError(422, "Invalid", f"index out of range at {op['path']}")
                    parent.insert(index, op.get("value"))
                else:
                    try:
                        parent[_index(last)] = op.get("value")
                    except IndexError:
                        raise ApiError(422, "Invalid",
                                       f"path {op['path']} does not exist") from None
            else:
                if kind == "replace" and last not in parent:
                    raise ApiError(422, "Invalid", f"path {op['path']} does not exist")
                parent[last] = op.get("value")
        elif kind == "remove":
            try:
                if isinstance(parent, list):
                    del parent[_index(last)]
                else:
                    del parent[last]
            except (KeyError, IndexError):
                raise ApiError(422, "Invalid", f"path {op['path']} does not exist") from None
        else:
            raise ApiError(422, "Invalid", f"unsupported JSON patch op {kind!r}")
    return doc


def _now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_label_selector(selector: str):
    """Equality-based selectors: `a=b`, `a==b`, `a!=b`, `a`, `!a`, comma-separated."""
    terms = []
    for raw in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in raw:
            key, value = raw.split("!=", 1)
            terms.append(("ne", key.strip(), value.strip()))
        elif "==" in raw or "=" in raw:
            key, value = re.split("==?", raw, maxsplit=1)
            terms.append(("eq", key.strip(), value.strip()))
        elif raw.startswith("!"):
            terms.append(("absent", raw[1:].strip(), None))
        else:
            terms.append(("exists", raw, None))
    return terms


def _labels_match(terms, labels: dict) -> bool:
    for op, key, value in terms:
        if op == "eq" and labels.get(key) != value:
            return False
        if op == "ne" and labels.get(key) == value:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "absent" and key in labels:
            return False
    return True


def _parse_field_selector(selector: str) -> dict[str, str]:
    fields = {}
    for raw in filter(None, (t.strip() for t in selector.split(","))):
        key, sep, value = raw.partition("=")
        key = key.rstrip("=")
        value = value.lstrip("=")
        if not sep or key not in ("metadata.name", "metadata.namespace"):
            raise ApiError(400, "BadRequest",
                           f'"{raw}" is not a known field selector: only "metadata.name", '
                           '"metadata.namespace"')
        fields[key] = value
    return fields


class FakeApiServer:
    """The fake API server. `start()` -> base URL; everything else is thread-safe."""

    def __init__(self, *, token: Optional[str] = "test-token",
                 bookmark_interval_s: float = DEFAULT_BOOKMARK_INTERVAL_S,
                 host: str = "127.0.0.1", port: int = 0, tls: bool = False):
        self._lock = threading.Condition()
        self._objects: dict[str, dict[tuple[str, str], dict]] = {r: {} for r in RESOURCE_TYPES}
        self._rv = 1
        # The change log watchers replay from: (rv, resource, type, object snapshot).
        self._log: list[tuple[int, str, str, dict]] = []
        self.compaction_floor = 0
        self.token = token
        self.bookmark_interval_s = bookmark_interval_s
        self.max_watch_s = DEFAULT_MAX_WATCH_S
        self.list_too_old_410 = False
        self._stall = False
        self._failures: list[_Failure] = []
        self._crds_missing: set[str] = set()
        self._streams: list[_Stream] = []
        self._connections: set[socket.socket] = set()
        self.request_log: list[RequestRecord] = []
        self._host, self._port = host, port
        self._tls = tls
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        # An extra HTTPS listener on the same state, for kubectl (see start_tls_listener).
        self._tls_httpd: Optional[ThreadingHTTPServer] = None
        self._tls_thread: Optional[threading.Thread] = None
        self._ca_pem: Optional[bytes] = None
        self._ssl_context: Optional[ssl.SSLContext] = None
        self._stopping = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> str:
        self._httpd, self._thread = self._listen(self._port, tls=self._tls)
        return self.url

    def start_tls_listener(self) -> str:
        """Also serve HTTPS (same objects, auth and faults) on a free port; returns its URL.

        For kubectl, which sends the kubeconfig's credentials only over TLS, next to clients
        that already use the plain-http URL. Idempotent. Raises tls.TlsUnavailable without
        openssl.
        """
        if self._tls:
            return self.url
        if self._tls_httpd is None:
            self._tls_httpd, self._tls_thread = self._listen(0, tls=True)
        return self._url_of(self._tls_httpd, tls=True)

    def _listen(self, port: int, *, tls: bool):
        server = self

        class Handler(_Handler):
            api = server

        httpd = ThreadingHTTPServer((self._host, port), Handler)
        httpd.daemon_threads = True
        if tls:
            if self._ssl_context is None:
                from tests.fakeapi.tls import self_signed_context

                self._ssl_context, self._ca_pem = self_signed_context()
            # The handshake happens lazily in the handler thread, so one slow client cannot
            # block the accept loop.
            httpd.socket = self._ssl_context.wrap_socket(
                httpd.socket, server_side=True, do_handshake_on_connect=False)
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                  name="fakeapi-tls" if tls else "fakeapi", daemon=True)
        thread.start()
        return httpd, thread

    @staticmethod
    def _url_of(httpd: ThreadingHTTPServer, *, tls: bool) -> str:
        host, port = httpd.server_address[:2]
        return f"{'https' if tls else 'http'}://{host}:{port}"

    @property
    def url(self) -> str:
        assert self._httpd is not None, "not started"
        return self._url_of(self._httpd, tls=self._tls)

    @property
    def ca_pem(self) -> Optional[bytes]:
        """The self-signed certificate of the HTTPS listener (None before one started)."""
        return self._ca_pem

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()
        for httpd in (self._httpd, self._tls_httpd):
            if httpd is not None:
                httpd.shutdown()
                httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # keep-alive connections would otherwise outlive the server
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in (self._thread, self._tls_thread):
            if thread is not None:
                thread.join(timeout=5)

    def __enter__(self) -> "FakeApiServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def kubeconfig(self, path, *, url: Optional[str] = None) -> str:
        """Write a kubeconfig pointing at this server (or `url`, one of its listeners) with the
        current token; an https URL carries the listener's certificate. Returns the path."""
        url = url or self.url
        user: dict = {"token": self.token} if self.token else {}
        cluster: dict = {"server": url}
        if url.startswith("https://"):
            assert self._ca_pem is not None, "no HTTPS listener started"
            cluster["certificate-authority-data"] = base64.b64encode(self._ca_pem).decode()
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(config, handle)
        return str(path)

    def kubectl_kubeconfig(self, path) -> str:
        """A kubeconfig kubectl can use: over HTTPS (started on demand), since kubectl drops
        the token on plain http. Returns the path."""
        return self.kubeconfig(path, url=self.start_tls_listener())

    # -- faults ---------------------------------------------------------------------------
    def set_token(self, token: Optional[str]) -> None:
        """Rotate the accepted bearer token (None disables the check)."""
        with self._lock:
            self.token = token

    def stall_streams(self, stalled: bool = True) -> None:
        """Open and new watches send nothing (no events, no bookmarks) but stay open."""
        with self._lock:
            self._stall = stalled
            self._lock.notify_all()

    def drop_streams(self) -> int:
        """Close every open watch abruptly (no final chunk); returns how many."""
        with self._lock:
            for stream in self._streams:
                stream.drop = True
            self._lock.notify_all()
            return len(self._streams)

    def inject_garbage(self, lines: Optional[list[str]] = None) -> int:
        """Every open watch writes these lines next (default: a blank line and non-JSON)."""
        lines = lines if lines is not None else ["", "this is not json", '{"type": "ADDED"']
        with self._lock:
            for stream in self._streams:
                stream.garbage.extend(lines)
            self._lock.notify_all()
            return len(self._streams)

    def expire_streams(self) -> int:
        """Every open watch gets an ERROR 410 event and ends (even a stalled one)."""
        with self._lock:
            for stream in self._streams:
                stream.expire = True
            self._lock.notify_all()
            return len(self._streams)

    def fail_next(self, count: int, code: int = 429, *, retry_after: Optional[int] = None,
                  method: Optional[str] = None, path_contains: Optional[str] = None) -> None:
        """The next `count` matching requests fail with `code` (and a Retry-After header)."""
        with self._lock:
            self._failures.append(_Failure(count, code, retry_after, method, path_contains))

    def set_crd_installed(self, plural: str, installed: bool) -> None:
        """A missing CRD answers 404 on every path under it, like a real server."""
        with self._lock:
            if installed:
                self._crds_missing.discard(plural)
            else:
                self._crds_missing.add(plural)

    def compact(self) -> str:
        """Compact history now: watches or Exact lists from older versions get 410."""
        with self._lock:
            # Open watches keep streaming what they have not delivered yet, as on a real
            # server; only new watches (and Exact lists) from below the floor get 410.
            self.compaction_floor = self._rv
            return str(self.compaction_floor)

    # -- inspection -----------------------------------------------------------------------
    @property
    def resource_version(self) -> str:
        with self._lock:
            return str(self._rv)

    def open_streams(self, resource: Optional[str] = None) -> int:
        with self._lock:
            return sum(1 for s in self._streams if resource in (None, s.resource))

    def stalled_streams(self) -> int:
        with self._lock:
            return sum(1 for s in self._streams if s.stalled_now)

    def requests(self, *, method: Optional[str] = None, path_contains: Optional[str] = None,
                 watch: Optional[bool] = None) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.request_log
                    if (method is None or r.method == method)
                    and (path_contains is None or path_contains in r.path)
                    and (watch is None or r.watch == watch)]

    def writes(self, path_contains: Optional[str] = None) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.request_log if r.method in WRITE_METHODS
                    and (path_contains is None or path_contains in r.path)]

    def get(self, resource: str, name: str, namespace: str = "") -> Optional[dict]:
        with self._lock:
            obj = self._objects[resource].get((namespace, name))
            return _clone(obj) if obj is not None else None

    def list(self, resource: str) -> list[dict]:
        with self._lock:
            return [_clone(o) for _, o in sorted(self._objects[resource].items())]

    # -- admin writes (bypass auth, faults and strategies; still versioned and watched) ----
    def put_object(self, resource: str, obj: dict) -> dict:
        """Create or overwrite an object as an administrator would (status kept as given)."""
        rtype = RESOURCE_TYPES[resource]
        with self._lock:
            obj = _clone(obj)
            meta = obj.setdefault("metadata", {})
            key = (meta.get("namespace", "") if rtype.namespaced else "", meta["name"])
            old = self._objects[resource].get(key)
            if old is None:
                self._fill_new_meta(rtype, obj)
                return _clone(self._commit(resource, key, "ADDED", obj))
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            if rtype.tracks_generation:
                meta["generation"] = old["metadata"].get("generation", 1) + (
                    1 if _spec_of(obj) != _spec_of(old) else 0)
            return _clone(self._commit(resource, key, "MODIFIED", obj))

    def delete_object(self, resource: str, name: str, namespace: str = "") -> bool:
        with self._lock:
            key = (namespace, name)
            if key not in self._objects[resource]:
                return False
            self._delete_locked(resource, key)
            return True

    # -- internals (all under self._lock) -------------------------------------------------
    def _fill_new_meta(self, rtype: ResourceType, obj: dict) -> None:
        meta = obj["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now_rfc3339()
        if rtype.tracks_generation:
            meta["generation"] = 1
        obj["apiVersion"] = obj.get("apiVersion") or rtype.api_version
        obj["kind"] = obj.get("kind") or rtype.kind

    def _commit(self, resource: str, key, event_type: str, obj: dict) -> dict:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[resource][key] = obj
        self._log.append((self._rv, resource, event_type, obj))
        self._lock.notify_all()
        return obj

    def _delete_locked(self, resource: str, key) -> dict:
        obj = _clone(self._objects[resource].pop(key))
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._log.append((self._rv, resource, "DELETED", obj))
        self._lock.notify_all()
        return obj

    def _take_failure(self, method: str, path: str) -> Optional[_Failure]:
        for failure in self._failures:
            if failure.remaining <= 0:
                continue
            if failure.method and failure.method != method:
                continue
            if failure.path_contains and failure.path_contains not in path:
                continue
            failure.remaining -= 1
            return failure
        return None


def _spec_of(obj: dict) -> dict:
    """Everything but metadata and status: what a generation counts changes of."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


_ROUTES = [
    (re.compile(r"^/apis/" + re.escape(GROUP) + r"/v1/(?P<plural>hostnetworktemplates|hostnetworks)"
                r"(?:/(?P<name>[^/]+)(?:/(?P<sub>status))?)?$"), None),
    (re.compile(r"^/api/v1/(?P<plural>nodes)(?:/(?P<name>[^/]+)(?:/(?P<sub>status))?)?$"), None),
    (re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<plural>events)(?:/(?P<name>[^/]+))?$"),
     None),
    (re.compile(r"^/apis/events\.k8s\.io/v1/namespaces/(?P<ns>[^/]+)/(?P<plural>events)"
                r"(?:/(?P<name>[^/]+))?$"), "events.k8s.io/v1"),
    (re.compile(r"^/api/v1/(?P<plural>events)$"), None),
]


class _Handler(BaseHTTPRequestHandler):
    api: FakeApiServer
    protocol_version = "HTTP/1.1"
    server_version = "fakeapi/1"
    # Headers and body go out as separate writes; without TCP_NODELAY every small response
    # waits ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True

    def setup(self):
        super().setup()
        with self.api._lock:
            self.api._connections.add(self.connection)

    def finish(self):
        with self.api._lock:
            self.api._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format, *args):  # noqa: A002 - quiet; the request log is enough
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -- plumbing -------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        api = self.api
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        is_watch = method == "GET" and query.get("watch", "").lower() in ("true", "1")
        record = RequestRecord(method, parts.path, query, time.time(), watch=is_watch)
        with api._lock:
            api.request_log.append(record)
        body = self._read_body()
        record.content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        record.body_bytes = len(body or b"")
        try:
            self._check_auth()
            with api._lock:
                failure = api._take_failure(method, parts.path)
            if failure is not None:
                headers = {}
                if failure.retry_after is not None:
                    headers["Retry-After"] = str(failure.retry_after)
                raise ApiError(failure.code, _reason_for(failure.code),
                               "injected failure", headers)
            route = self._route(parts.path)
            if route is None:
                document = self._discovery(method, parts.path)
                if document is None:
                    raise ApiError(404, "NotFound",
                                   "the server could not find the requested resource")
                record.status = 200
                self._send_json(200, document)
                return
            rtype, namespace, name, sub, api_version = route
            if rtype.custom and rtype.plural in api._crds_missing:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if is_watch:
                record.status = 200
                self._watch(rtype, namespace, name, query)
                return
            status, payload = self._handle(method, rtype, namespace, name, sub, api_version,
                                           query, body)
            if method == "GET" and printing.wants_table(self.headers.get("Accept") or ""):
                payload = printing.to_table(rtype.plural, payload,
                                            include_object=query.get("includeObject", "Partial"))
            record.status = status
            self._send_json(status, payload)
        except ApiError as exc:
            record.status = exc.code
            self._send_json(exc.code, status_object(exc.code, exc.reason, exc.message),
                            exc.headers)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _discovery(self, method: str, path: str) -> Optional[dict]:
        if method != "GET":
            return None
        with self.api._lock:
            missing = frozenset(self.api._crds_missing)
        host, port = self.server.server_address[:2]
        return printing.discovery(path, missing=missing, server_address=f"{host}:{port}")

    def _read_body(self) -> Optional[bytes]:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _check_auth(self) -> None:
        expected = self.api.token
        if expected is None:
            return
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != expected:
            raise ApiError(401, "Unauthorized", "Unauthorized")

    def _route(self, path: str):
        for pattern, api_version in _ROUTES:
            match = pattern.match(path)
            if match:
                groups = match.groupdict()
                rtype = RESOURCE_TYPES[groups["plural"]]
                namespace = groups.get("ns") or ""
                return (rtype, namespace, groups.get("name"), groups.get("sub"),
                        api_version or rtype.api_version)
        return None

    def _send_json(self, status: int, payload: Any, headers: Optional[dict] = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    # -- REST semantics -------------------------------------------------------------------
    def _handle(self, method, rtype, namespace, name, sub, api_version, query, body):
        api = self.api
        key = (namespace, name)
        if sub and method in ("POST", "DELETE"):
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on {sub}")
        with api._lock:
            objects = api._objects[rtype.plural]
            if method == "GET" and name is None:
                return 200, self._list(rtype, namespace, query)
            if method == "GET":
                obj = objects.get(key)
                if obj is None:
                    raise _not_found(rtype, name)
                return 200, obj  # stored objects are never changed in place
            if method == "POST":
                return 201, self._create(rtype, namespace, api_version, _decode(body))
            if name is None:
                raise ApiError(405, "MethodNotAllowed", f"{method} needs a name")
            old = objects.get(key)
            if method == "DELETE":
                if old is None:
                    raise _not_found(rtype, name)
                return 200, api._delete_locked(rtype.plural, key)
            if old is None:
                raise _not_found(rtype, name)
            if method == "PUT":
                new = _decode(body)
                if not isinstance(new, dict):
                    raise ApiError(400, "BadRequest", "body must be an object")
                sent_rv = (new.get("metadata") or {}).get("resourceVersion")
                if not sent_rv:
                    raise ApiError(422, "Invalid", "metadata.resourceVersion: Invalid value: "
                                   "0x0: must be specified for an update")
            else:  # PATCH
                new = self._apply_patch(rtype, old, body)
                sent_rv = (new.get("metadata") or {}).get("resourceVersion")
                if sent_rv == old["metadata"]["resourceVersion"]:
                    sent_rv = None  # unchanged by the patch: no precondition
            if sent_rv is not None and sent_rv != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict",
                               f'Operation cannot be fulfilled on {rtype.plural} "{name}": the '
                               "object has been modified; please apply your changes to the "
                               "latest version and try again")
            if (new.get("metadata") or {}).get("name", name) != name:
                raise ApiError(400, "BadRequest", "the name of the object does not match")
            updated = self._update_strategy(rtype, old, new, sub == "status")
            if updated == old:
                return 200, old  # no-op writes do not bump the version
            return 200, api._commit(rtype.plural, key, "MODIFIED", updated)

    def _list(self, rtype, namespace, query):
        api = self.api
        rv = query.get("resourceVersion", "")
        if rv not in ("", "0"):
            if not rv.isdigit():
                raise ApiError(400, "BadRequest", f"invalid resource version {rv!r}")
            if int(rv) > api._rv:
                raise ApiError(504, "Timeout", f"Too large resource version: {rv}, "
                               f"current resource version: {api._rv}")
            exact = query.get("resourceVersionMatch") == "Exact"
            if int(rv) < api.compaction_floor and (exact or api.list_too_old_410):
                raise ApiError(410, "Expired", f"too old resource version: {rv} "
                               f"({api.compaction_floor})")
        items = [_clone(obj) for obj in self._selected(rtype, namespace, query)]
        return {"apiVersion": rtype.api_version, "kind": rtype.kind + "List",
                "metadata": {"resourceVersion": str(api._rv)}, "items": items}

    def _selected(self, rtype, namespace, query):
        fields = _parse_field_selector(query.get("fieldSelector", ""))
        labels = _parse_label_selector(query.get("labelSelector", ""))
        for (ns, name), obj in sorted(self.api._objects[rtype.plural].items()):
            if _matches(obj, ns, name, namespace, fields, labels):
                yield obj

    def _create(self, rtype, namespace, api_version, obj):
        api = self.api
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "body must be an object")
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", "metadata.name: Required value: name is required")
        if rtype.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise ApiError(400, "BadRequest", "the namespace of the object does not match")
            meta["namespace"] = namespace
        key = (namespace, meta["name"])
        if key in api._objects[rtype.plural]:
            raise ApiError(409, "AlreadyExists",
                           f'{rtype.plural} "{meta["name"]}" already exists')
        meta.pop("resourceVersion", None)
        if rtype.custom and rtype.has_status:
            obj.pop("status", None)  # status subresource: create ignores status
        api._fill_new_meta(rtype, obj)
        obj["apiVersion"] = api_version
        return api._commit(rtype.plural, key, "ADDED", obj)

    def _apply_patch(self, rtype, old, body):
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        patch = _decode(body)
        if content_type == "application/merge-patch+json":
            return merge_patch(old, patch)
        if content_type == "application/json-patch+json":
            return json_patch(old, patch)
        if content_type == "application/strategic-merge-patch+json":
            if rtype.custom:
                raise ApiError(415, "UnsupportedMediaType", "strategic merge patch is not "
                               "supported for custom resources; use a merge patch")
            return merge_patch(old, patch)  # close enough for built-ins' maps
        raise ApiError(415, "UnsupportedMediaType",
                       f"the body of the request was in an unknown format: {content_type}")

    def _update_strategy(self, rtype, old, new, status_write):
        if status_write:
            # Only status may change; spec and metadata (labels included) are the old ones.
            result = {key: _clone(value) for key, value in old.items() if key != "status"}
            if "status" in new:
                result["status"] = new["status"]  # new is already a copy
            return result
        new = _clone(new)
        meta = new.setdefault("metadata", {})
        old_meta = old["metadata"]
        for field_name in ("uid", "creationTimestamp", "resourceVersion", "generation",
                           "namespace", "name"):
            if field_name in old_meta:
                meta[field_name] = old_meta[field_name]
        if rtype.has_status:  # main-resource writes ignore status
            if "status" in old:
                new["status"] = _clone(old["status"])
            else:
                new.pop("status", None)
        new["apiVersion"] = old.get("apiVersion")
        new["kind"] = old.get("kind")
        if rtype.tracks_generation and _spec_of(new) != _spec_of(old):
            meta["generation"] = old_meta.get("generation", 1) + 1
        return new

    # -- watch ----------------------------------------------------------------------------
    def _watch(self, rtype, namespace, name, query) -> None:
        api = self.api
        fields = _parse_field_selector(query.get("fieldSelector", ""))
        if name:
            fields["metadata.name"] = name
        labels = _parse_label_selector(query.get("labelSelector", ""))
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        timeout_s = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else \
            api.max_watch_s
        start_rv = query.get("resourceVersion", "")
        if start_rv not in ("", "0") and not start_rv.isdigit():
            raise ApiError(400, "BadRequest", f"invalid resource version {start_rv!r}")

        stream = _Stream(rtype.plural, str(self.client_address))
        pending: list[str] = []
        with api._lock:
            if start_rv in ("", "0"):
                cursor = api._rv
                for (ns, obj_name), obj in sorted(api._objects[rtype.plural].items()):
                    if _matches(obj, ns, obj_name, namespace, fields, labels):
                        pending.append(json.dumps({"type": "ADDED", "object": obj}))
            elif int(start_rv) < api.compaction_floor:
                cursor = None
                pending.append(json.dumps({"type": "ERROR", "object": status_object(
                    410, "Expired", f"too old resource version: {start_rv} "
                    f"({api.compaction_floor})")}))
            else:
                cursor = int(start_rv)
            api._streams.append(stream)

        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        clean_end = True
        try:
            if cursor is None:
                self._write_lines(pending)
                return
            clean_end = self._stream_loop(stream, rtype, namespace, fields, labels, bookmarks,
                                          timeout_s, cursor, pending)
        except (BrokenPipeError, ConnectionResetError, OSError):
            clean_end = False
        finally:
            with api._lock:
                if stream in api._streams:
                    api._streams.remove(stream)
            if clean_end:
                try:
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except OSError:
                    pass
            else:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _stream_loop(self, stream, rtype, namespace, fields, labels, bookmarks, timeout_s,
                     cursor, pending) -> bool:
        """Serve one watch; returns True for a clean end (timeout), False to drop it."""
        api = self.api
        deadline = time.monotonic() + timeout_s
        next_bookmark = time.monotonic() + api.bookmark_interval_s
        while True:
            out: list[str] = []
            with api._lock:
                if api._stopping.is_set() or stream.drop:
                    return False
                if stream.expire:
                    out.append(json.dumps({"type": "ERROR", "object": status_object(
                        410, "Expired", "too old resource version")}))
                    pending = []
                    self._write_lines(out)
                    return True
                stream.stalled_now = api._stall
                if not api._stall:
                    out.extend(pending)
                    pending = []
                    out.extend(stream.garbage)
                    stream.garbage.clear()
                    start = bisect.bisect_right(api._log, cursor, key=lambda entry: entry[0])
                    for rv, resource, event_type, obj in api._log[start:]:
                        if resource != rtype.plural:
                            continue
                        meta = obj["metadata"]
                        if _matches(obj, meta.get("namespace", ""), meta["name"], namespace,
                                    fields, labels):
                            out.append(json.dumps({"type": event_type, "object": obj}))
                    cursor = api._rv
                    now = time.monotonic()
                    if bookmarks and now >= next_bookmark:
                        out.append(json.dumps({"type": "BOOKMARK", "object": {
                            "kind": rtype.kind, "apiVersion": rtype.api_version,
                            "metadata": {"resourceVersion": str(cursor)}}}))
                        next_bookmark = now + api.bookmark_interval_s
                if not out:
                    if not api._stall and time.monotonic() >= deadline:
                        return True
                    api._lock.wait(STREAM_POLL_S)
            if out:
                self._write_lines(out)
            elif self._client_gone():
                return False

    def _write_lines(self, lines: list[str]) -> None:
        for line in lines:
            data = (line + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _client_gone(self) -> bool:
        """True when the client closed its side (readable with no data)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            # Peek at the TCP socket itself: an SSLSocket refuses recv flags, and EOF is a
            # TCP-level fact either way.
            return socket.socket.recv(self.connection, 1, socket.MSG_PEEK) == b""
        except OSError:
            return True


def _matches(obj, ns, name, namespace, fields, terms) -> bool:
    if namespace and ns != namespace:
        return False
    if "metadata.name" in fields and fields["metadata.name"] != name:
        return False
    if "metadata.namespace" in fields and fields["metadata.namespace"] != ns:
        return False
    return _labels_match(terms, (obj.get("metadata") or {}).get("labels") or {})


def _decode(body: Optional[bytes]) -> Any:
    if not body:
        raise ApiError(400, "BadRequest", "empty request body")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"invalid JSON: {exc}") from None


def _not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rtype.plural} "{name}" not found')


def _reason_for(code: int) -> str:
    return {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
            410: "Expired", 429: "TooManyRequests", 500: "InternalError",
            503: "ServiceUnavailable", 504: "Timeout"}.get(code, "Unknown")
