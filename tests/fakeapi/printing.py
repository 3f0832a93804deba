"""What `kubectl get` needs besides the objects: API discovery and server-side Table output.

kubectl resolves `hnt,hn` through discovery (shortNames, categories) and prints whatever
meta.k8s.io/v1 Table the server sends, so both are rendered here from the CRD manifests in
manifests/crds: a misspelt printer column or short name shows up in kubectl output exactly as
it would on a real cluster.

Rendering mirrors the real API server (apiextensions-apiserver
pkg/registry/customresource/tableconvertor: New, convertor.ConvertToTable, cellForJSONValue):
- the first column is Name (format "name"), then the CRD's additionalPrinterColumns in order,
  all of them, priority included (kubectl hides priority > 0 unless `-o wide`);
- a column's JSONPath is evaluated with missing keys allowed, and only the FIRST value of the
  first result is used (`.a[*].b` shows one element, as on a real server); nothing found, or a
  path the evaluation refuses, is a null cell (kubectl prints <none>);
- a `string` cell is client-go jsonpath's PrintResults of that value: maps and lists as compact
  JSON (json.Marshal: sorted keys, <>& escaped), strings raw, numbers and booleans as Go's
  fmt.Fprint writes them (float64 1e6 is "1e+06"), JSON null as "<no value>";
- `integer` takes an int64 as is and truncates a float64, `number` widens an int64 to float64,
  `boolean` takes only a bool; any other JSON type is a null cell;
- a `date` cell parses an RFC 3339 string ("<invalid>" when it does not parse) and prints its
  age like duration.HumanDuration; a non-string is null.
"""
from __future__ import annotations

import datetime
import functools
import json
import pathlib
import math
import re
from decimal import Decimal
from typing import Any, Optional

import yaml

CRDS_DIR = pathlib.Path(__file__).resolve().parents[2] / "manifests" / "crds"

TABLE_API_VERSION = "meta.k8s.io/v1"
FAKE_SERVER_VERSION = "v1.32.0-fakeapi"

_RESOURCE_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update",
                   "watch"]
_STATUS_VERBS = ["get", "patch", "update"]
_NAME_DESCRIPTION = ("Name must be unique within a namespace. Is required when creating "
                     "resources, although some resources may allow a client to request the "
                     "generation of an appropriate name automatically.")
_AGE_DESCRIPTION = ("CreationTimestamp is a timestamp representing the server time when this "
                    "object was created.")


# -- CRDs -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def crd_documents() -> tuple[dict, ...]:
    """Every CustomResourceDefinition in manifests/crds (read once per process)."""
    docs = []
    for path in sorted(CRDS_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                docs.append(doc)
    return tuple(docs)


def crd_for(plural: str) -> Optional[dict]:
    for doc in crd_documents():
        if doc["spec"]["names"]["plural"] == plural:
            return doc
    return None


def _served_version(crd: dict, version: str) -> Optional[dict]:
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version and entry.get("served", True):
            return entry
    return None


# -- discovery ------------------------------------------------------------------------------
def _resource_entry(*, name: str, singular: str, kind: str, namespaced: bool,
                    short_names=(), categories=(), verbs=None) -> dict:
    entry = {"name": name, "singularName": singular, "namespaced": namespaced, "kind": kind,
             "verbs": list(verbs if verbs is not None else _RESOURCE_VERBS)}
    if short_names:
        entry["shortNames"] = list(short_names)
    if categories:
        entry["categories"] = list(categories)
    return entry


def _status_entry(name: str, kind: str, namespaced: bool) -> dict:
    return {"name": f"{name}/status", "singularName": "", "namespaced": namespaced,
            "kind": kind, "verbs": list(_STATUS_VERBS)}


def core_v1_resources() -> dict:
    """/api/v1: the built-ins the fake serves (nodes, events)."""
    resources = [
        _resource_entry(name="events", singular="event", kind="Event", namespaced=True,
                        short_names=["ev"]),
        _resource_entry(name="nodes", singular="node", kind="Node", namespaced=False,
                        short_names=["no"]),
        _status_entry("nodes", "Node", False),
    ]
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
            "resources": resources}


def events_v1_resources() -> dict:
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "events.k8s.io/v1",
            "resources": [_resource_entry(name="events", singular="event", kind="Event",
                                          namespaced=True, short_names=["ev"])]}


def crd_group_resources(group: str, version: str, missing: frozenset) -> Optional[dict]:
    """/apis/<group>/<version> from the CRDs; None when no installed CRD serves it."""
    resources = []
    for crd in crd_documents():
        spec = crd["spec"]
        names = spec["names"]
        if spec["group"] != group or names["plural"] in missing:
            continue
        served = _served_version(crd, version)
        if served is None:
            continue
        namespaced = spec.get("scope") == "Namespaced"
        resources.append(_resource_entry(
            name=names["plural"], singular=names.get("singular", names["kind"].lower()),
            kind=names["kind"], namespaced=namespaced, short_names=names.get("shortNames", ()),
            categories=names.get("categories", ())))
        if "status" in (served.get("subresources") or {}):
            resources.append(_status_entry(names["plural"], names["kind"], namespaced))
    if not resources:
        return None
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}",
            "resources": resources}


def _group_entry(group: str, versions: list[str]) -> dict:
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": listed, "preferredVersion": listed[0]}


def crd_groups(missing: frozenset) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for crd in crd_documents():
        spec = crd["spec"]
        if spec["names"]["plural"] in missing:
            continue
        for entry in spec["versions"]:
            if entry.get("served", True):
                versions = groups.setdefault(spec["group"], [])
                if entry["name"] not in versions:
                    versions.append(entry["name"])
    return groups


def discovery(path: str, *, missing: frozenset, server_address: str) -> Optional[dict]:
    """The discovery document for `path`, or None when `path` is no discovery endpoint.

    Legacy (unaggregated) discovery only: kubectl asks for the aggregated
    apidiscovery.k8s.io/v2 form first and falls back when the answer is plain JSON.
    """
    path = path.rstrip("/") or "/"
    if path == "/version":
        return {"major": "1", "minor": "32", "gitVersion": FAKE_SERVER_VERSION,
                "gitCommit": "0" * 40, "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
                "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64"}
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}
    if path == "/api/v1":
        return core_v1_resources()
    groups = {"events.k8s.io": ["v1"], **crd_groups(missing)}
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1",
                "groups": [_group_entry(g, v) for g, v in groups.items()]}
    match = re.fullmatch(r"/apis/([^/]+)(?:/([^/]+))?", path)
    if not match or match.group(1) not in groups:
        return None
    group, version = match.groups()
    if version is None:
        return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(group, groups[group])}
    if version not in groups[group]:
        return None
    if group == "events.k8s.io":
        return events_v1_resources()
    return crd_group_resources(group, version, missing)


# -- Table ----------------------------------------------------------------------------------
def wants_table(accept: str) -> bool:
    """True when the client's first acceptable type it can get is a meta.k8s.io/v1 Table
    (kubectl get sends `application/json;as=Table;v=v1;g=meta.k8s.io,...`)."""
    for media in accept.split(","):
        params = dict(p.strip().split("=", 1) for p in media.split(";")[1:] if "=" in p)
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io" and \
                params.get("v") == "v1":
            return True
    return False


_STEP = re.compile(r"\.([A-Za-z0-9_-]+)(?:\[(\*|\d+)\])?")


def jsonpath_values(obj: Any, path: str) -> list:
    """The simple JSONPaths CRD printer columns may use: `.a.b`, `.a[*].b`, `.a[0].b`
    (optionally wrapped in `{}`). Every value found, in order."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    values = [obj]
    pos = 0
    while pos < len(path):
        match = _STEP.match(path, pos)
        if not match:
            raise ValueError(f"unsupported JSONPath {path!r} at offset {pos}")
        pos = match.end()
        key, index = match.groups()
        found = []
        for value in values:
            if not isinstance(value, dict) or key not in value:
                continue
            item = value[key]
            if index is None:
                found.append(item)
            elif isinstance(item, list):
                if index == "*":
                    found.extend(item)
                elif int(index) < len(item):
                    found.append(item[int(index)])
        values = found
    return values


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    total = int(seconds)
    if total < -1:
        return "<invalid>"
    if total < 0:
        return "0s"
    if total < 120:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        sec = total % 60
        return f"{minutes}m" if sec == 0 else f"{minutes}m{sec}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = total // 3600
    if hours < 8:
        mins = minutes % 60
        return f"{hours}h" if mins == 0 else f"{hours}h{mins}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rem = hours % 24
        return f"{hours // 24}d" if rem == 0 else f"{hours // 24}d{rem}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def age(timestamp: Any, *, now: Optional[datetime.datetime] = None) -> Optional[str]:
    """cellForJSONValue's `date` case: metav1.Time.UnmarshalQueryParameter (RFC 3339), then
    table.ConvertToHumanReadableDateType."""
    if not isinstance(timestamp, str):
        return None
    if not _RFC3339.fullmatch(timestamp):
        return "<invalid>"
    try:
        when = datetime.datetime.fromisoformat(timestamp.replace("z", "Z"))
    except ValueError:
        return "<invalid>"
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return human_duration((now - when).total_seconds())


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def go_float(value: float) -> str:
    """fmt's %v for a float64: strconv.FormatFloat(f, 'g', -1, 64), i.e. the shortest digits,
    in %e form when the decimal exponent is < -4 or >= 6 (1e+06, 123456)."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    digits_tuple = Decimal(repr(value)).normalize().as_tuple()
    digits = "".join(map(str, digits_tuple.digits))
    exp = len(digits) + digits_tuple.exponent - 1  # decimal exponent of the first digit
    sign = "-" if digits_tuple.sign else ""
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if exp < 0:
        return f"{sign}0.{'0' * (-exp - 1)}{digits}"
    if len(digits) <= exp + 1:
        return f"{sign}{digits}{'0' * (exp + 1 - len(digits))}"
    return f"{sign}{digits[:exp + 1]}.{digits[exp + 1:]}"


def _go_json(value: Any) -> str:
    """encoding/json.Marshal of unstructured JSON: compact, map keys sorted, UTF-8 kept, and
    <, >, & escaped as \\u003c, \\u003e, \\u0026."""
    text = json.dumps(_go_json_numbers(value), separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _go_json_numbers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _go_json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_go_json_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)  # json.Marshal writes an integral float64 without a fraction
    return value


def _text(value: Any) -> str:
    """client-go jsonpath PrintResults of one value (the `string` column case)."""
    if isinstance(value, (dict, list)):
        return _go_json(value)
    if value is None:
        return "<no value>"  # text/template's printableValue of an invalid reflect.Value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    return str(value)


def _cell(column_type: str, values: list) -> Any:
    """One cell: ConvertToTable's use of results[0][0], then cellForJSONValue."""
    if not values:
        return None
    value = values[0]  # the real server, too, uses only the first result
    if column_type == "string":
        return _text(value)
    if value is None:
        return None
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if column_type == "integer":
        return int(value) if is_number else None
    if column_type == "number":
        return float(value) if is_number else None
    if column_type == "boolean":
        return value if isinstance(value, bool) else None
    if column_type == "date":
        return age(value)
    return None


def _name_column() -> dict:
    return {"name": "Name", "type": "string", "format": "name", "description": _NAME_DESCRIPTION,
            "priority": 0}


def _age_column() -> dict:
    return {"name": "Age", "type": "string", "format": "", "description": _AGE_DESCRIPTION,
            "priority": 0}


def _crd_columns(plural: str) -> Optional[list[dict]]:
    crd = crd_for(plural)
    if crd is None:
        return None
    version = crd["spec"]["versions"][0]
    columns = version.get("additionalPrinterColumns")
    if columns is None:  # no printer columns: the server shows Name and Age
        return None
    return [dict(c) for c in columns]


def _row_object(obj: dict, include_object: str) -> Optional[dict]:
    if include_object == "None":
        return None
    if include_object == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": TABLE_API_VERSION,
            "metadata": obj.get("metadata") or {}}


def _node_status(node: dict) -> str:
    state = "Unknown"
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            state = {"True": "Ready", "False": "NotReady"}.get(condition.get("status"), "Unknown")
    if (node.get("spec") or {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    return state


def _node_roles(node: dict) -> str:
    labels = (node.get("metadata") or {}).get("labels") or {}
    roles = sorted(key.split("/", 1)[1] for key in labels
                   if key.startswith("node-role.kubernetes.io/") and key.split("/", 1)[1])
    return ",".join(roles) or "<none>"


# pkg/printers/internalversion/printers.go AddHandlers: eventColumnDefinitions, described
# with core/v1 Event's SwaggerDoc (types_swagger_doc_generated.go map_Event).
_EVENT_COLUMNS = [
    ("Last Seen", 0, "The time at which the most recent occurrence of this event was recorded."),
    ("Type", 0, "Type of this event (Normal, Warning), new types could be added in the future"),
    ("Reason", 0, "This should be a short, machine understandable string that gives the reason "
     "for the transition into the object's current status."),
    ("Object", 0, "The object that this event is about."),
    ("Subobject", 1, "If referring to a piece of an object instead of an entire object, this "
     "string should contain a valid JSON/Go field access statement, such as "
     "desiredState.manifest.containers[2]. For example, if the object reference is to a "
     "container within a pod, this would take on a value like: \"spec.containers{name}\" "
     "(where \"name\" refers to the name of the container that triggered the event) or if no "
     "container name is specified \"spec.containers[2]\" (container with index 2 in this "
     "pod). This syntax is chosen only to have some well-defined way of referencing a part of "
     "an object."),
    ("Source", 1, "The component reporting this event. Should be a short machine understandable "
     "string."),
    ("Message", 0, "A human-readable description of the status of this operation."),
    ("First Seen", 1, "The time at which the event was first recorded. (Time of server receipt "
     "is in TypeMeta.)"),
    ("Count", 1, "The number of times this event has occurred."),
    ("Name", 1, None),
]


def _since(timestamp: Any) -> str:
    """printers.go translateTimestampSince / translateMicroTimestampSince: `<unknown>` for a
    zero (absent) time, else duration.HumanDuration of the time since."""
    return age(timestamp) if timestamp else "<unknown>"


def event_cells(event: dict) -> list:
    """printers.go printEvent (a core/v1-shaped Event, the stored form), wide: the first
    seen is firstTimestamp, else eventTime; the last seen lastTimestamp, else the first seen,
    and a series' lastObservedTime wins over both; count likewise (1 for a singleton of the
    new API, which sets none)."""
    first = _since(event.get("firstTimestamp")) if event.get("firstTimestamp") \
        else _since(event.get("eventTime"))
    last = _since(event.get("lastTimestamp")) if event.get("lastTimestamp") else first
    count = event.get("count") or 0
    series = event.get("series")
    if series:
        last = _since(series.get("lastObservedTime"))
        count = series.get("count") or 0
    elif count == 0:
        count = 1  # "Singleton events don't have a count set in the new API."
    involved = event.get("involvedObject") or {}
    kind = str(involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    source = event.get("source") or {}
    # formatEventSource: firstNonEmpty(component, reportingController), then the same for the
    # host and reportingInstance, joined by ", " when there is an instance.
    component = source.get("component") or event.get("reportingComponent") or ""
    host = source.get("host") or event.get("reportingInstance") or ""
    shown = f"{component}, {host}" if host else component
    return [last, event.get("type", ""), event.get("reason", ""), target,
            involved.get("fieldPath", ""), shown, str(event.get("message") or "").strip(),
            first, int(count), (event.get("metadata") or {}).get("name")]


def _columns_and_cells(plural: str):
    """(column definitions, obj -> cells) for one resource type."""
    if plural == "events":
        columns = [{"name": name, "type": "string", "format": "name" if name == "Name" else "",
                    "description": text or _NAME_DESCRIPTION, "priority": priority}
                   for name, priority, text in _EVENT_COLUMNS]
        return columns, event_cells
    if plural == "nodes":
        columns = [_name_column(),
                   {"name": "Status", "type": "string", "format": "",
                    "description": "The status of the node", "priority": 0},
                   {"name": "Roles", "type": "string", "format": "",
                    "description": "The roles of the node", "priority": 0},
                   _age_column(),
                   {"name": "Version", "type": "string", "format": "",
                    "description": "Kubelet Version reported by the node.", "priority": 0}]

        def node_cells(obj):
            meta = obj.get("metadata") or {}
            info = (obj.get("status") or {}).get("nodeInfo") or {}
            return [meta.get("name"), _node_status(obj), _node_roles(obj),
                    age(meta.get("creationTimestamp")), info.get("kubeletVersion", "")]
        return columns, node_cells

    printer = _crd_columns(plural)
    if printer is None:
        def default_cells(obj):
            meta = obj.get("metadata") or {}
            return [meta.get("name"), age(meta.get("creationTimestamp"))]
        return [_name_column(), _age_column()], default_cells

    columns = [_name_column()] + [
        {"name": c["name"], "type": c.get("type", "string"), "format": c.get("format", ""),
         # tableconvertor.New: a column without a description gets this one.
         "description": c.get("description") or
         f"Custom resource definition column (in JSONPath format): {c['jsonPath']}",
         "priority": int(c.get("priority", 0))}
        for c in printer]

    def crd_cells(obj):
        cells = [(obj.get("metadata") or {}).get("name")]
        for column in printer:
            try:
                values = jsonpath_values(obj, column["jsonPath"])
            except ValueError:
                values = []
            cells.append(_cell(column.get("type", "string"), values))
        return cells
    return columns, crd_cells


def to_table(plural: str, payload: dict, *, include_object: str = "Partial") -> dict:
    """A meta.k8s.io/v1 Table for a list (`items`) or a single object."""
    columns, cells = _columns_and_cells(plural)
    items = payload["items"] if "items" in payload else [payload]
    rows = []
    for obj in items:
        row: dict = {"cells": cells(obj)}
        embedded = _row_object(obj, include_object or "Partial")
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    meta = payload.get("metadata") or {}
    table_meta = {"resourceVersion": meta["resourceVersion"]} if meta.get("resourceVersion") \
        else {}
    return {"kind": "Table", "apiVersion": TABLE_API_VERSION, "metadata": table_meta,
            "columnDefinitions": columns, "rows": rows}
