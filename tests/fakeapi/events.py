"""Events as the real API server keeps them: one storage (core/v1's shape) served as core/v1
`events` and as events.k8s.io/v1 `events`, converted per request, and validated per request
version. Each function names the upstream code it follows (paths in kubernetes/kubernetes).

- `to_core` / `to_events_v1`: pkg/apis/events/v1/conversion.go Convert_v1_Event_To_core_Event
  and Convert_core_Event_To_v1_Event (regarding <-> involvedObject, note <-> message,
  reportingController <-> core/v1's JSON name `reportingComponent`, deprecatedSource/
  FirstTimestamp/LastTimestamp/Count <-> source/firstTimestamp/lastTimestamp/count), written
  as encoding/json writes the Go structs (k8s.io/api core/v1 and events/v1 types.go): zero
  times are `null`, structs without omitempty effect (`source`, `regarding`) are `{}`, and
  core/v1's `reportingComponent`/`reportingInstance` have no omitempty.
- `create_errors` / `update_errors`: pkg/apis/core/validation/events.go ValidateEventCreate
  and ValidateEventUpdate with the request's group version (pkg/registry/core/event/
  strategy.go eventStrategy.Validate/ValidateUpdate): core/v1 requests get only
  legacyValidateEvent; events.k8s.io/v1 requests the strict rules too. Field paths are the
  internal type's (`involvedObject`, `message`, `reportingController`), as upstream reports.
"""
from __future__ import annotations

import re

import tests.fakeapi.server as server

EVENTS_V1 = "events.k8s.io/v1"
CORE_V1 = "v1"
# pkg/apis/core/validation/events.go
REPORTING_INSTANCE_LENGTH_LIMIT = 128
ACTION_LENGTH_LIMIT = 128
REASON_LENGTH_LIMIT = 128
NOTE_LENGTH_LIMIT = 1024
# apimachinery/pkg/util/validation/validation.go IsQualifiedName
QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
QUALIFIED_NAME_RE = re.compile(f"^{QUALIFIED_NAME_FMT}$")
QUALIFIED_NAME_MAX = 63
QUALIFIED_NAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', and must start "
                      "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
                      f"'123-abc', regex used for validation is '{QUALIFIED_NAME_FMT}')")
NAMESPACE_DEFAULT, NAMESPACE_SYSTEM = "default", "kube-system"


# How encoding/json writes an empty value of each field (its Go type and JSON tag).
OMIT, NULL, EMPTY, EMPTY_OBJECT = "omit", "null", "empty", "empty object"
# (core/v1 JSON name, events.k8s.io/v1 JSON name, core/v1's empty form, events/v1's empty form)
FIELDS = (
    ("involvedObject", "regarding", EMPTY_OBJECT, EMPTY_OBJECT),
    ("reason", "reason", OMIT, OMIT),
    ("message", "note", OMIT, OMIT),
    ("source", "deprecatedSource", EMPTY_OBJECT, EMPTY_OBJECT),
    ("firstTimestamp", "deprecatedFirstTimestamp", NULL, NULL),
    ("lastTimestamp", "deprecatedLastTimestamp", NULL, NULL),
    ("count", "deprecatedCount", OMIT, OMIT),
    ("type", "type", OMIT, OMIT),
    ("eventTime", "eventTime", NULL, NULL),
    ("series", "series", OMIT, OMIT),
    ("action", "action", OMIT, OMIT),
    ("related", "related", OMIT, OMIT),
    ("reportingComponent", "reportingController", EMPTY, OMIT),
    ("reportingInstance", "reportingInstance", EMPTY, OMIT),
)
_EMPTY_VALUES = {NULL: None, EMPTY: "", EMPTY_OBJECT: {}}


def _convert(event: dict, *, api_version: str, source: int, target: int) -> dict:
    """Copy each field from its `source` name to its `target` name (FIELDS' columns), written
    as the target version's Go struct is."""
    out: dict = {"kind": "Event", "apiVersion": api_version,
                 "metadata": event.get("metadata") or {}}
    for field in FIELDS:
        value, empty = event.get(field[source]), field[target + 2]
        if value in (None, "", 0, {}):
            if empty == OMIT:
                continue
            value = _EMPTY_VALUES[empty]
        out[field[target]] = value
    return out


def to_core(event: dict) -> dict:
    """events.k8s.io/v1 -> the stored core/v1 form (Convert_v1_Event_To_core_Event)."""
    return _convert(event, api_version=CORE_V1, source=1, target=0)


def core_form(event: dict) -> dict:
    """A core/v1 Event as the server writes it (core/v1 Event's JSON tags)."""
    return _convert(event, api_version=CORE_V1, source=0, target=0)


def to_events_v1(event: dict) -> dict:
    """The stored core/v1 form -> events.k8s.io/v1 (Convert_core_Event_To_v1_Event)."""
    return _convert(event, api_version=EVENTS_V1, source=0, target=1)


def is_qualified_name(value: str) -> list[str]:
    """apimachinery/pkg/util/validation/validation.go IsQualifiedName."""
    errors = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            errors += ["prefix part " + msg for msg in _dns1123_subdomain(prefix)]
    else:
        return [f"a qualified name {QUALIFIED_NAME_MSG} with an optional DNS subdomain prefix "
                "and '/' (e.g. 'example.com/MyName')"]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > QUALIFIED_NAME_MAX:
        errors.append(f"name part must be no more than {QUALIFIED_NAME_MAX} characters")
    if not QUALIFIED_NAME_RE.match(name):
        errors.append("name part " + QUALIFIED_NAME_MSG)
    return errors


def _dns1123_subdomain(value: str) -> list[str]:
    """validation.IsDNS1123Subdomain."""
    errors = []
    if len(value) > server.DNS1123_SUBDOMAIN_MAX:
        errors.append(f"must be no more than {server.DNS1123_SUBDOMAIN_MAX} characters")
    if not server.DNS1123_SUBDOMAIN_RE.match(value):
        errors.append(server.DNS1123_SUBDOMAIN_MSG)
    return errors


def _legacy_errors(event: dict) -> list[dict]:
    """legacyValidateEvent (every request version)."""
    error = server.field_error
    errors = []
    namespace = (event.get("metadata") or {}).get("namespace") or ""
    involved_ns = (event.get("involvedObject") or {}).get("namespace") or ""
    if not event.get("eventTime"):
        if not involved_ns:
            if namespace not in ("", NAMESPACE_DEFAULT):
                errors.append(error("Invalid value", "involvedObject.namespace",
                                    "does not match event.namespace", involved_ns))
        elif namespace != involved_ns:
            errors.append(error("Invalid value", "involvedObject.namespace",
                                "does not match event.namespace", involved_ns))
    else:
        if not involved_ns and namespace not in (NAMESPACE_DEFAULT, NAMESPACE_SYSTEM):
            errors.append(error("Invalid value", "involvedObject.namespace",
                                "does not match event.namespace", involved_ns))
        controller = str(event.get("reportingComponent") or "")
        if not controller:
            errors.append(error("Required value", "reportingController", ""))
        errors += [error("Invalid value", "reportingController", msg, controller)
                   for msg in is_qualified_name(controller)]
        instance = str(event.get("reportingInstance") or "")
        if not instance:
            errors.append(error("Required value", "reportingInstance", ""))
        if len(instance) > REPORTING_INSTANCE_LENGTH_LIMIT:
            errors.append(error("Invalid value", "reportingInstance", "can have at most "
                                f"{REPORTING_INSTANCE_LENGTH_LIMIT} characters", ""))
        for path, value, limit in (("action", event.get("action"), ACTION_LENGTH_LIMIT),
                                   ("reason", event.get("reason"), REASON_LENGTH_LIMIT)):
            if not value:
                errors.append(error("Required value", path, ""))
            if len(str(value or "")) > limit:
                errors.append(error("Invalid value", path, f"can have at most {limit} "
                                    "characters", ""))
        if len(str(event.get("message") or "")) > NOTE_LENGTH_LIMIT:
            errors.append(error("Invalid value", "message", "can have at most "
                                f"{NOTE_LENGTH_LIMIT} characters", ""))
    errors += [error("Invalid value", "namespace", msg, namespace)
               for msg in _dns1123_subdomain(namespace)]
    return errors


def _series_errors(event: dict) -> list[dict]:
    """validateV1EventSeries."""
    series = event.get("series")
    if not isinstance(series, dict):
        return []
    errors = []
    count = series.get("count")
    if not isinstance(count, int) or count < 2:
        errors.append(server.field_error("Invalid value", "series.count", "should be at least 2",
                                         ""))
    if not series.get("lastObservedTime"):
        errors.append(server.field_error("Required value", "series.lastObservedTime", ""))
    return errors


def create_errors(event: dict, api_version: str) -> list[dict]:
    """ValidateEventCreate: legacy rules for core/v1; for events.k8s.io/v1 also ObjectMeta (a
    DNS-subdomain name), the series, a required eventTime, type Normal or Warning, and the
    deprecated fields unset."""
    errors = _legacy_errors(event)
    if api_version != EVENTS_V1:
        return errors
    error = server.field_error
    errors += server._name_errors((event.get("metadata") or {}).get("name"))
    errors += _series_errors(event)
    if not event.get("eventTime"):
        errors.append(error("Required value", "eventTime", ""))
    if event.get("type") not in ("Normal", "Warning"):
        errors.append(error("Invalid value", "type", f"has invalid value: {event.get('type') or ''}",
                            ""))
    for path in ("firstTimestamp", "lastTimestamp"):
        if event.get(path):
            errors.append(error("Invalid value", path, "needs to be unset", ""))
    if event.get("count"):
        errors.append(error("Invalid value", "count", "needs to be unset", ""))
    source = event.get("source") or {}
    if source.get("component") or source.get("host"):
        errors.append(error("Invalid value", "source", "needs to be unset", ""))
    return errors


# ValidateEventUpdate's immutable fields (internal names), in upstream's order.
IMMUTABLE = ("involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp",
             "count", "reason", "type", "eventTime", "action", "related",
             ("reportingComponent", "reportingController"), "reportingInstance")


def update_errors(new: dict, old: dict, api_version: str) -> list[dict]:
    """ValidateEventUpdate: legacy rules for core/v1; for events.k8s.io/v1 also the series
    (when it changed) and every other field immutable (ValidateImmutableField: `field is
    immutable`)."""
    errors = _legacy_errors(new)
    if api_version != EVENTS_V1:
        return errors
    if new.get("series") != old.get("series"):
        errors += _series_errors(new)
    for entry in IMMUTABLE:
        key, path = entry if isinstance(entry, tuple) else (entry, entry)
        if new.get(key) != old.get(key):
            errors.append(server.field_error("Invalid value", path, "field is immutable",
                                             new.get(key)))
    return errors
