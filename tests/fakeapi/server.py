"""A small Kubernetes API server over real HTTP, so the agent's kube layer is tested with the real
`kubernetes` client against real semantics instead of mocks. Where a real server decides on its
own (error codes, Status reasons, messages and details, patch rules, resourceVersion and
generation), the answers are upstream's, word for word: README.md beside this file maps each to
the upstream function it follows and the test that pins it.

What it implements (the parts the agent relies on, and the ways real servers misbehave):

- cluster-scoped custom resources `hostnetworktemplates`, `hostnetworks` and `addressclaims`
  (plumber.k8s.pf9.io/v1; addressclaims without a status subresource), core/v1 `nodes`, namespaced `events` (core/v1 and events.k8s.io/v1:
  one storage, converted and validated per request version, events.py),
  namespaced coordination.k8s.io/v1 `leases` (validated as ValidateLease) and namespaced
  discovery.k8s.io/v1 `endpointslices` (not validated: the agent only reads them);
- DELETE with DeleteOptions (preconditions 409, propagationPolicy) and the garbage collector's
  work done at once: dependents whose owners are all gone, or that name an absent owner when
  written, are deleted;
- list with resourceVersion (410 below the compaction floor for Exact lists, or for any list
  when `list_too_old_410` is on), fieldSelector `metadata.name=`/`metadata.namespace=`, simple
  equality labelSelector; `limit`/`continue` paging read at the first page's revision (opaque
  tokens, remainingItemCount, 410 for a compacted token), `resourceVersion=0` from the "watch
  cache" (limit ignored);
- watch as chunked JSON lines: initial ADDED events when no resourceVersion is given, replay
  from a resourceVersion, BOOKMARKs when `allowWatchBookmarks` (every `bookmark_interval_s`),
  `timeoutSeconds`, and ERROR 410 when the start is below the compaction floor;
- POST (409 AlreadyExists, name validation, generateName), PUT with resourceVersion
  precondition (409 Conflict; 422 without one on custom resources), PATCH with merge patch
  (RFC 7386) and JSON patch (RFC 6902, json-patch v4 semantics, a failed `test` is 422);
  strategic merge patch is refused with 415 on custom resources (as the real server does) and
  treated as a merge patch on built-ins; server-side apply is refused (415);
- `/status` isolation: writes to the main resource keep the old status, writes to /status
  keep the old spec and metadata; a change outside metadata bumps metadata.generation;
- the CRDs' openAPIV3Schema (manifests/crds) on every write of a custom object: 422 Invalid
  with a cause per violation (main resource: the whole object; /status: only status; with
  ratcheting on updates), unknown fields pruned with a Warning header, or refused with
  `fieldValidation=Strict`; `skip_schema_validation` lets a test store what a real server refuses;
- uid, creationTimestamp, generation and a global resourceVersion counter (a string);
- bearer-token check (401) on every path, token changeable at runtime (rotation);
- what `kubectl get` needs (printing.py): legacy API discovery (/api, /apis, ...) with the
  CRDs' shortNames and categories, and meta.k8s.io/v1 Table output built from their
  additionalPrinterColumns; an optional HTTPS listener (tls.py), because kubectl sends the
  kubeconfig's token only over TLS;
- faults at runtime: stalled streams, dropped streams, garbage lines, the next N requests
  failing (429 + Retry-After as the filters' text or as a Status, 500, 503, ...), RBAC denials
  (`deny`: the authorization filter's 403), a CRD not installed (404), compaction, expiring open
  watches with ERROR 410, the answer of the next matching request held after its write was
  committed (`hold_next_answer`: a client killed, or a server restarted, before the answer);
- core/v1 `pods` (create resets the status, graceful deletion, the kubelet's final delete),
  policy/v1 `poddisruptionbudgets` with the disruption controller's status computed at once and
  the `pods/eviction` subresource with upstream's budget semantics (pods.py, disruption.py);
- `Accept: ...;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1` on every get, list and watch
  (metadata.py: the answer converted at response time, as upstream's doTransformObject does);
- a request log so tests count requests and writes (and benchmarks the bytes answered).
"""
from __future__ import annotations

import base64
import bisect
import copy
import datetime
import functools
import json
import os
import posixpath
import random
import re
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

import tests.fakeapi.disruption as disruption
import tests.fakeapi.events as event_api
import tests.fakeapi.pods as pod_api
import tests.manifests.k8s_schema as k8s_schema
from tests.fakeapi import metadata, printing, selectors
from tests.fakeapi.rbac import Rbac, service_account_user

GROUP = "plumber.k8s.pf9.io"
VERSION = "v1"
TEMPLATES = "hostnetworktemplates"
HOSTNETWORKS = "hostnetworks"
ADDRESSCLAIMS = "addressclaims"
NODES = "nodes"
EVENTS = "events"
LEASES = "leases"
COORDINATION_GROUP = "coordination.k8s.io"
ENDPOINTSLICES = "endpointslices"
DISCOVERY_GROUP = "discovery.k8s.io"
PODS = "pods"
PDBS = "poddisruptionbudgets"
POLICY_GROUP = "policy"

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
    # The built-in strategy's AllowUnconditionalUpdate (custom resources: always false).
    unconditional_update: bool = True
    # The strategy's AllowCreateOnUpdate: a PUT of a missing object creates it.
    create_on_update: bool = False

    @property
    def allow_unconditional_update(self) -> bool:
        """AllowUnconditionalUpdate of the type's strategy: false for custom resources
        (customResourceStrategy) and leases (pkg/registry/coordination/lease/strategy.go), true
        for nodes and events: a PUT without resourceVersion."""
        return self.unconditional_update and not self.custom


RESOURCE_TYPES = {
    TEMPLATES: ResourceType(TEMPLATES, "HostNetworkTemplate", f"{GROUP}/{VERSION}", False,
                            True, True, True),
    HOSTNETWORKS: ResourceType(HOSTNETWORKS, "HostNetwork", f"{GROUP}/{VERSION}", False,
                               True, True, True),
    # manifests/crds/addressclaims.yaml: no status subresource, so a write keeps what it sends.
    ADDRESSCLAIMS: ResourceType(ADDRESSCLAIMS, "AddressClaim", f"{GROUP}/{VERSION}", False,
                                False, True, True),
    NODES: ResourceType(NODES, "Node", "v1", False, True, False, False),
    EVENTS: ResourceType(EVENTS, "Event", "v1", True, False, False, False),
    # pkg/registry/coordination/lease/strategy.go leaseStrategy: namespaced, no status, no
    # generation, AllowUnconditionalUpdate false, AllowCreateOnUpdate true.
    LEASES: ResourceType(LEASES, "Lease", f"{COORDINATION_GROUP}/v1", True, False, False, False,
                         unconditional_update=False, create_on_update=True),
    # pkg/registry/discovery/endpointslice/strategy.go endpointSliceStrategy: namespaced, no
    # status, generation set on create and bumped on change (PrepareForCreate/ForUpdate),
    # AllowUnconditionalUpdate true, AllowCreateOnUpdate false. ValidateEndpointSlice is not
    # ported: the agent only reads the slices tests seed (tests/fakeapi/README.md).
    ENDPOINTSLICES: ResourceType(ENDPOINTSLICES, "EndpointSlice", f"{DISCOVERY_GROUP}/v1", True,
                                 False, True, False),
    # pkg/registry/core/pod/strategy.go podStrategy: namespaced, a status subresource,
    # AllowUnconditionalUpdate true; create, delete and eviction in pods.py, disruption.py.
    PODS: ResourceType(PODS, "Pod", "v1", True, True, False, False),
    # pkg/registry/policy/poddisruptionbudget/strategy.go: namespaced, a status subresource,
    # generation bumped on a spec change; the status is the disruption controller's.
    PDBS: ResourceType(PDBS, "PodDisruptionBudget", f"{POLICY_GROUP}/v1", True, True, True,
                       False),
}

# What the garbage collector's RESTMapper resolves an ownerReference's (group, kind) to.
OWNER_KIND_RESOURCES = {
    ("", "Node"): NODES, (GROUP, "HostNetwork"): HOSTNETWORKS,
    (GROUP, "HostNetworkTemplate"): TEMPLATES, (GROUP, "AddressClaim"): ADDRESSCLAIMS,
    ("", "Event"): EVENTS,
    ("events.k8s.io", "Event"): EVENTS, (COORDINATION_GROUP, "Lease"): LEASES,
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
    warnings: list[str] = field(default_factory=list)  # Warning headers sent (texts)
    bytes_sent: int = 0  # body bytes answered (a watch: so far), for traffic benchmarks


@dataclass
class _Failure:
    remaining: int
    code: int
    retry_after: Optional[int]
    method: Optional[str]
    path_contains: Optional[str]
    as_status: bool = False


@dataclass
class AnswerHold:
    """One held answer (FakeApiServer.hold_next_answer). `held` is set once a matching request
    has been handled (its write committed and visible) and its answer waits; `release()` sends
    it. A server stopped meanwhile never sends it (the answer of a restarted server is lost)."""

    method: str
    path_contains: str
    held: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    path: str = ""  # the request held
    status: int = 0  # its answer's code

    def wait_held(self, timeout_s: float) -> bool:
        return self.held.wait(timeout_s)

    def release(self) -> None:
        self.released.set()


@dataclass
class WriteStall:
    """Writes held BEFORE they are handled (FakeApiServer.stall_writes): a request with this
    method whose path contains `path_contains` (and, when `holder` is set, whose body's
    spec.holderIdentity is `holder`: one client's Lease writes) waits until `release()`, then
    is handled as usual: committed only then, so a 409 may be its answer. `stalled` counts the
    requests that waited."""

    method: str
    path_contains: str
    holder: Optional[str] = None
    released: threading.Event = field(default_factory=threading.Event)
    stalled: int = 0

    def matches(self, method: str, path: str, body: Optional[bytes]) -> bool:
        if method != self.method or self.path_contains not in path:
            return False
        if self.holder is None:
            return True
        try:
            spec = (json.loads(body or b"{}") or {}).get("spec") or {}
        except (ValueError, AttributeError):
            return False
        return isinstance(spec, dict) and spec.get("holderIdentity") == self.holder

    def release(self) -> None:
        self.released.set()


@dataclass
class _Stream:
    """One open watch, as the server sees it."""

    resource: str
    peer: str
    garbage: list[str] = field(default_factory=list)
    expire: bool = False
    drop: bool = False
    end: bool = False  # a clean end (the resource's storage went away: its CRD was deleted)
    stalled_now: bool = False


class ApiError(Exception):
    """A failed request, answered with the `Status` object upstream would send.

    `details` is the Status' `details` (None: no `details` key, as for NewBadRequest); `detail`
    is our own explanation, kept for debugging when upstream's message hides it (a failed JSON
    patch). `plain_text` sends `message` as text/plain, as upstream's http.Error does."""

    def __init__(self, code: int, reason: str, message: str, headers: Optional[dict] = None,
                 *, details: Optional[dict] = None, detail: str = "", plain_text: bool = False):
        super().__init__(detail or message)
        self.code, self.reason, self.message = code, reason, message
        self.headers = headers or {}
        self.details, self.detail, self.plain_text = details, detail, plain_text
        self.list_continue = ""  # the Status' metadata.continue (an expired continue token)


# Upstream wording, named once (see tests/fakeapi/README.md for where each comes from).
OPTIMISTIC_LOCK_MSG = ("the object has been modified; please apply your changes to the latest "
                       "version and try again")  # registry/generic/registry/store.go
GENERIC_422_MSG = "the server rejected our request due to an error in our request"
EXPIRED_LIST_MSG = "The resourceVersion for the provided list is too old."   # etcd3/errors.go
EXPIRED_WATCH_MSG = "The resourceVersion for the provided watch is too old."  # etcd3/errors.go
INCONSISTENT_CONTINUE_MSG = (  # etcd3/errors.go inconsistentContinue
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted "
    "between the time the first chunk was returned and now may show up in the list.")
CONTINUE_VERSION = "meta.k8s.io/v1"  # storage/continue.go continueToken.APIVersion
NOT_FOUND_HANDLER_MSG = "the server could not find the requested resource"
TOO_MANY_REQUESTS_MSG = "Too many requests, please try again later."  # filters/maxinflight.go
RV_ON_CREATE_MSG = "resourceVersion should not be set on objects to be created"  # storage
MAX_JSON_PATCH_OPS = 10000  # handlers/patch.go maxJSONPatchOperations
TOO_LARGE_RV_RETRY_S = 1    # cacher resourceVersionTooHighRetrySeconds
DNS1123_SUBDOMAIN_MAX = 253
DNS1123_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
# names.SimpleNameGenerator: 5 random characters from utilrand's alphabet after the prefix.
GENERATED_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
GENERATED_NAME_SUFFIX_LEN = 5


def status_object(code: int, reason: str, message: str,
                  details: Optional[dict] = None) -> dict:
    """A failed `Status` as upstream serializes it (reason omitted when empty, as omitempty)."""
    status: dict = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": message}
    if reason:
        status["reason"] = reason
    if details is not None:
        status["details"] = details
    status["code"] = code
    return status


def _details(*, name: str = "", group: str = "", kind: str = "", causes=None,
             retry_after_s: int = 0) -> dict:
    """metav1.StatusDetails with its omitempty fields left out."""
    details: dict = {}
    for key, value in (("name", name), ("group", group), ("kind", kind), ("causes", causes),
                       ("retryAfterSeconds", retry_after_s)):
        if value:
            details[key] = value
    return details


def _split_resource(qualified: str) -> tuple[str, str]:
    """'hostnetworks.plumber.k8s.pf9.io' -> ('hostnetworks', 'plumber.k8s.pf9.io')."""
    resource, _, group = qualified.partition(".")
    return resource, group


AGENT_USER = "system:serviceaccount:plumber-system:plumber-agent"


def forbidden(*, user: str, verb: str, group: str, resource: str, namespace: str,
              name: str) -> ApiError:
    """The authorization filter's 403 (apiserver/pkg/endpoints/filters/authorization.go
    WithAuthorization -> handlers/responsewriters/errors.go Forbidden, forbiddenMessage; the
    RBAC authorizer gives no reason): errors.NewForbidden(GroupResource{group, resource},
    name, msg), so the message is `<resource>[.group] ["name"] is forbidden: User "<user>"
    cannot <verb> resource "<resource[/sub]>" in API group "<group>" in the namespace "<ns>"`
    (or `at the cluster scope`), details {name, group, kind: the resource without /sub}."""
    base = resource.split("/", 1)[0]
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    why = f'User "{user}" cannot {verb} resource "{resource}" in API group "{group}" {scope}'
    qualified = _qualified(base, group)
    message = f'{qualified} "{name}" is forbidden: {why}' if name else \
        f"{qualified} is forbidden: {why}"
    return ApiError(403, "Forbidden", message, details=_details(name=name, group=group,
                                                                kind=base))


def not_found(qualified_resource: str, name: str) -> ApiError:
    """errors.NewNotFound."""
    resource, group = _split_resource(qualified_resource)
    return ApiError(404, "NotFound", f'{qualified_resource} "{name}" not found',
                    details=_details(name=name, group=group, kind=resource))


def already_exists(qualified_resource: str, name: str) -> ApiError:
    """errors.NewAlreadyExists."""
    resource, group = _split_resource(qualified_resource)
    return ApiError(409, "AlreadyExists", f'{qualified_resource} "{name}" already exists',
                    details=_details(name=name, group=group, kind=resource))


def conflict(qualified_resource: str, name: str) -> ApiError:
    """errors.NewConflict with store.go's OptimisticLockErrorMsg."""
    resource, group = _split_resource(qualified_resource)
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {qualified_resource} '
                    f'"{name}": {OPTIMISTIC_LOCK_MSG}',
                    details=_details(name=name, group=group, kind=resource))


def precondition_conflict(qualified_kind: str, name: str, reason_text: str) -> ApiError:
    """rest/delete.go BeforeDelete: errors.NewConflict of GroupResource{Group: gvk.Group,
    Resource: gvk.Kind} -- the *kind* stands where the resource usually does."""
    kind, group = _split_resource(qualified_kind)
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {qualified_kind} '
                    f'"{name}": {reason_text}',
                    details=_details(name=name, group=group, kind=kind))


def field_error(error_type: str, field_path: str, detail: str, value: Any = None, *,
                shown: Optional[str] = None) -> dict:
    """One field.Error as a StatusCause: reason = the type, message = ErrorBody(). `shown` is
    the bad value already printed as Go prints it (e.g. 0x0 for a uint64 zero)."""
    reason = {"Invalid value": "FieldValueInvalid", "Required value": "FieldValueRequired",
              "Forbidden": "FieldValueForbidden",
              "Unsupported value": "FieldValueNotSupported"}[error_type]
    if error_type in ("Invalid value", "Unsupported value"):
        if shown is None:
            shown = json.dumps(value)  # Go's %q for the plain strings we report
        body = f"{error_type}: {shown}: {detail}"
    else:
        body = f"{error_type}: {detail}"
    return {"reason": reason, "message": body, "field": field_path}


def invalid(qualified_kind: str, name: str, causes: list[dict]) -> ApiError:
    """errors.NewInvalid: `Kind.group "name" is invalid: <field: body>[, ...]` (the message
    lists each distinct error once, as ErrorList.ToAggregate does; the causes keep them all)."""
    kind, group = _split_resource(qualified_kind)
    texts = list(dict.fromkeys(f"{c['field']}: {c['message']}" for c in causes))  # ToAggregate
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return ApiError(422, "Invalid", f'{qualified_kind} "{name}" is invalid: {summary}',
                    details=_details(name=name, group=group, kind=kind, causes=causes))


def bad_request(message: str) -> ApiError:
    """errors.NewBadRequest (no details)."""
    return ApiError(400, "BadRequest", message)


def method_not_supported(qualified_resource: str, verb: str) -> ApiError:
    """errors.NewMethodNotSupported, as the CRD handler answers unknown verbs."""
    resource, group = _split_resource(qualified_resource)
    return ApiError(405, "MethodNotAllowed",
                    f'{verb} is not supported on resources of kind "{qualified_resource}"',
                    details=_details(group=group, kind=resource))


def resource_expired(message: str) -> ApiError:
    """errors.NewResourceExpired: 410 with reason Expired (not the deprecated Gone)."""
    return ApiError(410, "Expired", message)


def too_many_requests(message: str, retry_after_s: int) -> ApiError:
    """errors.NewTooManyRequests: 429 TooManyRequests, details {retryAfterSeconds} (the
    dispatcher turns that into the Retry-After header, as responsewriters.ErrorNegotiated)."""
    return ApiError(429, "TooManyRequests", message,
                    details=_details(retry_after_s=retry_after_s))


def unsupported_media_type(accepted: tuple[str, ...]) -> ApiError:
    """negotiation.NewUnsupportedMediaTypeError."""
    return ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown "
                    f"format - accepted media types include: {', '.join(accepted)}")


def timeout(message: str, retry_after_s: int, causes=None) -> ApiError:
    """errors.NewTimeoutError (details always present, as upstream sets them)."""
    return ApiError(504, "Timeout", f"Timeout: {message}",
                    details=_details(causes=causes, retry_after_s=retry_after_s))


def invalid_json_patch(detail: str) -> ApiError:
    """What patch.go answers when the JSON patch cannot be applied (a failed `test`, a missing
    path, an index out of range): NewGenericServerResponse(422, ...), whose message is the
    generic one -- the library's own text (kept in `detail` here) never reaches the client."""
    return ApiError(422, "Invalid", GENERIC_422_MSG, details={}, detail=detail)


# -- the CRDs' openAPIV3Schema: decoding (pruning), validation, ratcheting ---------------------
# What a real server does with a custom object's body, ported in tests/manifests/k8s_schema.py
# (kube-openapi validation, structural pruning, list types); here it is wired into the REST
# verbs the way apiextensions-apiserver wires it (see README.md beside this file).

FIELD_VALIDATION_DIRECTIVES = ("", "Ignore", "Strict", "Warn")  # sets.List(): sorted
DEFAULT_FIELD_VALIDATION = "Warn"  # handlers/rest.go fieldValidation(""): what clients get
WARNING_CODE = 299                 # apiserver/pkg/warning: "299 - <quoted text>"
# field.ErrorType String() -> the StatusCause reason (apimachinery field/errors.go).
_CAUSE_REASONS = (("Required value", "FieldValueRequired"),
                  ("Unsupported value", "FieldValueNotSupported"),
                  ("Duplicate value", "FieldValueDuplicate"),
                  ("Too long", "FieldValueTooLong"), ("Too many", "FieldValueTooMany"),
                  ("Forbidden", "FieldValueForbidden"), ("Invalid value", "FieldValueInvalid"))
# kube-openapi's typeFailWithDataMsg: kubeOpenAPIResultToFieldErrors makes it field.TypeInvalid,
# whose ErrorBody is "Invalid value: ..." like field.Invalid but whose reason differs.
_TYPE_FAIL_TEXT = " in body must be of type "


@dataclass(frozen=True)
class CrdSchema:
    kind: str
    version: str
    schema: dict          # the version's openAPIV3Schema

    @property
    def status_schema(self) -> Optional[dict]:
        return (self.schema.get("properties") or {}).get("status")


@functools.lru_cache(maxsize=None)
def crd_schemas() -> dict[str, CrdSchema]:
    """plural -> the storage version's schema, from manifests/crds (printing.crd_documents)."""
    loaded = {}
    for crd in printing.crd_documents():
        version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
        loaded[crd["spec"]["names"]["plural"]] = CrdSchema(
            crd["spec"]["names"]["kind"], version["name"], version["schema"]["openAPIV3Schema"])
    return loaded


def field_validation_directive(query: dict[str, str], verb_options: str) -> str:
    """ValidateCreateOptions/ValidateUpdateOptions/ValidatePatchOptions' fieldValidation check,
    then handlers/rest.go fieldValidation: no value means Warn."""
    value = query.get("fieldValidation", "")
    if value not in FIELD_VALIDATION_DIRECTIVES:
        supported = ", ".join(f'"{v}"' for v in FIELD_VALIDATION_DIRECTIVES)
        raise invalid(f"{verb_options}.meta.k8s.io", "", [field_error(
            "Unsupported value", "fieldValidation", f"supported values: {supported}", value)])
    return value or DEFAULT_FIELD_VALIDATION


def prune_unknown(crd: CrdSchema, obj: Any) -> tuple[Any, list[str]]:
    """unstructuredSchemaCoercer.apply: the object without fields the schema does not know,
    and their paths: ObjectMeta's first (GetObjectMetaWithOptions), then the schema's, sorted
    (pruning.PruneWithOptions)."""
    unknown: list[str] = []
    pruned = k8s_schema._prune(crd.schema, obj, "", unknown, root=True)
    meta = [p for p in unknown if p.startswith("metadata.")]
    return pruned, meta + sorted(p for p in unknown if not p.startswith("metadata."))


def warning_header(text: str) -> str:
    """net.NewWarningHeader(299, "-", text): the text quoted with \\ and \" escaped."""
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'{WARNING_CODE} - "{quoted}"'


def strict_decoding_error(unknown: list[str]) -> str:
    """runtime.NewStrictDecodingError(...).Error()."""
    return "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in unknown)


def go_json(obj: Any) -> str:
    """json.Marshal of unstructured content: sorted keys, compact, HTML characters escaped."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


def cause_of(error: "k8s_schema.FieldError") -> dict:
    """errors.NewInvalid's StatusCause for one field.Error: reason = its type."""
    reason = "FieldValueInvalid"
    for prefix, name in _CAUSE_REASONS:
        if error.body.startswith(prefix):
            reason = name
            break
    if reason == "FieldValueInvalid" and _TYPE_FAIL_TEXT in error.body:
        reason = "FieldValueTypeInvalid"
    return {"reason": reason, "message": error.body, "field": error.path}


def _openapi_errors(schema: dict, value: Any, prefix: str) -> list["k8s_schema.FieldError"]:
    """apiextensions validation.ValidateCustomResource(fldPath, value, validator): kube-openapi
    on `value`, its errors as field errors under `prefix` (kubeOpenAPIResultToFieldErrors)."""
    errors = [k8s_schema._to_field_error(e) for e in k8s_schema._validate(schema, value, "").errors]
    if not prefix:
        return errors
    return [k8s_schema.FieldError(prefix if e.path == k8s_schema.NIL_PATH else
                                  f"{prefix}.{e.path}", e.body) for e in errors]


def _json_same(a: Any, b: Any) -> bool:
    """reflect.DeepEqual of decoded JSON (an integral 1.0 is int64 1 there; true is not 1)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) or (
        k8s_schema._canonical(a) == k8s_schema._canonical(b)
        and not isinstance(a, (dict, list)))


def _path_steps(path: str, node: Any, schema: Optional[dict]):
    """Walk a field path (`spec.a[0].b`, map keys with dots included) through `node`, yielding
    (schema, key or index) per step; keys are matched against the object, longest first."""
    rest = path
    while rest:
        if rest.startswith("["):
            close = rest.index("]")
            token, rest = rest[1:close], rest[close + 1:].lstrip(".")
            step: Any = int(token) if token.isdigit() and isinstance(node, list) else token
        else:
            keys = [k for k in (node if isinstance(node, dict) else {}) if rest == k or
                    rest.startswith(k + ".") or rest.startswith(k + "[")]
            if not keys:
                return
            step = max(keys, key=len)
            rest = rest[len(step):].lstrip(".")
        yield schema, step
        if isinstance(step, int):
            node = node[step] if step < len(node) else None
            schema = (schema or {}).get("items")
        else:
            node = node.get(step) if isinstance(node, dict) else None
            props = (schema or {}).get("properties") or {}
            schema = props.get(step) if step in props else (schema or {}).get(
                "additionalProperties") if isinstance((schema or {}).get(
                    "additionalProperties"), dict) else None
        if node is None:
            return


def _is_ratcheted(path: str, schema: dict, new: Any, old: Any) -> bool:
    """CRDValidationRatcheting (ratchetingValueValidator): errors under a node whose value is
    DeepEqual to its correlated old value are dropped. Object fields correlate by key,
    list-type=map items by their keys; other list items do not (common.CorrelatedObject)."""
    if path == k8s_schema.NIL_PATH:
        path = ""
    if _json_same(new, old):
        return True
    for sch, step in _path_steps(path, new, schema):
        if isinstance(step, int):
            keys = (sch or {}).get("x-kubernetes-list-map-keys")
            if (sch or {}).get("x-kubernetes-list-type") != "map" or not keys or \
                    not isinstance(old, list):
                return False
            new = new[step]
            match = [o for o in old if isinstance(o, dict) and isinstance(new, dict) and
                     all(o.get(k) == new.get(k) for k in keys)]
            if not match:
                return False
            old = match[0]
        else:
            if not isinstance(old, dict) or step not in old or step not in new:
                return False
            new, old = new[step], old[step]
        if _json_same(new, old):
            return True
    return False


def update_schema_errors(crd: CrdSchema, new: dict, old: dict, *,
                         status_only: bool) -> list["k8s_schema.FieldError"]:
    """customResourceStrategy.ValidateUpdate (the whole object) or statusStrategy.ValidateUpdate
    (ValidateStatusUpdate: only `status`, against the status schema, paths under `status`), with
    ratcheting; list-type duplicates only when the old object had none."""
    if status_only:
        status_schema = crd.status_schema
        errors = []
        if "status" in new and status_schema is not None:
            errors = [e for e in _openapi_errors(status_schema, new["status"], "status")
                      if not _is_ratcheted(e.path, crd.schema, new, old)]
        new_list = k8s_schema._list_type_errors(crd.schema, new, "")
        if new_list and not k8s_schema._list_type_errors(crd.schema, old, ""):
            errors += new_list
        return errors
    errors = [e for e in _openapi_errors(crd.schema, new, "")
              if not _is_ratcheted(e.path, crd.schema, new, old)]
    if not k8s_schema._list_type_errors(crd.schema, old, ""):
        errors += k8s_schema._list_type_errors(crd.schema, new, "")
    return errors


def _decode_custom(crd: CrdSchema, obj: Any, directive: str, *, warnings: list[str]) -> Any:
    """Decoding a create/update body (handlers/create.go, update.go with the CRD's
    schemaCoercingDecoder): unknown fields are pruned; Strict refuses them with a 400 from
    transformDecodeError, Warn reports each in a Warning header (addStrictDecodingWarnings)."""
    if not isinstance(obj, dict):
        return obj
    pruned, unknown = prune_unknown(crd, obj)
    if unknown and directive == "Strict":
        raise bad_request(f'{crd.kind} in version "{crd.version}" cannot be handled as a '
                          f"{crd.kind}: {strict_decoding_error(unknown)}")
    if directive == "Warn":
        warnings.extend(f'unknown field "{p}"' for p in unknown)
    return pruned


def _decode_patched(crd: CrdSchema, patched: Any, directive: str, *,
                    warnings: list[str]) -> Any:
    """jsonPatcher.applyPatchToCurrentObject decoding the patched object: Strict refuses an
    unknown field with NewInvalid(GroupKind{}, "", patch: Invalid value: <the patched object's
    JSON>: strict decoding error: ...), hence the message ` "" is invalid: patch: ...`."""
    if not isinstance(patched, dict):
        return patched
    pruned, unknown = prune_unknown(crd, patched)
    if unknown and directive == "Strict":
        raise invalid("", "", [field_error("Invalid value", "patch",
                                           strict_decoding_error(unknown),
                                           shown=k8s_schema.go_quote(go_json(patched)))])
    if directive == "Warn":
        warnings.extend(f'unknown field "{p}"' for p in unknown)
    return pruned


def invalid_object(qualified_kind: str, name: str,
                   errors: list["k8s_schema.FieldError"]) -> ApiError:
    """errors.NewInvalid for field errors from k8s_schema."""
    return invalid(qualified_kind, name, [cause_of(e) for e in errors])


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


def _go_atoi(part: str) -> Optional[int]:
    """strconv.Atoi: an optional sign and decimal digits (leading zeros allowed)."""
    return int(part) if re.fullmatch(r"[+-]?[0-9]+", part) else None


def _json_equal(doc_value: Any, test_value: Any) -> bool:
    """json-patch v4 lazyNode.equal, `doc_value.equal(test_value)`: JSON types must match (1 is
    not true); objects compare over the document's keys only (an upstream quirk: extra keys in
    the test value are not noticed)."""
    if isinstance(doc_value, dict):
        return isinstance(test_value, dict) and all(
            key in test_value and _json_equal(item, test_value[key])
            for key, item in doc_value.items())
    if isinstance(doc_value, list):
        return isinstance(test_value, list) and len(doc_value) == len(test_value) and all(
            _json_equal(a, b) for a, b in zip(doc_value, test_value))
    if isinstance(doc_value, bool) or isinstance(test_value, bool):
        return type(doc_value) is type(test_value) and doc_value == test_value
    if isinstance(doc_value, (int, float)) and isinstance(test_value, (int, float)):
        return json.dumps(doc_value) == json.dumps(test_value)  # raw bytes compare: 1 != 1.0
    return type(doc_value) is type(test_value) and doc_value == test_value


class _Missing:
    """The container/key of a JSON pointer could not be found (json-patch's findObject nil)."""


def _find_container(doc: Any, path: str):
    """json-patch v4 findObject: the container holding the last token, and that token.
    (None, "") when a path segment is missing or the path has no '/'."""
    split = path.split("/")
    if len(split) < 2:
        return None, ""
    node = doc
    for raw in split[1:-1]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list):
            index = _go_atoi(part)
            if index is None or not -len(node) <= index < len(node):
                return None, ""
            node = node[index]
        else:
            return None, ""
        if not isinstance(node, (dict, list)):
            return None, ""
    return node, split[-1].replace("~1", "/").replace("~0", "~")


def _array_index(key: str, *, size: int) -> int:
    """partialArray index rules: Atoi, negatives count from the end (SupportNegativeIndices)."""
    index = _go_atoi(key)
    if index is None:
        raise ValueError(f'strconv.Atoi: parsing "{key}": invalid syntax')
    if index >= size or index < -size:
        raise ValueError(f"Unable to access invalid index: {index}: invalid index referenced")
    return index + size if index < 0 else index


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch as the API server applies it (gopkg.in/evanphx/json-patch.v4, which
    handlers/patch.go uses), including its quirks: `replace` of a missing object key adds it,
    negative array indices count from the end. Errors are what patch.go answers: 400 for a
    patch that does not decode, 422 with the generic message for one that does not apply
    (the library's reason is in ApiError.detail)."""
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch"
                          if isinstance(ops, dict) else
                          f"json: cannot unmarshal {type(ops).__name__} into Go value of type "
                          "jsonpatch.Patch")
    if len(ops) > MAX_JSON_PATCH_OPS:
        raise ApiError(413, "RequestEntityTooLarge", "Request entity too large: The allowed "
                       f"maximum operations in a JSON patch is {MAX_JSON_PATCH_OPS}, "
                       f"got {len(ops)}")
    doc = _clone(target)
    for op in ops:
        kind = op.get("op") if isinstance(op.get("op"), str) else "unknown"
        path = op.get("path")
        if kind not in ("add", "remove", "replace", "test", "move", "copy"):
            raise invalid_json_patch(f"Unexpected kind: {kind}")
        if not isinstance(path, str):
            raise invalid_json_patch(f"{kind} operation failed to decode path")
        if kind in ("move", "copy"):
            doc = _move_or_copy(doc, op, kind)
            continue
        container, key = _find_container(doc, path)
        if container is None:
            raise invalid_json_patch(f'{kind} operation does not apply: doc is missing path: '
                                     f'"{path}": missing value')
        try:
            _apply_one(container, key, kind, op, path)
        except ValueError as exc:
            raise invalid_json_patch(f"error in {kind} for path: '{path}': {exc}") from None
    return doc


def _apply_one(container, key: str, kind: str, op: dict, path: str) -> None:
    value = _clone(op.get("value"))
    if kind == "test":
        if isinstance(container, dict):
            current = container.get(key)  # a missing member reads as null
        else:
            current = container[_array_index(key, size=len(container))]
        if current is None and value is None:
            return
        if current is None or "value" not in op or not _json_equal(current, value):
            raise invalid_json_patch(f"testing value {path} failed: test failed")
    elif kind == "add":
        if isinstance(container, dict):
            container[key] = value
        elif key == "-":
            container.append(value)
        else:
            container.insert(_array_index(key, size=len(container) + 1), value)
    elif kind == "replace":
        if isinstance(container, dict):
            container[key] = value  # v4 quirk: a missing key is added, not refused
        else:
            try:
                index = _array_index(key, size=len(container))
            except ValueError:
                raise invalid_json_patch(f"replace operation does not apply: doc is missing "
                                         f"key: {path}: missing value") from None
            container[index] = value
    else:  # remove
        if isinstance(container, dict):
            if key not in container:
                raise ValueError(f"Unable to remove nonexistent key: {key}: missing value")
            del container[key]
        else:
            del container[_array_index(key, size=len(container))]


def _move_or_copy(doc: Any, op: dict, kind: str) -> Any:
    source = op.get("from")
    if not isinstance(source, str):
        raise invalid_json_patch(f"{kind} operation failed to decode from")
    container, key = _find_container(doc, source)
    if container is None:
        raise invalid_json_patch(f"{kind} operation does not apply: doc is missing from path: "
                                 f"{source}: missing value")
    try:
        value = container[key] if isinstance(container, dict) else \
            container[_array_index(key, size=len(container))]
    except (KeyError, ValueError) as exc:
        raise invalid_json_patch(f"error in {kind} for path: '{key}': {exc}") from None
    if kind == "move":
        _apply_one(container, key, "remove", {}, source)
    _apply_one(*_find_or_fail(doc, op.get("path"), kind), "add", {"value": value},
               op.get("path"))
    return doc


def _find_or_fail(doc: Any, path: Any, kind: str):
    container, key = _find_container(doc, path) if isinstance(path, str) else (None, "")
    if container is None:
        raise invalid_json_patch(f"{kind} operation does not apply: doc is missing destination "
                                 f"path: {path}: missing value")
    return container, key


def _now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_label_selector(selector: str) -> list[tuple[str, str, tuple]]:
    """Equality-based selectors: `a=b`, `a==b`, `a!=b`, `a`, `!a`, comma-separated, as the
    requirements of tests/fakeapi/selectors.py (In, NotIn, Exists, DoesNotExist)."""
    terms: list[tuple[str, str, tuple]] = []
    for raw in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in raw:
            key, value = raw.split("!=", 1)
            terms.append((key.strip(), "NotIn", (value.strip(),)))
        elif "==" in raw or "=" in raw:
            key, value = re.split("==?", raw, maxsplit=1)
            terms.append((key.strip(), "In", (value.strip(),)))
        elif raw.startswith("!"):
            terms.append((raw[1:].strip(), "DoesNotExist", ()))
        else:
            terms.append((raw, "Exists", ()))
    return terms


# The field labels each type converts (scheme ConvertFieldLabel): custom resources use
# runtime.DefaultMetaV1FieldSelectorConversion; nodes and events pkg/apis/core/v1/conversion.go.
NODE_FIELD_LABELS = frozenset({"metadata.name", "spec.unschedulable"})
EVENT_FIELD_LABELS = frozenset({
    "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
    "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
    "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type",
    "metadata.namespace", "metadata.name"})


def _parse_field_selector(selector: str, plural: str) -> list[tuple[str, str, str]]:
    """fields.ParseSelector (`a=b`, `a==b`, `a!=b`), each label converted as the type's
    ConvertFieldLabel does; handlers/get.go answers a refused label with NewBadRequest."""
    terms = []
    for raw in filter(None, (t.strip() for t in selector.split(","))):
        match = re.fullmatch(r"([^=!]*)(!=|==|=)(.*)", raw)
        if match is None:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{raw}'")
        label, operator, value = match.group(1).strip(), match.group(2), match.group(3).strip()
        if plural == NODES:
            known = label in NODE_FIELD_LABELS
        elif plural == EVENTS:
            known = label in EVENT_FIELD_LABELS
        elif plural == PODS:
            known = label in pod_api.POD_FIELD_LABELS
        else:
            known = label in ("metadata.name", "metadata.namespace")
        if not known:
            raise bad_request(f"field label not supported: {label}"
                              if plural in (NODES, EVENTS, PODS, PDBS)
                              else f'"{label}" is not a known field selector: only '
                                   '"metadata.name", "metadata.namespace"')
        terms.append(("ne" if operator == "!=" else "eq", label, value))
    return terms


def _field_value(obj: dict, ns: str, name: str, label: str) -> str:
    """The value a field label selects, as the type's field set formats it."""
    if label == "metadata.name":
        return name
    if label == "metadata.namespace":
        return ns
    if label == "spec.unschedulable":
        return "true" if (obj.get("spec") or {}).get("unschedulable") else "false"
    if label == "source":
        return str((obj.get("source") or {}).get("component") or "")
    selected = pod_api.field_value(obj, label)
    if selected is not None:
        return selected
    node: Any = obj
    for part in label.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


class FakeApiServer:
    """The fake API server. `start()` -> base URL; everything else is thread-safe."""

    def __init__(self, *, token: Optional[str] = "test-token",
                 bookmark_interval_s: float = DEFAULT_BOOKMARK_INTERVAL_S,
                 host: str = "127.0.0.1", port: int = 0, tls: bool = False,
                 default_field_validation: Optional[str] = None,
                 schema_validation: bool = True):
        self._lock = threading.Condition()
        # False: custom objects are stored without the CRD schema (bench/: a real server validates
        # in Go in well under a millisecond; ours, in Python, would be counted as the agent's).
        self.schema_validation = schema_validation
        # What a write without ?fieldValidation= gets: Warn on a real server (unknown fields
        # pruned, a Warning header). FAKEAPI_DEFAULT_FIELD_VALIDATION=Strict (or the argument)
        # makes every such write fail instead: a way to find writes a real server would prune.
        self.default_field_validation = (default_field_validation or os.environ.get(
            "FAKEAPI_DEFAULT_FIELD_VALIDATION") or DEFAULT_FIELD_VALIDATION)
        # (resource, name) whose writes skip the CRD schema (no pruning, no validation).
        self._schema_bypass: set[tuple[str, str]] = set()
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
        self._holds: list[AnswerHold] = []
        self._crds_missing: set[str] = set()
        # plural -> the CRD's deletionTimestamp while it terminates (begin_crd_deletion).
        self._crds_terminating: dict[str, str] = {}
        self._crd_uids: dict[str, str] = {}
        self._namespaces_missing: set[str] = set()
        self._denied: list[tuple[str, str, str, Optional[str], str]] = []  # FakeApiServer.deny
        self._write_stalls: list[WriteStall] = []
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
        # TokenReview / SubjectAccessReview: the tokens it authenticates, its RBAC (rbac.py).
        self.rbac = Rbac()
        # The disruption controller's state (disruption.py); the kubelet's part of a graceful
        # pod deletion done at once (pods.py), else by finish_pod_terminations().
        self.disruption = disruption.DisruptionState()
        self.kubelet_stops_pods_at_once = True

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

    # -- reviews (rbac.py) ----------------------------------------------------------------
    def add_user(self, token: str, username: str, *, groups: tuple = (), uid: str = "") -> None:
        """A bearer token TokenReview authenticates as `username` (plus system:authenticated)."""
        user: dict = {"username": username, "groups": list(groups)}
        if uid:
            user["uid"] = uid
        with self._lock:
            self.rbac.users[token] = user

    def add_service_account_token(self, token: str, namespace: str, name: str) -> None:
        with self._lock:
            self.rbac.users[token] = {**service_account_user(namespace, name),
                                      "uid": str(uuid.uuid4())}

    def add_rbac(self, *objects: dict) -> None:
        """ClusterRoles and ClusterRoleBindings SubjectAccessReview decides with."""
        with self._lock:
            self.rbac.add(*objects)

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
                  method: Optional[str] = None, path_contains: Optional[str] = None,
                  as_status: bool = False) -> None:
        """The next `count` matching requests fail with `code` (and a Retry-After header).

        A 429 is the max-in-flight/APF filters' plain text by default; `as_status=True` makes
        it errors.NewTooManyRequests, the JSON Status a storage layer answers with (the watch
        cache while it initializes), whose retryAfterSeconds also sets Retry-After."""
        with self._lock:
            self._failures.append(_Failure(count, code, retry_after, method, path_contains,
                                           as_status))

    def clear_failures(self) -> None:
        """Forget every failure `fail_next` armed and not yet used."""
        with self._lock:
            self._failures.clear()

    def hold_next_answer(self, method: str, path_contains: str) -> AnswerHold:
        """The next request with this method whose path contains `path_contains` and that
        succeeds is handled as usual (a create is committed, watchers see it) but its answer
        waits until `release()`: the window between a write and its answer, where a client can
        be killed or the server restarted. A request answered with an error (e.g. 409) is not
        held and leaves the hold armed. Holds are used once, in the order they were made."""
        hold = AnswerHold(method, path_contains)
        with self._lock:
            self._holds.append(hold)
        return hold

    def _take_hold(self, method: str, path: str) -> Optional[AnswerHold]:
        for hold in self._holds:
            if hold.method == method and hold.path_contains in path:
                self._holds.remove(hold)
                return hold
        return None

    def _wait_held_answer(self, hold: AnswerHold, path: str, status: int) -> bool:
        """Park a handled request's answer until released (True) or the server stops (False)."""
        hold.path, hold.status = path, status
        hold.held.set()
        while not hold.released.wait(STREAM_POLL_S):
            if self._stopping.is_set():
                return False
        return not self._stopping.is_set()

    def set_crd_installed(self, plural: str, installed: bool) -> None:
        """A missing CRD answers 404 on every path under it, like a real server."""
        with self._lock:
            if installed:
                self._crds_missing.discard(plural)
                self._crds_terminating.pop(plural, None)
            else:
                self._crds_missing.add(plural)

    # -- CRD deletion: apiextensions-apiserver's crdFinalizer ------------------------------
    def begin_crd_deletion(self, plural: str) -> int:
        """`kubectl delete crd` up to the instances' removal, as crd_finalizer.go
        CRDFinalizer.sync does it: the CRD gets its deletionTimestamp and the Terminating
        condition (InstanceDeletionInProgress), then deleteInstances deletes every instance
        (DeleteCollection: one DELETED watch event each, their dependents collected). While it
        terminates a create is 405 `create not allowed while custom resource definition is
        terminating` (customresource_handler.go ServeHTTP); get, list, watch, update, delete
        still work. Returns how many instances were deleted. No instance here has finalizers
        (the agent sets none), so none waits."""
        with self._lock:
            self._crds_terminating.setdefault(plural, _now_rfc3339())
            keys = sorted(self._objects[plural])
            for key in keys:
                if key in self._objects[plural]:
                    self._delete_with_dependents_locked(plural, key)
            return len(keys)

    def finish_crd_deletion(self, plural: str) -> None:
        """The finalizer removed and the CRD gone: every path under it answers 404 (the CR
        handler finds no CRD), the CRD's own GET too, and open watches on it end cleanly (the
        storage is destroyed: crdHandler.removeDeadStorage)."""
        with self._lock:
            self._crds_terminating.pop(plural, None)
            self._crd_uids.pop(plural, None)
            self._crds_missing.add(plural)
            for stream in self._streams:
                if stream.resource == plural:
                    stream.end = True
            self._lock.notify_all()

    def delete_crd(self, plural: str) -> int:
        """Both steps of a CRD deletion, one after the other."""
        deleted = self.begin_crd_deletion(plural)
        self.finish_crd_deletion(plural)
        return deleted

    def crd_object(self, plural: str) -> Optional[dict]:
        """The CustomResourceDefinition as GET answers it (manifests/crds + server metadata;
        while terminating: deletionTimestamp, the customresourcecleanup finalizer and the
        Terminating condition); None once deleted or never installed."""
        with self._lock:
            if plural in self._crds_missing:
                return None
            crd = _clone(printing.crd_for(plural) or {})
            if not crd:
                return None
            meta = crd.setdefault("metadata", {})
            meta["uid"] = self._crd_uids.setdefault(plural, str(uuid.uuid4()))
            conditions = [{"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                           "message": "the initial names have been accepted"}]
            since = self._crds_terminating.get(plural)
            if since is not None:
                meta["deletionTimestamp"] = since
                meta["finalizers"] = [CRD_CLEANUP_FINALIZER]
                conditions.append({"type": "Terminating", "status": "True",
                                   "reason": "InstanceDeletionInProgress",
                                   "message": "CustomResource deletion is in progress"})
            crd["status"] = {"conditions": conditions}
            return crd

    def set_namespace_missing(self, namespace: str, missing: bool = True) -> None:
        """A create in `namespace` answers 404 `namespaces "<ns>" not found`, as the
        NamespaceLifecycle admission plugin does (plugin/pkg/admission/namespace/lifecycle
        admission.go Lifecycle.Admit: errors.NewNotFound(v1.Resource("namespaces"), ns)). The
        fake keeps no Namespace objects otherwise (every namespace exists)."""
        with self._lock:
            if missing:
                self._namespaces_missing.add(namespace)
            else:
                self._namespaces_missing.discard(namespace)

    def deny(self, verb: str, resource: str, *, group: str = "",
             namespace: Optional[str] = None, user: str = AGENT_USER) -> None:
        """RBAC says no: every `verb` (get, list, watch, create, update, patch, delete) on
        `resource` (a plural, with `/status` for the subresource) of `group`, in `namespace`
        (None: anywhere), is 403 as the authorization filter answers it (see `forbidden`)."""
        with self._lock:
            self._denied.append((verb, group, resource, namespace, user))

    def allow_all(self) -> None:
        """Forget every `deny`."""
        with self._lock:
            self._denied.clear()

    def _denial(self, verb: str, group: str, resource: str, namespace: str,
                name: str) -> Optional["ApiError"]:
        for denied_verb, denied_group, denied_resource, denied_ns, user in self._denied:
            if (denied_verb, denied_group, denied_resource) == (verb, group, resource) and \
                    denied_ns in (None, namespace):
                return forbidden(user=user, verb=verb, group=group, resource=resource,
                                 namespace=namespace, name=name)
        return None

    def stall_writes(self, method: str, path_contains: str, *,
                     holder: Optional[str] = None) -> WriteStall:
        """Matching writes (see WriteStall) wait before they are handled until the stall is
        released: a slow API server or etcd, where a request sits in a queue (priority and
        fairness, a stalled etcd commit) longer than a Lease lasts, and its write happens
        only after that. Released by `WriteStall.release()` or when the server stops."""
        stall = WriteStall(method, path_contains, holder)
        with self._lock:
            self._write_stalls.append(stall)
        return stall

    def _wait_write_stalls(self, method: str, path: str, body: Optional[bytes]) -> bool:
        """Park a write while a stall matches it; False when the server stops meanwhile."""
        with self._lock:
            stalls = [s for s in self._write_stalls
                      if not s.released.is_set() and s.matches(method, path, body)]
            for stall in stalls:
                stall.stalled += 1
        for stall in stalls:
            while not stall.released.wait(STREAM_POLL_S):
                if self._stopping.is_set():
                    return False
        return not self._stopping.is_set()

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
        """Create or overwrite an object as an administrator would (status kept as given).

        Custom objects must pass their CRD's schema as with kubectl (fieldValidation=Strict):
        an unknown field is a 400, a violation a 422 (raised as ApiError), unless
        skip_schema_validation() was called for the object."""
        rtype = RESOURCE_TYPES[resource]
        with self._lock:
            obj = _clone(obj)
            meta = obj.setdefault("metadata", {})
            key = (meta.get("namespace", "") if rtype.namespaced else "", meta["name"])
            crd = self._schema_for(rtype, meta["name"])
            if crd is not None:
                obj = _decode_custom(crd, obj, "Strict", warnings=[])
                errors = k8s_schema.object_errors(crd.schema, obj, field_validation="Ignore")
                if errors:
                    raise invalid_object(_qualified(rtype.kind, GROUP), meta["name"], errors)
                meta = obj["metadata"]
            old = self._objects[resource].get(key)
            if old is None:
                self._fill_new_meta(rtype, obj)
                committed = _clone(self._commit(resource, key, "ADDED", obj))
            else:
                meta["uid"] = old["metadata"]["uid"]
                meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
                if rtype.tracks_generation:
                    meta["generation"] = old["metadata"].get("generation", 1) + (
                        1 if _spec_of(obj) != _spec_of(old) else 0)
                committed = _clone(self._commit(resource, key, "MODIFIED", obj))
            self._collect_if_orphaned_locked(resource, key)
            return committed

    def skip_schema_validation(self, resource: str, name: str, skip: bool = True) -> None:
        """Writes of this custom object skip its CRD's schema (no pruning, no 422): only for a
        test that feeds the agent a template a real server refuses, to test the agent's own
        validation (its second line of defence). Say so where you call it."""
        with self._lock:
            if skip:
                self._schema_bypass.add((resource, name))
            else:
                self._schema_bypass.discard((resource, name))

    def warnings(self) -> list[str]:
        """Every Warning text sent so far (unknown fields pruned under Warn), oldest first."""
        with self._lock:
            return [w for record in self.request_log for w in record.warnings]

    def take_state_of(self, old: "FakeApiServer") -> None:
        """Adopt another (stopped or stopping) server's objects, history and request log: an
        API-server restart, the data kept as etcd keeps a real one's. Call before start()."""
        with old._lock:
            self._objects = copy.deepcopy(old._objects)
            self._rv = old._rv
            self._log = list(old._log)
            self.compaction_floor = old.compaction_floor
            self.request_log = list(old.request_log)
            self.disruption.scales = dict(old.disruption.scales)  # the controllers' (etcd's)

    def delete_object(self, resource: str, name: str, namespace: str = "") -> bool:
        with self._lock:
            key = (namespace, name)
            if key not in self._objects[resource]:
                return False
            self._delete_with_dependents_locked(resource, key)
            return True

    def set_controller_scale(self, uid: str, replicas: int) -> None:
        """The scale of the controller (ReplicaSet, StatefulSet...) with this uid, as the
        disruption controller's finders would read it (disruption.py)."""
        with self._lock:
            self.disruption.scales[uid] = int(replicas)
            for (namespace, _), pdb in sorted(self._objects[PDBS].items()):
                disruption.changed_locked(self, PDBS, pdb)

    def finish_pod_terminations(self, namespace: Optional[str] = None) -> int:
        """The kubelet: every terminating pod's containers stopped, the pod deleted (pods.py)."""
        with self._lock:
            return pod_api.finish_terminations_locked(self, namespace)

    # -- internals (all under self._lock) -------------------------------------------------
    def _schema_for(self, rtype: ResourceType, name: Any) -> Optional[CrdSchema]:
        """The CRD schema writes of this object are held to (None: a built-in, or bypassed)."""
        if (not self.schema_validation or not rtype.custom
                or (rtype.plural, str(name or "")) in self._schema_bypass):
            return None
        return crd_schemas().get(rtype.plural)

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
        disruption.changed_locked(self, resource, obj)  # the disruption controller, at once
        return obj

    def _objects_at_locked(self, resource: str, at: int) -> dict:
        """The objects of `resource` as they were at revision `at` (an etcd read at a past
        revision): the current ones, with every key changed after `at` put back to its last
        logged state at or before `at` (absent if it had none, or that was a deletion)."""
        current = self._objects[resource]
        if at >= self._rv:
            return current
        start = bisect.bisect_right(self._log, at, key=lambda entry: entry[0])
        pending = set()
        for _, res, _, obj in self._log[start:]:
            if res == resource:
                pending.add(_log_key(obj))
        if not pending:
            return current
        objects = {key: obj for key, obj in current.items() if key not in pending}
        for _, res, event_type, obj in reversed(self._log[:start]):
            if res != resource:
                continue
            key = _log_key(obj)
            if key in pending:
                pending.discard(key)
                if event_type != "DELETED":
                    objects[key] = obj
                if not pending:
                    break
        return objects

    def _delete_locked(self, resource: str, key) -> dict:
        obj = _clone(self._objects[resource].pop(key))
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._log.append((self._rv, resource, "DELETED", obj))
        self._lock.notify_all()
        disruption.changed_locked(self, resource, obj)
        return obj

    # -- garbage collection (pkg/controller/garbagecollector), done at once -----------------
    def _owner_state(self, dependent_namespace: str, ref: Any) -> str:
        """GarbageCollector.isDangling for one ownerReference: "live" (found, same uid),
        "absent" (no such object, or one with another uid), "unknown" (a kind this fake does
        not serve: the real GC cannot resolve it and retries, deleting nothing) or "invalid"
        (a cluster-scoped dependent naming a namespaced owner: namespacedOwnerOfClusterScoped-
        ObjectErr, never collected)."""
        if not isinstance(ref, dict):
            return "unknown"
        group = str(ref.get("apiVersion") or "").rpartition("/")[0]
        resource = OWNER_KIND_RESOURCES.get((group, ref.get("kind")))
        if resource is None:
            return "unknown"
        if RESOURCE_TYPES[resource].namespaced and not dependent_namespace:
            return "invalid"
        namespace = dependent_namespace if RESOURCE_TYPES[resource].namespaced else ""
        owner = self._objects[resource].get((namespace, ref.get("name")))
        if owner is not None and owner["metadata"]["uid"] == ref.get("uid"):
            return "live"
        return "absent"

    def _collect_if_orphaned_locked(self, resource: str, key) -> None:
        """GarbageCollector.attemptToDeleteItem for one object: with every owner absent it is
        deleted (background: its own dependents follow); with some owner live, the references
        to absent owners are removed (the GC's deleteOwnerRefJSONMergePatch); an owner the
        GC cannot resolve leaves the object alone."""
        obj = self._objects[resource].get(key)
        if obj is None:
            return
        refs = obj["metadata"].get("ownerReferences")
        if not isinstance(refs, list) or not refs:
            return
        states = [self._owner_state(key[0], ref) for ref in refs]
        if "unknown" in states or "invalid" in states:
            return
        if "live" not in states:
            self._delete_with_dependents_locked(resource, key)
            return
        if "absent" in states:
            kept = _clone(obj)
            kept["metadata"]["ownerReferences"] = [
                ref for ref, state in zip(refs, states) if state == "live"]
            self._commit(resource, key, "MODIFIED", kept)

    def _dependents_of(self, uid: str) -> list[tuple[str, tuple[str, str]]]:
        """Every object (any resource, any namespace) with an ownerReference to `uid`."""
        found = []
        for resource, objects in self._objects.items():
            for key, obj in sorted(objects.items()):
                refs = obj["metadata"].get("ownerReferences")
                if isinstance(refs, list) and any(
                        isinstance(ref, dict) and ref.get("uid") == uid for ref in refs):
                    found.append((resource, key))
        return found

    def _delete_with_dependents_locked(self, resource: str, key,
                                       policy: str = "Background") -> dict:
        """Delete an object and let the garbage collector act on its dependents, at once and
        under the same lock (the real one is an asynchronous controller: seconds later).
        Background and Foreground: dependents whose owners are now all gone are deleted,
        recursively; Orphan: the references to the deleted owner are removed from them."""
        uid = self._objects[resource][key]["metadata"]["uid"]
        dependents = self._dependents_of(uid)
        if policy == "Orphan":
            for dep_resource, dep_key in dependents:
                dependent = _clone(self._objects[dep_resource][dep_key])
                dependent["metadata"]["ownerReferences"] = [
                    ref for ref in dependent["metadata"]["ownerReferences"]
                    if not (isinstance(ref, dict) and ref.get("uid") == uid)]
                if not dependent["metadata"]["ownerReferences"]:
                    del dependent["metadata"]["ownerReferences"]
                self._commit(dep_resource, dep_key, "MODIFIED", dependent)
            return self._delete_locked(resource, key)
        deleted = self._delete_locked(resource, key)
        for dep_resource, dep_key in dependents:
            self._collect_if_orphaned_locked(dep_resource, dep_key)
        return deleted

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


JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
# The patch types a current server accepts: customresource_handler.go (custom resources) and
# endpoints/installer.go (built-ins), in upstream's order; that order is in the 415 message.
CR_PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, APPLY_PATCH)
BUILTIN_PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)


def _qualified(name: str, group: str) -> str:
    """schema.GroupResource/GroupKind String(): 'name.group', or 'name' for the core group."""
    return f"{name}.{group}" if group else name


def _check_patch_type(rtype: ResourceType, content_type: str) -> None:
    """handlers/patch.go PatchResource: an unsupported Content-Type is 415, before anything.

    Server-side apply is not implemented here: it is refused the only way a real server
    refuses it, as one with the ServerSideApply feature off does (the same 415, without
    apply-patch+yaml in the list). The agent does not use it."""
    accepted = CR_PATCH_TYPES if rtype.custom else BUILTIN_PATCH_TYPES
    if content_type not in accepted:
        raise unsupported_media_type(accepted)
    if content_type == APPLY_PATCH:
        raise unsupported_media_type(tuple(t for t in accepted if t != APPLY_PATCH))


def _apply_patch(content_type: str, old: dict, body: Optional[bytes]) -> dict:
    """jsonPatcher.applyJSPatch (and a merge-patch stand-in for built-ins' strategic merge)."""
    if content_type == JSON_PATCH:
        try:
            ops = json.loads(body or b"")
        except ValueError as exc:
            raise bad_request("unexpected end of JSON input" if not body else
                              f"invalid character in JSON patch: {exc}") from None
        return json_patch(old, ops)
    try:
        patch = json.loads(body or b"")
    except ValueError:
        raise bad_request("Invalid JSON Patch") from None  # jsonpatch.ErrBadJSONPatch
    if patch is None:
        raise bad_request("Invalid JSON Patch")
    if not isinstance(patch, dict):
        # Upstream turns the document into the array/scalar, then fails to decode it as an
        # object (a 422 whose exact text depends on Go's decoder; not reproduced).
        raise ApiError(422, "Invalid", f"a merge patch must be a JSON object, not "
                       f"{type(patch).__name__}", details={})
    return merge_patch(old, patch)  # strategic merge on built-ins: close enough for maps


def _check_list_options(query: dict[str, str], *, watch: bool) -> None:
    """meta/internalversion/validation ValidateListOptions, as handlers/get.go ListResource
    answers it (NewInvalid of ListOptions.meta.k8s.io). This fake has no WatchList: like a
    server without it, sendInitialEvents is refused."""
    match = query.get("resourceVersionMatch", "")
    initial_events = query.get("sendInitialEvents", "").lower() == "true"
    errors = []
    if watch:
        if match:
            errors.append(field_error("Forbidden", "resourceVersionMatch",
                                      "resourceVersionMatch is forbidden for watch"))
        if initial_events:
            errors.append(field_error("Forbidden", "sendInitialEvents",
                                      "sendInitialEvents is forbidden for watch"))
    else:
        if match:
            if not query.get("resourceVersion"):
                errors.append(field_error("Forbidden", "resourceVersionMatch",
                                          "resourceVersionMatch is forbidden unless "
                                          "resourceVersion is provided"))
            if query.get("continue"):
                errors.append(field_error("Forbidden", "resourceVersionMatch",
                                          "resourceVersionMatch is forbidden when continue is "
                                          "provided"))
            if match not in ("Exact", "NotOlderThan"):
                errors.append(field_error("Unsupported value", "resourceVersionMatch",
                                          'supported values: "Exact", "NotOlderThan", ""',
                                          match))
            if match == "Exact" and query.get("resourceVersion") == "0":
                errors.append(field_error("Forbidden", "resourceVersionMatch",
                                          'resourceVersionMatch "exact" is forbidden for '
                                          'resourceVersion "0"'))
        if initial_events:
            errors.append(field_error("Forbidden", "sendInitialEvents",
                                      "sendInitialEvents is forbidden for list"))
    if errors:
        raise invalid("ListOptions.meta.k8s.io", "", errors)


def _list_limit(query: dict[str, str]) -> int:
    """ListOptions.limit (0: none; a negative one is no limit too, as the storage reads it)."""
    value = query.get("limit", "")
    if not value:
        return 0
    try:
        return max(0, int(value))
    except ValueError:
        raise bad_request(f"invalid limit {value!r}") from None


def _list_key(ns: str, name: str, namespace: str) -> str:
    """An object's etcd key below the list's prefix (/registry/<resource>/[<ns>/]):
    `ns/name` for a namespaced resource listed across namespaces, else `name`."""
    return f"{ns}/{name}" if ns and not namespace else name


def _log_key(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def encode_continue(start: str, resource_version: int) -> str:
    """storage.EncodeContinue: base64url (no padding) of {"v", "rv", "start"}: opaque to
    clients."""
    data = json.dumps({"v": CONTINUE_VERSION, "rv": resource_version, "start": start},
                      separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def decode_continue(token: str) -> tuple[str, int]:
    """storage.DecodeContinue, refusals answered as etcd3 GetList does: 400 `invalid continue
    token: ...` (Go's base64 and JSON decoder texts are not reproduced)."""
    def refuse(reason: str) -> ApiError:
        return bad_request(f"invalid continue token: {reason}")

    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, TypeError):
        raise refuse("continue key is not valid") from None
    if not isinstance(data, dict) or data.get("v") != CONTINUE_VERSION:
        version = data.get("v") if isinstance(data, dict) else None
        raise refuse("continue key is not valid: server does not recognize this encoded "
                     f"version {version or ''}".rstrip())
    rv, start = data.get("rv"), data.get("start")
    if not isinstance(rv, int) or isinstance(rv, bool) or rv == 0:
        raise refuse("continue key is not valid: incorrect encoded start resourceVersion "
                     f"(version {CONTINUE_VERSION})")
    if not isinstance(start, str) or not start:
        raise refuse(f"continue key is not valid: encoded start key empty (version "
                     f"{CONTINUE_VERSION})")
    key = start if start.startswith("/") else "/" + start
    if posixpath.normpath(key) != key:
        raise refuse(f"continue key is not valid: {start}")  # path.Clean: no traversal
    return start, rv


# pkg/apis/coordination/validation/validation.go validLeaseStrategies.
VALID_LEASE_STRATEGIES = ("OldestEmulationVersion",)
DELETE_PROPAGATION_POLICIES = ("Foreground", "Background", "Orphan")


def _go_int(value: Any) -> Optional[int]:
    """An int32 field as Go decodes it (None: absent or null; bools are not numbers)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def lease_spec_errors(obj: dict) -> list[dict]:
    """ValidateLeaseSpec (pkg/apis/coordination/validation/validation.go). acquireTime and
    renewTime are MicroTimes upstream does not validate further; they are stored as sent."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    errors = []
    duration = _go_int(spec.get("leaseDurationSeconds"))
    if duration is not None and duration <= 0:
        errors.append(field_error("Invalid value", "spec.leaseDurationSeconds",
                                  "must be greater than 0", shown=str(duration)))
    transitions = _go_int(spec.get("leaseTransitions"))
    if transitions is not None and transitions < 0:
        errors.append(field_error("Invalid value", "spec.leaseTransitions",
                                  "must be greater than or equal to 0", shown=str(transitions)))
    strategy = spec.get("strategy")
    if strategy is not None and "/" not in str(strategy) and \
            strategy not in VALID_LEASE_STRATEGIES:
        # ValidateCoordinatedLeaseStrategy gets fldPath.Child("strategy") and adds another
        # Child("strategy"): upstream's path really is spec.strategy.strategy.
        errors.append(field_error(
            "Unsupported value", "spec.strategy.strategy",
            "supported values: " + ", ".join(f'"{s}"' for s in VALID_LEASE_STRATEGIES),
            str(strategy)))
    if spec.get("preferredHolder") and not spec.get("strategy"):
        errors.append(field_error("Forbidden", "spec.preferredHolder",
                                  "may only be specified if `strategy` is defined"))
    return errors


def _delete_options(body: Optional[bytes], query: dict[str, str]) -> dict:
    """handlers/delete.go DeleteResource: DeleteOptions from the body, or (no body) from the
    query; then ValidateDeleteOptions (meta/v1/validation), as rest/delete.go BeforeDelete
    runs it: 422 `DeleteOptions.meta.k8s.io "" is invalid: ...`."""
    if body:
        options = _decode(body)
        if not isinstance(options, dict):
            raise bad_request("the object provided is unrecognized")
    else:
        options = {}
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        if "orphanDependents" in query:
            options["orphanDependents"] = query["orphanDependents"].lower() == "true"
    return options


def _check_delete_options(options: dict) -> None:
    """meta/v1/validation ValidateDeleteOptions (called by rest/delete.go BeforeDelete)."""
    policy = options.get("propagationPolicy")
    errors = []
    if options.get("orphanDependents") is not None and policy is not None:
        errors.append(field_error("Invalid value", "propagationPolicy",
                                  "orphanDependents and deletionPropagation cannot be both set",
                                  policy))
    if policy is not None and policy not in DELETE_PROPAGATION_POLICIES:
        errors.append(field_error(
            "Unsupported value", "propagationPolicy", "supported values: " + ", ".join(
                f'"{p}"' for p in (*DELETE_PROPAGATION_POLICIES, "nil")), policy))
    if errors:
        raise invalid("DeleteOptions.meta.k8s.io", "", errors)


def _check_delete_preconditions(options: dict, obj: dict, qualified_kind: str) -> None:
    """rest/delete.go BeforeDelete: the uid precondition, then the resourceVersion one, each
    a 409 Conflict with upstream's text. (The storage checks them again in etcd3
    store.go conditionalDelete -> Preconditions.Check, whose "Precondition failed: ..." text
    only shows when the object changes between the read and the delete: never here, where
    both happen under one lock.)"""
    preconditions = options.get("preconditions")
    if not isinstance(preconditions, dict):
        return
    meta = obj["metadata"]
    uid = preconditions.get("uid")
    if uid is not None and uid != meta["uid"]:
        raise precondition_conflict(qualified_kind, meta["name"], (
            f"the UID in the precondition ({uid}) does not match the UID in record "
            f"({meta['uid']}). The object might have been deleted and then recreated"))
    rv = preconditions.get("resourceVersion")
    if rv is not None and rv != meta["resourceVersion"]:
        raise precondition_conflict(qualified_kind, meta["name"], (
            f"the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion "
            f"in record ({meta['resourceVersion']}). The object might have been modified"))


def _propagation_policy(options: dict) -> str:
    """store.go deletionFinalizersForGarbageCollection: orphanDependents=true is Orphan; no
    policy is Background (the default of every type this fake serves)."""
    if options.get("propagationPolicy"):
        return options["propagationPolicy"]
    return "Orphan" if options.get("orphanDependents") is True else "Background"


def _check_name(obj: dict, name: str) -> None:
    """handlers/rest.go checkName."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    obj_name = meta.get("name") or ""
    if obj_name != name:
        raise bad_request(f"the name of the object ({obj_name}) does not match the name on "
                          f"the URL ({name})")


def _name_errors(name: Any) -> list[dict]:
    """ValidateObjectMetaAccessor with NameIsDNSSubdomain (custom resources, nodes, events)."""
    if not name:
        return [field_error("Required value", "metadata.name",
                            "name or generateName is required")]
    name = str(name)
    messages = []
    if len(name) > DNS1123_SUBDOMAIN_MAX:
        messages.append(f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters")
    if not DNS1123_SUBDOMAIN_RE.match(name):
        messages.append(DNS1123_SUBDOMAIN_MSG)
    return [field_error("Invalid value", "metadata.name", msg, name) for msg in messages]


def _generate_name(prefix: str) -> str:
    """names.SimpleNameGenerator: the prefix cut to 58 characters plus 5 random ones."""
    base = prefix[:63 - GENERATED_NAME_SUFFIX_LEN]
    return base + "".join(random.choice(GENERATED_NAME_CHARS)
                          for _ in range(GENERATED_NAME_SUFFIX_LEN))


def _status_prepare_for_update(old: dict, new: dict) -> dict:
    """customresource statusStrategy.PrepareForUpdate: the old object with the new status
    (no status in the request removes it); spec and all metadata stay as they were."""
    result = _clone(old)
    if "status" in new:
        result["status"] = _clone(new["status"])
    else:
        result.pop("status", None)
    return result


def _prepare_for_update(rtype: ResourceType, old: dict, new: dict) -> dict:
    """rest.BeforeUpdate + customResourceStrategy.PrepareForUpdate for a main-resource write:
    generation, uid and creationTimestamp are the server's; with a status subresource the old
    status is kept; any change outside metadata bumps the generation."""
    new = _clone(new)
    meta = new.get("metadata")
    if not isinstance(meta, dict):
        meta = new["metadata"] = {}
    old_meta = old["metadata"]
    for field_name in ("uid", "creationTimestamp", "resourceVersion", "generation",
                       "namespace", "name"):
        if field_name in old_meta:
            meta[field_name] = old_meta[field_name]
        else:
            meta.pop(field_name, None)
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


def _spec_of(obj: dict) -> dict:
    """Everything but metadata and status: what a generation counts changes of."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


# Create-only review resources (no storage): path -> kind (_Handler._review).
_REVIEW_PATHS = {"/apis/authentication.k8s.io/v1/tokenreviews": "TokenReview",
                 "/apis/authorization.k8s.io/v1/subjectaccessreviews": "SubjectAccessReview"}
_REVIEW_GROUPS = {"TokenReview": "authentication.k8s.io",
                  "SubjectAccessReview": "authorization.k8s.io"}

CRD_RESOURCE = "customresourcedefinitions.apiextensions.k8s.io"
CRD_CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
_CRD_PATH = re.compile(r"^/apis/apiextensions\.k8s\.io/v1/customresourcedefinitions/(?P<name>[^/]+)$")


def _crd_path_name(path: str) -> Optional[str]:
    match = _CRD_PATH.match(path)
    return match.group("name") if match else None


_ROUTES = [
    (re.compile(r"^/apis/" + re.escape(GROUP) + r"/v1/(?P<plural>hostnetworktemplates|hostnetworks)"
                r"(?:/(?P<name>[^/]+)(?:/(?P<sub>status))?)?$"), None),
    # No /status: the AddressClaim CRD has no status subresource (a real server answers 404).
    (re.compile(r"^/apis/" + re.escape(GROUP) + r"/v1/(?P<plural>addressclaims)"
                r"(?:/(?P<name>[^/]+))?$"), None),
    (re.compile(r"^/api/v1/(?P<plural>nodes)(?:/(?P<name>[^/]+)(?:/(?P<sub>status))?)?$"), None),
    (re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<plural>events)(?:/(?P<name>[^/]+))?$"),
     None),
    (re.compile(r"^/apis/events\.k8s\.io/v1/namespaces/(?P<ns>[^/]+)/(?P<plural>events)"
                r"(?:/(?P<name>[^/]+))?$"), "events.k8s.io/v1"),
    (re.compile(r"^/api/v1/(?P<plural>events)$"), None),
    (re.compile(r"^/apis/coordination\.k8s\.io/v1/namespaces/(?P<ns>[^/]+)/(?P<plural>leases)"
                r"(?:/(?P<name>[^/]+))?$"), None),
    (re.compile(r"^/apis/coordination\.k8s\.io/v1/(?P<plural>leases)$"), None),  # all namespaces
    (re.compile(r"^/apis/discovery\.k8s\.io/v1/namespaces/(?P<ns>[^/]+)/(?P<plural>endpointslices)"
                r"(?:/(?P<name>[^/]+))?$"), None),
    (re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<plural>pods)"
                r"(?:/(?P<name>[^/]+)(?:/(?P<sub>status|eviction))?)?$"), None),
    (re.compile(r"^/api/v1/(?P<plural>pods)$"), None),  # all namespaces
    (re.compile(r"^/apis/policy/v1/namespaces/(?P<ns>[^/]+)/(?P<plural>poddisruptionbudgets)"
                r"(?:/(?P<name>[^/]+)(?:/(?P<sub>status))?)?$"), None),
    (re.compile(r"^/apis/policy/v1/(?P<plural>poddisruptionbudgets)$"), None),
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

    def handle(self):
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):
            self.close_connection = True  # the client went away mid-request (e.g. killed)

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
        self._warnings = record.warnings  # filled by decoding; sent with the answer
        self._record = record
        # Accept `as=PartialObjectMetadata[List]` (metadata.py): applied to the answer.
        self._conversion = metadata.negotiate_conversion(self.headers.get("Accept") or "")
        self._api_version = ""  # of the route (events: the version to answer in)
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
                if failure.code == 429 and failure.as_status:
                    raise too_many_requests("injected failure", failure.retry_after or 1)
                if failure.retry_after is not None:
                    headers["Retry-After"] = str(failure.retry_after)
                elif failure.code == 429:
                    headers["Retry-After"] = "1"  # maxinflight.go always sends one
                raise _injected_failure(failure.code, headers)
            review = _REVIEW_PATHS.get(parts.path)
            if review is not None:
                status, payload = self._review(review, method, body)
                record.status = status
                self._send_json(status, payload)
                return
            crd_name = _crd_path_name(parts.path)
            if crd_name is not None:
                record.status = 200
                self._send_json(200, self._get_crd(method, crd_name))
                return
            route = self._route(parts.path)
            if route is None:
                document = self._discovery(method, parts.path)
                if document is None:
                    raise ApiError(404, "NotFound",
                                   NOT_FOUND_HANDLER_MSG)
                record.status = 200
                self._send_json(200, document)
                return
            rtype, namespace, name, sub, api_version = route
            self._api_version = api_version
            if rtype.custom and rtype.plural in api._crds_missing:
                raise ApiError(404, "NotFound", NOT_FOUND_HANDLER_MSG)
            with api._lock:
                denial = api._denial(
                    _request_verb(method, name, is_watch), api_version.rpartition("/")[0],
                    rtype.plural + (f"/{sub}" if sub else ""), namespace, name or "")
            if denial:
                raise denial  # the authorization filter runs before any handler
            if (rtype.custom and method == "POST" and not is_watch
                    and rtype.plural in api._crds_terminating):
                # customresource_handler.go ServeHTTP, case "create" while terminating.
                refused = method_not_supported(_qualified(rtype.plural, GROUP), "create")
                refused.message = "create not allowed while custom resource definition is terminating"
                raise refused
            if method == "POST" and namespace and namespace in api._namespaces_missing:
                raise not_found("namespaces", namespace)  # admission: NamespaceLifecycle
            if method in WRITE_METHODS and not api._wait_write_stalls(method, parts.path, body):
                self.close_connection = True  # stopped while stalled: no answer
                return
            if is_watch:
                record.status = 200
                self._watch(rtype, namespace, name, query)
                return
            status, payload = self._handle(method, rtype, namespace, name, sub, api_version,
                                           query, body)
            if method == "GET":
                payload = self._as_metadata(payload, rtype)
            if method == "GET" and printing.wants_table(self.headers.get("Accept") or ""):
                payload = printing.to_table(rtype.plural, payload,
                                            include_object=query.get("includeObject", "Partial"))
            elif not (method == "DELETE" or self._conversion):
                payload = _event_out(rtype, api_version, payload)
            record.status = status
            with api._lock:
                hold = api._take_hold(method, parts.path)
            if hold is not None and not api._wait_held_answer(hold, parts.path, status):
                self.close_connection = True  # stopped while held: the answer is lost
                return
            self._send_json(status, payload)
        except ApiError as exc:
            record.status = exc.code
            if exc.plain_text:
                self._send_text(exc.code, exc.message + "\n", exc.headers)
            else:
                payload = status_object(exc.code, exc.reason, exc.message, exc.details)
                if exc.list_continue:
                    payload["metadata"]["continue"] = exc.list_continue
                headers = dict(exc.headers)
                retry_s = (exc.details or {}).get("retryAfterSeconds")
                if retry_s and not any(k.lower() == "retry-after" for k in headers):
                    # responsewriters.ErrorNegotiated: a Status with retryAfterSeconds also
                    # sets the Retry-After header.
                    headers["Retry-After"] = str(retry_s)
                self._send_json(exc.code, payload, headers)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _review(self, kind: str, method: str, body: Optional[bytes]) -> tuple[int, dict]:
        """POST of a TokenReview or SubjectAccessReview: nothing stored, the object answered
        (201) with its status filled, as upstream's REST.Create of each
        (pkg/registry/authentication/tokenreview/storage.go,
        pkg/registry/authorization/subjectaccessreview/rest.go)."""
        group = _REVIEW_GROUPS[kind]
        if method != "POST":
            raise method_not_supported(f"{kind.lower()}s.{group}", method.lower())
        obj = _decode(body)
        if not isinstance(obj, dict):
            raise bad_request(f"not a {kind}")
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        answer = {"kind": kind, "apiVersion": f"{group}/v1",
                  "metadata": {"creationTimestamp": None}, "spec": spec}
        with self.api._lock:
            rbac = self.api.rbac
            if kind == "TokenReview":
                token = spec.get("token") or ""
                if not token:  # storage.go Create
                    raise bad_request("token is required for TokenReview in authentication")
                user = rbac.authenticate(token)
                # TokenReviewStatus: authenticated and error are omitempty, user is not.
                answer["status"] = {"authenticated": True, "user": user} if user else {"user": {}}
                return 201, answer
            # authorization/validation.go ValidateSubjectAccessReviewSpec
            causes = []
            has_resource = spec.get("resourceAttributes") is not None
            has_non_resource = spec.get("nonResourceAttributes") is not None
            if has_resource and has_non_resource:
                causes.append(field_error(
                    "Invalid value", "spec.nonResourceAttributes",
                    "cannot be specified in combination with resourceAttributes",
                    shown=_go_non_resource_attributes(spec["nonResourceAttributes"])))
            if not has_resource and not has_non_resource:
                causes.append(field_error(
                    "Invalid value", "spec.resourceAttributes",
                    "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    shown='"null"'))  # ErrorBody: a nil pointer is the string "null", %q
            if not spec.get("user") and not spec.get("groups"):
                causes.append(field_error("Invalid value", "spec.user",
                                          "at least one of user or group must be specified", ""))
            if causes:
                raise invalid(f"{kind}.{group}", "", causes)
            allowed, reason = rbac.authorize(spec)
        status: dict = {"allowed": allowed}
        if reason:
            status["reason"] = reason
        answer["status"] = status
        return 201, answer

    def _get_crd(self, method: str, name: str) -> dict:
        """GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions/NAME, for our CRDs
        only (the agent reads its templates' one to tell a CRD deletion from a user's)."""
        if method != "GET":
            raise method_not_supported(CRD_RESOURCE, method.lower())
        plural, _, group = name.partition(".")
        crd = self.api.crd_object(plural) if group == GROUP and plural in RESOURCE_TYPES else None
        if crd is None:
            raise not_found(CRD_RESOURCE, name)
        return crd

    def _as_metadata(self, payload, rtype):
        """A get or list answer in the metadata form the client asked for (metadata.py)."""
        try:
            return metadata.as_metadata(payload, self._conversion, plural=rtype.plural)
        except metadata.NotAcceptable as exc:
            raise ApiError(406, "NotAcceptable", exc.message) from None

    def _event_line(self, event_type: str, obj: dict) -> str:
        """One watch event, its object converted as the watch asked (metadata.py)."""
        if event_type != "BOOKMARK" and not self._conversion:
            obj = _event_out(RESOURCE_TYPES[EVENTS], self._api_version, obj) \
                if obj.get("kind") == "Event" else obj
        return json.dumps({"type": event_type,
                           "object": metadata.watch_object(obj, self._conversion)})

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

    def _send_warnings(self) -> None:
        """The warning filter adds a header per distinct text as it is recorded, so error
        answers carry them too (apiserver/pkg/endpoints/filters/warning.go)."""
        for text in dict.fromkeys(getattr(self, "_warnings", [])):
            self.send_header("Warning", warning_header(text))

    def _send_text(self, status: int, text: str, headers: Optional[dict] = None) -> None:
        """Go's http.Error: text/plain, nosniff, the message and a newline."""
        data = text.encode()
        self.send_response(status)
        self._send_warnings()
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, status: int, payload: Any, headers: Optional[dict] = None) -> None:
        data = json.dumps(payload).encode()
        self._record.bytes_sent += len(data)
        self.send_response(status)
        self._send_warnings()
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
        group = api_version.rpartition("/")[0]
        resource = _qualified(rtype.plural, group)
        if sub == "eviction":
            # pkg/registry/core/pod/storage/eviction.go: EvictionREST is a NamedCreater only.
            if method != "POST":
                raise ApiError(405, "MethodNotAllowed",
                               "the server does not allow this method on the requested resource")
            with api._lock:
                return disruption.create_eviction_locked(api, namespace, name, _decode(body),
                                                         query)
        if sub and method in ("POST", "DELETE"):
            # customresource_handler.go serveStatus: only get, update and patch.
            raise method_not_supported(resource, "create" if method == "POST" else "delete")
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if method == "PATCH":
            _check_patch_type(rtype, content_type)  # handlers/patch.go: before anything else
        directive = ""
        if rtype.custom and method in ("POST", "PUT", "PATCH"):
            # create.go/update.go/patch.go: the options are validated before the body is read.
            directive = field_validation_directive(query, {
                "POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions"}[method])
            if "fieldValidation" not in query:
                directive = api.default_field_validation
        with api._lock:
            objects = api._objects[rtype.plural]
            if method == "GET" and name is None:
                return 200, self._list(rtype, namespace, query)
            if method == "GET":
                obj = objects.get(key)
                if obj is None:
                    raise not_found(resource, name)
                return 200, obj  # stored objects are never changed in place
            if method == "POST":
                obj = _decode(body)
                meta = obj.get("metadata") if isinstance(obj, dict) else None
                crd = api._schema_for(rtype, meta.get("name") if isinstance(meta, dict) else "")
                if crd is not None:
                    obj = _decode_custom(crd, obj, directive, warnings=self._warnings)
                obj = _event_in(rtype, api_version, obj)
                created = self._create(rtype, namespace, api_version, obj, crd=crd)
                # graph_builder.go: owners not in the graph become virtual nodes; an absent
                # one makes the GC delete the new object ("dangling owner").
                api._collect_if_orphaned_locked(rtype.plural, (created["metadata"].get(
                    "namespace", ""), created["metadata"]["name"]))
                return 201, created
            if name is None or (rtype.plural == LEASES and not namespace):
                raise ApiError(405, "MethodNotAllowed", f"{method} needs a name")
            old = objects.get(key)
            if method == "DELETE":
                options = _delete_options(body, query)  # handlers/delete.go DeleteResource
                if old is None:
                    raise not_found(resource, name)  # store.go Delete: Get first
                _check_delete_options(options)      # rest/delete.go BeforeDelete
                _check_delete_preconditions(options, old, _qualified(rtype.kind, group))
                if rtype.plural == PODS:  # graceful (pods.py); the store returns the pod
                    return 200, pod_api.delete_pod_locked(api, key, options)
                deleted = api._delete_with_dependents_locked(rtype.plural, key,
                                                             _propagation_policy(options))
                # store.go finalizeDelete: without ReturnDeletedObject (CRs, nodes, events)
                # the answer is a Success Status naming what was deleted.
                return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                             "status": "Success", "details": _details(
                                 name=name, group=group, kind=rtype.plural) | {
                                 "uid": deleted["metadata"]["uid"]}}
            crd = api._schema_for(rtype, name)
            if method == "PUT":
                new = _decode(body)
                if not isinstance(new, dict):
                    raise bad_request("the object provided is unrecognized")
                if crd is not None:
                    new = _decode_custom(crd, new, directive, warnings=self._warnings)
                new = _event_in(rtype, api_version, new)
                _check_name(new, name)  # handlers/update.go checkName, before the store
                if old is None and rtype.create_on_update:
                    # store.go Update: no object and AllowCreateOnUpdate -> BeforeCreate and
                    # create; the request's resourceVersion is not a precondition then.
                    new.setdefault("metadata", {}).pop("resourceVersion", None)
                    created = self._create(rtype, namespace, api_version, new, crd=crd)
                    api._collect_if_orphaned_locked(rtype.plural, key)
                    return 201, created
                if old is None:
                    raise not_found(resource, name)
            else:  # PATCH
                if old is None:
                    raise not_found(resource, name)  # jsonPatcher.createNewObject
                if rtype.plural == EVENTS:  # patched in the request's version
                    new = _event_in(rtype, api_version, _apply_patch(
                        content_type, _event_out(rtype, api_version, old), body))
                else:
                    new = _apply_patch(content_type, old, body)
                if crd is not None:
                    new = _decode_patched(crd, new, directive, warnings=self._warnings)
                _check_name(new, name)  # patch.go applyPatch -> checkName
            updated = self._update(rtype, resource, group, old, new, status_write=sub == "status",
                                   crd=crd, api_version=api_version)
            if updated == old:
                return 200, old  # etcd3 GuaranteedUpdate: an unchanged object is not written
            committed = api._commit(rtype.plural, key, "MODIFIED", updated)
            api._collect_if_orphaned_locked(rtype.plural, key)  # the GC sees owner changes
            return 200, committed

    def _update(self, rtype, resource, group, old, new, *, status_write, crd=None,
                api_version=""):
        """store.go Update: the resourceVersion precondition, then rest.BeforeUpdate (the
        strategy's PrepareForUpdate, then ValidateUpdate: metadata, then the CRD schema)."""
        name = old["metadata"]["name"]
        meta = new.get("metadata") if isinstance(new.get("metadata"), dict) else {}
        sent_rv = str(meta.get("resourceVersion") or "")
        if not sent_rv:
            if not rtype.allow_unconditional_update:
                # store.go: the Invalid error names the *resource* as its kind (#18526).
                raise invalid(resource, name, [field_error(
                    "Invalid value", "metadata.resourceVersion", "must be specified for an update",
                    shown="0x0")])
        elif sent_rv != old["metadata"]["resourceVersion"]:
            raise conflict(resource, name)
        causes = []
        if status_write:
            updated = _status_prepare_for_update(old, new)
        else:
            new_uid = meta.get("uid")
            if new_uid and new_uid != old["metadata"]["uid"]:
                # validateCommonFields -> ValidateObjectMetaUpdate: uid is immutable.
                causes.append(field_error("Invalid value", "metadata.uid", "field is immutable",
                                          new_uid))
            updated = _prepare_for_update(rtype, old, new)
            if rtype.plural == LEASES:
                causes += lease_spec_errors(updated)  # ValidateLeaseUpdate
            if rtype.plural == EVENTS:  # eventStrategy.ValidateUpdate
                causes += event_api.update_errors(updated, old, api_version)
        if crd is not None:
            causes += [cause_of(e) for e in update_schema_errors(
                crd, updated, old, status_only=status_write)]
        if causes:
            raise invalid(_qualified(rtype.kind, group), name, causes)
        return updated

    def _list(self, rtype, namespace, query):
        """A list, served where a real server serves it (README "Lists and watches"):
        cacher/delegator.go shouldDelegateList decides between the watch cache (any
        resourceVersion "not older than", `limit` ignored for resourceVersion=0: cacher.go
        computeListLimit) and etcd (an Exact read, a paged read at the continue token's
        revision: etcd3/store.go GetList)."""
        api = self.api
        _check_list_options(query, watch=False)
        rv = query.get("resourceVersion", "")
        limit = _list_limit(query)
        token = query.get("continue", "")
        if token:
            return self._list_continue(rtype, namespace, query, rv, token, limit)
        exact = query.get("resourceVersionMatch") == "Exact"
        if rv not in ("", "0"):
            if not rv.isdigit():
                raise bad_request(f"invalid resource version {rv!r}")
            if int(rv) > api._rv:
                # cacher waitUntilFreshAndBlock -> storage.NewTooLargeResourceVersionError (a
                # real server first waits 3 s for the cache to catch up; this one answers now).
                raise timeout(f"Too large resource version: {rv}, current: {api._rv}",
                              TOO_LARGE_RV_RETRY_S, causes=[{
                                  "reason": "ResourceVersionTooLarge",
                                  "message": "Too large resource version"}])
            # shouldDelegateList: Exact, or the legacy exact match (a limit with a
            # resourceVersion other than 0), is read from etcd at that revision.
            exact = exact or (limit > 0 and not query.get("resourceVersionMatch"))
            if int(rv) < api.compaction_floor and (exact or api.list_too_old_410):
                raise resource_expired(EXPIRED_LIST_MSG)  # etcd3 interpretListError
        if rv == "0" or not limit:
            # The watch cache (rv=0: limit ignored, computeListLimit) or an unpaged read.
            objects = api._objects_at_locked(rtype.plural, int(rv)) if exact else None
            items = [_clone(obj) for obj in self._selected(rtype, namespace, query, objects)]
            at = int(rv) if exact else api._rv
            return {"apiVersion": rtype.api_version, "kind": rtype.kind + "List",
                    "metadata": {"resourceVersion": str(at)}, "items": items}
        at = int(rv) if rv else api._rv
        return self._list_page(rtype, namespace, query, at=at, after="", limit=limit)

    def _list_continue(self, rtype, namespace, query, rv, token, limit):
        """etcd3/store.go GetList with a continue token: no resourceVersion beside it, the
        token decoded as storage.DecodeContinue does, its revision read exactly; a compacted
        one is 410 with a token to go on inconsistently (errors.go
        handleCompactedErrorForPaging)."""
        api = self.api
        if rv not in ("", "0"):
            raise bad_request("specifying resource version is not allowed when using continue")
        after, continue_rv = decode_continue(token)
        if 0 < continue_rv < api.compaction_floor:
            error = resource_expired(INCONSISTENT_CONTINUE_MSG)
            error.list_continue = encode_continue(after, -1)
            raise error
        # rv -1 (the token of a 410): go on at the latest revision.
        at = continue_rv if continue_rv > 0 else api._rv
        return self._list_page(rtype, namespace, query, at=at, after=after, limit=limit)

    def _list_page(self, rtype, namespace, query, *, at: int, after: str, limit: int):
        """One page of an etcd range read at revision `at`, in key order, from after the
        continue key: `limit` matching items, `continue` while keys are left, and
        `remainingItemCount` only without selectors (etcd3 store GetList: pred.Empty())."""
        api = self.api
        objects = api._objects_at_locked(rtype.plural, at)
        keyed = sorted((_list_key(ns, name, namespace), (ns, name)) for ns, name in objects)
        keyed = [(key, ident) for key, ident in keyed if key >= after
                 and (not namespace or ident[0] == namespace)]
        fields = _parse_field_selector(query.get("fieldSelector", ""), rtype.plural)
        labels = _parse_label_selector(query.get("labelSelector", ""))
        items, last = [], -1
        for index, (key, (ns, name)) in enumerate(keyed):
            if len(items) >= limit:
                break
            last = index
            obj = objects[(ns, name)]
            if _matches(obj, ns, name, namespace, fields, labels):
                items.append(_clone(obj))
        meta: dict = {"resourceVersion": str(at)}
        left = len(keyed) - (last + 1)
        if left > 0 and len(items) >= limit:
            meta["continue"] = encode_continue(keyed[last][0] + "\x00", at)
            if not fields and not labels:
                meta["remainingItemCount"] = left
        return {"apiVersion": rtype.api_version, "kind": rtype.kind + "List",
                "metadata": meta, "items": items}

    def _selected(self, rtype, namespace, query, objects=None):
        fields = _parse_field_selector(query.get("fieldSelector", ""), rtype.plural)
        labels = _parse_label_selector(query.get("labelSelector", ""))
        objects = self.api._objects[rtype.plural] if objects is None else objects
        for (ns, name), obj in sorted(objects.items()):
            if _matches(obj, ns, name, namespace, fields, labels):
                yield obj

    def _create(self, rtype, namespace, api_version, obj, *, crd=None):
        """store.go Create: rest.BeforeCreate (PrepareForCreate, generateName, the strategy's
        Validate: metadata, then the CRD schema), then the storage's own checks
        (resourceVersion, AlreadyExists)."""
        api = self.api
        if not isinstance(obj, dict):
            raise bad_request("the object provided is unrecognized")
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        group = api_version.rpartition("/")[0]
        if rtype.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            meta["namespace"] = namespace
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = _generate_name(str(meta["generateName"]))
        if rtype.custom and rtype.has_status:
            obj.pop("status", None)  # customResourceStrategy.PrepareForCreate
        if rtype.plural == PODS:
            pod_api.prepare_for_create(obj)  # podStrategy.PrepareForCreate
        if rtype.plural == PDBS:
            disruption.prepare_pdb_for_create(obj)
        if crd is not None:
            # customResourceStrategy.Validate: ObjectMeta, kube-openapi, list types.
            errors = [cause_of(e) for e in k8s_schema.object_errors(
                crd.schema, obj, field_validation="Ignore")]
        elif rtype.plural == EVENTS:
            # eventStrategy.Validate (ValidateEventCreate), then BeforeCreate's ObjectMeta.
            errors = event_api.create_errors(obj, api_version) or _name_errors(meta.get("name"))
        else:
            errors = _name_errors(meta.get("name"))
        if rtype.plural == LEASES:
            errors += lease_spec_errors(obj)  # ValidateLease: ObjectMeta, then the spec
        if errors:
            raise invalid(_qualified(rtype.kind, group), str(meta.get("name") or ""), errors)
        if str(meta.get("resourceVersion") or "") not in ("", "0"):
            # etcd3 store.Create returns a plain error; ErrorToAPIStatus makes it a 500
            # with no reason.
            raise ApiError(500, "", RV_ON_CREATE_MSG)
        key = (namespace, meta["name"])
        if key in api._objects[rtype.plural]:
            raise already_exists(_qualified(rtype.plural, group), meta["name"])
        meta.pop("resourceVersion", None)
        api._fill_new_meta(rtype, obj)
        obj["apiVersion"] = api_version
        return api._commit(rtype.plural, key, "ADDED", obj)

    # -- watch ----------------------------------------------------------------------------
    def _watch(self, rtype, namespace, name, query) -> None:
        api = self.api
        _check_list_options(query, watch=True)
        fields = _parse_field_selector(query.get("fieldSelector", ""), rtype.plural)
        if name:
            fields.append(("eq", "metadata.name", name))
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
                        pending.append(self._event_line("ADDED", obj))
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
                # Storage destroyed (finish_crd_deletion): what was committed before still
                # goes out, then the watch ends.
                ending = stream.end
                if stream.expire:
                    # etcd3 interpretWatchError: what a watch compacted under it gets.
                    out.append(json.dumps({"type": "ERROR", "object": status_object(
                        410, "Expired", EXPIRED_WATCH_MSG)}))
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
                            out.append(self._event_line(event_type, obj))
                    cursor = api._rv
                    now = time.monotonic()
                    if bookmarks and now >= next_bookmark:
                        out.append(self._event_line("BOOKMARK", {
                            "kind": rtype.kind, "apiVersion": rtype.api_version,
                            "metadata": {"resourceVersion": str(cursor)}}))
                        next_bookmark = now + api.bookmark_interval_s
                if not out and not ending:
                    if not api._stall and time.monotonic() >= deadline:
                        return True
                    api._lock.wait(STREAM_POLL_S)
            if out:
                self._write_lines(out)
            elif self._client_gone():
                return False
            if ending:
                return True

    def _write_lines(self, lines: list[str]) -> None:
        for line in lines:
            data = (line + "\n").encode()
            self._record.bytes_sent += len(data)
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
    for operator, label, value in fields:
        if (_field_value(obj, ns, name, label) == value) != (operator == "eq"):
            return False
    return selectors.requirements_match(terms, (obj.get("metadata") or {}).get("labels") or {})


def _go_non_resource_attributes(attrs: Any) -> str:
    """field.ErrorBody's `%#v` of the dereferenced *authorization.NonResourceAttributes."""
    attrs = attrs if isinstance(attrs, dict) else {}
    return (f"authorization.NonResourceAttributes{{Path:{json.dumps(str(attrs.get('path', '')))}, "
            f"Verb:{json.dumps(str(attrs.get('verb', '')))}}}")


def _event_in(rtype: ResourceType, api_version: str, obj: Any) -> Any:
    """An Event as sent, in the stored core/v1 form (tests/fakeapi/events.py); others as is."""
    if rtype.plural != EVENTS or not isinstance(obj, dict):
        return obj
    return event_api.to_core(obj) if api_version == event_api.EVENTS_V1 else \
        event_api.core_form(obj)


def _event_out(rtype: ResourceType, api_version: str, payload: Any) -> Any:
    """A stored Event (or a list of them) in the version the request was served at."""
    if rtype.plural != EVENTS or api_version != event_api.EVENTS_V1 or \
            not isinstance(payload, dict):
        return payload
    if "items" in payload:
        return {**payload, "apiVersion": event_api.EVENTS_V1,
                "items": [event_api.to_events_v1(item) for item in payload["items"]]}
    return event_api.to_events_v1(payload)


def _request_verb(method: str, name: Optional[str], watch: bool) -> str:
    """The RBAC verb of a request (apiserver/pkg/endpoints/request/requestinfo.go
    RequestInfoFactory.NewRequestInfo)."""
    if method == "GET":
        return "watch" if watch else ("get" if name else "list")
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]


def _decode(body: Optional[bytes]) -> Any:
    if not body:
        raise ApiError(400, "BadRequest", "empty request body")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"invalid JSON: {exc}") from None


def _injected_failure(code: int, headers: dict) -> ApiError:
    """What a real server sends for each status code fail_next() injects."""
    message = "injected failure"
    if code == 429:  # filters/maxinflight.go tooManyRequests: http.Error, plain text
        return ApiError(429, "TooManyRequests", TOO_MANY_REQUESTS_MSG, headers, plain_text=True)
    if code == 401:
        return ApiError(401, "Unauthorized", "Unauthorized", headers)
    if code == 403:  # errors.NewForbidden with no resource
        return ApiError(403, "Forbidden", f"forbidden: {message}", headers, details={})
    if code == 404:
        return ApiError(404, "NotFound", NOT_FOUND_HANDLER_MSG, headers)
    if code == 500:  # errors.NewInternalError
        return ApiError(500, "InternalError", f"Internal error occurred: {message}", headers,
                        details={"causes": [{"message": message}]})
    if code == 503:  # errors.NewServiceUnavailable
        return ApiError(503, "ServiceUnavailable", message, headers)
    if code == 504:  # errors.NewTimeoutError
        error = timeout(message, 0)
        error.headers = headers
        return error
    return ApiError(code, "", message, headers)
