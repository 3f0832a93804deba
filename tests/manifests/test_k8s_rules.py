"""The CRD model (tests/manifests/k8s_schema.py) refuses what a real API server refuses, with the
same field path and message, rule by rule. Each case is a small CRD that breaks one rule; the
comment names the upstream Go function (apiextensions-apiserver) the rule comes from."""
from __future__ import annotations

import copy

import pytest

from plumber_agent.fleet.writer import rfc3339
from tests.manifests.k8s_schema import (GO_SCHEMA_VALUE, GO_VERSIONS_VALUE, FormatNotModelled,
                                        K8sValidator, crd_problems, crd_warnings, is_date_time,
                                        structural_problems, to_jsonschema, validation_errors)

S = "spec.validation.openAPIV3Schema"  # a one-version CRD's schema, after hoisting
ALLOWED_AT_ROOT = ("[Description Type Format Title Maximum ExclusiveMaximum Minimum "
                   "ExclusiveMinimum MaxLength MinLength Pattern MaxItems MinItems UniqueItems "
                   "MultipleOf Required Items Properties ExternalDocs Example "
                   "XPreserveUnknownFields XValidations]")
DNS1035 = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
           "with an alphabetic character, and end with an alphanumeric character (e.g. "
           "'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")


def make_crd(schema: dict | None = None, *, status: bool = False) -> dict:
    """A minimal CRD the API server accepts."""
    version = {"name": "v1", "served": True, "storage": True,
               "schema": {"openAPIV3Schema": schema if schema is not None else {"type": "object"}}}
    if status:
        version["subresources"] = {"status": {}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Cluster",
                     "names": {"kind": "Widget", "plural": "widgets"}, "versions": [version]}}


def props(**properties) -> dict:
    return {"type": "object", "properties": properties}


def test_minimal_crd_is_accepted():
    assert crd_problems(make_crd()) == []
    assert crd_problems(make_crd(props(a={"type": "string"}), status=True)) == []


# The root-metadata snippet both our CRDs had, refused by a real API server with exactly this.
OLD_ROOT_METADATA = {"type": "object", "description": "Standard object metadata."}


def test_old_root_metadata_snippet_is_refused_like_the_real_server():
    doc = make_crd(props(metadata=OLD_ROOT_METADATA, spec={"type": "object"}), status=True)
    assert crd_problems(doc) == [
        "spec.validation.openAPIV3Schema.properties[metadata]: Forbidden: must not specify "
        "anything other than name and generateName, but metadata is implicitly specified"]


@pytest.mark.parametrize("metadata", [
    {"type": "object"},
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 63}}},
    {"type": "object", "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}}},
])
def test_root_metadata_may_restrict_name_only(metadata):
    """validateStructuralMetadataInvariants."""
    assert crd_problems(make_crd(props(metadata=metadata))) == []


# (id, schema, one expected upstream error)
SCHEMA_CASES = [
    # --- validateStructuralInvariants
    ("array without items", props(a={"type": "array"}),
     f"{S}.properties[a].items: Required value: must be specified"),
    ("additionalProperties at the root", {"type": "object", "additionalProperties": {"type": "string"}},
     f"{S}.additionalProperties: Forbidden: must not be used at the root"),
    ("field without type", props(a={"description": "x"}),
     f"{S}.properties[a].type: Required value: must not be empty for specified object fields"),
    ("item without type", props(a={"type": "array", "items": {"description": "x"}}),
     f"{S}.properties[a].items.type: Required value: must not be empty for specified array items"),
    ("map value without type", props(a={"type": "object", "additionalProperties": {"minLength": 1}}),
     f"{S}.properties[a].additionalProperties.type: Required value: must not be empty for "
     f"specified object fields"),
    ("root without type", {"properties": {}},
     f"{S}.type: Required value: must not be empty at the root"),
    ("root not an object", {"type": "string"},
     f'{S}.type: Invalid value: "string": must be object at the root'),
    ("kind not a string", props(kind={"type": "integer"}),
     f'{S}.properties[kind].type: Invalid value: "integer": must be string'),
    ("apiVersion not a string", props(apiVersion={"type": "object"}),
     f'{S}.properties[apiVersion].type: Invalid value: "object": must be string'),
    ("embedded resource not an object", props(a={"type": "string",
                                                 "x-kubernetes-embedded-resource": True}),
     f'{S}.properties[a].type: Invalid value: "string": must be object if '
     f'x-kubernetes-embedded-resource is true'),
    ("embedded resource without type", props(a={"x-kubernetes-embedded-resource": True,
                                                "x-kubernetes-preserve-unknown-fields": True}),
     f"{S}.properties[a].type: Required value: must be object if x-kubernetes-embedded-resource "
     f"is true"),
    ("embedded resource without properties", props(a={"type": "object",
                                                      "x-kubernetes-embedded-resource": True}),
     f"{S}.properties[a].properties: Required value: must not be empty if "
     f"x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields"),
    ("embedded resource with additionalProperties", props(a={
        "type": "object", "x-kubernetes-embedded-resource": True,
        "x-kubernetes-preserve-unknown-fields": True, "additionalProperties": {"type": "string"}}),
     f"{S}.properties[a].additionalProperties: Forbidden: must not be used if "
     f"x-kubernetes-embedded-resource is set"),
    ("embedded metadata not an object", props(a={
        "type": "object", "x-kubernetes-embedded-resource": True,
        "properties": {"metadata": {"type": "string"}}}),
     f'{S}.properties[a].properties[metadata].type: Invalid value: "string": must be object'),
    # --- validateStructuralMetadataInvariants
    ("root metadata not an object", props(metadata={"type": "string"}),
     f'{S}.properties[metadata].type: Invalid value: "string": must be object'),
    ("root metadata restricts labels", props(metadata={"type": "object", "properties": {
        "labels": {"type": "object"}}}),
     f"{S}.properties[metadata]: Forbidden: must not specify anything other than name and "
     f"generateName, but metadata is implicitly specified"),
    ("root metadata preserves unknown fields", props(metadata={
        "type": "object", "x-kubernetes-preserve-unknown-fields": True}),
     f"{S}.properties[metadata]: Forbidden: must not specify anything other than name and "
     f"generateName, but metadata is implicitly specified"),
    # --- validateExtensions
    ("int-or-string preserving unknown fields", props(a={
        "x-kubernetes-int-or-string": True, "x-kubernetes-preserve-unknown-fields": True}),
     f"{S}.properties[a].x-kubernetes-preserve-unknown-fields: Invalid value: true: must be "
     f"false if x-kubernetes-int-or-string is true"),
    ("int-or-string embedded", props(a={
        "x-kubernetes-int-or-string": True, "x-kubernetes-embedded-resource": True}),
     f"{S}.properties[a].x-kubernetes-embedded-resource: Invalid value: true: must be false if "
     f"x-kubernetes-int-or-string is true"),
    # --- validateValueValidation / validateNestedValueValidation
    ("pattern with look-ahead", props(a={"type": "string", "pattern": "^(?!-).*$"}),
     f'{S}.properties[a].pattern: Invalid value: "^(?!-).*$": must be a valid regular '
     f"expression, but isn't: error parsing regexp: invalid or unsupported Perl syntax: `(?!`"),
    ("pattern with back-reference", props(a={"type": "string", "pattern": r"(a)\1"}),
     f'{S}.properties[a].pattern: Invalid value: "(a)\\\\1": must be a valid regular '
     f"expression, but isn't: error parsing regexp: invalid escape sequence: `\\1`"),
    ("type inside oneOf", {**props(a={"type": "string"}), "oneOf": [{"type": "object"}]},
     f"{S}.oneOf[0].type: Forbidden: must be empty to be structural"),
    ("description inside not", {**props(a={"type": "string"}),
                                "not": {"required": ["a"], "description": "x"}},
     f"{S}.not.description: Forbidden: must be empty to be structural"),
    ("default inside allOf", {**props(a={"type": "string"}),
                              "allOf": [{"properties": {"a": {"default": "x"}}}]},
     f"{S}.allOf[0].properties[a].default: Forbidden: must be undefined to be structural"),
    ("title inside anyOf", {**props(a={"type": "string"}), "anyOf": [{"title": "t"}]},
     f"{S}.anyOf[0].title: Forbidden: must be empty to be structural"),
    ("nullable inside anyOf", {**props(a={"type": "string"}), "anyOf": [{"nullable": True}]},
     f"{S}.anyOf[0].nullable: Forbidden: must be false to be structural"),
    ("additionalProperties inside oneOf", props(a={
        "type": "object", "additionalProperties": {"type": "string"},
        "oneOf": [{"additionalProperties": {"maxLength": 1}}]}),
     f"{S}.properties[a].oneOf[0].additionalProperties: Forbidden: must be undefined to be "
     f"structural"),
    ("list-type inside anyOf", props(a={"type": "array", "items": {"type": "string"},
                                        "anyOf": [{"x-kubernetes-list-type": "set"}]}),
     f"{S}.properties[a].anyOf[0].x-kubernetes-list-type: Forbidden: must be undefined to be "
     f"structural"),
    ("int-or-string inside oneOf", props(a={"x-kubernetes-int-or-string": True,
                                            "oneOf": [{"x-kubernetes-int-or-string": True}]}),
     f"{S}.properties[a].oneOf[0].x-kubernetes-int-or-string: Forbidden: must be false to be "
     f"structural"),
    ("metadata inside anyOf", {**props(metadata={"type": "object"}),
                               "anyOf": [{"properties": {"metadata": {"required": ["name"]}}}]},
     f"{S}.anyOf[0].properties[metadata]: Forbidden: must not be specified in a nested context"),
    # --- validateStructuralCompleteness
    ("field only inside anyOf", {**props(a={"type": "string"}),
                                 "anyOf": [{"properties": {"b": {"minLength": 1}}}]},
     f"{S}.properties[b]: Required value: because it is defined in {S}.anyOf[0].properties[b]"),
    ("items only inside not", {**props(a={"type": "string"}),
                               "not": {"properties": {"a": {"items": {"minLength": 1}}}}},
     f"{S}.properties[a].items: Required value: because it is defined in "
     f"{S}.not.properties[a].items"),
    # --- ValidateCustomResourceDefinitionOpenAPISchema
    ("uniqueItems", props(a={"type": "array", "items": {"type": "string"}, "uniqueItems": True}),
     f"{S}.properties[a].uniqueItems: Forbidden: uniqueItems cannot be set to true since the "
     f"runtime complexity becomes quadratic"),
    ("additionalProperties with properties", props(a={
        "type": "object", "properties": {"b": {"type": "string"}},
        "additionalProperties": {"type": "string"}}),
     f"{S}.properties[a].additionalProperties: Forbidden: additionalProperties and properties "
     f"are mutual exclusive"),
    ("additionalProperties false with properties", props(a={
        "type": "object", "properties": {"b": {"type": "string"}}, "additionalProperties": False}),
     f"{S}.properties[a].additionalProperties: Forbidden: additionalProperties and properties "
     f"are mutual exclusive"),
    ("preserve-unknown-fields false", props(a={"type": "object",
                                               "x-kubernetes-preserve-unknown-fields": False}),
     f"{S}.properties[a].x-kubernetes-preserve-unknown-fields: Invalid value: false: must be "
     f"true or undefined"),
    ("map-type on a string", props(a={"type": "string", "x-kubernetes-map-type": "atomic"}),
     f'{S}.properties[a].type: Invalid value: "string": must be object if x-kubernetes-map-type '
     f"is specified"),
    ("unknown map-type", props(a={"type": "object", "x-kubernetes-map-type": "merge"}),
     f'{S}.properties[a].x-kubernetes-map-type: Unsupported value: "merge": supported values: '
     f'"atomic", "granular"'),
    ("list-type on an object", props(a={"type": "object", "x-kubernetes-list-type": "set"}),
     f'{S}.properties[a].type: Invalid value: "object": must be array if x-kubernetes-list-type '
     f"is specified"),
    ("unknown list-type", props(a={"type": "array", "items": {"type": "string"},
                                   "x-kubernetes-list-type": "bag"}),
     f'{S}.properties[a].x-kubernetes-list-type: Unsupported value: "bag": supported values: '
     f'"atomic", "set", "map"'),
    ("list-map-keys without list-type", props(a={
        "type": "array", "x-kubernetes-list-map-keys": ["k"],
        "items": {"type": "object", "required": ["k"], "properties": {"k": {"type": "string"}}}}),
     f"{S}.properties[a].x-kubernetes-list-type: Required value: must be map if "
     f"x-kubernetes-list-map-keys is non-empty"),
    ("list-map-keys on a set", props(a={
        "type": "array", "x-kubernetes-list-type": "set", "x-kubernetes-list-map-keys": ["k"],
        "items": {"type": "string"}}),
     f'{S}.properties[a].x-kubernetes-list-type: Invalid value: "set": must be map if '
     f"x-kubernetes-list-map-keys is non-empty"),
    ("list map without keys", props(a={
        "type": "array", "x-kubernetes-list-type": "map",
        "items": {"type": "object", "properties": {"k": {"type": "string"}}}}),
     f"{S}.properties[a].x-kubernetes-list-map-keys: Required value: must not be empty if "
     f"x-kubernetes-list-type is map"),
    ("list map of strings", props(a={
        "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"],
        "items": {"type": "string"}}),
     f'{S}.properties[a].items.type: Invalid value: "string": must be object if parent '
     f"array's x-kubernetes-list-type is map"),
    ("list-map key not a property", props(a={
        "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"],
        "items": {"type": "object", "properties": {"j": {"type": "string"}}}}),
     f'{S}.properties[a].x-kubernetes-list-map-keys: Invalid value: []string{{"k"}}: entries '
     f"must all be names of item properties"),
    ("list-map key listed twice", props(a={
        "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k", "k"],
        "items": {"type": "object", "required": ["k"], "properties": {"k": {"type": "string"}}}}),
     f'{S}.properties[a].x-kubernetes-list-map-keys: Invalid value: []string{{"k", "k"}}: must '
     f"not contain duplicate entries"),
    ("list-map key not a scalar", props(a={
        "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"],
        "items": {"type": "object", "required": ["k"],
                  "properties": {"k": {"type": "object"}}}}),
     f'{S}.properties[a].items.properties[k].type: Invalid value: "object": must be a scalar '
     f"type if parent array's x-kubernetes-list-type is map"),
    ("list-map key neither required nor defaulted", props(a={
        "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"],
        "items": {"type": "object", "properties": {"k": {"type": "string"}}}}),
     f"{S}.properties[a].items.properties[k].default: Required value: this property is in "
     f"x-kubernetes-list-map-keys, so it must have a default or be a required property"),
    ("list-map key nullable", props(a={
        "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"],
        "items": {"type": "object", "required": ["k"],
                  "properties": {"k": {"type": "string", "nullable": True}}}}),
     f"{S}.properties[a].items.properties[k].nullable: Forbidden: this property is in "
     f"x-kubernetes-list-map-keys, so it cannot be nullable"),
    ("set of nullable items", props(a={"type": "array", "x-kubernetes-list-type": "set",
                                       "items": {"type": "string", "nullable": True}}),
     f"{S}.properties[a].items.nullable: Forbidden: cannot be nullable when "
     f"x-kubernetes-list-type is set"),
    ("set of granular objects", props(a={"type": "array", "x-kubernetes-list-type": "set",
                                         "items": {"type": "object"}}),
     f"{S}.properties[a].items.x-kubernetes-map-type: Invalid value: null: must be atomic as "
     f"item of a list with x-kubernetes-list-type=set"),
    ("rule without text", props(a={"type": "string", "x-kubernetes-validations": [{"rule": " "}]}),
     f"{S}.properties[a].x-kubernetes-validations[0].rule: Required value: rule is not specified"),
    ("rule with unknown reason", props(a={"type": "string", "x-kubernetes-validations": [
        {"rule": "self.size() > 0", "reason": "FieldValueWrong"}]}),
     f'{S}.properties[a].x-kubernetes-validations[0].reason: Unsupported value: '
     f'"FieldValueWrong": supported values: "FieldValueDuplicate", "FieldValueForbidden", '
     f'"FieldValueInvalid", "FieldValueRequired"'),
    # --- specStandardValidatorV3.validate
    ("unknown type", props(a={"type": "int"}),
     f'{S}.properties[a].type: Unsupported value: "int": supported values: "array", "boolean", '
     f'"integer", "number", "object", "string"'),
    ("type null", props(a={"type": "null"}),
     f"{S}.properties[a].type: Forbidden: type cannot be set to null, use nullable as an "
     f"alternative"),
    ("$ref", props(a={"type": "object", "$ref": "#/definitions/x"}),
     f"{S}.properties[a].$ref: Forbidden: $ref is not supported"),
    ("patternProperties", props(a={"type": "object", "patternProperties": {
        "^x": {"type": "string"}}}),
     f"{S}.properties[a].patternProperties: Forbidden: patternProperties is not supported"),
    ("definitions", {"type": "object", "definitions": {"x": {"type": "string"}}},
     f"{S}.definitions: Forbidden: definitions is not supported"),
    ("dependencies", props(a={"type": "object", "dependencies": {"b": ["c"]}}),
     f"{S}.properties[a].dependencies: Forbidden: dependencies is not supported"),
    ("additionalItems", props(a={"type": "array", "items": {"type": "string"},
                                 "additionalItems": False}),
     f"{S}.properties[a].additionalItems: Forbidden: additionalItems is not supported"),
    ("id", props(a={"type": "string", "id": "x"}),
     f"{S}.properties[a].id: Forbidden: id is not supported"),
    ("items as a list", props(a={"type": "array", "items": [{"type": "string"}]}),
     f"{S}.properties[a].items: Forbidden: items must be a schema object and not an array"),
    ("default in top-level metadata", props(metadata={"type": "object", "default": {}}),
     f"{S}.properties[metadata].default: Forbidden: must not be set in top-level metadata"),
    ("default in top-level kind", props(kind={"type": "string", "default": "Widget"}),
     f"{S}.properties[kind].default: Forbidden: must not be set in top-level kind"),
    ("embedded resource inside metadata", props(metadata={
        "type": "object", "properties": {"name": {
            "type": "object", "x-kubernetes-embedded-resource": True,
            "x-kubernetes-preserve-unknown-fields": True}}}),
     f"{S}.properties[metadata].properties[name].x-kubernetes-embedded-resource: Forbidden: "
     f"must not be used inside of resource meta"),
]


@pytest.mark.parametrize("schema, expected", [pytest.param(c[1], c[2], id=c[0])
                                              for c in SCHEMA_CASES])
def test_schema_rule(schema, expected):
    problems = crd_problems(make_crd(schema))
    assert expected in problems, problems
    assert expected in structural_problems(schema)


# validateCustomResourceDefinitionValidation (with the status subresource enabled)
def test_root_fields_are_limited_with_a_status_subresource():
    problems = crd_problems(make_crd({"type": "object", "minProperties": 1}, status=True))
    assert problems == [f"{S}: Invalid value: {GO_SCHEMA_VALUE}: only {ALLOWED_AT_ROOT} fields "
                        f"are allowed at the root of the schema if the status subresource is "
                        f"enabled"]
    assert crd_problems(make_crd({"type": "object", "minProperties": 1})) == []


def test_root_may_not_be_nullable():
    problems = crd_problems(make_crd({"type": "object", "nullable": True}))
    assert f"{S}.nullable: Forbidden: nullable cannot be true at the root" in problems


def test_int_or_string_any_of_is_structural():
    """isIntOrStringAnyOfPattern: the one junctor allowed to carry types."""
    schema = props(port={"x-kubernetes-int-or-string": True,
                         "anyOf": [{"type": "integer"}, {"type": "string"}]})
    assert crd_problems(make_crd(schema)) == []


def test_a_rule_that_parses_is_accepted_and_one_that_does_not_is_refused():
    def rule(text):
        return crd_problems(make_crd(props(a={"type": "string", "x-kubernetes-validations": [
            {"rule": text}]})))
    assert rule("self.size() > 0") == []
    problems = rule("self.size( > 0")
    assert len(problems) == 1 and "rule: Invalid value" in problems[0] \
        and "compilation failed" in problems[0], problems


def test_what_the_cel_model_leaves_out_is_refused():
    for extra in ({"messageExpression": "'x'"}, {"fieldPath": ".a"}, {"rule": "self == oldSelf"}):
        problems = crd_problems(make_crd(props(a={"type": "string", "x-kubernetes-validations": [
            {"rule": "true", **extra}]})))
        assert len(problems) == 1 and "not modelled" in problems[0], problems


def test_a_false_rule_is_invalid_at_its_node_with_the_message_or_the_rule():
    from tests.manifests.k8s_schema import validation_errors
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "a": {"type": "object", "x-kubernetes-validations": [
            {"rule": "has(self.b)", "message": "  b is required  "}, {"rule": "size(self) > 1"}],
            "properties": {"b": {"type": "string"}, "c": {"type": "string"}}}}}}}
    instance = {"apiVersion": "g/v1", "kind": "K", "metadata": {"name": "x"},
                "spec": {"a": {"c": "1"}}}
    assert validation_errors(schema, instance) == [
        ("spec.a", 'Invalid value: "object": b is required'),
        ("spec.a", 'Invalid value: "object": failed rule: size(self) > 1')]


# ---------------------------------------------------------------------------------------------
# Whole documents: validateCustomResourceDefinitionSpec, ValidateCustomResourceDefinitionNames,
# ValidateCustomResourceColumnDefinition, ValidateCustomResourceDefinitionSubresources, strict
# decoding.


def edit(path: str, value, *, delete: bool = False):
    """A change to make_crd()'s document at a dotted path (list indices as numbers)."""
    def apply(doc: dict) -> dict:
        parts = path.split(".")
        node = doc
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        last = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
        if delete:
            del node[last]
        else:
            node[last] = value
        return doc
    return apply


def add_version(**fields):
    def apply(doc: dict) -> dict:
        version = copy.deepcopy(doc["spec"]["versions"][0])
        version.update(fields)
        doc["spec"]["versions"].append(version)
        return doc
    return apply


COLUMN = {"name": "Size", "type": "integer", "jsonPath": ".spec.size"}

DOCUMENT_CASES = [
    ("name is not plural.group", edit("metadata.name", "widget.example.com"),
     'metadata.name: Invalid value: "widget.example.com": must be spec.names.plural+"."+spec.group'),
    ("name missing", edit("metadata.name", None, delete=True),
     "metadata.name: Required value: name or generateName is required"),
    ("group missing", edit("spec.group", ""), "spec.group: Required value"),
    ("group without a dot", edit("spec.group", "example"),
     'spec.group: Invalid value: "example": should be a domain with at least one dot'),
    ("scope missing", edit("spec.scope", None, delete=True), "spec.scope: Required value"),
    ("scope unknown", edit("spec.scope", "Global"),
     'spec.scope: Unsupported value: "Global": supported values: "Cluster", "Namespaced"'),
    ("version name", edit("spec.versions.0.name", "V1"),
     f'spec.versions[0].name: Invalid value: "V1": {DNS1035}'),
    ("no storage version", edit("spec.versions.0.storage", False),
     f"spec.versions: Invalid value: {GO_VERSIONS_VALUE}: must have exactly one version marked "
     f"as storage version"),
    ("two storage versions", add_version(name="v2"),
     f"spec.versions: Invalid value: {GO_VERSIONS_VALUE}: must have exactly one version marked "
     f"as storage version"),
    ("version named twice", add_version(storage=False),
     f"spec.versions: Invalid value: {GO_VERSIONS_VALUE}: must contain unique version names"),
    ("no schema", edit("spec.versions.0.schema", None, delete=True),
     "spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required"),
    ("deprecation warning of a current version", edit("spec.versions.0.deprecationWarning", "x"),
     'spec.versions[0].deprecationWarning: Invalid value: "x": can only be set for deprecated '
     'versions'),
    ("plural missing", edit("spec.names.plural", ""), "spec.names.plural: Required value"),
    ("kind missing", edit("spec.names.kind", ""), "spec.names.kind: Required value"),
    ("plural not a label", edit("spec.names.plural", "Widgets"),
     f'spec.names.plural: Invalid value: "Widgets": {DNS1035}'),
    ("kind not a label", edit("spec.names.kind", "Wid_get"),
     f'spec.names.kind: Invalid value: "Wid_get": may have mixed case, but should otherwise '
     f"match: {DNS1035}"),
    ("short name not a label", edit("spec.names.shortNames", ["w-"]),
     f'spec.names.shortNames[0]: Invalid value: "w-": {DNS1035}'),
    ("category not a label", edit("spec.names.categories", ["All"]),
     f'spec.names.categories[0]: Invalid value: "All": {DNS1035}'),
    ("kind equals listKind", edit("spec.names.listKind", "Widget"),
     'spec.names.listKind: Invalid value: "Widget": kind and listKind may not be the same'),
    ("preserveUnknownFields", edit("spec.preserveUnknownFields", True),
     "spec.preserveUnknownFields: Invalid value: true: cannot set to true, set "
     "x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead"),
    ("column without name", edit("spec.versions.0.additionalPrinterColumns",
                                 [{"type": "string", "jsonPath": ".spec.a"}]),
     "spec.additionalPrinterColumns[0].name: Required value"),
    ("column without type", edit("spec.versions.0.additionalPrinterColumns",
                                 [{"name": "A", "jsonPath": ".spec.a"}]),
     "spec.additionalPrinterColumns[0].type: Required value: must be one of "
     "boolean,date,integer,number,string"),
    ("column of unknown type", edit("spec.versions.0.additionalPrinterColumns",
                                    [{**COLUMN, "type": "int"}]),
     'spec.additionalPrinterColumns[0].type: Invalid value: "int": must be one of '
     'boolean,date,integer,number,string'),
    ("column of unknown format", edit("spec.versions.0.additionalPrinterColumns",
                                      [{**COLUMN, "format": "uint8"}]),
     'spec.additionalPrinterColumns[0].format: Invalid value: "uint8": must be one of '
     'byte,date,date-time,double,float,int32,int64,password'),
    ("column without jsonPath", edit("spec.versions.0.additionalPrinterColumns",
                                     [{"name": "A", "type": "string"}]),
     "spec.additionalPrinterColumns[0].JSONPath: Required value"),
    ("column jsonPath in braces", edit("spec.versions.0.additionalPrinterColumns",
                                       [{**COLUMN, "jsonPath": "{.spec.size}"}]),
     'spec.additionalPrinterColumns[0].JSONPath: Invalid value: "{.spec.size}": must be a '
     'simple json path starting with .'),
    ("scale without paths", edit("spec.versions.0.subresources", {"scale": {}}),
     "spec.subresources.scale.specReplicasPath: Required value"),
    ("scale path outside spec", edit("spec.versions.0.subresources", {"scale": {
        "specReplicasPath": ".status.replicas", "statusReplicasPath": ".status.replicas"}}),
     'spec.subresources.scale.specReplicasPath: Invalid value: ".status.replicas": should be a '
     'json path under .spec'),
    ("unknown field in a version", edit("spec.versions.0.servd", True),
     'spec.versions[0].servd: unknown field "spec.versions[0].servd"'),
    ("unknown field in a column", edit("spec.versions.0.additionalPrinterColumns",
                                       [{**COLUMN, "JSONPath": ".spec.size"}]),
     'spec.versions[0].additionalPrinterColumns[0].JSONPath: unknown field '
     '"spec.versions[0].additionalPrinterColumns[0].JSONPath"'),
    ("typo in the schema", edit("spec.versions.0.schema.openAPIV3Schema", props(
        a={"type": "array", "maxItem": 3, "items": {"type": "string"}})),
     'spec.versions[0].schema.openAPIV3Schema.properties.a.maxItem: unknown field '
     '"spec.versions[0].schema.openAPIV3Schema.properties.a.maxItem"'),
]


@pytest.mark.parametrize("change, expected", [pytest.param(c[1], c[2], id=c[0])
                                              for c in DOCUMENT_CASES])
def test_document_rule(change, expected):
    problems = crd_problems(change(make_crd()))
    assert expected in problems, problems


def test_differing_versions_are_validated_per_version():
    """Only values identical in every version are hoisted to the top level."""
    doc = make_crd()
    doc["spec"]["versions"].append({"name": "v2", "served": True, "storage": False, "schema": {
        "openAPIV3Schema": {"type": "object", "properties": {"a": {"type": "array"}}}}})
    assert crd_problems(doc) == [
        "spec.versions[1].schema.openAPIV3Schema.properties[a].items: Required value: must be "
        "specified"]


def test_listkind_and_singular_are_defaulted():
    """SetDefaults_CustomResourceDefinitionSpec fills them from kind before validation."""
    doc = make_crd()
    assert "listKind" not in doc["spec"]["names"] and crd_problems(doc) == []


# validateNestedValueValidation: every generic or extension a junctor branch may not carry.
NESTED_FORBIDDEN = [
    ("type", "string", "must be empty to be structural"),
    ("additionalProperties", {"type": "string"}, "must be undefined to be structural"),
    ("default", "x", "must be undefined to be structural"),
    ("title", "t", "must be empty to be structural"),
    ("description", "d", "must be empty to be structural"),
    ("nullable", True, "must be false to be structural"),
    ("externalDocs", {"url": "https://example.com"}, "must be undefined to be structural"),
    ("x-kubernetes-preserve-unknown-fields", True, "must be false to be structural"),
    ("x-kubernetes-embedded-resource", True, "must be false to be structural"),
    ("x-kubernetes-int-or-string", True, "must be false to be structural"),
    ("x-kubernetes-list-map-keys", ["k"], "must be empty to be structural"),
    ("x-kubernetes-list-type", "atomic", "must be undefined to be structural"),
    ("x-kubernetes-map-type", "atomic", "must be undefined to be structural"),
    ("x-kubernetes-validations", [{"rule": "true"}], "must be empty to be structural"),
]


@pytest.mark.parametrize("key, value, detail", NESTED_FORBIDDEN, ids=[c[0] for c in NESTED_FORBIDDEN])
def test_junctor_branches_hold_value_validations_only(key, value, detail):
    schema = {**props(a={"type": "string"}), "allOf": [{key: value}]}
    assert f"{S}.allOf[0].{key}: Forbidden: {detail}" in structural_problems(schema)


@pytest.mark.parametrize("rule, expected", [
    ({"rule": "self > 0", "message": " "},
     f'{S}.properties[a].x-kubernetes-validations[0].message: Invalid value: " ": message must be '
     f"non-empty if specified"),
    ({"rule": "self > 0", "message": "a\nb"},
     f'{S}.properties[a].x-kubernetes-validations[0].message: Invalid value: "a\\nb": message must '
     f"not contain line breaks"),
    ({"rule": "self > 0 &&\nself < 9"},
     f"{S}.properties[a].x-kubernetes-validations[0].message: Required value: message must be "
     f"specified if rule contains line breaks"),
])
def test_validation_rule_texts(rule, expected):
    """The non-CEL checks of ValidateCustomResourceDefinitionOpenAPISchema on a rule."""
    schema = props(a={"type": "integer", "x-kubernetes-validations": [rule]})
    assert expected in crd_problems(make_crd(schema))


def test_scale_label_selector_path():
    """ValidateCustomResourceDefinitionSubresources: labelSelectorPath under .spec or .status."""
    doc = make_crd()
    doc["spec"]["versions"][0]["subresources"] = {"scale": {
        "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".metadata.labels"}}
    assert crd_problems(doc) == [
        'spec.subresources.scale.labelSelectorPath: Invalid value: ".metadata.labels": should be '
        'a json path under either .spec or .status']


# ---------------------------------------------------------------------------------------------
# `format`. On create, validateCustomResourceDefinitionOpenAPISchema has no format rule; the CRD
# registry strategy's WarningsOnCreate warns of a format GetUnrecognizedFormats does not know for
# the type, and StripUnsupportedFormatsPostProcessorForVersion drops it before objects are
# validated. Objects: kube-openapi's formatValidator (FormatOf) and typeValidator.

CONDITION_TIME = {"type": "string", "format": "date-time"}


def widget(value) -> dict:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "spec": {"when": value}}


def test_a_date_time_field_is_accepted_without_warning():
    doc = make_crd(props(spec=props(when=CONDITION_TIME)))
    assert crd_problems(doc) == [] and crd_warnings(doc) == []


@pytest.mark.parametrize("field, warning", [
    ({"type": "string", "format": "uint8"}, 'unrecognized format "uint8"'),
    # formats belong to a type: date-time on an integer is dropped too, int32 on a string also
    ({"type": "integer", "format": "date-time"}, 'unrecognized format "date-time"'),
    ({"type": "string", "format": "int32"}, 'unrecognized format "int32"'),
    ({"type": "boolean", "format": "password"}, 'unrecognized format "password"'),
])
def test_an_unrecognized_format_is_a_warning_and_is_ignored(field, warning):
    doc = make_crd(props(spec=props(when=field)))
    assert crd_problems(doc) == [] and crd_warnings(doc) == [warning]
    schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    good = {"integer": 3, "boolean": True}.get(field["type"], "not a time")
    assert validation_errors(schema, widget(good)) == []


def test_the_template_crd_has_no_format_warning(template_crd):
    assert crd_warnings(template_crd) == []
    conditions = template_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"]["status"]["properties"]["conditions"]
    assert conditions["items"]["properties"]["lastTransitionTime"] == {
        **CONDITION_TIME, "description": "When the condition last changed status (RFC 3339, UTC)."}


def test_a_recognized_format_without_a_ported_validator_is_not_modelled():
    """uri is validated upstream (govalidator.IsRequestURI), not here: refused, not guessed."""
    problems = crd_problems(make_crd(props(spec=props(site={"type": "string", "format": "uri"}))))
    assert problems == [f'{S}.properties[spec].properties[site].format: not modelled by '
                        f'tests/manifests/k8s_schema.py: the strfmt validator of format "uri" '
                        f'(ported: date-time, date, password, int32, int64, float, double); '
                        f'port the upstream rule before using it']
    schema = props(spec=props(site={"type": "string", "format": "uri"}))
    with pytest.raises(FormatNotModelled):
        validation_errors(schema, {"spec": {"site": "x"}})


DATE_TIME_SCHEMA = props(spec=props(when=CONDITION_TIME))


@pytest.mark.parametrize("value", [
    "2026-11-28T21:00:00Z", "2026-11-28t21:00:00z", "2026-11-28T21:00:00.123456Z",
    "2026-11-28T21:00:00+01:00", "2024-02-29T23:59:59Z", "0000-01-01T00:00:00Z",
    # strfmt.IsDateTime quirks: any one character before the fraction, offsets unchecked,
    # anything after a second "t" ignored
    "2026-11-28T21:00:00,5Z", "2026-11-28T21:00:00+99:99", "2026-11-28T21:00:00ZTnot-checked",
])
def test_a_valid_date_time_is_accepted(value):
    assert is_date_time(value)
    assert validation_errors(DATE_TIME_SCHEMA, widget(value)) == []


@pytest.mark.parametrize("value", [
    "2026-11-28 21:00:00Z", "2026-11-28T21:00:00", "2026-11-28", "2026-02-29T00:00:00Z",
    "2026-13-01T00:00:00Z", "2026-11-28T24:00:00Z", "2026-11-28T21:60:00Z",
    "2026-11-28T21:00:00.Z", "2026-11-28T21:00Z", "26-11-28T21:00:00Z", "", "now",
    "2026-11-28T21:00:00Z\n",
])
def test_an_invalid_date_time_is_refused_with_the_upstream_message(value):
    """errors.InvalidType -> typeFailWithData "%s in %s must be of type %s: %q", made a
    field.TypeInvalid (rendered like field.Invalid) by kubeOpenAPIResultToFieldErrors."""
    assert not is_date_time(value)
    quoted = '"' + value.replace("\n", "\\n") + '"'
    assert validation_errors(DATE_TIME_SCHEMA, widget(value)) == [
        ("spec.when", f"Invalid value: {quoted}: spec.when in body must be of type date-time: "
                      f"{quoted}")]


@pytest.mark.parametrize("value, go_type", [(5, "int64"), (1.5, "float64"), (True, ""),
                                            ({}, "")])
def test_a_date_time_field_holding_no_string_names_the_format(value, go_type):
    """typeValidator with a format: the value's Go format stands where the JSON type would."""
    assert validation_errors(DATE_TIME_SCHEMA, widget(value)) == [
        ("spec.when", f'Invalid value: "{go_type}": spec.when in body must be of type date-time: '
                      f'"{go_type}"')]


def test_a_list_passes_a_date_time_field_as_upstream():
    """typeValidator skips strings and lists when a format is set; formatValidator applies to
    strings only. A plain string field still refuses the list."""
    assert validation_errors(DATE_TIME_SCHEMA, widget(["2026-11-28T21:00:00Z"])) == []
    assert validation_errors(props(spec=props(when={"type": "string"})), widget([])) == [
        ("spec.when", 'Invalid value: "array": spec.when in body must be of type string: '
                      '"array"')]


def test_k8s_validator_checks_date_time_too():
    validator = K8sValidator(to_jsonschema(CONDITION_TIME))
    assert validator.is_valid("2026-11-28T21:00:00Z")
    assert not validator.is_valid("2026-11-28 21:00:00")


@pytest.mark.parametrize("epoch_s", [0, 1, 1795894800, 1795894800.999999, 253402300799])
def test_the_status_writers_timestamps_are_date_times(epoch_s):
    """writer.rfc3339 makes every condition's lastTransitionTime (up to 9999-12-31)."""
    assert is_date_time(rfc3339(epoch_s)), rfc3339(epoch_s)
