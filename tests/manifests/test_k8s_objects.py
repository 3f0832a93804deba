"""Custom objects: the model refuses what the API server refuses on a create, with its path and
message. Messages come from kube-openapi (pkg/validation/validate, errors/schema.go) as
apiextensions' kubeOpenAPIResultToFieldErrors converts them, from structural pruning under
kubectl's default fieldValidation=Strict, and from listtype.ValidateListSetsAndMaps."""
from __future__ import annotations

import pytest

from tests.manifests.k8s_schema import go_quote, go_value, object_errors, validation_errors

SCHEMA = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["id"],
            "maxProperties": 20,
            "properties": {
                "id": {"type": "integer", "minimum": 1, "maximum": 4094},
                "ratio": {"type": "number", "exclusiveMinimum": True, "minimum": 0,
                          "multipleOf": 0.5},
                "step": {"type": "integer", "multipleOf": 4},
                "name": {"type": "string", "minLength": 2, "maxLength": 15,
                         "pattern": "^[a-z]+$"},
                "lacp": {"type": "string", "enum": ["active", "passive", "off"]},
                "note": {"type": "string", "nullable": True},
                "port": {"x-kubernetes-int-or-string": True},
                # numberValidator and stringValidator each apply to their own kind only
                "limit": {"x-kubernetes-int-or-string": True, "minimum": 1,
                          "pattern": "^[0-9]+%$"},
                "labels": {"type": "object", "maxProperties": 2,
                           "additionalProperties": {"type": "string"}},
                "tags": {"type": "array", "maxItems": 4, "minItems": 1,
                         "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "ports": {"type": "array", "x-kubernetes-list-type": "map",
                          "x-kubernetes-list-map-keys": ["name"],
                          "items": {"type": "object", "required": ["name"],
                                    "properties": {"name": {"type": "string"},
                                                   "port": {"type": "integer"}}}},
                "routes": {"type": "array", "x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["dst", "table"],
                           "items": {"type": "object", "required": ["dst", "table"],
                                     "properties": {"dst": {"type": "string"},
                                                    "table": {"type": "integer"}}}},
                "selector": {"type": "object",
                             "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                             "oneOf": [{"required": ["a"]}, {"required": ["b"]}]},
                "either": {"type": "object",
                           "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                           "anyOf": [{"required": ["a"]}, {"required": ["b"]}],
                           "not": {"required": ["a", "b"]}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
    },
}


def obj(**spec) -> dict:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"},
            "spec": {"id": 1, **spec}}


def errors_of(instance: dict, **kwargs) -> list[str]:
    return [str(e) for e in object_errors(SCHEMA, instance, **kwargs)]


def test_a_valid_object_has_no_errors():
    assert validation_errors(SCHEMA, obj(ratio=1.5, step=8, name="abc", lacp="off", note=None,
                                         port="http", labels={"a": "b"}, tags=["x", "y"],
                                         ports=[{"name": "a"}, {"name": "b"}],
                                         selector={"a": "x"}, either={"b": "y"},
                                         free={"anything": [1]})) == []


CASES = [
    # pruning.PruneWithOptions + strict decoding
    ("unknown field", obj(colour="red"), 'spec.colour: unknown field "spec.colour"'),
    ("unknown field in a list item", obj(ports=[{"name": "a", "prot": 1}]),
     'spec.ports[0].prot: unknown field "spec.ports[0].prot"'),
    ("unknown field in metadata", {**obj(), "metadata": {"name": "w1", "label": {}}},
     'metadata.label: unknown field "metadata.label"'),
    ("object where a list belongs", obj(tags={"x": "y"}), 'spec.tags.x: unknown field "spec.tags.x"'),
    # typeValidator
    ("string for an integer", obj(id="7"),
     'spec.id: Invalid value: "string": spec.id in body must be of type integer: "string"'),
    ("fraction for an integer", obj(id=7.5),
     'spec.id: Invalid value: "number": spec.id in body must be of type integer: "number"'),
    ("boolean for an integer", obj(id=True),
     'spec.id: Invalid value: "boolean": spec.id in body must be of type integer: "boolean"'),
    ("null for a non-nullable string", obj(name=None),
     'spec.name: Invalid value: "null": spec.name in body must be of type string: "null"'),
    ("boolean for int-or-string", obj(port=False),
     'spec.port: Invalid value: "boolean": spec.port in body must be of type integer,string: '
     '"boolean"'),
    # int-or-string with a number and a string validation
    ("int-or-string: minimum applies to a number", obj(limit=0),
     "spec.limit: Invalid value: 0: spec.limit in body should be greater than or equal to 1"),
    ("int-or-string: pattern applies to a string", obj(limit="0"),
     "spec.limit: Invalid value: \"0\": spec.limit in body should match '^[0-9]+%$'"),
    ("int-or-string: a fraction is neither", obj(limit=1.5),
     'spec.limit: Invalid value: "number": spec.limit in body must be of type integer,string: '
     '"number"'),
    # numberValidator
    ("above maximum", obj(id=4095),
     "spec.id: Invalid value: 4095: spec.id in body should be less than or equal to 4094"),
    ("below minimum", obj(id=0),
     "spec.id: Invalid value: 0: spec.id in body should be greater than or equal to 1"),
    ("at an exclusive minimum", obj(ratio=0.0),
     "spec.ratio: Invalid value: 0: spec.ratio in body should be greater than 0"),
    ("not a multiple (float)", obj(ratio=1.2),
     "spec.ratio: Invalid value: 1.2: spec.ratio in body should be a multiple of 0.5"),
    ("not a multiple (integer)", obj(step=6),
     "spec.step: Invalid value: 6: spec.step in body should be a multiple of 4"),
    # stringValidator (the first failing check only)
    ("too long", obj(name="abcdefghijklmnop"),
     "spec.name: Too long: may not be more than 15 bytes"),
    ("too short", obj(name="a"),
     'spec.name: Invalid value: "a": spec.name in body should be at least 2 chars long'),
    ("pattern", obj(name="a/b"),
     "spec.name: Invalid value: \"a/b\": spec.name in body should match '^[a-z]+$'"),
    ("pattern: $ is the end of text (RE2)", obj(name="abc\n"),
     "spec.name: Invalid value: \"abc\\n\": spec.name in body should match '^[a-z]+$'"),
    # basicCommonValidator (enum) -> field.NotSupported
    ("not in the enum", obj(lacp="fast"),
     'spec.lacp: Unsupported value: "fast": supported values: "active", "passive", "off"'),
    ("YAML 1.1 bare off", obj(lacp=False),
     'spec.lacp: Unsupported value: false: supported values: "active", "passive", "off"'),
    # schemaSliceValidator -> field.TooMany
    ("too many items", obj(tags=["a", "b", "c", "d", "e"]),
     "spec.tags: Too many: 5: must have at most 4 items"),
    ("too few items", obj(tags=[]),
     "spec.tags: Invalid value: 0: spec.tags in body should have at least 1 items"),
    # objectValidator
    ("missing required field", {**obj(), "spec": {}}, "spec.id: Required value"),
    ("too many properties", obj(labels={"a": "1", "b": "2", "c": "3"}),
     "spec.labels: Too many: 3: must have at most 2 items"),
    ("map value of the wrong type", obj(labels={"a": 1}),
     'spec.labels.a: Invalid value: "integer": spec.labels.a in body must be of type string: '
     '"integer"'),
    # schemaPropsValidator: composite errors have no field (<nil>)
    ("oneOf: none valid", obj(selector={}),
     '<nil>: Invalid value: "": "spec.selector" must validate one and only one schema (oneOf). '
     'Found none valid'),
    ("oneOf: the best failing branch is reported too", obj(selector={}),
     "spec.selector.a: Required value"),
    ("oneOf: two valid", obj(selector={"a": "x", "b": "y"}),
     '<nil>: Invalid value: "": "spec.selector" must validate one and only one schema (oneOf). '
     'Found 2 valid alternatives'),
    ("anyOf: none valid", obj(either={}),
     '<nil>: Invalid value: "": "spec.either" must validate at least one schema (anyOf)'),
    ("not: valid", obj(either={"a": "x", "b": "y"}),
     '<nil>: Invalid value: "": "spec.either" must not validate the schema (not)'),
    # listtype.ValidateListSetsAndMaps
    ("list-map key twice", obj(ports=[{"name": "a"}, {"name": "a", "port": 2}]),
     'spec.ports[1]: Duplicate value: map[string]interface {}{"name":"a"}'),
    ("list-map compound key twice", obj(routes=[{"dst": "x", "table": 1},
                                               {"dst": "x", "table": 1}]),
     'spec.routes[1]: Duplicate value: map[string]interface {}{"dst":"x", "table":1}'),
    ("set member twice", obj(tags=["a", "b", "a"]), 'spec.tags[2]: Duplicate value: "a"'),
    ("list-map item not an object", obj(ports=["a"]),
     'spec.ports[0]: Invalid value: "a": must be an object for an array of list-type map'),
    # ValidateObjectMetaAccessor (NameIsDNSSubdomain)
    ("name not a subdomain", {**obj(), "metadata": {"name": "Node_1"}},
     'metadata.name: Invalid value: "Node_1": a lowercase RFC 1123 subdomain must consist of '
     "lower case alphanumeric characters, '-' or '.', and must start and end with an "
     "alphanumeric character (e.g. 'example.com', regex used for validation is "
     "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
    ("name missing", {**obj(), "metadata": {}},
     "metadata.name: Required value: name or generateName is required"),
]


@pytest.mark.parametrize("instance, expected", [pytest.param(c[1], c[2], id=c[0]) for c in CASES])
def test_object_rule(instance, expected):
    errors = errors_of(instance)
    assert expected in errors, errors


def test_int_or_string_validations_skip_the_other_kind():
    """kube-openapi's numberValidator.Applies / stringValidator.Applies look at the value's kind:
    a pattern never refuses a number, a minimum never refuses a string."""
    assert validation_errors(SCHEMA, obj(limit=7)) == []
    assert validation_errors(SCHEMA, obj(limit="0%")) == []


def test_integral_float_is_an_integer():
    """typeValidator's isFloatInt: 5.0 passes `type: integer` (stored as 5)."""
    assert validation_errors(SCHEMA, obj(id=5.0)) == []


def test_strict_decoding_stops_before_validation():
    """An unknown field fails the request alone; with Warn/Ignore it is pruned and the pruned
    object validated."""
    bad = obj(colour="red", id=0)
    assert errors_of(bad) == ['spec.colour: unknown field "spec.colour"']
    assert errors_of(bad, field_validation="Warn") == [
        "spec.id: Invalid value: 0: spec.id in body should be greater than or equal to 1"]


def test_preserved_fields_are_not_pruned():
    assert validation_errors(SCHEMA, obj(free={"x": {"y": 1}})) == []


def test_nullable_accepts_null():
    assert validation_errors(SCHEMA, obj(note=None)) == []


def test_one_of_valid_once_passes():
    assert validation_errors(SCHEMA, obj(selector={"b": "y"})) == []


def test_error_values_render_like_go():
    """field.Error's value formatting: %q strings, %v numbers, %#v maps."""
    assert go_quote('a"b\\c\n\x00é') == '"a\\"b\\\\c\\n\\x00é"'
    assert [go_value(v) for v in (None, True, 7, 1e6, 2.5, "x")] == [
        "null", "true", "7", "1e+06", "2.5", '"x"']
    assert go_value({"b": [1, "x"], "a": None}) == \
        'map[string]interface {}{"a":interface {}(nil), "b":[]interface {}{1, "x"}}'
