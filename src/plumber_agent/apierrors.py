"""API errors named as what they are, in one place: which class an error is (`classify`) and
what it means for a person (`describe`), so a log line, a status condition, an Event and a
metric all say the same thing.

Why: errors used to be reported as other errors. A 403 on a rollout-slot Lease read "another
node took it first", a leader election that could not create its Lease said nothing outside the
log, and a forbidden status write read "status write failed: (403)". Each API error class now
has one reason (`ApiReason`, the metrics' `reason` label and the conditions' `reason`), and
`describe` gives the verb, the resource as RBAC spells it, the server's own words and the fix
(the ClusterRole or Role to check).

Matched by attributes (`status`, `body`, `reason`, a cause chain), not by the `kubernetes`
exception types, so the reporter and the fleet use it without depending on the client (like
plumber_agent/retry.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Optional

from plumber_agent import GROUP
from plumber_agent.models.text import truncate
from plumber_agent.retry import error_status

MAX_SAID = 512  # the server's message, as quoted in ours
CAUSE_CHAIN_MAX = 5  # how deep a wrapped exception (urllib3 MaxRetryError...) is searched
CLUSTER_ROLE_FILE = "manifests/rbac/cluster_role.yaml"
ROLE_FILE = "manifests/rbac/role.yaml"
NAMESPACE_FILE = "manifests/namespace.yaml"
RBAC_NAME = "plumber-agent"  # the ClusterRole, Role and ServiceAccount
API_ERRORS_METRIC = "plumber_api_errors_total"
# The agent's resources as RBAC names them (plural.group).
TEMPLATES_RESOURCE = f"hostnetworktemplates.{GROUP}"
HOSTNETWORKS_RESOURCE = f"hostnetworks.{GROUP}"


class ApiReason(StrEnum):
    """One name per class of API error (metav1.StatusReason where one fits)."""

    FORBIDDEN = "Forbidden"                    # 403: RBAC or an admission policy said no
    UNAUTHORIZED = "Unauthorized"              # 401: the credentials are not accepted
    CONFLICT = "Conflict"                      # 409: Conflict or AlreadyExists (someone else won)
    NOT_FOUND = "NotFound"                     # 404: the object (or its CRD) is not there
    NAMESPACE_NOT_FOUND = "NamespaceNotFound"  # 404 of a create: NamespaceLifecycle admission
    INVALID = "Invalid"                        # 422: refused by validation or admission
    THROTTLED = "TooManyRequests"              # 429: API priority and fairness, max-in-flight
    SERVER_ERROR = "ServerError"               # 5xx: the API server or etcd failed
    TIMEOUT = "Timeout"                        # no answer in time (client or server side)
    UNREACHABLE = "Unreachable"                # no connection to the API server at all
    BAD_REQUEST = "BadRequest"                 # another 4xx: a bug of ours, or a version skew


# Classes that go away by themselves (retrying is the fix); the others need a person.
TRANSIENT = frozenset({ApiReason.CONFLICT, ApiReason.THROTTLED, ApiReason.SERVER_ERROR,
                       ApiReason.TIMEOUT, ApiReason.UNREACHABLE})


@dataclass(frozen=True)
class ApiFailure:
    reason: ApiReason
    status: Optional[int]  # the HTTP status (None: no answer)
    said: str              # the API server's own words (a Status' message), else the error's

    @property
    def transient(self) -> bool:
        return self.reason in TRANSIENT


@dataclass(frozen=True)
class Target:
    """What a failed request was about: the resource as RBAC names it (plural.group, with a
    subresource: `hostnetworks.plumber.k8s.pf9.io/status`), the object, and which role grants
    it (a namespaced Role when `namespaced_role`)."""

    resource: str
    name: str = ""
    namespace: str = ""
    namespaced_role: bool = False

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace and self.name else \
            (self.name or (f"in namespace {self.namespace!r}" if self.namespace else ""))
        return f"{self.resource} {where}".strip()

    @property
    def role(self) -> str:
        if self.namespaced_role:
            return f"Role {RBAC_NAME} in namespace {self.namespace!r} ({ROLE_FILE})"
        return f"ClusterRole {RBAC_NAME} ({CLUSTER_ROLE_FILE})"


def server_message(exc: BaseException) -> str:
    """The API server's own words (a Status' `message`), else the exception's."""
    body = _body(exc)
    if isinstance(body, dict) and body.get("message"):
        return truncate(str(body["message"]), MAX_SAID)
    raw = getattr(exc, "body", None)
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str) and raw.strip() and not isinstance(body, dict):
        return truncate(raw.strip(), MAX_SAID)
    return truncate(str(exc) or type(exc).__name__, MAX_SAID)


def _body(exc: BaseException) -> Any:
    raw = getattr(exc, "body", None)
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str) and raw.strip():
        try:
            return json.loads(raw)
        except ValueError:
            return None
    return None


def timed_out(exc: Optional[BaseException]) -> bool:
    """A request that got no answer in time (urllib3's ReadTimeoutError / ConnectTimeoutError,
    also wrapped in MaxRetryError; socket.timeout, TimeoutError): matched by name, so this
    module needs no HTTP library."""
    for _ in range(CAUSE_CHAIN_MAX):  # the chain of causes is short; a cycle must not loop
        if exc is None:
            return False
        if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
            return True
        reason = getattr(exc, "reason", None)
        exc = reason if isinstance(reason, BaseException) else (exc.__cause__ or exc.__context__)
    return False


def classify(exc: BaseException) -> ApiFailure:
    """The class of an API error (see ApiReason)."""
    status = error_status(exc)
    said = server_message(exc)
    if status is None:
        return ApiFailure(ApiReason.TIMEOUT if timed_out(exc) else ApiReason.UNREACHABLE,
                          None, said)
    if status == 404:
        body = _body(exc)
        details = body.get("details") if isinstance(body, dict) else None
        # NamespaceLifecycle answers errors.NewNotFound(v1.Resource("namespaces"), ns).
        missing_namespace = isinstance(details, dict) and details.get("kind") == "namespaces"
        return ApiFailure(ApiReason.NAMESPACE_NOT_FOUND if missing_namespace
                          else ApiReason.NOT_FOUND, status, said)
    if status == 504 and timed_out(exc):
        return ApiFailure(ApiReason.TIMEOUT, status, said)
    reason = {401: ApiReason.UNAUTHORIZED, 403: ApiReason.FORBIDDEN, 409: ApiReason.CONFLICT,
              422: ApiReason.INVALID, 429: ApiReason.THROTTLED}.get(status)
    if reason is None:
        reason = ApiReason.SERVER_ERROR if status >= 500 else ApiReason.BAD_REQUEST
    return ApiFailure(reason, status, said)


# What each class means and how to fix it (`describe` fills in the fields).
_WORDING = {
    ApiReason.FORBIDDEN: "permission denied: {verb} {target} ({said}); check the {role}: it must "
                         "grant {verb} on {resource}, and no admission policy may refuse it",
    ApiReason.UNAUTHORIZED: "unauthorized: {verb} {target} ({said}); the agent's credentials (the "
                            f"ServiceAccount {RBAC_NAME} token or --kubeconfig) are not accepted",
    ApiReason.NAMESPACE_NOT_FOUND: "namespace {namespace!r} does not exist (404 creating {target}: "
                                   f"{{said}}); apply {NAMESPACE_FILE} (kubectl apply -k "
                                   "manifests/), or set POD_NAMESPACE (--namespace) to the "
                                   "namespace the agent runs in",
    ApiReason.NOT_FOUND: "not found: {verb} {target} ({said}); is the CRD installed "
                         "(manifests/crds)?",
    ApiReason.CONFLICT: "conflict: {verb} {target} ({said}); it changed since it was read "
                        "(another writer won); retried",
    ApiReason.INVALID: "invalid: the API server refused {target} as invalid ({verb}: {said}); an "
                       "admission policy refused it or the agent and the API server disagree on "
                       "the schema: check the policies and the agent's version",
    ApiReason.THROTTLED: "throttled: the API server is limiting requests ({verb} {target}: "
                         "{said}); retried, check the API server's load (API priority and "
                         "fairness)",
    ApiReason.SERVER_ERROR: "server error: the API server failed to {verb} {target} ({status}: "
                            "{said}); retried, check the API server and etcd",
    ApiReason.TIMEOUT: "timeout: no answer from the API server in time to {verb} {target} "
                       "({said}); retried, check the API server's latency and this node's "
                       "network path to it",
    ApiReason.UNREACHABLE: "unreachable: cannot reach the API server to {verb} {target} "
                           "({said}); retried, check this node's network path to the API server",
    ApiReason.BAD_REQUEST: "{verb} {target} failed ({status}: {said})",
}


def describe(failure: ApiFailure, *, verb: str, target: Target) -> str:
    """What went wrong and how to fix it, for a person: `<what>: <verb> <target> (<the
    server's words>); <the fix>`. A 404 of a create in a namespace is the namespace missing
    (NamespaceLifecycle), whatever the answer's details."""
    reason = failure.reason
    if reason == ApiReason.NOT_FOUND and verb == "create" and target.namespace:
        reason = ApiReason.NAMESPACE_NOT_FOUND
    return _WORDING[reason].format(verb=verb, target=target, said=failure.said,
                                   status=failure.status, role=target.role,
                                   resource=target.resource, namespace=target.namespace)


def metric_name(name: str, **labels: str) -> str:
    """A sample name with labels in the Prometheus text form (`name{a="x",b="y"}`, labels
    sorted, values escaped), the key Metrics.inc counts it under."""
    if not labels:
        return name
    pairs = []
    for key, value in sorted(labels.items()):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        pairs.append(f'{key}="{text}"')
    return name + "{" + ",".join(pairs) + "}"


def api_error_metric(operation: str, reason: str) -> str:
    """plumber_api_errors_total{operation,reason}: failed API requests by what the agent was
    doing and the error's class."""
    return metric_name(API_ERRORS_METRIC, operation=operation, reason=reason)


class NamedApiError(Exception):
    """An API error with what it means (`failure`, `operation`, the message of `describe`).
    Keeps the original's `status`, `headers` and `body`, so the retry policy (retry.py) reads
    it as before."""

    def __init__(self, message: str, *, cause: BaseException, failure: ApiFailure,
                 operation: str) -> None:
        super().__init__(message)
        self.failure, self.operation, self.cause = failure, operation, cause
        self.status = getattr(cause, "status", None)
        self.headers = getattr(cause, "headers", None)
        self.body = getattr(cause, "body", None)


def named(exc: BaseException, *, operation: str, verb: str, target: Target) -> NamedApiError:
    """`exc` as a NamedApiError (an already named one is kept)."""
    if isinstance(exc, NamedApiError):
        return exc
    failure = classify(exc)
    return NamedApiError(describe(failure, verb=verb, target=target), cause=exc,
                         failure=failure, operation=operation)
