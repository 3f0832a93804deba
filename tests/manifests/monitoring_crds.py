"""The parts of the Prometheus Operator's CRD schemas (monitoring.coreos.com/v1 ServiceMonitor
and PrometheusRule, prometheus-operator's example/prometheus-operator-crd/) that the
manifests/monitoring/ objects use, so they are validated as the custom objects they are: with
tests/manifests/k8s_schema.py's model of the API server, strict decoding included, so a field
these subsets leave out is refused (add it here from upstream before using it).

Ported fields: ServiceMonitor spec.selector (required), spec.endpoints[].{port, path, scheme,
interval, bearerTokenFile, tlsConfig.insecureSkipVerify, relabelings[].{sourceLabels,
targetLabel}}; PrometheusRule spec.groups[] (a list-type map keyed by name) with
rules[].{alert, record, expr (int-or-string, required), for, labels, annotations}."""
from __future__ import annotations

DURATION_PATTERN = ("^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                    "(([0-9]+)s)?(([0-9]+)ms)?)$")
LABEL_NAME_PATTERN = "^[a-zA-Z_][a-zA-Z0-9_]*$"
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
        "spec": {
            "type": "object", "required": ["selector"],
            "properties": {
                "selector": {"type": "object", "properties": {
                    "matchLabels": _STRING_MAP}},
                "endpoints": {"type": "array", "items": {"type": "object", "properties": {
                    "port": {"type": "string"},
                    "path": {"type": "string"},
                    "scheme": {"type": "string", "enum": ["http", "https"]},
                    "interval": {"type": "string", "pattern": DURATION_PATTERN},
                    "bearerTokenFile": {"type": "string"},
                    "tlsConfig": {"type": "object", "properties": {
                        "insecureSkipVerify": {"type": "boolean"}}},
                    "relabelings": {"type": "array", "items": {"type": "object", "properties": {
                        "sourceLabels": {"type": "array", "items": {
                            "type": "string", "pattern": LABEL_NAME_PATTERN}},
                        "targetLabel": {"type": "string"}}}},
                }}},
            }},
    },
    "required": ["spec"],
}

_RULE = {
    "type": "object", "required": ["expr"], "properties": {
        "alert": {"type": "string"},
        "record": {"type": "string"},
        "expr": {"x-kubernetes-int-or-string": True,
                 "anyOf": [{"type": "integer"}, {"type": "string"}]},
        "for": {"type": "string", "pattern": DURATION_PATTERN},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP}}
_GROUP = {
    "type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "minLength": 1},
        "rules": {"type": "array", "items": _RULE}}}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
        "spec": {"type": "object", "properties": {
            "groups": {"type": "array", "x-kubernetes-list-type": "map",
                       "x-kubernetes-list-map-keys": ["name"], "items": _GROUP}}},
    },
    "required": ["spec"],
}

SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR_SCHEMA,
           ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE_SCHEMA}
