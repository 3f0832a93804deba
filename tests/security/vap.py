"""A ValidatingAdmissionPolicy evaluator for tests: the project's optional policies
(manifests/admission/) are CEL, and only evaluating them against the requests the agent really
sends shows that they allow the agent its own objects and deny it everyone else's.

The CEL is evaluated by cel-python (`celpy`); everything around it is ported from the API
server (k8s.io/apiserver/pkg/admission/plugin/...), each piece naming the upstream function:
which requests a policy matches, the variables an expression sees, the order of matchConditions,
variables and validations, how a false validation or an error becomes a decision, and the
message the client gets back.

What celpy does not do that the API server does:
- no type-checking: the API server compiles every expression when the policy is created
  (declared variables, the typed `request`, a bool result for validations and a string for
  messageExpression) and checks `object` against the resource's schema (warnings in
  status.typeChecking); here only the syntax is checked when a policy is loaded, and a field
  the request type does not declare (e.g. `request.uid`) is a runtime "no such member" error;
- no cost limits (per-expression estimate at creation, runtime budget per request);
- no Kubernetes CEL libraries (lists, regex extensions, url, quantity, ip/cidr, format, optional
  types `?.`, and the `authorizer` variable, which is left out: no policy here uses it);
- params come from the caller's `ParamSource` (the API server's param informer, up to date:
  its lag behind a write is not modelled; nor is getParamDirectly's fallback);
- error texts after the upstream prefix ("expression '...' resulted in error: ") are celpy's,
  not cel-go's; and celpy's `has()` answers false where cel-go raises (a field of null).
paramKind/paramRef are ported (validating/dispatcher.go Dispatch with generic.CollectParams:
params by name or label selector, parameterNotFoundAction, one evaluation per param).
Not ported because no policy here uses them (a policy that does is refused when loaded, so it
cannot pass by being half-evaluated): namespaceSelector, objectSelector, binding
matchResources, auditAnnotations, matchPolicy Equivalent (other versions of a resource).
"""
from __future__ import annotations

import copy
import dataclasses
import pathlib
from typing import Any, Callable, Iterable, Optional

import celpy
import yaml
from celpy import celtypes

from tests.fakeapi import selectors

# k8s.io/apiserver/pkg/apis/cel: MaxEvaluatedMessageExpressionSizeBytes
MAX_MESSAGE_BYTES = 5 * 1024

ADMIT, DENY = "admit", "deny"
EVAL_ADMIT, EVAL_DENY, EVAL_ERROR = "admit", "deny", "error"

_ENV = celpy.Environment()


class PolicyNotSupported(Exception):
    """The policy uses a feature this evaluator does not port."""


# -- loading --------------------------------------------------------------------------------
def load_documents(paths: Iterable[pathlib.Path]) -> list[dict]:
    docs = []
    for path in paths:
        docs.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return docs


@dataclasses.dataclass(frozen=True)
class Program:
    """One compiled expression, with its source text as upstream's messages quote it
    (ExpressionAccessor.GetExpression: the text as stored, untrimmed)."""

    expression: str
    runner: Any

    @classmethod
    def compile(cls, expression: str) -> "Program":
        # Syntax only (see the module doc): a parse error refuses the policy, as creating it
        # would be refused by the API server.
        return cls(expression, _ENV.program(_ENV.compile(expression)))


class CelError(Exception):
    """An evaluation error: the text is upstream's cel.Error Detail."""


def _cel_message(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    return text.split(" (in activation", 1)[0]  # celpy appends the whole activation


def _run(program: Program, activation: dict) -> Any:
    """activation.Evaluate (k8s.io/apiserver/pkg/admission/plugin/cel/activation.go): the
    value, or the error "expression '<expr>' resulted in error: <cel error>"."""
    try:
        return program.runner.evaluate(activation)
    except Exception as exc:  # noqa: BLE001 - celpy raises CELEvalError, rarely a Python error
        raise CelError(f"expression '{program.expression}' resulted in error: "
                       f"{_cel_message(exc)}") from exc


@dataclasses.dataclass(frozen=True)
class Validation:
    program: Program
    message: str = ""
    message_program: Optional[Program] = None
    reason: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Policy:
    """A ValidatingAdmissionPolicy, compiled (plugin.go compilePolicy)."""

    name: str
    failure_policy: str
    resource_rules: tuple
    exclude_rules: tuple
    match_conditions: tuple  # (name, Program)
    variables: tuple  # (name, Program)
    validations: tuple  # Validation
    param_kind: Optional[dict] = None  # spec.paramKind: {apiVersion, kind}

    @classmethod
    def from_object(cls, obj: dict) -> "Policy":
        spec = obj.get("spec") or {}
        for unsupported in ("auditAnnotations",):
            if spec.get(unsupported):
                raise PolicyNotSupported(f"{obj['metadata']['name']}: spec.{unsupported}")
        match = spec.get("matchConstraints") or {}
        for unsupported in ("namespaceSelector", "objectSelector"):
            if match.get(unsupported):
                raise PolicyNotSupported(f"{obj['metadata']['name']}: {unsupported}")
        if match.get("matchPolicy", "Equivalent") not in ("Equivalent", "Exact"):
            raise PolicyNotSupported(f"matchPolicy {match['matchPolicy']}")
        return cls(
            name=obj["metadata"]["name"],
            # The API server defaults failurePolicy to Fail (validator.go Validate: nil -> Fail).
            failure_policy=spec.get("failurePolicy") or "Fail",
            resource_rules=tuple(match.get("resourceRules") or ()),
            exclude_rules=tuple(match.get("excludeResourceRules") or ()),
            match_conditions=tuple((c["name"], Program.compile(c["expression"]))
                                   for c in spec.get("matchConditions") or ()),
            variables=tuple((v["name"], Program.compile(v["expression"]))
                            for v in spec.get("variables") or ()),
            validations=tuple(Validation(
                program=Program.compile(v["expression"]), message=v.get("message") or "",
                message_program=(Program.compile(v["messageExpression"])
                                 if v.get("messageExpression") else None),
                reason=v.get("reason")) for v in spec.get("validations") or ()),
            param_kind=dict(spec["paramKind"]) if spec.get("paramKind") else None)


@dataclasses.dataclass(frozen=True)
class Binding:
    name: str
    policy_name: str
    validation_actions: tuple
    param_ref: Optional[dict] = None  # spec.paramRef: name|selector, namespace, action

    @classmethod
    def from_object(cls, obj: dict) -> "Binding":
        spec = obj.get("spec") or {}
        if spec.get("matchResources"):
            raise PolicyNotSupported(f"{obj['metadata']['name']}: spec.matchResources")
        return cls(obj["metadata"]["name"], spec["policyName"],
                   tuple(spec.get("validationActions") or ()),
                   dict(spec["paramRef"]) if spec.get("paramRef") else None)


def load(paths: Iterable[pathlib.Path]) -> list[tuple[Policy, list[Binding]]]:
    return load_from(load_documents(paths))


def load_from(docs: Iterable[dict]) -> list[tuple[Policy, list[Binding]]]:
    """Each policy with the bindings that name it (in document order)."""
    docs = list(docs)
    bindings = [Binding.from_object(d) for d in docs
                if d.get("kind") == "ValidatingAdmissionPolicyBinding"]
    return [(policy, [b for b in bindings if b.policy_name == policy.name])
            for policy in (Policy.from_object(d) for d in docs
                           if d.get("kind") == "ValidatingAdmissionPolicy")]


# -- the request ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class UserInfo:
    username: str
    uid: str = ""
    groups: tuple = ()
    extra: dict = dataclasses.field(default_factory=dict)  # str -> list[str]


@dataclasses.dataclass(frozen=True)
class Attributes:
    """admission.Attributes: what the API server knows of one write."""

    operation: str  # CREATE | UPDATE | DELETE | CONNECT
    group: str
    version: str
    resource: str
    kind: str
    name: str
    user: UserInfo
    namespace: str = ""
    subresource: str = ""
    obj: Optional[dict] = None  # null on DELETE
    old_obj: Optional[dict] = None  # null on CREATE
    options: Optional[dict] = None  # CreateOptions / UpdateOptions / DeleteOptions
    dry_run: bool = False


def admission_request(attr: Attributes) -> dict:
    """cel.CreateAdmissionRequest (admission/plugin/cel/condition.go), as the CEL value it
    becomes (common.UnstructuredReflectToVal: JSON field names, `omitempty` fields left out
    when empty, so `has(request.userInfo.extra)` is false for a user without extras). No
    matchPolicy Equivalent here, so kind/resource equal requestKind/requestResource. `uid`,
    `object` and `oldObject` are not part of the declared request type (cel/compile.go
    BuildRequestType)."""
    gvk = {"group": attr.group, "version": attr.version, "kind": attr.kind}
    gvr = {"group": attr.group, "version": attr.version, "resource": attr.resource}
    user: dict = {}
    if attr.user.username:
        user["username"] = attr.user.username
    if attr.user.uid:
        user["uid"] = attr.user.uid
    if attr.user.groups:
        user["groups"] = list(attr.user.groups)
    if attr.user.extra:
        user["extra"] = {k: list(v) for k, v in attr.user.extra.items()}
    request: dict = {"kind": gvk, "resource": gvr, "requestKind": dict(gvk),
                     "requestResource": dict(gvr), "operation": attr.operation,
                     "userInfo": user, "dryRun": attr.dry_run}
    if attr.subresource:
        request["subResource"] = request["requestSubResource"] = attr.subresource
    if attr.name:
        request["name"] = attr.name
    if attr.namespace:
        request["namespace"] = attr.namespace
    if attr.options is not None:
        request["options"] = attr.options
    return request


def namespace_object(name: str, *, labels: Optional[dict] = None) -> dict:
    """cel.CreateNamespaceObject: the fields of the request's Namespace a policy may read
    (null for cluster-scoped resources)."""
    return {"metadata": {"name": name,
                         "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


# -- variables --------------------------------------------------------------------------------
class _LazyVariables(celtypes.MapType):
    """`variables`: composition.go compositionContext.Variables, a lazy.MapValue whose entries
    are evaluated on first use (variableAccessor.Callback) and then kept for the rest of this
    ForInput call. A variable sees only the variables declared before it (CompileAndStoreVariable
    adds each name after compiling it, so a later name would not compile)."""

    _PENDING = object()

    def __init__(self, variables: tuple, activation: dict, cache: dict, visible: int):
        super().__init__()
        self._variables, self._activation, self._cache = variables, activation, cache
        for name, _ in variables[:visible]:
            dict.__setitem__(self, celtypes.StringType(name), self._PENDING)

    def __getitem__(self, key: Any) -> Any:
        value = dict.__getitem__(self, key)  # KeyError: celpy's "no such member"
        if value is not self._PENDING:
            return value
        name = str(key)
        if name not in self._cache:
            index = next(i for i, (n, _) in enumerate(self._variables) if n == name)
            program = self._variables[index][1]
            scope = dict(self._activation)
            scope["variables"] = _LazyVariables(self._variables, self._activation, self._cache,
                                                index)
            try:
                self._cache[name] = program.runner.evaluate(scope)
            except Exception as exc:  # noqa: BLE001 - an error value, as cel-go's types.Err
                self._cache[name] = celpy.CELEvalError(
                    f'composited variable "{name}" fails to evaluate: {_cel_message(exc)}')
        return self._cache[name]

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


def _activation(policy: Policy, attr: Attributes, namespace: Optional[dict],
                param: Optional[dict]) -> dict:
    """activation.go newActivation: object, oldObject, params (null: no paramKind or no
    paramRef), request, namespaceObject, variables. `authorizer` is not bound (not used
    here)."""
    activation = {
        "object": celpy.json_to_cel(copy.deepcopy(attr.obj)) if attr.obj is not None else None,
        "oldObject": (celpy.json_to_cel(copy.deepcopy(attr.old_obj))
                      if attr.old_obj is not None else None),
        "params": celpy.json_to_cel(copy.deepcopy(param)) if param is not None else None,
        "request": celpy.json_to_cel(admission_request(attr)),
        "namespaceObject": celpy.json_to_cel(namespace) if namespace is not None else None,
    }
    activation["variables"] = _LazyVariables(policy.variables, activation, {},
                                             len(policy.variables))
    return activation


@dataclasses.dataclass
class _Result:
    value: Any = None
    error: Optional[str] = None


def _for_input(policy: Policy, programs: Iterable[Program], attr: Attributes,
               namespace: Optional[dict], param: Optional[dict]) -> list[_Result]:
    """condition.go ForInput: one fresh activation (and so fresh lazy variables) per call,
    every expression evaluated, each error kept on its own result."""
    activation = _activation(policy, attr, namespace, param)
    results = []
    for program in programs:
        try:
            results.append(_Result(value=_run(program, activation)))
        except CelError as exc:
            results.append(_Result(error=str(exc)))
    return results


def _is_true(value: Any) -> bool:
    return isinstance(value, celtypes.BoolType) and bool(value)


def _is_false(value: Any) -> bool:
    return isinstance(value, celtypes.BoolType) and not bool(value)


def _aggregate(errors: list[str]) -> str:
    """utilerrors.NewAggregate(...).Error(): one message alone, else "[a, b]" (duplicates
    once)."""
    unique = list(dict.fromkeys(errors))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


# -- one policy ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Decision:
    action: str  # admit | deny
    evaluation: str  # admit | deny | error
    message: str = ""
    reason: str = ""


def _rule_matches(rule: dict, attr: Attributes) -> bool:
    """rules.Matcher.Matches (webhook/predicates/rules/rules.go): scope, operation, group,
    version, resource with subresource ("res/sub", "*", "res/*", "*/sub")."""
    scope = rule.get("scope") or "*"
    if scope == "Namespaced" and not attr.namespace:
        return False
    if scope == "Cluster" and attr.namespace:
        return False

    def exact_or_wildcard(items, requested):
        return any(item in ("*", requested) for item in items or ())

    if not any(op in ("*", attr.operation) for op in rule.get("operations") or ()):
        return False
    if not exact_or_wildcard(rule.get("apiGroups"), attr.group):
        return False
    if not exact_or_wildcard(rule.get("apiVersions"), attr.version):
        return False
    for item in rule.get("resources") or ():
        res, _, sub = item.partition("/")
        if res in ("*", attr.resource) and sub in ("*", attr.subresource):
            return True
    return False


def _matches_resource_rules(rules: tuple, attr: Attributes) -> bool:
    """matching.go matchesResourceRules (exact resource; resourceNames when given)."""
    for rule in rules:
        if _rule_matches(rule, attr):
            names = rule.get("resourceNames") or ()
            if not names or attr.name in names:
                return True
    return False


def definition_matches(policy: Policy, attr: Attributes) -> bool:
    """matching.go Matcher.Matches: excluded rules first, then resourceRules (none: all)."""
    if _matches_resource_rules(policy.exclude_rules, attr):
        return False
    return not policy.resource_rules or _matches_resource_rules(policy.resource_rules, attr)


def _match_conditions(policy: Policy, attr: Attributes, namespace: Optional[dict],
                      param: Optional[dict]) -> tuple[bool, Optional[str]]:
    """matchconditions/matcher.go matcher.Match: any condition false -> not matched (even if
    another errored); otherwise any error -> the failure policy (Fail: an error, Ignore: not
    matched); otherwise matched."""
    results = _for_input(policy, [p for _, p in policy.match_conditions], attr, namespace,
                         param)
    errors = []
    for result in results:
        if result.error is not None:
            errors.append(result.error)
        elif _is_false(result.value):
            return False, None
    if errors:
        if policy.failure_policy == "Fail":
            return False, _aggregate(errors)
        return False, None
    return True, None


def _message(validation: Validation, result: Optional[_Result]) -> str:
    """validator.go Validate, the message of a denial: messageExpression's string (trimmed;
    refused when over MaxEvaluatedMessageExpressionSizeBytes or multi-line, or when it is not a
    string or failed), else `message` trimmed, else "failed expression: <expression trimmed>"."""
    message = ""
    if result is not None and result.error is None and isinstance(result.value, str):
        message = str(result.value).strip()
        if len(message.encode()) > MAX_MESSAGE_BYTES or "\n" in message:
            message = ""
    if not message and validation.message:
        message = validation.message.strip()
    if not message:
        message = f"failed expression: {validation.program.expression.strip()}"
    return message


def validate(policy: Policy, attr: Attributes, namespace: Optional[dict] = None,
             param: Optional[dict] = None) -> list[Decision]:
    """validator.go validator.Validate: matchConditions (error -> one decision by the failure
    policy; not matched -> no decisions), then every validation (true -> admit, an error ->
    the failure policy, anything else -> deny with its message and reason, default Invalid)."""
    on_error = ADMIT if policy.failure_policy == "Ignore" else DENY  # policyDecisionActionForError
    if policy.match_conditions:
        matches, error = _match_conditions(policy, attr, namespace, param)
        if error is not None:
            return [Decision(on_error, EVAL_ERROR, error)]
        if not matches:
            return []
    results = _for_input(policy, [v.program for v in policy.validations], attr, namespace,
                         param)
    # The messageExpressions: their own ForInput (their own activation, as upstream's
    # messageFilter), one result per validation that has one.
    message_programs = [v.message_program for v in policy.validations if v.message_program]
    messages = iter(_for_input(policy, message_programs, attr, namespace, param)
                    if message_programs else ())
    decisions = []
    for validation, result in zip(policy.validations, results):
        message_result = next(messages) if validation.message_program else None
        if result.error is not None:
            decisions.append(Decision(on_error, EVAL_ERROR, result.error))
        elif not _is_true(result.value):
            decisions.append(Decision(DENY, EVAL_DENY, _message(validation, message_result),
                                      validation.reason or "Invalid"))
        else:
            decisions.append(Decision(ADMIT, EVAL_ADMIT))
    return decisions


# -- every policy: the API server's answer ---------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Denial:
    """The StatusError the client gets (code, reason, message)."""

    code: int
    reason: str
    message: str
    policy_message: str  # "ValidatingAdmissionPolicy '...' with binding '...' denied request: ..."
    decision: Decision


# policy_decision.go reasonToCode
_CODES = {"Forbidden": 403, "Unauthorized": 401, "RequestEntityTooLarge": 413, "Invalid": 422}


def _forbidden_message(attr: Attributes, text: str) -> str:
    """admission.NewForbidden + apierrors.NewForbidden: `<resource>.<group> "<name>" is
    forbidden: <text>` (the name from the request, else the object's, else "Unknown")."""
    resource = f"{attr.resource}.{attr.group}" if attr.group else attr.resource
    name = attr.name or ((attr.obj or {}).get("metadata") or {}).get("name") or "Unknown"
    return f'{resource} "{name}" is forbidden: {text}'


# The param informer of a paramKind: (namespaced, every object of the kind), or None when the
# API server does not serve the kind (CollectParams: "paramKind kind `...` not known").
ParamSource = Callable[[dict], Optional[tuple[bool, list[dict]]]]


class ParamError(Exception):
    """A binding whose params cannot be collected: a configuration error (the failure policy
    decides)."""


def selector_matches(selector: dict, labels: dict) -> bool:
    """metav1.LabelSelectorAsSelector(selector).Matches(labels) (tests/fakeapi/selectors.py);
    a selector that cannot be built is a ParamError."""
    try:
        return selectors.selector_matches(selector, labels)
    except selectors.InvalidSelector as exc:
        raise ParamError(str(exc)) from None


def collect_params(policy: Policy, binding: Binding, attr: Attributes,
                   source: Optional[ParamSource]) -> list[Optional[dict]]:
    """generic.CollectParams (admission/plugin/policy/generic/policy_dispatcher.go): [None]
    without paramKind or paramRef; else the param named (in paramRef.namespace, or the
    request's for a namespaced kind) or every param the selector matches; none found with
    parameterNotFoundAction Deny is an error."""
    kind, ref = policy.param_kind, binding.param_ref
    if kind is None or ref is None:
        return [None]
    known = source(kind) if source is not None else None
    if known is None:
        # paramKind.String(): the generated protobuf String of the ParamKind struct
        raise ParamError(f"paramKind kind `&ParamKind{{APIVersion:{kind.get('apiVersion')},"
                         f"Kind:{kind.get('kind')},}}` not known")
    namespaced, objects = known
    if namespaced:
        scope = ref.get("namespace") or attr.namespace
        if not scope:
            raise ParamError("cannot use namespaced paramRef in policy binding that matches "
                             "cluster-scoped resources")
        objects = [o for o in objects if (o.get("metadata") or {}).get("namespace") == scope]
    elif ref.get("namespace"):
        raise ParamError("paramRef.namespace must not be provided for a cluster-scoped "
                         "`paramKind`")
    if ref.get("name"):
        if ref.get("selector") is not None:
            raise ParamError("paramRef.name and paramRef.selector are mutually exclusive")
        params = [o for o in objects if (o.get("metadata") or {}).get("name") == ref["name"]]
    elif ref.get("selector") is not None:
        params = [o for o in objects
                  if selector_matches(ref["selector"], (o.get("metadata") or {}).get("labels") or {})]
    else:
        raise ParamError("one of name or selector must be provided")
    if not params and ref.get("parameterNotFoundAction") == "Deny":
        raise ParamError("no params found for policy binding with `Deny` "
                         "parameterNotFoundAction")
    return params


def dispatch(policies: list[tuple[Policy, list[Binding]]], attr: Attributes,
             namespace: Optional[dict] = None,
             warn: Optional[Callable[[str], None]] = None,
             params: Optional[ParamSource] = None) -> Optional[Denial]:
    """validating/dispatcher.go dispatcher.Dispatch: every matching policy, for each of its
    bindings, its params collected (before any matchCondition: a binding whose params are
    missing with action Deny denies whatever the conditions say), then validated once per
    param; a denying decision counts per validationAction (Deny denies, Warn warns, Audit is an
    audit annotation, not modelled); the first denial is the answer."""
    denied: list[tuple[Policy, Binding, Decision]] = []
    for policy, bindings in policies:
        if not definition_matches(policy, attr):
            continue
        for binding in bindings:
            try:
                found = collect_params(policy, binding, attr, params)
            except ParamError as exc:  # addConfigError: Ignore drops it, Fail denies
                if policy.failure_policy != "Ignore":
                    denied.append((policy, binding, Decision(
                        DENY, EVAL_ERROR, f"failed to configure binding: {exc}")))
                continue
            decisions = [d for param in found for d in validate(policy, attr, namespace, param)]
            for decision in decisions:
                if decision.action != DENY:
                    continue
                for action in binding.validation_actions:
                    if action == "Deny":
                        denied.append((policy, binding, decision))
                    elif action == "Warn" and warn is not None:
                        warn(f"Validation failed for ValidatingAdmissionPolicy '{policy.name}' "
                             f"with binding '{binding.name}': {decision.message}")
    if not denied:
        return None
    policy, binding, decision = denied[0]
    text = (f"ValidatingAdmissionPolicy '{policy.name}' with binding '{binding.name}' "
            f"denied request: {decision.message}")
    reason = decision.reason or "Invalid"
    return Denial(code=_CODES.get(reason, 422), reason=reason,
                  message=_forbidden_message(attr, text), policy_message=text,
                  decision=decision)
