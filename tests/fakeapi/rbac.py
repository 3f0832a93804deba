"""The fake API server's authenticator and RBAC authorizer, behind its TokenReview and
SubjectAccessReview endpoints (README.md beside this file, "Reviews").

Ported, each from the upstream function named (paths in kubernetes/kubernetes):
- service-account users and groups: `staging/src/k8s.io/apiserver/pkg/authentication/
  serviceaccount/util.go` MakeUsername, MakeGroupNames; every authenticated user also gets
  `system:authenticated` (`authentication/group/authenticated_group_adder.go`);
- rule matching: `plugin/pkg/auth/authorizer/rbac/rbac.go` RuleAllows and
  `pkg/apis/rbac/v1/evaluation_helpers.go` VerbMatches, NonResourceURLMatches, APIGroupMatches,
  ResourceMatches, ResourceNameMatches;
- who a binding applies to: `pkg/registry/rbac/validation/rule.go` appliesToUser;
- the allow reason: rbac.go authorizingVisitor.visit and rule.go clusterRoleBindingDescriber /
  describeSubject (`RBAC: allowed by ClusterRoleBinding "b" of ClusterRole "r" to User "u"`).
Not modelled: Roles and RoleBindings (namespaced), aggregated ClusterRoles, the Node and
webhook authorizers; a request no ClusterRoleBinding allows gets NoOpinion (allowed false,
no reason), as RBAC alone answers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

AUTHENTICATED_GROUP = "system:authenticated"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
ALL_SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"


def service_account_user(namespace: str, name: str) -> dict:
    """The UserInfo a service account's token authenticates as (without uid/extra)."""
    return {"username": f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}",
            "groups": [ALL_SERVICE_ACCOUNTS_GROUP, f"{ALL_SERVICE_ACCOUNTS_GROUP}:{namespace}",
                       AUTHENTICATED_GROUP]}


def _verb_matches(rule: dict, verb: str) -> bool:
    return any(v in ("*", verb) for v in rule.get("verbs") or [])


def _non_resource_url_matches(rule: dict, url: str) -> bool:
    for rule_url in rule.get("nonResourceURLs") or []:
        if rule_url in ("*", url):
            return True
        if rule_url.endswith("*") and url.startswith(rule_url.rstrip("*")):
            return True
    return False


def _resource_matches(rule: dict, combined: str, subresource: str) -> bool:
    for resource in rule.get("resources") or []:
        if resource in ("*", combined):
            return True
        if subresource and resource == "*/" + subresource:
            return True
    return False


def rule_allows(attrs: dict, rule: dict) -> bool:
    """rbac.go RuleAllows for SubjectAccessReview attributes (resource or non-resource)."""
    if attrs.get("resourceAttributes") is not None:
        res = attrs["resourceAttributes"]
        combined = res.get("resource", "")
        if res.get("subresource"):
            combined += "/" + res["subresource"]
        names = rule.get("resourceNames") or []
        return (_verb_matches(rule, res.get("verb", ""))
                and any(g in ("*", res.get("group", "")) for g in rule.get("apiGroups") or [])
                and _resource_matches(rule, combined, res.get("subresource", ""))
                and (not names or res.get("name", "") in names))
    non = attrs.get("nonResourceAttributes") or {}
    return _verb_matches(rule, non.get("verb", "")) and \
        _non_resource_url_matches(rule, non.get("path", ""))


def _applies_to(subject: dict, user: str, groups: list[str]) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return subject.get("name") == user
    if kind == "Group":
        return subject.get("name") in groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or ""
        return bool(namespace) and user == f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{subject.get('name')}"
    return False


def _describe_subject(subject: dict) -> str:
    if subject.get("kind") == "ServiceAccount":
        return f'{subject["kind"]} "{subject.get("name")}/{subject.get("namespace", "")}"'
    return f'{subject.get("kind")} "{subject.get("name")}"'


@dataclass
class Rbac:
    """Cluster-wide RBAC objects (as dicts, e.g. loaded from the manifests) and the tokens this
    server authenticates."""

    cluster_roles: dict[str, dict] = field(default_factory=dict)
    bindings: list[dict] = field(default_factory=list)
    users: dict[str, dict] = field(default_factory=dict)  # token -> UserInfo

    def add(self, *objects: dict) -> None:
        for obj in objects:
            if obj.get("kind") == "ClusterRole":
                self.cluster_roles[obj["metadata"]["name"]] = obj
            elif obj.get("kind") == "ClusterRoleBinding":
                self.bindings.append(obj)
            else:
                raise ValueError(f"the fake's RBAC models ClusterRole(Binding) only, not {obj.get('kind')}")

    def authenticate(self, token: str) -> Optional[dict]:
        user = self.users.get(token)
        if user is None:
            return None
        groups = list(user.get("groups") or [])
        if AUTHENTICATED_GROUP not in groups:
            groups.append(AUTHENTICATED_GROUP)
        return {**user, "groups": groups}

    def authorize(self, spec: dict) -> tuple[bool, str]:
        """(allowed, reason) as RBACAuthorizer.Authorize for one SubjectAccessReview spec."""
        user, groups = spec.get("user") or "", list(spec.get("groups") or [])
        for binding in self.bindings:
            ref = binding.get("roleRef") or {}
            role = self.cluster_roles.get(ref.get("name", "")) if ref.get("kind") == "ClusterRole" else None
            if role is None:
                continue
            for subject in binding.get("subjects") or []:
                if not _applies_to(subject, user, groups):
                    continue
                if any(rule_allows(spec, rule) for rule in role.get("rules") or []):
                    return True, (f'RBAC: allowed by ClusterRoleBinding "{binding["metadata"]["name"]}" '
                                  f'of ClusterRole "{ref["name"]}" to {_describe_subject(subject)}')
        return False, ""
