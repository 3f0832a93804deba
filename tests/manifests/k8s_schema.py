"""What a Kubernetes API server does with our CRDs and with custom objects, close enough to test
the manifests without a cluster. Every rule names the upstream Go function it ports, and errors
are rendered the way the API server renders them (`<path>: <type>: <detail>`, as
k8s.io/apimachinery/pkg/util/validation/field.Error does).

CRD documents (`crd_problems`, `structural_problems`), ported from apiextensions-apiserver:
- strict decoding of the CRD body (kubectl's default fieldValidation=Strict): unknown fields;
- pkg/apis/apiextensions/validation/validation.go: ValidateCustomResourceDefinition (metadata.name
  = plural.group), validateCustomResourceDefinitionSpec (group, scope, versions, storage, names),
  ValidateCustomResourceDefinitionNames, validateCustomResourceDefinitionVersion
  (deprecationWarning), ValidateCustomResourceColumnDefinition + validateSimpleJSONPath,
  ValidateCustomResourceDefinitionSubresources, validateCustomResourceDefinitionValidation (root
  fields with a status subresource, nullable root), ValidateCustomResourceDefinitionOpenAPISchema
  with specStandardValidatorV3.validate and validateMapListKeysMapSet;
- pkg/apiserver/schema/validation.go and complete.go: ValidateStructural
  (validateStructuralInvariants, validateStructuralMetadataInvariants, validateExtensions,
  validateValueValidation, validateNestedValueValidation, validateStructuralCompleteness).
The internal API the validation runs on hoists a schema, subresources and printer columns that
are identical in every version to spec.validation / spec.subresources /
spec.additionalPrinterColumns (v1 conversion), so a one-version CRD's errors name those paths
(`spec.validation.openAPIV3Schema.properties[metadata]: Forbidden: ...`).

Custom objects (`validation_errors`), ported from:
- strict decoding with structural pruning (pkg/apiserver/schema/pruning): an unknown field is
  `unknown field "spec.foo"` with Strict, silently dropped with Warn/Ignore;
- ObjectMeta (ValidateObjectMetaAccessor with NameIsDNSSubdomain, cluster scope);
- kube-openapi pkg/validation/validate (type, schema props oneOf/anyOf/allOf/not, string,
  format, number, slice, enum, object validators; errors/schema.go messages) converted to field
  errors by kubeOpenAPIResultToFieldErrors (pkg/apiserver/validation/validation.go);
- pkg/apiserver/schema/listtype ValidateListSetsAndMaps (Duplicate value for list-type map/set).

Left out, with why:
- CEL: rules are evaluated by cel-python (`celpy`) with `self` bound to the value
  (cel.Validator.Validate, pkg/apiserver/schema/cel/validation.go): a false rule is
  field.Invalid(path, <schema type>, ruleMessageOrDefault(rule)), and no rule is evaluated when
  the schema checks found a blocking error (strategy.go hasBlockingErr). A rule that does not
  parse is refused. Left out: cel-go's type checking against the schema (celpy checks syntax
  only), cost estimation and budgets, oldSelf (transition rules), messageExpression, fieldPath
  and reason on evaluation (a rule using one is refused as not modelled). The non-CEL checks of
  a rule (empty rule/message, reason) are ported.
- structuraldefaulting.ValidateDefaults (defaults must validate and be pruned-clean): our CRDs
  use none; rather than guess, any `default` (outside top-level metadata, where it is an upstream
  Forbidden) is refused with a message saying the rule is not modelled, so adding one forces
  porting the rule first.
- `format` (see "Formats" below): a CRD never fails for a format; one the server does not
  recognise for the field's type is dropped before custom objects are validated, with only a
  warning on create (`crd_warnings`). Of the recognised formats, date-time, date and password
  (strfmt) and int32/int64/float/double (seen by the type validator only) are ported; any other
  recognised one (uri, email, hostname, ipv4, cidr, uuid, byte, duration, quantity, ...) is
  refused as not modelled, so adding one forces porting its strfmt validator first.
- Value types of CRD fields (`maxItems: "3"` is a decoding error upstream), ObjectMeta labels
  and annotations syntax, conversion webhooks, selectableFields, storedVersions, API approval of
  *.k8s.io groups and update-only rules (immutability, ratcheting): not reachable from the
  documents we write, or not about a create.
- tableconvertor.New parsing each column's JSONPath with client-go's full parser: printer
  columns here are checked with validateSimpleJSONPath as upstream validates them, and
  tests/fakeapi/printing.py evaluates the simple paths columns use.
- kube-openapi's oneOf/anyOf "best failure" choice uses its internal MatchCount; here the failing
  branch with the fewest errors (first on ties) stands in for it.
- `Too long` uses the Kubernetes >= 1.30 wording ("may not be more than N bytes"); older servers
  say "may not be longer than N".

The JSON-Schema translation (`to_jsonschema`, `K8sValidator`) stays for property tests that only
need accept/refuse of single values (Go RE2 `$` semantics included).
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field as dc_field
from typing import Any, Iterator, Optional

import celpy
import jsonschema
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError

from tests.fakeapi.printing import go_float

# Where a one-version CRD's schema is validated (hoisted by the v1 -> internal conversion).
HOISTED_SCHEMA_PATH = "spec.validation.openAPIV3Schema"
NIL_PATH = "<nil>"  # field.Path(nil).String(): errors kube-openapi reports without a field

# ----------------------------------------------------------------------------------------------
# field.Error rendering (k8s.io/apimachinery/pkg/util/validation/field/errors.go)


def go_quote(text: str) -> str:
    """strconv.Quote / %q."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                        "\t": "\\t", "\v": "\\v"}[ch])
        elif code < 0x20 or code == 0x7f:
            out.append(f"\\x{code:02x}")
        elif not ch.isprintable():
            out.append(f"\\u{code:04x}" if code <= 0xffff else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_sharp_v(value: Any) -> str:
    """%#v of an unstructured JSON value (map[string]interface {}, []interface {}, ...)."""
    if isinstance(value, dict):
        inner = ", ".join(f"{go_quote(k)}:{go_sharp_v(value[k])}" for k in sorted(value))
        return f"map[string]interface {{}}{{{inner}}}"
    if isinstance(value, list):
        return f"[]interface {{}}{{{', '.join(go_sharp_v(v) for v in value)}}}"
    if value is None:
        return "interface {}(nil)"
    return go_value(value)


def go_value(value: Any) -> str:
    """How field.Error.ErrorBody prints a bad value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, str):
        return go_quote(value)
    return go_sharp_v(value)


@dataclass(frozen=True)
class FieldError:
    """One field.Error: `path` and the body after "<path>: "."""

    path: str
    body: str

    def __str__(self) -> str:
        return f"{self.path}: {self.body}"


def _with_detail(head: str, detail: str) -> str:
    return f"{head}: {detail}" if detail else head


def required(path: str, detail: str = "") -> FieldError:
    return FieldError(path, _with_detail("Required value", detail))


def forbidden(path: str, detail: str) -> FieldError:
    return FieldError(path, _with_detail("Forbidden", detail))


def invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError(path, _with_detail(f"Invalid value: {go_value(value)}", detail))


def invalid_raw(path: str, rendered_value: str, detail: str) -> FieldError:
    """field.Invalid whose value is a Go struct we do not reproduce (rendered by the caller)."""
    return FieldError(path, _with_detail(f"Invalid value: {rendered_value}", detail))


def not_supported(path: str, value: Any, valid: list[str]) -> FieldError:
    detail = "supported values: " + ", ".join(go_quote(v) for v in valid) if valid else ""
    return FieldError(path, _with_detail(f"Unsupported value: {go_value(value)}", detail))


def duplicate(path: str, value: Any) -> FieldError:
    return FieldError(path, f"Duplicate value: {go_value(value)}")


def too_many(path: str, actual: int, maximum: int) -> FieldError:
    noun = "item" if maximum == 1 else "items"
    return FieldError(path, f"Too many: {actual}: must have at most {maximum} {noun}")


def too_long(path: str, maximum: int) -> FieldError:
    noun = "byte" if maximum == 1 else "bytes"
    return FieldError(path, f"Too long: may not be more than {maximum} {noun}")


def unknown_field(path: str) -> FieldError:
    """Strict decoding (fieldValidation=Strict, kubectl's default)."""
    return FieldError(path, f"unknown field {go_quote(path)}")


def not_modelled(path: str, what: str) -> FieldError:
    return FieldError(path, f"not modelled by tests/manifests/k8s_schema.py: {what}; port the "
                            f"upstream rule before using it")


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _key(path: str, key: str) -> str:
    return f"{path}[{key}]"


# ----------------------------------------------------------------------------------------------
# k8s.io/apimachinery/pkg/util/validation: names

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?\Z")
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")


def is_dns1123_subdomain(value: str) -> list[str]:
    """IsDNS1123Subdomain."""
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.match(value):
        errs.append(_DNS1123_SUBDOMAIN_MSG)
    return errs


def is_dns1035_label(value: str) -> list[str]:
    """IsDNS1035Label."""
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1035_LABEL.match(value):
        errs.append(_DNS1035_MSG)
    return errs


def _object_meta_errors(meta: Any, *, name_fn, namespaced: bool) -> list[FieldError]:
    """genericvalidation.ValidateObjectMeta (the parts a create of our documents reaches)."""
    meta = meta if isinstance(meta, dict) else {}
    errs: list[FieldError] = []
    name, generate = meta.get("name") or "", meta.get("generateName") or ""
    if generate:
        errs += [invalid("metadata.generateName", generate, m) for m in name_fn(generate, True)]
    if name:
        errs += [invalid("metadata.name", name, m) for m in name_fn(name, False)]
    elif not generate:
        errs.append(required("metadata.name", "name or generateName is required"))
    # A cluster-scoped create clears metadata.namespace before validation
    # (rest.BeforeCreate -> EnsureObjectNamespaceMatchesRequestNamespace).
    if namespaced and not meta.get("namespace"):
        errs.append(required("metadata.namespace"))
    return errs


# ObjectMeta's JSON fields: anything else in metadata is an unknown field.
OBJECT_META_FIELDS = {
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
    "annotations", "ownerReferences", "finalizers", "managedFields",
}

# ----------------------------------------------------------------------------------------------
# The CRD document

# v1 JSON field names (anything else is `unknown field` under strict decoding).
_CRD_TOP = {"apiVersion", "kind", "metadata", "spec", "status"}
_CRD_SPEC = {"group", "names", "scope", "versions", "conversion", "preserveUnknownFields"}
_CRD_NAMES = {"plural", "singular", "shortNames", "kind", "listKind", "categories"}
_CRD_VERSION = {"name", "served", "storage", "deprecated", "deprecationWarning", "schema",
                "subresources", "additionalPrinterColumns", "selectableFields"}
_CRD_COLUMN = {"name", "type", "format", "description", "priority", "jsonPath"}
_CRD_SUBRESOURCES = {"status", "scale"}
_CRD_SCALE = {"specReplicasPath", "statusReplicasPath", "labelSelectorPath"}
SCHEMA_KEYS = {
    "id", "$schema", "$ref", "description", "type", "format", "title", "default", "maximum",
    "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern",
    "maxItems", "minItems", "uniqueItems", "multipleOf", "enum", "maxProperties",
    "minProperties", "required", "items", "allOf", "oneOf", "anyOf", "not", "properties",
    "additionalProperties", "patternProperties", "dependencies", "additionalItems",
    "definitions", "externalDocs", "example", "nullable", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string",
    "x-kubernetes-list-map-keys", "x-kubernetes-list-type", "x-kubernetes-map-type",
    "x-kubernetes-validations",
}
_RULE_KEYS = {"rule", "message", "messageExpression", "reason", "fieldPath", "optionalOldSelf"}

_PRINTER_COLUMN_TYPES = sorted({"integer", "number", "string", "boolean", "date"})
_PRINTER_COLUMN_FORMATS = sorted({"int32", "int64", "float", "double", "byte", "date",
                                  "date-time", "password"})
_OPENAPI_V3_TYPES = sorted({"string", "number", "integer", "boolean", "array", "object"})
# allowedFieldsAtRootSchema, as v1 JSON names.
_ALLOWED_AT_ROOT_WITH_STATUS = {
    "description", "type", "format", "title", "maximum", "exclusiveMaximum", "minimum",
    "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems",
    "uniqueItems", "multipleOf", "required", "items", "properties", "externalDocs", "example",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-validations",
}
_ALLOWED_AT_ROOT_GO = ("[Description Type Format Title Maximum ExclusiveMaximum Minimum "
                       "ExclusiveMinimum MaxLength MinLength Pattern MaxItems MinItems "
                       "UniqueItems MultipleOf Required Items Properties ExternalDocs Example "
                       "XPreserveUnknownFields XValidations]")
_SUPPORTED_RULE_REASONS = ["FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid",
                           "FieldValueRequired"]
# Go struct values we do not reproduce inside "Invalid value: ..." (field.Invalid with a struct).
GO_VERSIONS_VALUE = "[]apiextensions.CustomResourceDefinitionVersion{...}"
GO_SCHEMA_VALUE = "apiextensions.JSONSchemaProps{...}"


def _unknown_fields(obj: Any, allowed: set, path: str) -> list[FieldError]:
    if not isinstance(obj, dict):
        return []
    return [unknown_field(_child(path, k)) for k in obj if k not in allowed]


def _schema_unknown_fields(node: Any, path: str) -> list[FieldError]:
    """Strict decoding of JSONSchemaProps (map keys as `.key`, as the decoder names them)."""
    if not isinstance(node, dict):
        return []
    errs = _unknown_fields(node, SCHEMA_KEYS, path)
    for key in ("properties", "patternProperties", "definitions", "dependencies"):
        for name, sub in (node.get(key) or {}).items() if isinstance(node.get(key), dict) else ():
            errs += _schema_unknown_fields(sub, f"{path}.{key}.{name}")
    for key in ("items", "additionalProperties", "additionalItems", "not"):
        if isinstance(node.get(key), dict):
            errs += _schema_unknown_fields(node[key], f"{path}.{key}")
        elif key == "items" and isinstance(node.get(key), list):
            for i, sub in enumerate(node[key]):
                errs += _schema_unknown_fields(sub, f"{path}.{key}[{i}]")
    for key in ("allOf", "oneOf", "anyOf"):
        for i, sub in enumerate(node.get(key) or []):
            errs += _schema_unknown_fields(sub, f"{path}.{key}[{i}]")
    for i, rule in enumerate(node.get("x-kubernetes-validations") or []):
        errs += _unknown_fields(rule, _RULE_KEYS, f"{path}.x-kubernetes-validations[{i}]")
    return errs


def _decode_errors(crd: dict) -> list[FieldError]:
    errs = _unknown_fields(crd, _CRD_TOP, "")
    meta = crd.get("metadata")
    errs += _unknown_fields(meta, OBJECT_META_FIELDS, "metadata")
    spec = crd.get("spec") if isinstance(crd.get("spec"), dict) else {}
    errs += _unknown_fields(spec, _CRD_SPEC, "spec")
    errs += _unknown_fields(spec.get("names"), _CRD_NAMES, "spec.names")
    for i, version in enumerate(spec.get("versions") or []):
        vpath = f"spec.versions[{i}]"
        errs += _unknown_fields(version, _CRD_VERSION, vpath)
        if not isinstance(version, dict):
            continue
        for j, column in enumerate(version.get("additionalPrinterColumns") or []):
            errs += _unknown_fields(column, _CRD_COLUMN, f"{vpath}.additionalPrinterColumns[{j}]")
        sub = version.get("subresources")
        errs += _unknown_fields(sub, _CRD_SUBRESOURCES, f"{vpath}.subresources")
        if isinstance(sub, dict):
            errs += _unknown_fields(sub.get("scale"), _CRD_SCALE, f"{vpath}.subresources.scale")
            errs += _unknown_fields(sub.get("status"), set(), f"{vpath}.subresources.status")
        schema = version.get("schema")
        errs += _unknown_fields(schema, {"openAPIV3Schema"}, f"{vpath}.schema")
        if isinstance(schema, dict):
            errs += _schema_unknown_fields(schema.get("openAPIV3Schema"),
                                           f"{vpath}.schema.openAPIV3Schema")
    return errs


def _identical_in_all(versions: list[dict], key: str) -> bool:
    """hasIdenticalPerVersionSchema/Subresources/Columns: set (non-empty) and equal in all."""
    if not versions:
        return False
    first = versions[0].get(key)
    return all(v.get(key) and v.get(key) == first for v in versions)


def crd_problems(crd: dict) -> list[str]:
    """Every reason the API server refuses this CRD document on create, upstream-formatted."""
    return [str(e) for e in crd_errors(crd)]


def crd_errors(crd: dict) -> list[FieldError]:
    if crd.get("apiVersion") != "apiextensions.k8s.io/v1" or \
            crd.get("kind") != "CustomResourceDefinition":
        return [FieldError("apiVersion", "not an apiextensions.k8s.io/v1 CustomResourceDefinition")]
    decode = _decode_errors(crd)
    if decode:  # strict decoding fails the request before validation runs
        return decode
    spec = copy.deepcopy(crd.get("spec") or {})
    names = spec.setdefault("names", {})
    # SetDefaults_CustomResourceDefinitionSpec: singular and listKind from kind.
    if not names.get("singular") and names.get("kind"):
        names["singular"] = names["kind"].lower()
    if not names.get("listKind") and names.get("kind"):
        names["listKind"] = names["kind"] + "List"
    plural, group = names.get("plural") or "", spec.get("group") or ""

    def crd_name_fn(name: str, prefix: bool) -> list[str]:
        """ValidateCustomResourceDefinition's nameValidationFn."""
        msgs = is_dns1123_subdomain(name)
        if name != f"{plural}.{group}":
            msgs.append('must be spec.names.plural+"."+spec.group')
        return msgs

    errs = _object_meta_errors(crd.get("metadata"), name_fn=crd_name_fn, namespaced=False)
    errs += _spec_errors(spec)
    return errs


def _spec_errors(spec: dict) -> list[FieldError]:
    """validateCustomResourceDefinitionSpec for a v1 document (after conversion and defaults)."""
    errs: list[FieldError] = []
    group = spec.get("group") or ""
    if not group:
        errs.append(required("spec.group"))
    elif is_dns1123_subdomain(group):
        errs.append(invalid("spec.group", group, ",".join(is_dns1123_subdomain(group))))
    elif len(group.split(".")) < 2:
        errs.append(invalid("spec.group", group, "should be a domain with at least one dot"))
    # validateEnumStrings
    scope = spec.get("scope") or ""
    if not scope:
        errs.append(required("spec.scope"))
    elif scope not in ("Cluster", "Namespaced"):
        errs.append(not_supported("spec.scope", scope, ["Cluster", "Namespaced"]))

    versions = [v for v in spec.get("versions") or [] if isinstance(v, dict)]
    # v1 -> internal conversion: identical per-version values move to the top level.
    hoist_schema = _identical_in_all(versions, "schema")
    hoist_sub = _identical_in_all(versions, "subresources")
    hoist_columns = _identical_in_all(versions, "additionalPrinterColumns")

    def subresources_of(version: dict) -> Optional[dict]:
        return versions[0].get("subresources") if hoist_sub else version.get("subresources")

    any_status = any("status" in (subresources_of(v) or {}) for v in versions)
    if not hoist_schema:  # requireOpenAPISchema
        for i, v in enumerate(versions):
            if not (v.get("schema") or {}).get("openAPIV3Schema"):
                errs.append(required(f"spec.versions[{i}].schema.openAPIV3Schema",
                                     "schemas are required"))
    storage_count, seen, unique = 0, set(), True
    for i, version in enumerate(versions):
        vpath = f"spec.versions[{i}]"
        storage_count += version.get("storage") is True
        name = version.get("name") or ""
        unique = unique and name not in seen
        seen.add(name)
        if is_dns1035_label(name):
            errs.append(invalid(f"{vpath}.name", name, ",".join(is_dns1035_label(name))))
        errs += _version_errors(version, vpath, status_enabled="status" in (
            subresources_of(version) or {}), hoisted=(hoist_schema, hoist_sub, hoist_columns))
    if not unique:
        errs.append(invalid_raw("spec.versions", GO_VERSIONS_VALUE,
                                "must contain unique version names"))
    if storage_count != 1:
        errs.append(invalid_raw("spec.versions", GO_VERSIONS_VALUE,
                                "must have exactly one version marked as storage version"))
    for key in ("plural", "singular", "kind", "listKind"):
        if not (spec.get("names") or {}).get(key):
            errs.append(required(f"spec.names.{key}"))
    errs += names_errors(spec.get("names") or {}, "spec.names")
    if hoist_schema:
        errs += validation_errors_for_schema(
            versions[0]["schema"].get("openAPIV3Schema"), path=HOISTED_SCHEMA_PATH,
            status_enabled=any_status)
    if hoist_sub:
        errs += subresources_errors(versions[0]["subresources"], "spec.subresources")
    if hoist_columns:
        for i, column in enumerate(versions[0]["additionalPrinterColumns"]):
            errs += column_errors(column, f"spec.additionalPrinterColumns[{i}]")
    if spec.get("preserveUnknownFields") is True:  # validatePreserveUnknownFields
        errs.append(invalid("spec.preserveUnknownFields", True,
                            "cannot set to true, set x-kubernetes-preserve-unknown-fields to true "
                            "in spec.versions[*].schema instead"))
    if spec.get("conversion") not in (None, {"strategy": "None"}):
        errs.append(not_modelled("spec.conversion", "conversion other than strategy None"))
    return errs


def _version_errors(version: dict, vpath: str, *, status_enabled: bool,
                    hoisted: tuple) -> list[FieldError]:
    """validateCustomResourceDefinitionVersion (per-version values that were not hoisted)."""
    hoist_schema, hoist_sub, hoist_columns = hoisted
    errs: list[FieldError] = []
    deprecated, warning = version.get("deprecated") is True, version.get("deprecationWarning")
    if warning is not None:  # validateDeprecationWarning
        if not deprecated:
            errs.append(invalid(f"{vpath}.deprecationWarning", warning,
                                "can only be set for deprecated versions"))
        elif len(warning.encode()) > 256:
            errs.append(invalid(f"{vpath}.deprecationWarning", warning,
                                "must be <= 256 characters long"))
        elif not warning:
            errs.append(invalid(f"{vpath}.deprecationWarning", warning,
                                "must not be an empty string"))
    if not hoist_schema and (version.get("schema") or {}).get("openAPIV3Schema"):
        errs += validation_errors_for_schema(version["schema"]["openAPIV3Schema"],
                                             path=f"{vpath}.schema.openAPIV3Schema",
                                             status_enabled=status_enabled)
    if not hoist_sub and version.get("subresources"):
        errs += subresources_errors(version["subresources"], f"{vpath}.subresources")
    if not hoist_columns:
        for i, column in enumerate(version.get("additionalPrinterColumns") or []):
            errs += column_errors(column, f"{vpath}.additionalPrinterColumns[{i}]")
    if version.get("selectableFields"):
        errs.append(not_modelled(f"{vpath}.selectableFields", "selectableFields"))
    return errs


def names_errors(names: dict, path: str) -> list[FieldError]:
    """ValidateCustomResourceDefinitionNames."""
    errs: list[FieldError] = []
    for key in ("plural", "singular"):
        value = names.get(key) or ""
        if value and is_dns1035_label(value):
            errs.append(invalid(f"{path}.{key}", value, ",".join(is_dns1035_label(value))))
    for key in ("kind", "listKind"):
        value = names.get(key) or ""
        if value and is_dns1035_label(value.lower()):
            errs.append(invalid(f"{path}.{key}", value,
                                "may have mixed case, but should otherwise match: "
                                + ",".join(is_dns1035_label(value.lower()))))
    for i, short in enumerate(names.get("shortNames") or []):
        if is_dns1035_label(short):
            errs.append(invalid(f"{path}.shortNames[{i}]", short, ",".join(is_dns1035_label(short))))
    if names.get("kind") and names.get("kind") == names.get("listKind"):
        errs.append(invalid(f"{path}.listKind", names["listKind"],
                            "kind and listKind may not be the same"))
    for i, category in enumerate(names.get("categories") or []):
        if is_dns1035_label(category):
            errs.append(invalid(f"{path}.categories[{i}]", category,
                                ",".join(is_dns1035_label(category))))
    return errs


def simple_json_path_errors(value: str, path: str) -> list[FieldError]:
    """validateSimpleJSONPath."""
    if not value:
        return [invalid(path, value, "must not be empty")]
    if value[0] != ".":
        return [invalid(path, value, "must be a simple json path starting with .")]
    return []


def column_errors(column: dict, path: str) -> list[FieldError]:
    """ValidateCustomResourceColumnDefinition (the internal field is `JSONPath`)."""
    errs: list[FieldError] = []
    if not column.get("name"):
        errs.append(required(f"{path}.name"))
    kinds = ",".join(_PRINTER_COLUMN_TYPES)
    if not column.get("type"):
        errs.append(required(f"{path}.type", f"must be one of {kinds}"))
    elif column["type"] not in _PRINTER_COLUMN_TYPES:
        errs.append(invalid(f"{path}.type", column["type"], f"must be one of {kinds}"))
    if column.get("format") and column["format"] not in _PRINTER_COLUMN_FORMATS:
        errs.append(invalid(f"{path}.format", column["format"],
                            f"must be one of {','.join(_PRINTER_COLUMN_FORMATS)}"))
    if not column.get("jsonPath"):
        errs.append(required(f"{path}.JSONPath"))
    else:
        errs += simple_json_path_errors(column["jsonPath"], f"{path}.JSONPath")
    return errs


def subresources_errors(sub: dict, path: str) -> list[FieldError]:
    """ValidateCustomResourceDefinitionSubresources (scale paths)."""
    scale = sub.get("scale")
    if scale is None:
        return []
    errs: list[FieldError] = []
    for key, prefixes, where in (("specReplicasPath", (".spec.",), ".spec"),
                                 ("statusReplicasPath", (".status.",), ".status")):
        value, kpath = scale.get(key) or "", f"{path}.scale.{key}"
        if not value:
            errs.append(required(kpath))
        elif simple_json_path_errors(value, kpath):
            errs += simple_json_path_errors(value, kpath)
        elif not value.startswith(prefixes):
            errs.append(invalid(kpath, value, f"should be a json path under {where}"))
    selector = scale.get("labelSelectorPath")
    if selector:
        kpath = f"{path}.scale.labelSelectorPath"
        if simple_json_path_errors(selector, kpath):
            errs += simple_json_path_errors(selector, kpath)
        elif not selector.startswith((".spec.", ".status.")):
            errs.append(invalid(kpath, selector, "should be a json path under either .spec or .status"))
    return errs


def validation_errors_for_schema(schema: Any, *, path: str,
                                 status_enabled: bool) -> list[FieldError]:
    """validateCustomResourceDefinitionValidation for one openAPIV3Schema."""
    if not isinstance(schema, dict):
        return [required(path, "schemas are required")]
    errs: list[FieldError] = []
    if status_enabled:
        for key in schema:
            if key == "type":
                if schema["type"] != "object":
                    errs.append(invalid(f"{path}.type", schema["type"],
                                        'only "object" is allowed as the type at the root of the '
                                        'schema if the status subresource is enabled'))
                    break
                continue
            if _is_zero(schema[key]):
                continue
            if key not in _ALLOWED_AT_ROOT_WITH_STATUS:
                errs.append(invalid_raw(path, GO_SCHEMA_VALUE,
                                        f"only {_ALLOWED_AT_ROOT_GO} fields are allowed at the root "
                                        f"of the schema if the status subresource is enabled"))
                break
    if schema.get("nullable") is True:
        errs.append(forbidden(f"{path}.nullable", "nullable cannot be true at the root"))
    structural = structural_errors(schema, path)
    errs += structural
    errs += openapi_schema_errors(schema, path, is_root=True)
    return errs


def _is_zero(value: Any) -> bool:
    return value in (None, False, 0, "", [], {})


def structural_problems(schema: dict, path: str = HOISTED_SCHEMA_PATH) -> list[str]:
    """Why the API server refuses this openAPIV3Schema (structural + OpenAPI rules), as it says
    it for a one-version CRD; `[]` when accepted. Whole-document rules: `crd_problems`."""
    errs = _schema_unknown_fields(schema, path)
    if errs:
        return [str(e) for e in errs]
    errs = structural_errors(schema, path) + openapi_schema_errors(schema, path, is_root=True)
    return [str(e) for e in errs]


# ----------------------------------------------------------------------------------------------
# pkg/apiserver/schema: ValidateStructural

_ROOT, _ITEM, _FIELD = "root", "item", "field"
_INT_OR_STRING_ANYOF = [{"type": "integer"}, {"type": "string"}]


def structural_errors(schema: dict, path: str) -> list[FieldError]:
    """ValidateStructural: invariants + completeness, sorted by message as upstream does."""
    errs = _structural_invariants(schema, _ROOT, path)
    errs += _completeness(schema, path)
    return sorted(errs, key=str)


def _structural_invariants(s: Any, lvl: str, path: str) -> list[FieldError]:
    """validateStructuralInvariants."""
    if not isinstance(s, dict):
        return []
    errs: list[FieldError] = []
    typ = s.get("type") or ""
    if typ == "array" and s.get("items") is None:
        errs.append(required(f"{path}.items", "must be specified"))
    if isinstance(s.get("items"), dict):
        errs += _structural_invariants(s["items"], _ITEM, f"{path}.items")
    for name, sub in (s.get("properties") or {}).items():
        errs += _structural_invariants(sub, _FIELD, _key(f"{path}.properties", name))
    if "additionalProperties" in s:
        if lvl == _ROOT:
            errs.append(forbidden(f"{path}.additionalProperties", "must not be used at the root"))
        if isinstance(s["additionalProperties"], dict):
            errs += _structural_invariants(s["additionalProperties"], _FIELD,
                                           f"{path}.additionalProperties")
    int_or_string = s.get("x-kubernetes-int-or-string") is True
    preserve = s.get("x-kubernetes-preserve-unknown-fields") is True
    embedded = s.get("x-kubernetes-embedded-resource") is True
    # validateExtensions
    if int_or_string and preserve:
        errs.append(invalid(f"{path}.x-kubernetes-preserve-unknown-fields", True,
                            "must be false if x-kubernetes-int-or-string is true"))
    if int_or_string and embedded:
        errs.append(invalid(f"{path}.x-kubernetes-embedded-resource", True,
                            "must be false if x-kubernetes-int-or-string is true"))
    skip_any_of = s.get("anyOf") == _INT_OR_STRING_ANYOF
    skip_first_all_of_any_of = bool(s.get("allOf")) and isinstance(s["allOf"][0], dict) and \
        s["allOf"][0].get("anyOf") == _INT_OR_STRING_ANYOF
    errs += _value_validation(s, skip_any_of, skip_first_all_of_any_of, path)
    check_metadata = lvl == _ROOT or embedded
    if embedded and typ != "object":
        if not typ:
            errs.append(required(f"{path}.type",
                                 "must be object if x-kubernetes-embedded-resource is true"))
        else:
            errs.append(invalid(f"{path}.type", typ,
                                "must be object if x-kubernetes-embedded-resource is true"))
    elif not typ and not int_or_string and not preserve:
        detail = {_ROOT: "must not be empty at the root",
                  _ITEM: "must not be empty for specified array items",
                  _FIELD: "must not be empty for specified object fields"}[lvl]
        errs.append(required(f"{path}.type", detail))
    if embedded and "additionalProperties" in s:
        errs.append(forbidden(f"{path}.additionalProperties",
                              "must not be used if x-kubernetes-embedded-resource is set"))
    if lvl == _ROOT and typ and typ != "object":
        errs.append(invalid(f"{path}.type", typ, "must be object at the root"))
    props = s.get("properties") or {}
    for meta_field in ("kind", "apiVersion"):
        if meta_field in props and check_metadata and \
                (props[meta_field] or {}).get("type", "") != "string":
            errs.append(invalid(f"{_key(f'{path}.properties', meta_field)}.type",
                                (props[meta_field] or {}).get("type", ""), "must be string"))
    if "metadata" in props:
        errs += _metadata_invariants(props["metadata"], check_metadata, lvl,
                                     _key(f"{path}.properties", "metadata"))
    if embedded and not preserve and not props:
        errs.append(required(f"{path}.properties",
                             "must not be empty if x-kubernetes-embedded-resource is true without "
                             "x-kubernetes-preserve-unknown-fields"))
    return errs


def _metadata_invariants(s: Any, check_metadata: bool, lvl: str, path: str) -> list[FieldError]:
    """validateStructuralMetadataInvariants: at the root, metadata may say `type: object` and
    restrict name/generateName, nothing else (no description either)."""
    s = s if isinstance(s, dict) else {}
    errs: list[FieldError] = []
    if check_metadata and s.get("type", "") != "object":
        errs.append(invalid(f"{path}.type", s.get("type", ""), "must be object"))
    if lvl == _ROOT:
        props = set(s.get("properties") or {})
        props_ok = props in (set(), {"name"}, {"generateName"}, {"name", "generateName"})
        # type and default are cleared before the comparison; anything else is "specified".
        rest = {k for k, v in s.items() if k not in ("type", "default", "properties")
                and not _is_zero(v)}
        if rest or not props_ok:
            errs.append(forbidden(path, "must not specify anything other than name and "
                                        "generateName, but metadata is implicitly specified"))
    return errs


def _value_validation(v: dict, skip_any_of: bool, skip_first_all_of_any_of: bool,
                      path: str) -> list[FieldError]:
    """validateValueValidation."""
    errs: list[FieldError] = []
    if not skip_any_of:
        for i, branch in enumerate(v.get("anyOf") or []):
            errs += _nested_value_validation(branch, False, f"{path}.anyOf[{i}]")
    for i, branch in enumerate(v.get("allOf") or []):
        errs += _nested_value_validation(branch, skip_first_all_of_any_of and i == 0,
                                         f"{path}.allOf[{i}]")
    for i, branch in enumerate(v.get("oneOf") or []):
        errs += _nested_value_validation(branch, False, f"{path}.oneOf[{i}]")
    if isinstance(v.get("not"), dict):
        errs += _nested_value_validation(v["not"], False, f"{path}.not")
    if v.get("pattern"):
        problem = go_regexp_error(v["pattern"])
        if problem:
            errs.append(invalid(f"{path}.pattern", v["pattern"],
                                f"must be a valid regular expression, but isn't: {problem}"))
    return errs


# (generic field, how NestedValueValidation forbids it)
_FORBIDDEN_IN_NESTED = [
    ("type", "must be empty to be structural"),
    ("additionalProperties", "must be undefined to be structural"),
    ("default", "must be undefined to be structural"),
    ("title", "must be empty to be structural"),
    ("description", "must be empty to be structural"),
    ("nullable", "must be false to be structural"),
    ("externalDocs", "must be undefined to be structural"),
    ("x-kubernetes-preserve-unknown-fields", "must be false to be structural"),
    ("x-kubernetes-embedded-resource", "must be false to be structural"),
    ("x-kubernetes-int-or-string", "must be false to be structural"),
    ("x-kubernetes-list-map-keys", "must be empty to be structural"),
    ("x-kubernetes-list-type", "must be undefined to be structural"),
    ("x-kubernetes-map-type", "must be undefined to be structural"),
    ("x-kubernetes-validations", "must be empty to be structural"),
]


def _nested_value_validation(v: Any, skip_any_of: bool, path: str) -> list[FieldError]:
    """validateNestedValueValidation: a junctor branch holds value validations only."""
    if not isinstance(v, dict):
        return []
    errs = _value_validation(v, skip_any_of, False, path)
    if isinstance(v.get("items"), dict):
        errs += _nested_value_validation(v["items"], False, f"{path}.items")
    for name, sub in (v.get("properties") or {}).items():
        errs += _nested_value_validation(sub, False, _key(f"{path}.properties", name))
    for key, detail in _FORBIDDEN_IN_NESTED:
        value = v.get(key)
        if key in ("nullable", "x-kubernetes-preserve-unknown-fields",
                   "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string"):
            present = value is True
        elif key in ("type", "title", "description", "x-kubernetes-list-map-keys",
                     "x-kubernetes-validations"):
            present = bool(value)
        else:
            present = key in v
        if present:
            errs.append(forbidden(f"{path}.{key}", detail))
    if "metadata" in (v.get("properties") or {}):
        errs.append(forbidden(_key(f"{path}.properties", "metadata"),
                              "must not be specified in a nested context"))
    return errs


def _completeness(s: dict, path: str) -> list[FieldError]:
    """validateStructuralCompleteness: the root's junctors may only name fields and items that
    are specified outside them (upstream checks the root's value validation only)."""
    errs: list[FieldError] = []
    if isinstance(s.get("not"), dict):
        errs += _nested_completeness(s["not"], s, path, f"{path}.not")
    for key in ("allOf", "anyOf", "oneOf"):
        for i, branch in enumerate(s.get(key) or []):
            if isinstance(branch, dict):
                errs += _nested_completeness(branch, s, path, f"{path}.{key}[{i}]")
    return errs


def _nested_completeness(v: dict, s: Optional[dict], s_path: str, v_path: str) -> list[FieldError]:
    """validateNestedValueValidationCompleteness."""
    if s is None:
        return [required(s_path, f"because it is defined in {v_path}")]
    errs: list[FieldError] = []
    for key in ("allOf", "anyOf", "oneOf"):
        for i, branch in enumerate(v.get(key) or []):
            if isinstance(branch, dict):
                errs += _nested_completeness(branch, s, s_path, f"{v_path}.{key}[{i}]")
    if isinstance(v.get("not"), dict):
        errs += _nested_completeness(v["not"], s, s_path, f"{v_path}.not")
    if isinstance(v.get("items"), dict):
        items = s.get("items") if isinstance(s.get("items"), dict) else None
        errs += _nested_completeness(v["items"], items, f"{s_path}.items", f"{v_path}.items")
    for name, sub in (v.get("properties") or {}).items():
        if not isinstance(sub, dict):
            continue
        s_props = s.get("properties") or {}
        if name not in s_props:
            errs.append(required(_key(f"{s_path}.properties", name), "because it is defined in "
                                 + _key(f"{v_path}.properties", name)))
        else:
            errs += _nested_completeness(sub, s_props[name], _key(f"{s_path}.properties", name),
                                         _key(f"{v_path}.properties", name))
    return errs


# Go's regexp (RE2) refuses what Python's re accepts in these forms; messages as Go prints them.
_GO_PERL_GROUP = re.compile(r"\(\?(<[=!]|[=!])")
_GO_BACKREF = re.compile(r"\\[1-9]")


def go_regexp_error(pattern: str) -> Optional[str]:
    """regexp.Compile's error for the non-RE2 constructs we can recognise, else None."""
    match = _GO_PERL_GROUP.search(pattern)
    if match:
        return f"error parsing regexp: invalid or unsupported Perl syntax: `{match.group(0)}`"
    match = _GO_BACKREF.search(pattern)
    if match:
        return f"error parsing regexp: invalid escape sequence: `{match.group(0)}`"
    try:
        re.compile(pattern)
    except re.error as exc:  # the Go wording differs; the refusal does not
        return f"error parsing regexp: {exc}"
    return None


# ----------------------------------------------------------------------------------------------
# ValidateCustomResourceDefinitionOpenAPISchema + specStandardValidatorV3


_META_FIELDS = {"metadata", "kind", "apiVersion"}


def openapi_schema_errors(schema: Any, path: str, *, is_root: bool = False,
                          inside_meta: bool = False,
                          defaults_forbidden: str = "") -> list[FieldError]:
    """ValidateCustomResourceDefinitionOpenAPISchema (CEL compilation left out)."""
    if not isinstance(schema, dict):
        return []
    errs = _standard_v3_errors(schema, path, inside_meta=inside_meta,
                               defaults_forbidden=defaults_forbidden)
    if schema.get("uniqueItems") is True:
        errs.append(forbidden(f"{path}.uniqueItems", "uniqueItems cannot be set to true since the "
                                                     "runtime complexity becomes quadratic"))
    if "additionalProperties" in schema:
        ap = schema["additionalProperties"]
        if schema.get("properties") and (ap is False or isinstance(ap, dict)):
            errs.append(forbidden(f"{path}.additionalProperties",
                                  "additionalProperties and properties are mutual exclusive"))
        sub_reason = "inside additionalProperties applying to object metadata" if inside_meta \
            else defaults_forbidden
        errs += openapi_schema_errors(ap, f"{path}.additionalProperties", inside_meta=inside_meta,
                                      defaults_forbidden=sub_reason)
    for name, sub in (schema.get("properties") or {}).items():
        sub_meta, sub_reason = inside_meta, defaults_forbidden
        if (is_root or schema.get("x-kubernetes-embedded-resource") is True) and \
                name in _META_FIELDS:
            sub_meta = True
            if is_root:
                sub_reason = f"in top-level {name}"
        errs += openapi_schema_errors(sub, _key(f"{path}.properties", name), inside_meta=sub_meta,
                                      defaults_forbidden=sub_reason)
    if isinstance(schema.get("not"), dict):
        errs += openapi_schema_errors(schema["not"], f"{path}.not", inside_meta=inside_meta,
                                      defaults_forbidden=defaults_forbidden)
    for key in ("allOf", "oneOf", "anyOf"):
        for i, branch in enumerate(schema.get(key) or []):
            errs += openapi_schema_errors(branch, f"{path}.{key}[{i}]", inside_meta=inside_meta,
                                          defaults_forbidden=defaults_forbidden)
    for name, sub in (schema.get("definitions") or {}).items():
        errs += openapi_schema_errors(sub, _key(f"{path}.definitions", name))
    if isinstance(schema.get("items"), dict):
        errs += openapi_schema_errors(schema["items"], f"{path}.items", inside_meta=inside_meta,
                                      defaults_forbidden=defaults_forbidden)
    elif isinstance(schema.get("items"), list):
        for i, sub in enumerate(schema["items"]):
            errs += openapi_schema_errors(sub, f"{path}.items[{i}]")
    if schema.get("x-kubernetes-preserve-unknown-fields") is False:
        errs.append(invalid(f"{path}.x-kubernetes-preserve-unknown-fields", False,
                            "must be true or undefined"))
    typ = schema.get("type") or ""
    map_type = schema.get("x-kubernetes-map-type")
    if map_type is not None and typ != "object":
        if not typ:
            errs.append(required(f"{path}.type", "must be object if x-kubernetes-map-type is specified"))
        else:
            errs.append(invalid(f"{path}.type", typ,
                                "must be object if x-kubernetes-map-type is specified"))
    if map_type is not None and map_type not in ("atomic", "granular"):
        errs.append(not_supported(f"{path}.x-kubernetes-map-type", map_type, ["atomic", "granular"]))
    list_type = schema.get("x-kubernetes-list-type")
    items = schema.get("items") if isinstance(schema.get("items"), dict) else None
    if list_type is not None and typ != "array":
        if not typ:
            errs.append(required(f"{path}.type", "must be array if x-kubernetes-list-type is specified"))
        else:
            errs.append(invalid(f"{path}.type", typ,
                                "must be array if x-kubernetes-list-type is specified"))
    elif list_type == "set" and items is not None:  # requireAtomicSetType
        if items.get("type") == "array" and items.get("x-kubernetes-list-type") not in (None, "atomic"):
            errs.append(invalid(f"{path}.items.x-kubernetes-list-type", items["x-kubernetes-list-type"],
                                "must be atomic as item of a list with x-kubernetes-list-type=set"))
        if items.get("type") == "object" and items.get("x-kubernetes-map-type") != "atomic":
            errs.append(invalid(f"{path}.items.x-kubernetes-map-type", items.get("x-kubernetes-list-type"),
                                "must be atomic as item of a list with x-kubernetes-list-type=set"))
    if list_type is not None and list_type not in ("atomic", "set", "map"):
        errs.append(not_supported(f"{path}.x-kubernetes-list-type", list_type,
                                  ["atomic", "set", "map"]))
    keys = schema.get("x-kubernetes-list-map-keys") or []
    if keys:
        if list_type is None:
            errs.append(required(f"{path}.x-kubernetes-list-type",
                                 "must be map if x-kubernetes-list-map-keys is non-empty"))
        elif list_type != "map":
            errs.append(invalid(f"{path}.x-kubernetes-list-type", list_type,
                                "must be map if x-kubernetes-list-map-keys is non-empty"))
    if list_type == "map":
        errs += _list_map_errors(schema, items, keys, path)
    errs += _map_list_keys_map_set(schema, items, path)
    errs += _x_validations_errors(schema, path)
    return errs


def _list_map_errors(schema: dict, items: Optional[dict], keys: list, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    if not keys:
        errs.append(required(f"{path}.x-kubernetes-list-map-keys",
                             "must not be empty if x-kubernetes-list-type is map"))
    if schema.get("items") is None:
        errs.append(required(f"{path}.items", "must have a schema if x-kubernetes-list-type is map"))
    if isinstance(schema.get("items"), list):
        errs.append(invalid_raw(f"{path}.items", "&apiextensions.JSONSchemaPropsOrArray{...}",
                                "must only have a single schema if x-kubernetes-list-type is map"))
    if items is not None and items.get("type", "") != "object":
        errs.append(invalid(f"{path}.items.type", items.get("type", ""),
                            "must be object if parent array's x-kubernetes-list-type is map"))
    if items is not None and items.get("type") == "object":
        seen: set = set()
        for key in keys:
            prop = (items.get("properties") or {}).get(key)
            if prop is not None:
                if prop.get("type") in ("array", "object"):
                    errs.append(invalid(f"{_key(f'{path}.items.properties', key)}.type",
                                        items.get("type"),
                                        "must be a scalar type if parent array's "
                                        "x-kubernetes-list-type is map"))
            else:
                errs.append(FieldError(f"{path}.x-kubernetes-list-map-keys",
                                       f"Invalid value: {go_string_slice(keys)}: entries must all "
                                       f"be names of item properties"))
            if key in seen:
                errs.append(FieldError(f"{path}.x-kubernetes-list-map-keys",
                                       f"Invalid value: {go_string_slice(keys)}: must not contain "
                                       f"duplicate entries"))
            seen.add(key)
    return errs


def go_string_slice(values: list) -> str:
    """%#v of a []string."""
    return "[]string{" + ", ".join(go_quote(str(v)) for v in values) + "}"


def _map_list_keys_map_set(schema: dict, items: Optional[dict], path: str) -> list[FieldError]:
    """validateMapListKeysMapSet (requireMapListKeysMapSetValidation)."""
    list_type = schema.get("x-kubernetes-list-type")
    if items is None or list_type not in ("set", "map"):
        return []
    errs: list[FieldError] = []
    if items.get("nullable") is True:
        errs.append(forbidden(f"{path}.items.nullable",
                              f"cannot be nullable when x-kubernetes-list-type is {list_type}"))
    if list_type == "map":
        required_keys = set(items.get("required") or [])
        for key in schema.get("x-kubernetes-list-map-keys") or []:
            prop = (items.get("properties") or {}).get(key)
            if prop is None:
                continue
            kpath = _key(f"{path}.items.properties", key)
            if key not in required_keys and "default" not in prop:
                errs.append(required(f"{kpath}.default", "this property is in "
                                     "x-kubernetes-list-map-keys, so it must have a default or be "
                                     "a required property"))
            if prop.get("nullable") is True:
                errs.append(forbidden(f"{kpath}.nullable", "this property is in "
                                      "x-kubernetes-list-map-keys, so it cannot be nullable"))
    return errs


def _x_validations_errors(schema: dict, path: str) -> list[FieldError]:
    """The non-CEL checks of x-kubernetes-validations (compiling the rule is not modelled)."""
    errs: list[FieldError] = []
    for i, rule in enumerate(schema.get("x-kubernetes-validations") or []):
        rpath = f"{path}.x-kubernetes-validations[{i}]"
        text, msg = (rule.get("rule") or "").strip(), rule.get("message") or ""
        if not text:
            errs.append(required(f"{rpath}.rule", "rule is not specified"))
        elif msg and not msg.strip():
            errs.append(invalid(f"{rpath}.message", msg, "message must be non-empty if specified"))
        elif re.search(r"[\n\r]", msg.strip()):
            errs.append(invalid(f"{rpath}.message", msg, "message must not contain line breaks"))
        elif re.search(r"[\n\r]", text) and not msg.strip():
            errs.append(required(f"{rpath}.message",
                                 "message must be specified if rule contains line breaks"))
        if rule.get("reason") is not None and rule["reason"] not in _SUPPORTED_RULE_REASONS:
            errs.append(not_supported(f"{rpath}.reason", rule["reason"], _SUPPORTED_RULE_REASONS))
        for key in ("messageExpression", "fieldPath", "optionalOldSelf"):
            if key in rule:
                errs.append(not_modelled(f"{rpath}.{key}", f"x-kubernetes-validations {key}"))
        if text and "oldSelf" in text:
            errs.append(not_modelled(f"{rpath}.rule", "transition rules (oldSelf)"))
        elif text:
            try:
                _cel_program(text)
            except Exception as exc:  # noqa: BLE001 - celpy's CELParseError
                errs.append(invalid(f"{rpath}.rule", text, f"compilation failed: {exc}"))
    return errs


_CEL_ENV = celpy.Environment()


def _cel_program(rule: str):
    return _CEL_ENV.program(_CEL_ENV.compile(rule))


def _rule_message_or_default(rule: dict) -> str:
    """validation.go ruleMessageOrDefault."""
    message = (rule.get("message") or "").strip()
    return message or f"failed rule: {rule['rule'].strip()}"


# strategy.go hasBlockingErr: NotSupported, Required, TooLong, TooMany and TypeInvalid errors
# mean the object lacks the shape the rules were written for, so none is evaluated.
_BLOCKING_PREFIXES = ("Unsupported value", "Required value", "Too long", "Too many")
NOT_CHECKED = ("some validation rules were not checked because the object was invalid; "
               "correct the existing errors to complete validation")


def _blocking(errs: list[FieldError]) -> bool:
    return any(e.body.startswith(_BLOCKING_PREFIXES) or "must be of type" in e.body
               for e in errs)


def _cel_errors(schema: dict, data: Any, path: str) -> list[FieldError]:
    """cel.Validator.Validate: every rule of every node that has a value, `self` bound to it,
    children after their parent (properties, items, additionalProperties)."""
    errs: list[FieldError] = []
    if data is None or not isinstance(schema, dict):
        return errs
    for rule in schema.get("x-kubernetes-validations") or []:
        try:
            result = _cel_program(rule["rule"]).evaluate({"self": celpy.json_to_cel(data)})
        except Exception as exc:  # noqa: BLE001 - celpy raises CELEvalError
            errs.append(invalid(path or NIL_PATH, schema.get("type", ""),
                                f"{_rule_message_or_default(rule)}, evaluation error: {exc}"))
            continue
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and result):
            errs.append(invalid(path or NIL_PATH, schema.get("type", ""),
                                _rule_message_or_default(rule)))
    if isinstance(data, dict):
        props = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, value in data.items():
            if key in props:
                errs += _cel_errors(props[key], value, _child(path, key))
            elif isinstance(additional, dict):
                errs += _cel_errors(additional, value, _key(path, key) if path else key)
    elif isinstance(data, list) and isinstance(schema.get("items"), dict):
        for i, value in enumerate(data):
            errs += _cel_errors(schema["items"], value, f"{path}[{i}]")
    return errs


def _standard_v3_errors(schema: dict, path: str, *, inside_meta: bool,
                        defaults_forbidden: str) -> list[FieldError]:
    """specStandardValidatorV3.validate."""
    errs: list[FieldError] = []
    typ = schema.get("type") or ""
    if typ and typ not in _OPENAPI_V3_TYPES:
        errs.append(not_supported(f"{path}.type", typ, _OPENAPI_V3_TYPES))
    if "default" in schema:
        if defaults_forbidden:
            errs.append(forbidden(f"{path}.default", f"must not be set {defaults_forbidden}"))
        else:
            errs.append(not_modelled(f"{path}.default",
                                     "structuraldefaulting.ValidateDefaults"))
    # specStandardValidatorV3.validate has no format rule; format_errors says why we refuse some.
    errs += format_errors(schema, path)
    for key, detail in (("id", "id is not supported"),
                        ("additionalItems", "additionalItems is not supported"),
                        ("patternProperties", "patternProperties is not supported"),
                        ("definitions", "definitions is not supported"),
                        ("dependencies", "dependencies is not supported"),
                        ("$ref", "$ref is not supported")):
        if schema.get(key) not in (None, "", {}):
            errs.append(forbidden(f"{path}.{key}", detail))
    if typ == "null":
        errs.append(forbidden(f"{path}.type",
                              "type cannot be set to null, use nullable as an alternative"))
    if isinstance(schema.get("items"), list) and schema["items"]:
        errs.append(forbidden(f"{path}.items", "items must be a schema object and not an array"))
    if inside_meta and schema.get("x-kubernetes-embedded-resource") is True:
        errs.append(forbidden(f"{path}.x-kubernetes-embedded-resource",
                              "must not be used inside of resource meta"))
    return errs


# ----------------------------------------------------------------------------------------------
# Helpers other tests use


def _children(node: dict, path: str) -> Iterator[tuple[dict, str]]:
    """Sub-schemas that describe fields or items (not junctor branches)."""
    for name, sub in (node.get("properties") or {}).items():
        yield sub, f"{path}.{name}"
    if isinstance(node.get("additionalProperties"), dict):
        yield node["additionalProperties"], f"{path}.*"
    if isinstance(node.get("items"), dict):
        yield node["items"], f"{path}[]"


def missing_descriptions(schema: dict) -> list[str]:
    """Fields, map values and list items without a description (kubectl explain shows them).
    Root `metadata` is exempt: the API server forbids anything there but `type: object`."""
    missing: list[str] = []

    def walk(node: dict, path: str) -> None:
        if not node.get("description") and path != "openAPIV3Schema.metadata":
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


def go_pattern(pattern: str) -> str:
    """A Go RE2 pattern for Python's re: `$` is end of text (Python's also matches before a
    final newline)."""
    return re.sub(r"(?<!\\)\$", r"\\Z", pattern)


# ----------------------------------------------------------------------------------------------
# JSON Schema translation, for accept/refuse property tests of single values


def _go_pattern_keyword(validator, pattern, instance, schema):
    if isinstance(instance, str) and not re.search(go_pattern(pattern), instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _go_format_keyword(validator, fmt, instance, schema):
    """formatValidator on a string (Draft 4 alone would ignore `format`)."""
    if isinstance(instance, str) and _format_value_errors(schema, instance, "value"):
        yield ValidationError(f"{instance!r} is not of format {fmt!r}")


K8sValidator = jsonschema.validators.extend(
    Draft4Validator, {"pattern": _go_pattern_keyword, "format": _go_format_keyword})


def to_jsonschema(node: Any) -> Any:
    """Translate an OpenAPI v3 CRD schema into the JSON Schema K8sValidator understands (types,
    bounds, patterns, enums, junctors; integral floats count as integers as in kube-openapi)."""
    if not isinstance(node, dict):
        return node
    out: dict = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = to_jsonschema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_jsonschema(sub) for sub in value]
        elif key.startswith("x-kubernetes-") or key in ("nullable", "example", "externalDocs",
                                                         "description"):
            continue
        else:
            out[key] = copy.deepcopy(value)
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        out["type"] = (out["type"] if isinstance(out["type"], list) else [out["type"]]) + ["null"]
    return out


# ----------------------------------------------------------------------------------------------
# Formats: which a CRD may use (apiextensions-apiserver pkg/apiserver/validation/formats.go), the
# create warning (pkg/registry/customresourcedefinition/strategy.go) and the string validators
# (kube-openapi pkg/validation/strfmt, registered in strfmt.Default under dash-less names).

# supportedVersionedFormats, normalized as go-openapi does (dashes removed): the string formats
# the server keeps; "datetime" is date-time. k8s-short-name and k8s-long-name came in 1.34.
SUPPORTED_STRING_FORMATS = frozenset({
    "bsonobjectid", "uri", "email", "hostname", "ipv4", "ipv6", "cidr", "mac", "uuid", "uuid3",
    "uuid4", "uuid5", "isbn", "isbn10", "isbn13", "creditcard", "ssn", "hexcolor", "rgbcolor",
    "byte", "password", "date", "duration", "datetime", "quantity", "k8sshortname", "k8slongname",
})
_INTEGER_FORMATS = ("int32", "int64")
_NUMBER_FORMATS = ("float", "double")


def kept_format(schema: dict) -> str:
    """StripUnsupportedFormatsPostProcessorForVersion: the `format` left on a schema node once
    the server has dropped the ones it does not support for the node's type ("" if dropped).
    GetUnrecognizedFormats reports exactly the dropped ones."""
    fmt = schema.get("format") or ""
    if not isinstance(fmt, str) or not fmt:
        return ""
    typ = schema.get("type") or ""
    if isinstance(typ, list):  # a spec.Schema type list (to_jsonschema): one entry or none
        typ = typ[0] if len(typ) == 1 else ""
    if typ in ("", "string"):
        return fmt if fmt.replace("-", "") in SUPPORTED_STRING_FORMATS else ""
    if typ == "integer":
        return fmt if fmt in _INTEGER_FORMATS else ""
    if typ == "number":
        return fmt if fmt in _NUMBER_FORMATS else ""
    return ""  # "Format not supported on other types"


def format_errors(schema: dict, path: str) -> list[FieldError]:
    """No upstream rule refuses a format on create (an unrecognised one is a warning, see
    crd_warnings); a kept one whose strfmt validator is not ported here is refused as not
    modelled, so using it forces porting the validator first."""
    fmt = kept_format(schema)
    if not fmt or fmt in _INTEGER_FORMATS + _NUMBER_FORMATS or \
            fmt.replace("-", "") in STRING_FORMAT_VALIDATORS:
        return []
    return [not_modelled(f"{path}.format",
                         f"the strfmt validator of format {go_quote(fmt)} (ported: date-time, "
                         f"date, password, int32, int64, float, double)")]


def crd_warnings(crd: dict) -> list[str]:
    """strategy.WarningsOnCreate: `unrecognized format "<format>"` per schema node whose format
    the server drops (getUnrecognizedFormatsInCRD over the internal spec, so a schema hoisted
    from identical versions counts once). Upstream visits properties in Go map order; here they
    come in document order."""
    versions = [v for v in ((crd.get("spec") or {}).get("versions") or [])
                if isinstance(v, dict)]
    schemas = [(v.get("schema") or {}).get("openAPIV3Schema") for v in versions]
    if _identical_in_all(versions, "schema"):
        schemas = schemas[:1]
    warnings: list[str] = []
    for schema in schemas:
        for node in _schema_has_nodes(schema):
            if node.get("format") and not kept_format(node):
                warnings.append(f"unrecognized format {go_quote(str(node['format']))}")
    return warnings


def _schema_has_nodes(s: Any) -> Iterator[dict]:
    """validation.SchemaHas's traversal: the node, items, allOf, anyOf, oneOf, not, properties,
    additionalProperties, patternProperties, additionalItems, definitions, dependencies."""
    if not isinstance(s, dict):
        return
    yield s
    items = s.get("items")
    for sub in items if isinstance(items, list) else [items]:
        yield from _schema_has_nodes(sub)
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in s.get(key) or []:
            yield from _schema_has_nodes(sub)
    yield from _schema_has_nodes(s.get("not"))
    for key in ("properties", "additionalProperties", "patternProperties", "additionalItems",
                "definitions", "dependencies"):
        value = s.get(key)
        if key in ("additionalProperties", "additionalItems"):
            yield from _schema_has_nodes(value)
        elif isinstance(value, dict):
            for sub in value.values():
                yield from _schema_has_nodes(sub)


def _go_lower(text: str) -> str:
    """strings.ToLower: rune by rune (Python's full case mapping turns U+0130 into two)."""
    return "".join(ch.lower()[:1] for ch in text)


_RFC3339_FULL_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
# strfmt.DateTimePattern; Go's `$` is the end of the text.
_DATE_TIME_PATTERN = re.compile(
    r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))\Z")


def is_date(text: str) -> bool:
    """strfmt.IsDate: time.Parse(RFC3339FullDate "2006-01-02", text) succeeds: four-digit year
    (0000 included), two-digit month 01-12 and day valid in that month (leap years as Go)."""
    m = _RFC3339_FULL_DATE.fullmatch(text)
    if not m:
        return False
    year, month, day = (int(g) for g in m.groups())
    if not 1 <= month <= 12:
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
    return 1 <= day <= days


def is_date_time(text: str) -> bool:
    """strfmt.IsDateTime, the "datetime" validator of strfmt.Default (ParseDateTime and its
    layouts only decode; they do not take part in validation). Lower-cased and split at every
    "t": the first part must be a date, the second HH:MM:SS[.frac](z|+hh:mm) with HH <= 23 and
    MM, SS <= 59 (offsets unchecked); anything after a further "t" is ignored."""
    if len(text.encode("utf-8")) < 4:
        return False
    parts = _go_lower(text).split("t")
    if len(parts) < 2 or not is_date(parts[0]):
        return False
    m = _DATE_TIME_PATTERN.match(parts[1])
    if not m:
        return False
    return m.group(1) <= "23" and m.group(2) <= "59" and m.group(3) <= "59"


# Ported strfmt.Default validators, by normalized name (the password validator accepts all).
STRING_FORMAT_VALIDATORS = {
    "datetime": is_date_time,
    "date": is_date,
    "password": lambda _text: True,
}


class FormatNotModelled(NotImplementedError):
    """A custom object met a kept format whose validator is not ported (format_errors refuses
    such a CRD first)."""


# ----------------------------------------------------------------------------------------------
# Custom objects: kube-openapi validate, as the API server converts its results


REQUIRED_CODE, ENUM_CODE, TOO_LONG_CODE, MAX_ITEMS_CODE, TOO_MANY_PROPS_CODE, TYPE_CODE = (
    "required", "enum", "too_long", "max_items", "too_many_props", "type")


@dataclass
class _OpenAPIError:
    """An errors.Validation (code set) or a composite errors.New (code None)."""

    message: str
    code: Optional[str] = None
    name: str = ""
    value: Any = None
    values: list = dc_field(default_factory=list)


def _in_body(name: str, text: str) -> str:
    return f"{name} in body {text}"


def _schema_type_of(data: Any) -> str:
    """typeValidator.schemaInfoForType for unstructured JSON."""
    if isinstance(data, bool):
        return "boolean"
    if isinstance(data, str):
        return "string"
    if isinstance(data, int):
        return "integer"
    if isinstance(data, float):
        return "number"
    if isinstance(data, list):
        return "array"
    return "object"


def _types_of(schema: dict) -> list[str]:
    if schema.get("x-kubernetes-int-or-string"):
        return ["integer", "string"]
    return [schema["type"]] if schema.get("type") else []


def _type_errors(schema: dict, data: Any, path: str) -> list[_OpenAPIError]:
    """typeValidator.Validate (applies when the schema has a type or a kept format). With a
    format, a value that is neither a string nor a list must match the type or have the format's
    Go type ("must be of type date-time: \"int64\""), and a string or a list is not type-checked
    at all unless the type is numeric (upstream's quirk: a list passes a date-time string field).
    isLowerInt/isLowerFloat need int32/float32 values, which decoded JSON never holds."""
    types = _types_of(schema)
    fmt = kept_format(schema)
    if not types and not fmt:
        return []
    if data is None:
        if types and "null" not in types and not schema.get("nullable"):
            return [_OpenAPIError(_in_body(path, f"must be of type {','.join(types)}: \"null\""),
                                  TYPE_CODE, path, "null")]
        return []
    sch_type = _schema_type_of(data)
    go_format = _go_format_of(data)
    is_float_int = sch_type == "number" and float(data).is_integer() and "integer" in types
    is_int_float = sch_type == "integer" and "number" in types
    string_or_list = isinstance(data, (str, list))
    if fmt and not string_or_list and not (sch_type in types or go_format == fmt or
                                           is_float_int or is_int_float):
        return [_OpenAPIError(_in_body(path, f"must be of type {fmt}: {go_quote(go_format)}"),
                              TYPE_CODE, path, go_format)]
    if fmt and string_or_list and "number" not in types and "integer" not in types:
        return []
    if not (sch_type in types or is_float_int or is_int_float):
        return [_OpenAPIError(_in_body(path, f"must be of type {','.join(types)}: "
                                             f"{go_quote(sch_type)}"), TYPE_CODE, path, sch_type)]
    return []


def _go_format_of(data: Any) -> str:
    """The format half of typeValidator.schemaInfoForType for decoded JSON (int64, float64)."""
    if isinstance(data, bool):
        return ""
    if isinstance(data, int):
        return "int64"
    if isinstance(data, float):
        return "float64"
    return ""


def _format_value_errors(schema: dict, data: str, path: str) -> list[_OpenAPIError]:
    """formatValidator.Validate (applies to strings whose kept format strfmt.Default knows):
    FormatOf -> errors.InvalidType(path, "body", format, value), typeFailWithData."""
    fmt = kept_format(schema)
    if not fmt or fmt in _INTEGER_FORMATS + _NUMBER_FORMATS:
        return []
    validator = STRING_FORMAT_VALIDATORS.get(fmt.replace("-", ""))
    if validator is None:
        raise FormatNotModelled(f"{path}: the strfmt validator of format {go_quote(fmt)} is not "
                                f"ported to tests/manifests/k8s_schema.py")
    if validator(data):
        return []
    return [_OpenAPIError(_in_body(path, f"must be of type {fmt}: {go_quote(data)}"), TYPE_CODE,
                          path, data)]


def _go_number(value: Any, *, as_int: bool) -> str:
    return str(int(value)) if as_int else go_float(float(value))


def _number_errors(schema: dict, data: Any, path: str) -> list[_OpenAPIError]:
    """numberValidator.Validate: multipleOf, minimum, maximum (native int64 or float64)."""
    errs: list[_OpenAPIError] = []
    as_int = isinstance(data, int)
    if schema.get("multipleOf") is not None:
        factor = schema["multipleOf"]
        ok = data % int(factor) == 0 if as_int else float(data / factor).is_integer()
        if not ok:
            errs.append(_OpenAPIError(_in_body(path, f"should be a multiple of "
                                                     f"{_go_number(factor, as_int=as_int)}"),
                                      "multiple_of", path, data))
    if schema.get("minimum") is not None:
        low, exclusive = schema["minimum"], schema.get("exclusiveMinimum") is True
        bound = int(low) if as_int else float(low)
        if data < bound or (exclusive and data <= bound):
            word = "greater than" if exclusive else "greater than or equal to"
            errs.append(_OpenAPIError(_in_body(path, f"should be {word} "
                                                     f"{_go_number(low, as_int=as_int)}"),
                                      "min", path, data))
    if schema.get("maximum") is not None:
        high, exclusive = schema["maximum"], schema.get("exclusiveMaximum") is True
        bound = int(high) if as_int else float(high)
        if data > bound or (exclusive and data >= bound):
            word = "less than" if exclusive else "less than or equal to"
            errs.append(_OpenAPIError(_in_body(path, f"should be {word} "
                                                     f"{_go_number(high, as_int=as_int)}"),
                                      "max", path, data))
    return errs


def _string_errors(schema: dict, data: str, path: str) -> list[_OpenAPIError]:
    """stringValidator.Validate: the first of maxLength, minLength, pattern that fails."""
    length = len(data)  # utf8.RuneCount
    if schema.get("maxLength") is not None and length > schema["maxLength"]:
        return [_OpenAPIError(_in_body(path, f"should be at most {schema['maxLength']} chars long"),
                              TOO_LONG_CODE, path, data, [schema["maxLength"]])]
    if schema.get("minLength") is not None and length < schema["minLength"]:
        return [_OpenAPIError(_in_body(path, f"should be at least {schema['minLength']} chars "
                                             f"long"), "too_short", path, data)]
    if schema.get("pattern") and not re.search(go_pattern(schema["pattern"]), data):
        return [_OpenAPIError(_in_body(path, f"should match '{schema['pattern']}'"), "pattern",
                              path, data)]
    return []


def _enum_errors(schema: dict, data: Any, path: str) -> list[_OpenAPIError]:
    """basicCommonValidator.Validate (reflect.DeepEqual after conversion to the enum's type)."""
    enum = schema.get("enum")
    if not enum:
        return []
    for value in enum:
        if type(value) is type(data) and value == data:
            return []
        if isinstance(value, (int, float)) and not isinstance(value, bool) and \
                isinstance(data, (int, float)) and not isinstance(data, bool) and \
                type(value)(data) == value:
            return []
    values = ", ".join(map(_go_sprint, enum))
    return [_OpenAPIError(_in_body(path, f"should be one of [{values}]"), ENUM_CODE, path, data,
                          list(enum))]


def _go_sprint(value: Any) -> str:
    if isinstance(value, str):
        return value
    return go_value(value)


def _slice_errors(schema: dict, data: list, path: str, result: "_Result") -> None:
    """schemaSliceValidator.Validate."""
    if isinstance(schema.get("items"), dict):
        for i, item in enumerate(data):
            result.merge(_validate(schema["items"], item, f"{path}[{i}]"))
    size = len(data)
    if schema.get("minItems") is not None and size < schema["minItems"]:
        result.add(_OpenAPIError(_in_body(path, f"should have at least {schema['minItems']} items"),
                                 "min_items", path, size))
    if schema.get("maxItems") is not None and size > schema["maxItems"]:
        result.add(_OpenAPIError(_in_body(path, f"should have at most {schema['maxItems']} items"),
                                 MAX_ITEMS_CODE, path, size, [schema["maxItems"]]))


def _object_errors(schema: dict, data: dict, path: str, result: "_Result") -> None:
    """objectValidator.Validate (additionalProperties: false cannot occur in a CRD)."""
    count = len(data)
    if schema.get("minProperties") is not None and count < schema["minProperties"]:
        result.add(_OpenAPIError(_in_body(path, f"should have at least {schema['minProperties']} "
                                                f"properties"), "too_few_props", path,
                                 schema["minProperties"]))
        return
    if schema.get("maxProperties") is not None and count > schema["maxProperties"]:
        result.add(_OpenAPIError(_in_body(path, f"should have at most {schema['maxProperties']} "
                                                f"properties"), TOO_MANY_PROPS_CODE, path,
                                 count, [schema["maxProperties"]]))
        return
    props = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        for key, value in data.items():
            if key not in props:
                result.merge(_validate(additional, value, f"{path}.{key}"))
    for name, sub in props.items():
        if name in data:
            result.merge(_validate(sub, data[name], _child(path, name)))
    for name in schema.get("required") or []:
        if name not in data:
            result.add(_OpenAPIError(_in_body(f"{path}.{name}", "is required"), REQUIRED_CODE,
                                     f"{path}.{name}"))


@dataclass
class _Result:
    errors: list = dc_field(default_factory=list)

    def add(self, error: _OpenAPIError) -> None:
        self.errors.append(error)

    def merge(self, other: "_Result") -> None:
        self.errors.extend(other.errors)


def _props_errors(schema: dict, data: Any, path: str, result: _Result) -> None:
    """schemaPropsValidator.Validate: anyOf, oneOf, allOf, not."""
    quoted = go_quote(path)
    if schema.get("anyOf"):
        results = [_validate(branch, data, path) for branch in schema["anyOf"]]
        if not any(not r.errors for r in results):
            result.add(_OpenAPIError(f"{quoted} must validate at least one schema (anyOf)"))
            result.merge(min(results, key=lambda r: len(r.errors)))
    if schema.get("oneOf"):
        results = [_validate(branch, data, path) for branch in schema["oneOf"]]
        valid = sum(1 for r in results if not r.errors)
        if valid != 1:
            more = "Found none valid" if valid == 0 else f"Found {valid} valid alternatives"
            result.add(_OpenAPIError(f"{quoted} must validate one and only one schema (oneOf). "
                                     f"{more}"))
            if valid == 0:
                result.merge(min(results, key=lambda r: len(r.errors)))
    if schema.get("allOf"):
        results = [_validate(branch, data, path) for branch in schema["allOf"]]
        for r in results:
            result.merge(r)
        valid = sum(1 for r in results if not r.errors)
        if valid != len(results):
            more = ". None validated" if valid == 0 else ""
            result.add(_OpenAPIError(f"{quoted} must validate all the schemas (allOf){more}"))
    if isinstance(schema.get("not"), dict) and not _validate(schema["not"], data, path).errors:
        result.add(_OpenAPIError(f"{quoted} must not validate the schema (not)"))


def _validate(schema: dict, data: Any, path: str) -> _Result:
    """SchemaValidator.Validate: the validators in upstream order, each where it applies."""
    result = _Result()
    if data is None:
        result.errors += _type_errors(schema, data, path)
        result.errors += _enum_errors(schema, data, path)
        return result
    result.errors += _type_errors(schema, data, path)
    _props_errors(schema, data, path, result)
    if isinstance(data, str):
        result.errors += _string_errors(schema, data, path)
        result.errors += _format_value_errors(schema, data, path)
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        result.errors += _number_errors(schema, data, path)
    if isinstance(data, list):
        _slice_errors(schema, data, path, result)
    result.errors += _enum_errors(schema, data, path)
    if isinstance(data, dict):
        _object_errors(schema, data, path, result)
    return result


def _to_field_error(error: _OpenAPIError) -> FieldError:
    """kubeOpenAPIResultToFieldErrors (with a nil root path)."""
    if error.code is None:
        return FieldError(NIL_PATH, f'Invalid value: "": {error.message}')
    name = error.name
    path = name[1:] if name.startswith(".") else name
    path = path if path and path != "." else NIL_PATH
    if error.code == REQUIRED_CODE:
        return required(path)
    if error.code == ENUM_CODE:
        values = [v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
                  for v in error.values]
        return not_supported(path, error.value, values)
    if error.code == TOO_LONG_CODE:
        return too_long(path, error.values[0])
    if error.code == MAX_ITEMS_CODE:
        return too_many(path, error.value, error.values[0])
    if error.code == TOO_MANY_PROPS_CODE:
        return too_many(path, error.value, error.values[0])
    value = "" if error.value is None else error.value
    return invalid(path, value, error.message)


# ----------------------------------------------------------------------------------------------
# Pruning, list types, the whole create


def _prune(schema: dict, data: Any, path: str, unknown: list[str], *, root: bool = False) -> Any:
    """pruning.PruneWithOptions with ReturnUnknownFieldPaths: the object without unknown fields
    (apiVersion/kind/metadata are kept at the root; metadata is checked as ObjectMeta)."""
    if isinstance(data, list):
        items = schema.get("items") if isinstance(schema.get("items"), dict) else None
        if items is None:
            return data
        return [_prune(items, v, f"{path}[{i}]", unknown) for i, v in enumerate(data)]
    if not isinstance(data, dict):
        return data
    props = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
    out = {}
    for key, value in data.items():
        child = _child(path, key)
        if root and key in ("apiVersion", "kind"):
            out[key] = value
        elif root and key == "metadata":
            if isinstance(value, dict):
                unknown.extend(_child(child, k) for k in value if k not in OBJECT_META_FIELDS)
                out[key] = {k: v for k, v in value.items() if k in OBJECT_META_FIELDS}
            else:
                out[key] = value
        elif key in props:
            out[key] = _prune(props[key], value, child, unknown)
        elif isinstance(additional, dict):
            out[key] = _prune(additional, value, child, unknown)
        elif preserve or additional is True:
            out[key] = value
        else:
            unknown.append(child)
    return out


def _list_type_errors(schema: dict, data: Any, path: str) -> list[FieldError]:
    """listtype.ValidateListSetsAndMaps."""
    errs: list[FieldError] = []
    if isinstance(data, dict):
        additional = schema.get("additionalProperties")
        for key, value in data.items():
            if isinstance(additional, dict):
                errs += _list_type_errors(additional, value, _key(path, key) if path else key)
            sub = (schema.get("properties") or {}).get(key)
            if sub is not None:
                errs += _list_type_errors(sub, value, _child(path, key))
        return errs
    if not isinstance(data, list):
        return errs
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        errs += [duplicate(f"{path}[{i}]", data[i]) for i in _non_unique(data)]
    elif list_type == "map":
        errs += _list_map_duplicates(schema, data, path)
    if isinstance(schema.get("items"), dict):
        for i, item in enumerate(data):
            errs += _list_type_errors(schema["items"], item, f"{path}[{i}]")
    return errs


_UNSPECIFIED = object()


def _canonical(value: Any) -> Any:
    """A key equal where Go's map key (scalars) or json.Marshal text (compounds) is equal; an
    integral number is int64 after the API server's JSON decoding, whatever its spelling."""
    if isinstance(value, (dict, list)):
        return ("json", json.dumps(value, sort_keys=True, separators=(",", ":")))
    if value is _UNSPECIFIED:
        return ("unspecified",)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return (type(value).__name__, value)
    return ("number", int(value)) if float(value).is_integer() else ("number", value)


def _non_unique(values: list) -> list[int]:
    """validateListSet: the index of each value's second appearance."""
    seen: dict = {}
    out = []
    for i, value in enumerate(values):
        key = _canonical(value)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 2:
            out.append(i)
    return out


def _list_map_duplicates(schema: dict, data: list, path: str) -> list[FieldError]:
    """validateListMap."""
    for i, item in enumerate(data):
        if item is not None and not isinstance(item, dict):
            return [invalid(f"{path}[{i}]", item, "must be an object for an array of list-type map")]
    keys_fields = schema.get("x-kubernetes-list-map-keys") or []
    if len(data) <= 1:
        return []
    if len(keys_fields) == 1:
        name = keys_fields[0]
        keys = [_UNSPECIFIED if item is None or name not in item else item[name] for item in data]
        return [duplicate(f"{path}[{i}]", {} if keys[i] is _UNSPECIFIED else {name: keys[i]})
                for i in _non_unique(keys)]
    keys = [{k: item[k] for k in keys_fields if k in item} if item is not None else {}
            for item in data]
    return [duplicate(f"{path}[{i}]", keys[i]) for i in _non_unique(keys)]


def _dns_subdomain_name(name: str, prefix: bool) -> list[str]:
    """NameIsDNSSubdomain: a generateName prefix is checked with maskTrailingDash applied
    (a trailing '-' and the character before it become 'a', as upstream writes it)."""
    if prefix and len(name) > 1 and name.endswith("-"):
        name = name[:-2] + "a"
    return is_dns1123_subdomain(name)


def object_errors(crd_schema: dict, instance: Any, *, field_validation: str = "Strict",
                  namespaced: bool = False) -> list[FieldError]:
    """Every field error a create of `instance` gets from the API server."""
    unknown: list[str] = []
    pruned = _prune(crd_schema, instance, "", unknown, root=True)
    if unknown and field_validation == "Strict":
        return [unknown_field(p) for p in unknown]
    errs = _object_meta_errors((pruned or {}).get("metadata"), name_fn=_dns_subdomain_name,
                               namespaced=namespaced)
    errs += [_to_field_error(e) for e in _validate(crd_schema, pruned, "").errors]
    errs += _list_type_errors(crd_schema, pruned, "")
    if _blocking(errs):
        return errs + [invalid(NIL_PATH, None, NOT_CHECKED)] if _has_rules(crd_schema) else errs
    return errs + _cel_errors(crd_schema, pruned, "")


def _has_rules(schema: dict) -> bool:
    return any(node.get("x-kubernetes-validations") for node, _ in iter_nodes(schema))


def validation_errors(crd_schema: dict, instance: Any, *,
                      field_validation: str = "Strict") -> list[tuple[str, str]]:
    """(path, message) for every way a create of `instance` is refused, as the API server words
    it: `str(FieldError)` == f"{path}: {message}"."""
    return [(e.path, e.body) for e in object_errors(crd_schema, instance,
                                                    field_validation=field_validation)]
