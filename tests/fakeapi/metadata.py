"""Content negotiation for metadata only (`Accept: application/json;as=PartialObjectMetadata...`),
ported from the real API server so a client that asks for PartialObjectMetadata(List) gets what a
real kube-apiserver sends (tests/kube/test_fakeapi_metadata.py pins it).

Upstream (kubernetes/kubernetes, staging/src/k8s.io/):
- `apiserver/pkg/endpoints/handlers/negotiation/negotiate.go` NegotiateMediaTypeOptions and
  acceptMediaTypeOptions: the Accept clauses are tried in order of preference; `as`, `g` and `v`
  name a conversion target, allowed only for Table, PartialObjectMetadata and
  PartialObjectMetadataList of meta.k8s.io/v1 or v1beta1 (`handlers/rest.go`
  RequestScope.AllowsConversion). A clause whose target is not allowed is skipped, and when none
  is acceptable the server falls back to its first media type: plain JSON of the whole object,
  not 406.
- `apiserver/pkg/endpoints/handlers/response.go` doTransformObject, asPartialObjectMetadata,
  asPartialObjectMetadataList: a list asked `as=PartialObjectMetadata` (or a single object asked
  `as=PartialObjectMetadataList`) is 406 NotAcceptable (errNotAcceptable); a Status passes
  unchanged; each item becomes `meta.AsPartialObjectMetadata` (its whole ObjectMeta) with kind
  PartialObjectMetadata; the list keeps resourceVersion, continue and remainingItemCount.
- watch (`handlers/watch.go` serveWatchHandler, response.go watchEmbeddedEncoder.doEncode): every
  event's object goes through the same doTransformObject; when that fails (a watch asked
  `as=PartialObjectMetadataList`) upstream logs it and sends the object unconverted.

Kept apart from server.py's handlers: a conversion done on the answer at response time, so
paging, resourceVersion rules and faults of the list handler are untouched by it.
"""
from __future__ import annotations

from typing import Any, Optional

META_GROUP = "meta.k8s.io"
META_VERSIONS = ("v1", "v1beta1")
PARTIAL = "PartialObjectMetadata"
PARTIAL_LIST = "PartialObjectMetadataList"
TABLE = "Table"
_SERVED_TYPES = (("application", "json"), ("application", "yaml"),
                 ("application", "vnd.kubernetes.protobuf"))

# Go type names in upstream's 406 messages (%T of what the storage returned: the internal type
# for built-ins, unstructured for custom resources).
_GO_TYPES = {"nodes": "core.Node", "events": "core.Event", "leases": "coordination.Lease"}


class NotAcceptable(Exception):
    """response.go errNotAcceptable: a 406 Status with reason NotAcceptable and no details."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _parse_accept(header: str) -> list[tuple[str, str, dict[str, str]]]:
    """goautoneg.ParseAccept: (type, subtype, params) by descending q (stable within a q)."""
    clauses = []
    for index, part in enumerate(header.split(",")):
        pieces = [p.strip() for p in part.split(";")]
        media = pieces[0]
        if not media:
            continue
        type_, _, subtype = media.partition("/")
        params, q = {}, 1.0
        for piece in pieces[1:]:
            key, sep, value = piece.partition("=")
            if not sep:
                continue
            key, value = key.strip(), value.strip()
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
            else:
                params[key] = value
        clauses.append((-q, index, type_, subtype or "*", params))
    clauses.sort(key=lambda c: (c[0], c[1]))
    return [(t, s, p) for _, _, t, s, p in clauses]


def _allows_conversion(kind: str, group: str, version: str, type_: str, subtype: str) -> bool:
    """handlers/rest.go RequestScope.AllowsConversion."""
    if group != META_GROUP or version not in META_VERSIONS:
        return False
    if kind == TABLE:
        return type_ == "application" and subtype in ("json", "yaml")
    return kind in (PARTIAL, PARTIAL_LIST)


def negotiate_conversion(accept: str) -> Optional[tuple[str, str]]:
    """The conversion the Accept header gets, as (kind, version) of meta.k8s.io, or None for
    the object itself (negotiate.go NegotiateMediaTypeOptions)."""
    if not accept:
        return None
    for type_, subtype, params in _parse_accept(accept):
        if not any((type_ == t and subtype == s) or (type_ == t and subtype == "*")
                   or (type_ == "*" and subtype == "*") for t, s in _SERVED_TYPES):
            continue
        if not any(k in params for k in ("as", "g", "v")):
            return None  # a plain clause is acceptable as it is
        kind, group, version = params.get("as", ""), params.get("g", ""), params.get("v", "")
        if _allows_conversion(kind, group, version, type_, subtype):
            return kind, version
    return None  # nothing acceptable: the first served type, unconverted


def _go_type(plural: str, *, is_list: bool) -> str:
    name = _GO_TYPES.get(plural, "unstructured.Unstructured")
    return f"*{name}List" if is_list else f"*{name}"


def partial_object_metadata(obj: dict, version: str) -> dict:
    """meta.AsPartialObjectMetadata: the object's whole metadata under the meta kind."""
    return {"kind": PARTIAL, "apiVersion": f"{META_GROUP}/{version}",
            "metadata": obj.get("metadata") or {}}


def as_metadata(payload: Any, conversion: Optional[tuple[str, str]], *, plural: str) -> Any:
    """response.go doTransformObject for a list or get answer: the payload converted to
    `conversion` (None or a Table: unchanged; a Table is printing.py's). Raises NotAcceptable."""
    if conversion is None or not isinstance(payload, dict) or payload.get("kind") == "Status":
        return payload
    kind, version = conversion
    is_list = isinstance(payload.get("items"), list) and payload.get("kind", "").endswith("List")
    if kind == PARTIAL:
        if is_list:
            raise NotAcceptable(f"you requested {PARTIAL}, but the requested object is a list "
                                f"({_go_type(plural, is_list=True)})")
        return partial_object_metadata(payload, version)
    if kind == PARTIAL_LIST:
        if not is_list:
            raise NotAcceptable(f"you requested {PARTIAL_LIST}, but the requested object is not "
                                f"a list ({_go_type(plural, is_list=False)})")
        meta = payload.get("metadata") or {}
        list_meta = {key: meta[key] for key in ("resourceVersion", "continue",
                                                "remainingItemCount")
                     if meta.get(key) not in (None, "")}
        return {"kind": PARTIAL_LIST, "apiVersion": f"{META_GROUP}/{version}",
                "metadata": list_meta,
                "items": [partial_object_metadata(item, version) for item in payload["items"]]}
    return payload


def watch_object(obj: Any, conversion: Optional[tuple[str, str]]) -> Any:
    """response.go watchEmbeddedEncoder.doEncode: one event's object, converted when the watch
    asked for PartialObjectMetadata; a Status (ERROR event) and a failed conversion (a watch
    asking for the list kind) go out unchanged."""
    if conversion is None or conversion[0] != PARTIAL or not isinstance(obj, dict) \
            or obj.get("kind") == "Status":
        return obj
    return partial_object_metadata(obj, conversion[1])
