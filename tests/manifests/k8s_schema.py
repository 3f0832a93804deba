"""What the API server does with a CRD schema, close enough to test our manifests without a cluster.

Two halves:
- `structural_problems` checks the rules Kubernetes enforces when a CRD is created (structural
  schema rules, apiextensions v1 restrictions, list-map keys, RE2-compatible patterns), so a
  schema that the API server would reject fails here first.
- `validation_errors` validates an object against the schema the way the API server does for a
  create with kubectl's default strict field validation: OpenAPI v3 ~ JSON Schema draft 4
  (5.0 is not an integer), `$` in patterns means end of text (Go RE2, not Python's "before a
  final newline"), unknown fields refused, list-type map keys unique.
"""
from __future__ import annotations

import copy
import re
from typing import Any, Iterator

import jsonschema
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError

TYPES = {"object", "array", "string", "integer", "number", "boolean"}
JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
# apiextensions.k8s.io/v1 JSONSchemaProps fields we allow ourselves to use; anything else is a
# typo (maxItem) or a field the API server refuses ($ref, definitions, patternProperties...).
KNOWN_KEYS = {
    "type", "format", "title", "description", "default", "maximum", "exclusiveMaximum",
    "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems",
    "uniqueItems", "multipleOf", "enum", "maxProperties", "minProperties", "required", "items",
    "allOf", "oneOf", "anyOf", "not", "properties", "additionalProperties", "nullable", "example",
    "externalDocs", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string", "x-kubernetes-list-map-keys", "x-kubernetes-list-type",
    "x-kubernetes-map-type", "x-kubernetes-validations",
}
# Not allowed inside allOf/anyOf/oneOf/not (structural schema rule 3).
FORBIDDEN_IN_JUNCTOR = {"type", "description", "default", "additionalProperties", "nullable"}
_KEYWORDS_BY_TYPE = {
    "minimum": {"integer", "number"}, "maximum": {"integer", "number"},
    "minLength": {"string"}, "maxLength": {"string"}, "pattern": {"string"},
    "minItems": {"array"}, "maxItems": {"array"}, "items": {"array"},
    "minProperties": {"object"}, "maxProperties": {"object"}, "properties": {"object"},
    "additionalProperties": {"object"}, "required": {"object"},
}
_PY_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool}
# RE2 has no look-around and no back-references.
_NOT_RE2 = re.compile(r"\(\?[=!<]|\\[1-9]")


def _children(node: dict, path: str) -> Iterator[tuple[dict, str]]:
    """Sub-schemas that describe fields or items (not junctor branches)."""
    for name, sub in (node.get("properties") or {}).items():
        yield sub, f"{path}.{name}"
    if isinstance(node.get("additionalProperties"), dict):
        yield node["additionalProperties"], f"{path}.*"
    if isinstance(node.get("items"), dict):
        yield node["items"], f"{path}[]"


def _junctor_branches(node: dict, path: str) -> Iterator[tuple[dict, str]]:
    for key in JUNCTORS:
        if key not in node:
            continue
        branches = [node[key]] if key == "not" else node[key]
        for i, branch in enumerate(branches):
            yield branch, f"{path}/{key}[{i}]"


def _check_junctor(branch: Any, outer: dict, path: str, problems: list[str]) -> None:
    if not isinstance(branch, dict):
        problems.append(f"{path}: junctor branch must be a schema")
        return
    for key in sorted(set(branch) & FORBIDDEN_IN_JUNCTOR):
        problems.append(f"{path}: {key!r} is not allowed inside allOf/anyOf/oneOf/not")
    for key in sorted(set(branch) - KNOWN_KEYS):
        problems.append(f"{path}: unknown or forbidden key {key!r}")
    # Rule 2: every field/item a junctor talks about must also be specified outside it.
    outer_props = outer.get("properties") or {}
    for name, sub in (branch.get("properties") or {}).items():
        if name not in outer_props:
            problems.append(f"{path}.{name}: specified in a junctor but not outside it")
        else:
            _check_junctor(sub, outer_props[name], f"{path}.{name}", problems)
    if "items" in branch:
        if not isinstance(outer.get("items"), dict):
            problems.append(f"{path}[]: items specified in a junctor but not outside it")
        else:
            _check_junctor(branch["items"], outer["items"], f"{path}[]", problems)
    for sub, sub_path in _junctor_branches(branch, path):
        _check_junctor(sub, outer, sub_path, problems)
    for field_name in branch.get("required", []):
        if field_name not in outer_props:
            problems.append(f"{path}: requires {field_name!r}, which is not a known property")


def _check_node(node: Any, path: str, problems: list[str], *, is_root: bool = False) -> None:
    if not isinstance(node, dict):
        problems.append(f"{path}: schema must be a mapping")
        return
    for key in sorted(set(node) - KNOWN_KEYS):
        problems.append(f"{path}: unknown or forbidden key {key!r}")
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if preserve is not None and preserve is not True:
        problems.append(f"{path}: x-kubernetes-preserve-unknown-fields must be true or absent")
    typ = node.get("type")
    if typ is None:
        if not (preserve or node.get("x-kubernetes-int-or-string")):
            problems.append(f"{path}: missing type")
    elif typ not in TYPES:
        problems.append(f"{path}: unknown type {typ!r}")
    for key, allowed in _KEYWORDS_BY_TYPE.items():
        if key in node and typ is not None and typ not in allowed:
            problems.append(f"{path}: {key!r} makes no sense for type {typ!r}")
    if node.get("uniqueItems") is True:
        problems.append(f"{path}: uniqueItems: true is refused (use x-kubernetes-list-type: set)")
    if "additionalProperties" in node:
        if node["additionalProperties"] is False:
            problems.append(f"{path}: additionalProperties: false is refused")
        if "properties" in node:
            problems.append(f"{path}: additionalProperties and properties are mutually exclusive")
    if isinstance(node.get("items"), list):
        problems.append(f"{path}: items must be a single schema")
    if "pattern" in node:
        try:
            re.compile(node["pattern"])
        except re.error as exc:
            problems.append(f"{path}: pattern does not compile: {exc}")
        if _NOT_RE2.search(node["pattern"]):
            problems.append(f"{path}: pattern uses look-around or back-references (not RE2)")
    if "enum" in node and typ in _PY_TYPES:
        for value in node["enum"]:
            # YAML 1.1 turns bare off/on/yes/no into booleans: catch an enum value that did.
            if isinstance(value, bool) and typ != "boolean" or not isinstance(value, _PY_TYPES[typ]):
                problems.append(f"{path}: enum value {value!r} is not a {typ}")
    for field_name in node.get("required", []):
        if field_name not in (node.get("properties") or {}):
            problems.append(f"{path}: requires {field_name!r}, which is not a known property")
    list_type = node.get("x-kubernetes-list-type")
    if list_type is not None:
        if typ != "array":
            problems.append(f"{path}: x-kubernetes-list-type on a non-array")
        if list_type not in ("atomic", "set", "map"):
            problems.append(f"{path}: unknown x-kubernetes-list-type {list_type!r}")
    if list_type == "map":
        items = node.get("items") or {}
        keys = node.get("x-kubernetes-list-map-keys") or []
        if not keys:
            problems.append(f"{path}: list-type map needs x-kubernetes-list-map-keys")
        if items.get("type") != "object":
            problems.append(f"{path}: list-type map needs object items")
        for key in keys:
            prop = (items.get("properties") or {}).get(key)
            if prop is None:
                problems.append(f"{path}: list-map key {key!r} is not a property of the items")
            elif prop.get("type") not in ("string", "integer", "number", "boolean"):
                problems.append(f"{path}: list-map key {key!r} must be a scalar")
            elif key not in items.get("required", []) and "default" not in prop:
                problems.append(f"{path}: list-map key {key!r} must be required or defaulted")
    elif "x-kubernetes-list-map-keys" in node:
        problems.append(f"{path}: x-kubernetes-list-map-keys needs x-kubernetes-list-type: map")
    if is_root and "metadata" in (node.get("properties") or {}):
        meta = node["properties"]["metadata"]
        extra = set(meta) - {"type", "description", "properties"}
        extra |= set(meta.get("properties") or {}) - {"name", "generateName"}
        if extra:
            problems.append(f"{path}.metadata: only name/generateName may be restricted, "
                            f"found {sorted(extra)}")
    for branch, branch_path in _junctor_branches(node, path):
        _check_junctor(branch, node, branch_path, problems)
    for child, child_path in _children(node, path):
        _check_node(child, child_path, problems)


def structural_problems(schema: dict) -> list[str]:
    """Every reason the API server would refuse this openAPIV3Schema (as far as we model it)."""
    problems: list[str] = []
    _check_node(schema, "openAPIV3Schema", problems, is_root=True)
    if schema.get("type") != "object":
        problems.append("openAPIV3Schema: the root must be of type object")
    return problems


def missing_descriptions(schema: dict) -> list[str]:
    """Fields, map values and list items without a description (kubectl explain shows them)."""
    missing: list[str] = []

    def walk(node: dict, path: str) -> None:
        if not node.get("description"):
            missing.append(path)
        for child, child_path in _children(node, path):
            walk(child, child_path)

    walk(schema, "openAPIV3Schema")
    return missing


def iter_nodes(schema: dict, path: str = "openAPIV3Schema") -> Iterator[tuple[dict, str]]:
    """Every field/item node with its path (junctor branches excluded)."""
    yield schema, path
    for child, child_path in _children(schema, path):
        yield from iter_nodes(child, child_path)


def node_at(schema: dict, dotted: str) -> dict:
    """The schema node for a JSONPath like .spec.sriovConfig[*].pfName."""
    node = schema
    for part in dotted.strip(".").split("."):
        name = part.split("[")[0]
        node = node["properties"][name]
        if part.endswith("[*]"):
            node = node["items"]
    return node


# ----------------------------------------------------------------------------------------------
# Validation of objects


def _go_pattern(validator, pattern, instance, schema):
    """Go's RE2: `$` is end of text. Python's `$` also matches before a final newline."""
    if not isinstance(instance, str):
        return
    go_like = re.sub(r"(?<!\\)\$", r"\\Z", pattern)
    if not re.search(go_like, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _list_map_keys(validator, keys, instance, schema):
    if not isinstance(instance, list):
        return
    seen: dict[tuple, int] = {}
    for index, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        key = tuple(item.get(k) for k in keys)
        if key in seen:
            yield ValidationError(f"Duplicate value: {dict(zip(keys, key))!r} "
                                  f"(also at index {seen[key]})", path=[index])
        else:
            seen[key] = index


K8sValidator = jsonschema.validators.extend(
    Draft4Validator, {"pattern": _go_pattern, "x-list-map-keys": _list_map_keys})


def to_jsonschema(node: Any) -> Any:
    """Translate an OpenAPI v3 CRD schema into the JSON Schema K8sValidator understands."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("properties",):
            out[key] = {name: to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = to_jsonschema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_jsonschema(sub) for sub in value]
        elif key == "x-kubernetes-list-map-keys":
            out["x-list-map-keys"] = list(value)
        elif key.startswith("x-kubernetes-") or key in ("nullable", "example", "externalDocs"):
            continue
        else:
            out[key] = copy.deepcopy(value)
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    # kubectl's default field validation is Strict: unknown fields are refused, not pruned.
    if out.get("type") == "object" and "additionalProperties" not in out \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def json_path(error: ValidationError) -> str:
    """deque(['spec', 'sriovConfig', 0, 'numVfs']) -> 'spec.sriovConfig[0].numVfs'."""
    text = ""
    for part in error.absolute_path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


# The API server validates metadata as ObjectMeta, whatever the CRD says: names of these objects
# must be DNS subdomains (lower case, at most 253 characters).
OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "maxLength": 253,
                            "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"}},
}


def validation_errors(crd_schema: dict, instance: Any) -> list[tuple[str, str]]:
    """(path, message) for every way `instance` breaks the CRD's openAPIV3Schema."""
    translated = to_jsonschema(crd_schema)
    translated["properties"]["metadata"] = OBJECT_META
    validator = K8sValidator(translated)
    return [(json_path(error), error.message) for error in validator.iter_errors(instance)]
