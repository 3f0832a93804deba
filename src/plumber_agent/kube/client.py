"""The agent's only door to the Kubernetes API: a thin wrapper over the `kubernetes` client that
speaks plain dicts.

Why a wrapper:
- 37.x models are pydantic and reject unknown fields (docs/pitfalls.md 10): every call here asks for the
  raw response (`_preload_content=False`) and decodes JSON itself, so a Node or template with
  fields this client version does not know never breaks the agent.
- Every request carries a client-side `_request_timeout` (docs/pitfalls.md 3): without one a half-open
  TCP connection blocks a thread forever.
- Service-account tokens rotate about hourly (docs/pitfalls.md 11): the token file is re-read whenever it
  changes (checked on every request; a stat is cheap), never cached for the process lifetime.
- Requests and writes are counted (`requests`, `writes`) for metrics and benchmarks: "a quiet
  node makes no API writes" is something we measure.
- The client's own retries are off: retry policy (backoff, Retry-After) lives in the reflector
  and the callers, where it can be seen and tested.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
from typing import Any, Callable, Iterator, Optional
from urllib.parse import quote

from plumber_agent import GROUP, VERSION, __version__
from plumber_agent.kube import sdk as k8s  # the pieces of `kubernetes` we call (sdk.py: why)
from plumber_agent.kube.flowcontrol import TokenBucket

log = logging.getLogger(__name__)

TEMPLATES_PLURAL = "hostnetworktemplates"
HOSTNETWORKS_PLURAL = "hostnetworks"
CLAIMS_PLURAL = "addressclaims"
CLAIM_KIND = "AddressClaim"
HOSTNETWORK_KIND = "HostNetwork"
API_VERSION = f"{GROUP}/{VERSION}"

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SA_TOKEN_PATH = f"{SA_DIR}/token"
SA_CA_PATH = f"{SA_DIR}/ca.crt"

# Connecting to the API server is fast or broken: 10 s covers a loaded control plane.
CONNECT_TIMEOUT_S = 10.0
# Plain reads and writes: a healthy API server answers in well under a second; 30 s leaves room
# for a busy one without letting a half-open connection hang a thread (docs/pitfalls.md 3).
REQUEST_TIMEOUT_S = 30.0
# Lists can be bigger than single objects.
LIST_TIMEOUT_S = 60.0

# Content negotiation for metadata only (client-go's metadata client and metadatainformer): the
# server answers with PartialObjectMetadataList / PartialObjectMetadata, each item only its
# metadata, whatever the size of the object (the status writer at 5,000 nodes, issue 19).
ACCEPT_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
ACCEPT_METADATA_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
PARTIAL_OBJECT_METADATA = "PartialObjectMetadata"

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
EVENTS_API_VERSION = "events.k8s.io/v1"


_QUERY_NAMES = {"field_selector": "fieldSelector", "resource_version": "resourceVersion",
                "timeout_seconds": "timeoutSeconds", "watch": "watch",
                "allow_watch_bookmarks": "allowWatchBookmarks", "label_selector": "labelSelector",
                "limit": "limit", "_continue": "continue"}
# client-go tools/pager defaultPageSize: lists that must see everything (consistent reads)
# come in pages of this many objects, so the API server never builds one 30 MB answer.
LIST_PAGE_SIZE = 500
# A list that may come from the API server's watch cache (client-go reflector's first list).
ANY_CACHED = "0"
# Who is calling, in the API server's audit log and API Priority and Fairness (client-go's
# default is "<binary>/<version> (<os>/<arch>) kubernetes/<commit>").
USER_AGENT = f"plumber-agent/{__version__} (linux) python"


class RestTransport:
    """Requests built as `kubernetes.client.ApiClient` builds them (`param_serialize`: path
    parameters quoted with the configuration's `safe_chars_for_path_param`, query values as
    `parameters_to_url_query` writes them, the bearer token from `Configuration.auth_settings`
    and its refresh hook; `call_api`) and sent through the same `rest.RESTClientObject`
    (urllib3 with the configuration's TLS, proxy, retries and timeouts).

    Why not ApiClient itself: it imports pydantic, dateutil and multiprocessing.pool, about
    10 MiB of resident memory in every agent (kube/sdk.py), to serialize bodies that are
    plain dicts here and to deserialize answers the agent reads as raw JSON."""

    def __init__(self, configuration: k8s.Configuration):
        self.configuration = configuration
        self.rest = k8s.RESTClientObject(configuration)

    def request(self, method: str, path: str, *, path_params: dict, query: list, headers: dict,
                body=None, timeout=None):
        """One request; the RESTResponse (the body not read yet)."""
        config = self.configuration
        for key, value in path_params.items():
            path = path.replace("{%s}" % key, quote(str(value),
                                                   safe=config.safe_chars_for_path_param))
        headers = {"User-Agent": USER_AGENT, **headers}
        auth = config.auth_settings().get("BearerToken")  # the token hook runs here
        if auth:
            headers[auth["key"]] = auth["value"]
        url = config.host + path
        if query:
            url += "?" + "&".join(f"{key}={quote(_query_value(value))}" for key, value in query)
        return self.rest.request(method, url, headers=headers, body=body,
                                 _request_timeout=timeout)

    def close(self) -> None:
        self.rest.close()


def _query_value(value) -> str:
    """A query value as ApiClient.parameters_to_url_query writes it (true/false, numbers)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


class RawCalls:
    """API requests sent like the generated CoreV1Api/CoordinationV1Api/CustomObjectsApi send
    them, with the same arguments and the same raw-response/ApiException behaviour for
    `_preload_content=False`.

    Why not the generated classes: importing them loads several hundred pydantic models, 20 MiB
    of resident memory in every agent on every node (bench B4), for answers the agent reads as
    plain JSON anyway."""

    def __init__(self, transport: RestTransport):
        self.transport = transport

    def _send(self, method: str, path: str, path_params: dict, query: dict, body=None, *,
              _request_timeout=None, _preload_content: bool = False,
              _headers: Optional[dict] = None, _content_type: Optional[str] = None):
        if _preload_content:
            raise ValueError(f"{type(self).__name__} returns raw responses only (_preload_content=False)")
        headers = {"Accept": "application/json", **(_headers or {})}
        if body is not None:
            headers["Content-Type"] = _content_type or "application/json"
        response = self.transport.request(
            method, path, path_params=path_params,
            query=[(_QUERY_NAMES[key], value) for key, value in query.items()
                   if value is not None],
            headers=headers, body=body, timeout=_request_timeout)
        if not 200 <= response.status <= 299:
            response.read()
            raise k8s.ApiException.from_response(http_resp=response, body=None, data=None)
        return response.response

    @staticmethod
    def _split(kwargs: dict) -> dict:
        """Pop the request options out of kwargs (the rest are query parameters)."""
        return {k: kwargs.pop(k) for k in ("_request_timeout", "_preload_content", "_headers",
                                           "_content_type")
                if k in kwargs}


class CoreV1Calls(RawCalls):
    """The core/v1 requests the agent makes: read, list/watch Nodes."""

    def list_node(self, **kwargs):
        options = self._split(kwargs)
        return self._send("GET", "/api/v1/nodes", {}, kwargs, **options)

    def read_node(self, name: str, **options):
        return self._send("GET", "/api/v1/nodes/{name}", {"name": name}, {}, **options)



class EventsV1Calls(RawCalls):
    """The events.k8s.io/v1 requests of the event recorder (kube/recorder.py): create an
    Event, patch a series (EventsV1Api's names and arguments)."""

    PATH = "/apis/events.k8s.io/v1/namespaces/{namespace}/events"

    def create_namespaced_event(self, namespace: str, body: dict, **options):
        return self._send("POST", self.PATH, {"namespace": namespace}, {}, body, **options)

    def patch_namespaced_event(self, name: str, namespace: str, body: dict, **options):
        return self._send("PATCH", self.PATH + "/{name}", {"namespace": namespace, "name": name},
                          {}, body, **options)


class ApiextensionsCalls(RawCalls):
    """The one apiextensions.k8s.io/v1 request the agent makes: read a CRD (crd_guard.py)."""

    def read_custom_resource_definition(self, name: str, **options):
        return self._send("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}",
                          {"name": name}, {}, **options)


class CustomObjectsCalls(RawCalls):
    """The cluster-scoped custom-object requests (templates, HostNetworks, AddressClaims), with
    the generated CustomObjectsApi's names and arguments. Why not it: its import and the
    pydantic `validate_call` wrapper of each of its methods cost 1.4 MiB in every agent
    (README "Footprint")."""

    PATH = "/apis/{group}/{version}/{plural}"
    ITEM = PATH + "/{name}"

    @staticmethod
    def _where(group: str, version: str, plural: str, name: Optional[str] = None) -> dict:
        where = {"group": group, "version": version, "plural": plural}
        if name is not None:
            where["name"] = name
        return where

    def _custom(self, method: str, path: str, where: dict, body, kwargs: dict):
        options = self._split(kwargs)
        return self._send(method, path, where, kwargs, body, **options)

    def list_cluster_custom_object(self, group: str, version: str, plural: str, **kwargs):
        return self._custom("GET", self.PATH, self._where(group, version, plural), None, kwargs)

    def get_cluster_custom_object(self, group: str, version: str, plural: str, name: str,
                                  **kwargs):
        return self._custom("GET", self.ITEM, self._where(group, version, plural, name), None,
                            kwargs)

    def create_cluster_custom_object(self, group: str, version: str, plural: str, body: dict,
                                     **kwargs):
        return self._custom("POST", self.PATH, self._where(group, version, plural), body, kwargs)

    def replace_cluster_custom_object(self, group: str, version: str, plural: str, name: str,
                                      body: dict, **kwargs):
        return self._custom("PUT", self.ITEM, self._where(group, version, plural, name), body,
                            kwargs)

    def replace_cluster_custom_object_status(self, group: str, version: str, plural: str,
                                             name: str, body: dict, **kwargs):
        return self._custom("PUT", self.ITEM + "/status",
                            self._where(group, version, plural, name), body, kwargs)

    def patch_cluster_custom_object(self, group: str, version: str, plural: str, name: str,
                                    body, **kwargs):
        return self._custom("PATCH", self.ITEM, self._where(group, version, plural, name), body,
                            kwargs)

    def patch_cluster_custom_object_status(self, group: str, version: str, plural: str,
                                           name: str, body, **kwargs):
        return self._custom("PATCH", self.ITEM + "/status",
                            self._where(group, version, plural, name), body, kwargs)

    def delete_cluster_custom_object(self, group: str, version: str, plural: str, name: str,
                                     body: Optional[dict] = None, **kwargs):
        return self._custom("DELETE", self.ITEM, self._where(group, version, plural, name), body,
                            kwargs)


class CoordinationV1Calls(RawCalls):
    """The coordination.k8s.io/v1 Lease requests of the rollout slots and the status writer's
    leader election."""

    PATH = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"

    def list_namespaced_lease(self, namespace: str, **kwargs):
        options = self._split(kwargs)
        return self._send("GET", self.PATH, {"namespace": namespace}, kwargs, **options)

    def create_namespaced_lease(self, namespace: str, body: dict, **options):
        return self._send("POST", self.PATH, {"namespace": namespace}, {}, body, **options)

    def replace_namespaced_lease(self, name: str, namespace: str, body: dict, **options):
        return self._send("PUT", self.PATH + "/{name}", {"namespace": namespace, "name": name},
                          {}, body, **options)

    def delete_namespaced_lease(self, name: str, namespace: str, body: Optional[dict] = None,
                                **options):
        return self._send("DELETE", self.PATH + "/{name}", {"namespace": namespace, "name": name},
                          {}, body, **options)


class DiscoveryV1Calls(RawCalls):
    """The discovery.k8s.io/v1 EndpointSlice reads of the API-path guard: the addresses behind
    the `kubernetes` Service, which the agent dials through it."""

    PATH = "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"

    def list_namespaced_endpoint_slice(self, namespace: str, **kwargs):
        options = self._split(kwargs)
        return self._send("GET", self.PATH, {"namespace": namespace}, kwargs, **options)
class ReviewCalls(RawCalls):
    """TokenReview (authentication.k8s.io/v1) and SubjectAccessReview (authorization.k8s.io/v1):
    the delegated authentication and authorization of the secured /metrics (kube/review.py)."""

    def create_token_review(self, body: dict, **options):
        return self._send("POST", "/apis/authentication.k8s.io/v1/tokenreviews", {}, {}, body,
                          **options)

    def create_subject_access_review(self, body: dict, **options):
        return self._send("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", {}, {},
                          body, **options)


class ClientThrottled(Exception):
    """A best-effort request (an Event) dropped by the client-side rate limit."""


class TokenFile:
    """A bearer token read from a file and re-read whenever the file changes (docs/pitfalls.md 11).

    Kubelet rotates projected service-account tokens by swapping a symlink; stat follows it, so
    a change of inode, size or mtime means a new token.
    """

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._stamp: Optional[tuple[int, int, int]] = None
        self._token = ""
        self.reads = 0

    def token(self) -> str:
        with self._lock:
            try:
                st = os.stat(self.path)
                stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            except OSError as exc:
                if self._token:
                    log.warning("token file %s unreadable (%s); keeping the last token",
                                self.path, exc)
                    return self._token
                raise
            if stamp != self._stamp:
                with open(self.path, encoding="utf-8") as handle:
                    token = handle.read().strip()
                if token:
                    self._token, self._stamp = token, stamp
                    self.reads += 1
            return self._token

    def install(self, configuration: k8s.Configuration) -> None:
        """Make `configuration` ask for the current token before every request."""
        def refresh(cfg: k8s.Configuration) -> None:
            cfg.api_key["BearerToken"] = self.token()
            cfg.api_key_prefix["BearerToken"] = "Bearer"

        refresh(configuration)
        configuration.refresh_api_key_hook = refresh


class WatchStream:
    """One watch response as an iterator of raw events (dicts), `None` for lines that are not
    JSON (docs/pitfalls.md 5). `close()` may be called from another thread (the reflector's watchdog):
    it shuts the socket down, which unblocks a read stuck on a silent connection."""

    def __init__(self, response: Any):
        self._response = response
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[Optional[dict]]:
        buffer = b""
        try:
            for chunk in self._response.stream(amt=None, decode_content=False):
                if self._closed.is_set():
                    return
                buffer += chunk if isinstance(chunk, bytes) else chunk.encode()
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    yield _decode_event(line)
            if buffer.strip():
                yield _decode_event(buffer)
        finally:
            self.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        response = self._response
        try:
            shutdown = getattr(response, "shutdown", None)
            if shutdown is not None:
                shutdown()
            else:  # urllib3 < 2.3: shut the raw socket like kubernetes.watch.Watch.stop
                sock = getattr(getattr(response, "connection", None), "sock", None)
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
        except Exception:  # noqa: BLE001 - closing must never raise
            pass
        try:
            response.close()
            response.release_conn()
        except Exception:  # noqa: BLE001
            pass

    @property
    def closed(self) -> bool:
        return self._closed.is_set()


def _decode_event(line: bytes) -> Optional[dict]:
    if not line.strip():
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _metadata_options(metadata_only: bool,
                      transform: Optional[Callable[[dict], dict]] = None) -> dict:
    """The options of a list asking for PartialObjectMetadataList (none otherwise), and of
    applying `transform` to each item as soon as it is decoded: the items' garbage is freed
    item by item instead of a whole 5,000-item list decoded first and left scattered through
    the heap (bench B9: the status writer's memory)."""
    if not metadata_only:
        return {}
    options: dict = {"_headers": {"Accept": ACCEPT_METADATA_LIST}}
    if transform is not None:
        options["object_hook"] = lambda obj: transform(obj) \
            if obj.get("kind") == PARTIAL_OBJECT_METADATA and "metadata" in obj \
            and str(obj.get("apiVersion")).startswith("meta.k8s.io/") else obj
    return options


def _delete_options(resource_version: Optional[str]) -> Optional[dict]:
    """DeleteOptions that make a DELETE apply only to this resourceVersion (None: any)."""
    if not resource_version:
        return None
    return {"apiVersion": "v1", "kind": "DeleteOptions",
            "preconditions": {"resourceVersion": resource_version}}


class KubeClient:
    """Plain-dict access to templates, HostNetworks, this node and Events (see module doc)."""

    def __init__(self, configuration: k8s.Configuration, *,
                 token_file: Optional[TokenFile] = None):
        self.configuration = configuration
        self.transport = RestTransport(configuration)
        self.token_file = token_file
        self.custom = CustomObjectsCalls(self.transport)
        self.core = CoreV1Calls(self.transport)
        self.coordination = CoordinationV1Calls(self.transport)
        self.discovery = DiscoveryV1Calls(self.transport)
        self.reviews = ReviewCalls(self.transport)
        self.apiextensions = ApiextensionsCalls(self.transport)
        self.events = EventsV1Calls(self.transport)
        self._lock = threading.Lock()
        self.requests = 0
        self.writes = 0
        # Client-side rate limit (kube/flowcontrol.py TokenBucket); None: unlimited.
        self.rate_limiter: Optional[TokenBucket] = None

    # -- construction ---------------------------------------------------------------------
    @staticmethod
    def _configuration() -> k8s.Configuration:
        configuration = k8s.Configuration()
        configuration.retries = False          # our retry policy, not urllib3's
        configuration.client_go_retries = False
        return configuration

    @classmethod
    def from_kubeconfig(cls, path: Optional[str] = None, *,
                        context: Optional[str] = None) -> "KubeClient":
        """From a kubeconfig file (or the KUBECONFIG list when path is None)."""
        configuration = cls._configuration()
        k8s.load_kube_config(config_file=path, context=context,
                                    client_configuration=configuration, persist_config=False)
        configuration.retries = False
        return cls(configuration)

    @classmethod
    def from_token_file(cls, host: str, token_path: str, *, ca_path: Optional[str] = None,
                        verify_ssl: bool = True) -> "KubeClient":
        """From an API URL and a (rotating) bearer-token file: what in-cluster config is."""
        configuration = cls._configuration()
        configuration.host = host
        if ca_path:
            configuration.ssl_ca_cert = ca_path
        configuration.verify_ssl = verify_ssl
        token_file = TokenFile(token_path)
        token_file.install(configuration)
        return cls(configuration, token_file=token_file)

    @classmethod
    def in_cluster(cls, *, environ: Optional[dict] = None, token_path: str = SA_TOKEN_PATH,
                   ca_path: str = SA_CA_PATH) -> "KubeClient":
        """From the pod's service account; the token is re-read when kubelet rotates it."""
        environ = os.environ if environ is None else environ
        host = environ.get("KUBERNETES_SERVICE_HOST")
        port = environ.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise k8s.ConfigException("not in a cluster: KUBERNETES_SERVICE_HOST/PORT unset")
        if ":" in host:
            host = f"[{host}]"
        return cls.from_token_file(f"https://{host}:{port}", token_path, ca_path=ca_path)

    @classmethod
    def from_environment(cls, kubeconfig: Optional[str] = None) -> "KubeClient":
        """`--kubeconfig`, else KUBECONFIG, else in-cluster config. No usable config is a user
        mistake (UsageError: one line, no traceback)."""
        from plumber_agent.errors import UsageError
        path = kubeconfig or os.environ.get("KUBECONFIG")
        try:
            return cls.from_kubeconfig(path) if path else cls.in_cluster()
        except (k8s.ConfigException, OSError) as exc:
            where = f"kubeconfig {path}" if path else "no --kubeconfig, no $KUBECONFIG, and"
            raise UsageError([f"{where}: {exc}; give --kubeconfig FILE, run in a pod, or use "
                              "--templates DIR (local mode, no cluster)"]) from None

    def close(self) -> None:
        self.transport.close()

    # -- plumbing -------------------------------------------------------------------------
    def _count(self, *, write: bool, best_effort: bool = False) -> None:
        """Count one request and wait for its token: every request goes through here once
        (a watch when it is opened, a paged list once per page), like client-go's
        request.tryThrottle before each HTTP request. A best-effort request (an Event) never
        waits: without a token at hand it is dropped (ClientThrottled), as client-go's event
        recorder drops what its spam filter refuses, so a pass never waits for an Event."""
        limiter = self.rate_limiter
        if limiter is not None:
            if best_effort:
                if not limiter.try_accept():
                    raise ClientThrottled("dropped: the client-side rate limit has no token "
                                          "now (--kube-api-qps)")
            else:
                limiter.accept()
        with self._lock:
            self.requests += 1
            if write:
                self.writes += 1

    def _call(self, method, *args, write: bool = False, timeout_s: float = REQUEST_TIMEOUT_S,
              object_hook: Optional[Callable[[dict], Any]] = None, best_effort: bool = False,
              **kwargs) -> Any:
        """Call an API method for its raw response and decode the JSON body (`object_hook`:
        json.loads', for each decoded object; `best_effort`: see _count)."""
        self._count(write=write, best_effort=best_effort)
        response = method(*args, _preload_content=False,
                          _request_timeout=(CONNECT_TIMEOUT_S, timeout_s), **kwargs)
        try:
            data = response.data
        finally:
            response.release_conn()
        return json.loads(data, object_hook=object_hook) if data else None

    def _watch(self, method, *args, resource_version: Optional[str], timeout_seconds: int,
               request_timeout_s: float, metadata_only: bool = False, **kwargs) -> WatchStream:
        """`metadata_only`: events carry PartialObjectMetadata objects (ACCEPT_METADATA_WATCH)."""
        self._count(write=False)
        if resource_version is not None:
            kwargs["resource_version"] = resource_version
        if metadata_only:
            kwargs["_headers"] = {"Accept": ACCEPT_METADATA_WATCH}
        response = method(*args, watch=True, allow_watch_bookmarks=True,
                          timeout_seconds=int(timeout_seconds), _preload_content=False,
                          _request_timeout=(CONNECT_TIMEOUT_S, request_timeout_s), **kwargs)
        return WatchStream(response)

    def _list(self, method, *args, resource_version: Optional[str] = None,
              timeout_s: float = LIST_TIMEOUT_S, **kwargs) -> tuple[list[dict], str]:
        """A LIST as client-go's reflector and tools/pager send it (ListPager.List).

        - resource_version None or "": a consistent read, paged by LIST_PAGE_SIZE: what a
          one-shot list that must see everything needs (etcd, or a consistent cache read).
        - "0" (ANY_CACHED): the watch cache, possibly stale; the limit is sent as client-go
          does and the cache ignores it (cacher.go computeListLimit).
        - another version: "not older than" it, unpaged, so the watch cache serves it
          (reflector.go turns paging off then: a limit would make it an exact read from etcd).
        Pages after the first carry no resourceVersion (they are read at the token's); an
        expired continue token (410) falls back to one full list, as FullListIfExpired."""
        requested = resource_version or ""
        page_size = LIST_PAGE_SIZE if requested in ("", ANY_CACHED) else 0
        options = {"resource_version": requested or None, "limit": page_size or None}
        items: list[dict] = []
        list_rv: Optional[str] = None
        while True:
            query = {key: value for key, value in options.items() if value is not None}
            try:
                body = self._call(method, *args, timeout_s=timeout_s, **kwargs, **query)
            except k8s.ApiException as exc:
                if exc.status != 410 or not options.get("_continue"):
                    raise
                log.info("list continue token expired; listing everything at once")
                full = {"resource_version": requested} if requested else {}
                return self._list_result(self._call(method, *args, timeout_s=timeout_s,
                                                    **kwargs, **full))
            page, page_rv = self._list_result(body)
            token = str(((body or {}).get("metadata") or {}).get("continue") or "")
            if not token and list_rv is None:
                return page, page_rv
            if list_rv is None:
                list_rv = page_rv
            items.extend(page)
            if not token:
                return items, list_rv
            options = {"limit": page_size or None, "_continue": token}

    @staticmethod
    def _list_result(body: Any) -> tuple[list[dict], str]:
        body = body if isinstance(body, dict) else {}
        items = [item for item in (body.get("items") or []) if isinstance(item, dict)]
        rv = str((body.get("metadata") or {}).get("resourceVersion") or "")
        return items, rv

    # -- templates ------------------------------------------------------------------------
    def list_templates(self, *, timeout_s: float = LIST_TIMEOUT_S,
                       resource_version: Optional[str] = None) -> tuple[list[dict], str]:
        """All HostNetworkTemplates and the list's resourceVersion."""
        return self._list(self.custom.list_cluster_custom_object, GROUP, VERSION,
                          TEMPLATES_PLURAL, timeout_s=timeout_s, resource_version=resource_version)

    def watch_templates(self, resource_version: Optional[str], timeout_seconds: int,
                        request_timeout_s: float) -> WatchStream:
        return self._watch(self.custom.list_cluster_custom_object, GROUP, VERSION,
                           TEMPLATES_PLURAL, resource_version=resource_version,
                           timeout_seconds=timeout_seconds, request_timeout_s=request_timeout_s)

    # -- the node -------------------------------------------------------------------------
    def list_node(self, name: str, *, timeout_s: float = LIST_TIMEOUT_S,
                  resource_version: Optional[str] = None) -> tuple[list[dict], str]:
        """This node only (field selector on its name), as a list for the reflector."""
        return self._list(self.core.list_node, field_selector=f"metadata.name={name}",
                          timeout_s=timeout_s, resource_version=resource_version)

    def watch_node(self, name: str, resource_version: Optional[str], timeout_seconds: int,
                   request_timeout_s: float) -> WatchStream:
        return self._watch(self.core.list_node, resource_version=resource_version,
                           timeout_seconds=timeout_seconds, request_timeout_s=request_timeout_s,
                           field_selector=f"metadata.name={name}")

    def get_node(self, name: str) -> dict:
        return self._call(self.core.read_node, name)

    # -- HostNetworks ---------------------------------------------------------------------
    def get_hostnetwork(self, name: str) -> Optional[dict]:
        """The HostNetwork `name`, or None when it does not exist."""
        try:
            return self._call(self.custom.get_cluster_custom_object, GROUP, VERSION,
                              HOSTNETWORKS_PLURAL, name)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_hostnetwork(self, body: dict) -> dict:
        """POST a HostNetwork (409 AlreadyExists propagates as ApiException)."""
        body = dict(body)
        body.setdefault("apiVersion", API_VERSION)
        body.setdefault("kind", HOSTNETWORK_KIND)
        return self._call(self.custom.create_cluster_custom_object, GROUP, VERSION,
                          HOSTNETWORKS_PLURAL, body, write=True)

    def replace_hostnetwork(self, name: str, body: dict) -> dict:
        """PUT; body must carry metadata.resourceVersion; a stale one gives ApiException(409)."""
        return self._call(self.custom.replace_cluster_custom_object, GROUP, VERSION,
                          HOSTNETWORKS_PLURAL, name, body, write=True)

    def patch_hostnetwork_status(self, name: str, merge_patch: dict) -> dict:
        """Merge-patch (RFC 7386) the /status subresource. Lists are replaced wholesale
        (docs/pitfalls.md 13): send whole lists."""
        return self._call(self.custom.patch_cluster_custom_object_status, GROUP, VERSION,
                          HOSTNETWORKS_PLURAL, name, merge_patch, write=True,
                          _content_type=MERGE_PATCH)

    def json_patch_hostnetwork_status(self, name: str, operations: list) -> dict:
        """JSON-patch (RFC 6902) the /status subresource: small edits inside big lists without
        resending the lists. Paths are relative to the whole object (/status/...)."""
        return self._call(self.custom.patch_cluster_custom_object_status, GROUP, VERSION,
                          HOSTNETWORKS_PLURAL, name, operations, write=True,
                          _content_type=JSON_PATCH)

    def delete_hostnetwork(self, name: str) -> bool:
        """Delete; False if it was already gone."""
        try:
            self._call(self.custom.delete_cluster_custom_object, GROUP, VERSION,
                       HOSTNETWORKS_PLURAL, name, write=True)
            return True
        except k8s.ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def list_hostnetworks(self, *, timeout_s: float = LIST_TIMEOUT_S,
                          resource_version: Optional[str] = None, metadata_only: bool = False,
                          transform: Optional[Callable[[dict], dict]] = None
                          ) -> tuple[list[dict], str]:
        """Every node's HostNetwork (the status writer's view of the fleet); `metadata_only`:
        PartialObjectMetadata items (names, labels, annotations), not the whole objects, each
        passed through `transform` as it is decoded."""
        return self._list(self.custom.list_cluster_custom_object, GROUP, VERSION,
                          HOSTNETWORKS_PLURAL, timeout_s=timeout_s,
                          resource_version=resource_version,
                          **_metadata_options(metadata_only, transform))

    def watch_hostnetworks(self, resource_version: Optional[str], timeout_seconds: int,
                           request_timeout_s: float, *,
                           metadata_only: bool = False) -> WatchStream:
        return self._watch(self.custom.list_cluster_custom_object, GROUP, VERSION,
                           HOSTNETWORKS_PLURAL, resource_version=resource_version,
                           timeout_seconds=timeout_seconds, request_timeout_s=request_timeout_s,
                           metadata_only=metadata_only)

    def patch_hostnetwork(self, name: str, merge_patch: dict) -> dict:
        """Merge-patch the main resource (the agent's template-results annotation,
        fleet/results.py): metadata only, the status is never sent this way."""
        return self._call(self.custom.patch_cluster_custom_object, GROUP, VERSION,
                          HOSTNETWORKS_PLURAL, name, merge_patch, write=True,
                          _content_type=MERGE_PATCH)

    def get_crd(self, name: str) -> Optional[dict]:
        """The CustomResourceDefinition `name`, or None when it does not exist (crd_guard.py:
        is a template deletion the CRD's own?)."""
        try:
            return self._call(self.apiextensions.read_custom_resource_definition, name)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    # -- template status (the leader-elected status writer) -------------------------------
    def get_template(self, name: str) -> Optional[dict]:
        """The HostNetworkTemplate `name`, or None when it does not exist."""
        try:
            return self._call(self.custom.get_cluster_custom_object, GROUP, VERSION,
                              TEMPLATES_PLURAL, name)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_template_status(self, name: str, merge_patch: dict) -> dict:
        """Merge-patch the /status subresource of a template."""
        return self._call(self.custom.patch_cluster_custom_object_status, GROUP, VERSION,
                          TEMPLATES_PLURAL, name, merge_patch, write=True,
                          _content_type=MERGE_PATCH)

    # -- every Node (the status writer counts matching nodes) -----------------------------
    def list_nodes(self, *, timeout_s: float = LIST_TIMEOUT_S,
                   resource_version: Optional[str] = None, metadata_only: bool = False,
                   transform: Optional[Callable[[dict], dict]] = None) -> tuple[list[dict], str]:
        """`metadata_only`: PartialObjectMetadata items (no status.images, no conditions), each
        passed through `transform` as it is decoded."""
        return self._list(self.core.list_node, timeout_s=timeout_s,
                          resource_version=resource_version,
                          **_metadata_options(metadata_only, transform))

    def count_nodes(self, *, timeout_s: float = LIST_TIMEOUT_S) -> int:
        """How many Nodes the cluster has, from one list with `limit=1`: the item plus
        `metadata.remainingItemCount` (set by the API server for an unfiltered, paged list), so
        an agent learns the count without reading the other nodes (a server that ignores
        `limit` sends every item; the count is right then too)."""
        body = self._call(self.core.list_node, limit=1, timeout_s=timeout_s,
                          **_metadata_options(True))
        body = body if isinstance(body, dict) else {}
        remaining = (body.get("metadata") or {}).get("remainingItemCount")
        items = body.get("items") or []
        return len(items) + (remaining if isinstance(remaining, int) and remaining > 0 else 0)

    def watch_nodes(self, resource_version: Optional[str], timeout_seconds: int,
                    request_timeout_s: float, *, metadata_only: bool = False) -> WatchStream:
        return self._watch(self.core.list_node, resource_version=resource_version,
                           timeout_seconds=timeout_seconds, request_timeout_s=request_timeout_s,
                           metadata_only=metadata_only)

    # -- Leases (rollout slots, the status writer's leader election) ----------------------
    # -- the API server's own EndpointSlice (the endpoints the agent dials, issue 20) ------
    def list_endpoint_slices(self, namespace: str, name: str, *,
                             timeout_s: float = LIST_TIMEOUT_S,
                             resource_version: Optional[str] = None) -> tuple[list[dict], str]:
        """The EndpointSlice `name` only (a field selector, so the Role can name it)."""
        return self._list(self.discovery.list_namespaced_endpoint_slice, namespace,
                          field_selector=f"metadata.name={name}", timeout_s=timeout_s,
                          resource_version=resource_version)

    def watch_endpoint_slices(self, namespace: str, name: str, resource_version: Optional[str],
                              timeout_seconds: int, request_timeout_s: float) -> WatchStream:
        return self._watch(self.discovery.list_namespaced_endpoint_slice, namespace,
                           resource_version=resource_version, timeout_seconds=timeout_seconds,
                           request_timeout_s=request_timeout_s,
                           field_selector=f"metadata.name={name}")

    def list_leases(self, namespace: str, label_selector: str, *,
                    timeout_s: float = LIST_TIMEOUT_S,
                    resource_version: Optional[str] = None) -> tuple[list[dict], str]:
        return self._list(self.coordination.list_namespaced_lease, namespace,
                          label_selector=label_selector, timeout_s=timeout_s,
                          resource_version=resource_version)

    def watch_leases(self, namespace: str, label_selector: str,
                     resource_version: Optional[str], timeout_seconds: int,
                     request_timeout_s: float) -> WatchStream:
        return self._watch(self.coordination.list_namespaced_lease, namespace,
                           resource_version=resource_version, timeout_seconds=timeout_seconds,
                           request_timeout_s=request_timeout_s, label_selector=label_selector)

    def create_lease(self, namespace: str, body: dict) -> dict:
        """POST; an existing name is ApiException(409 AlreadyExists): someone else won."""
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", **body}
        return self._call(self.coordination.create_namespaced_lease, namespace, body, write=True)

    def replace_lease(self, namespace: str, name: str, body: dict) -> dict:
        """PUT with body's resourceVersion; a stale one is ApiException(409 Conflict)."""
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", **body}
        return self._call(self.coordination.replace_namespaced_lease, name, namespace, body,
                          write=True)

    def delete_lease(self, namespace: str, name: str, *,
                     resource_version: Optional[str] = None) -> bool:
        """DELETE, only if still at `resource_version` when given (409 when it moved on);
        False when already gone."""
        try:
            self._call(self.coordination.delete_namespaced_lease, name, namespace,
                       _delete_options(resource_version), write=True)
            return True
        except k8s.ApiException as exc:
            if exc.status == 404:
                return False
            raise

    # -- AddressClaims (per-node addresses from pools: one object per address) ------------
    def list_address_claims(self, label_selector: str, *, timeout_s: float = LIST_TIMEOUT_S,
                            resource_version: Optional[str] = None) -> tuple[list[dict], str]:
        """The claims `label_selector` matches (one pool's, or one node's: never all); without
        resource_version a consistent, paged read (a pool allocation must see every claim)."""
        return self._list(self.custom.list_cluster_custom_object, GROUP, VERSION,
                          CLAIMS_PLURAL, label_selector=label_selector, timeout_s=timeout_s,
                          resource_version=resource_version)

    def watch_address_claims(self, label_selector: str, resource_version: Optional[str],
                             timeout_seconds: int, request_timeout_s: float) -> WatchStream:
        return self._watch(self.custom.list_cluster_custom_object, GROUP, VERSION,
                           CLAIMS_PLURAL, resource_version=resource_version,
                           timeout_seconds=timeout_seconds, request_timeout_s=request_timeout_s,
                           label_selector=label_selector)

    def get_address_claim(self, name: str) -> Optional[dict]:
        """The claim `name`, or None: after a 409, whose is it (maybe ours, its answer lost)?"""
        try:
            return self._call(self.custom.get_cluster_custom_object, GROUP, VERSION,
                              CLAIMS_PLURAL, name)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_address_claim(self, body: dict) -> dict:
        """POST; an address someone holds is ApiException(409 AlreadyExists): the lock."""
        body = {"apiVersion": API_VERSION, "kind": CLAIM_KIND, **body}
        return self._call(self.custom.create_cluster_custom_object, GROUP, VERSION,
                          CLAIMS_PLURAL, body, write=True)

    def delete_address_claim(self, name: str, *, resource_version: Optional[str] = None) -> bool:
        """DELETE only if still at `resource_version` (when given); False when already gone."""
        try:
            self._call(self.custom.delete_cluster_custom_object, GROUP, VERSION, CLAIMS_PLURAL,
                       name, body=_delete_options(resource_version), write=True)
            return True
        except k8s.ApiException as exc:
            if exc.status == 404:
                return False
            raise

    # -- delegated authentication and authorization (kube/review.py) ------------------------
    def create_token_review(self, token: str, *, timeout_s: float = REQUEST_TIMEOUT_S) -> dict:
        """POST a TokenReview of `token`; the answer's status says who it is."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token}}
        return self._call(self.reviews.create_token_review, body, timeout_s=timeout_s) or {}

    def create_subject_access_review(self, spec: dict, *,
                                     timeout_s: float = REQUEST_TIMEOUT_S) -> dict:
        """POST a SubjectAccessReview of `spec`; the answer's status says whether it is allowed."""
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": spec}
        return self._call(self.reviews.create_subject_access_review, body,
                          timeout_s=timeout_s) or {}

    # -- Events (events.k8s.io/v1, built and aggregated by kube/recorder.py) ---------------
    def create_event(self, namespace: str, body: dict) -> dict:
        """POST an events.k8s.io/v1 Event. Best effort: dropped (ClientThrottled) rather
        than waiting for the client-side rate limit."""
        body = {"apiVersion": EVENTS_API_VERSION, "kind": "Event", **body}
        return self._call(self.events.create_namespaced_event, namespace, body, write=True,
                          best_effort=True)

    def patch_event(self, namespace: str, name: str, patch: dict) -> dict:
        """Strategic-merge-patch an Event (a series' count and lastObservedTime, as client-go's
        EventSinkImpl.Patch sends it). Best effort, like create_event."""
        return self._call(self.events.patch_namespaced_event, name, namespace, patch,
                          write=True, best_effort=True, _content_type=STRATEGIC_MERGE_PATCH)
