"""The kinds of host object, in one explicit list: KINDS. Each kind declares once, in its own
module here, everything a layer needs of it (kinds/base.py `Kind`); the layers derive their
tables from this list: the spec's key sets (models/parse.py) and rollout identity
(models/spec.py), the ledger keys naming interfaces (models/keys.py), MERGERS and
DesiredState.is_empty (desired/__init__.py), parents and depth (planner/context.py), PLANNERS
and CLEANUPS (planner/__init__.py), the API-path guard's verb classes (planner/apipath.py) and
STACKED_KINDS (status_builder.py). tests/unit/test_kinds.py holds every kind to every part, and
every part (Verb, KeyKind, DesiredState field, CRD property, executor handler, observed and
status field) to a kind. No plugin mechanism: a new kind is a module here and a line below.

Order matters: KINDS is the merge order (a template's SR-IOV entries offer a PF netdev's MTU
before interfaceConfig does); the planning order follows it, each kind after those in its
`after`.
"""
from __future__ import annotations

from plumber_agent.kinds import (addresses, bond, collateral, lbridge, lbridge_port, link, ovs_bridge,
                                 ovs_port, routes, sriov, vfattrs, vlan)
from plumber_agent.kinds.base import API_PATH_ROLES, REMOVING, ROUTING, Cleanup, Kind, Parent

__all__ = ["API_PATH_ROLES", "CROSS_CUTTING", "KINDS", "Kind", "cleanup_order", "merge_order",
           "plan_order", "spec_keys"]

KINDS: tuple[Kind, ...] = (
    sriov.KIND,
    link.KIND,
    vlan.KIND,
    bond.KIND,
    addresses.KIND,
    routes.KIND,
    ovs_bridge.KIND,
    ovs_port.KIND,
    lbridge.KIND,
    lbridge_port.KIND,
    vfattrs.KIND,  # last: its merge reads the numVfs sriov's settled on
)

# Not kinds, but parts every layer has: what the kernel removes with a change.
CROSS_CUTTING: tuple[Kind, ...] = (collateral.RECORD,)

# The parts that belong to the template or the node, not to a kind.
TEMPLATE_SPEC_KEYS = {"": ("nodeSelector", "allowApiServerDisruption", "rollout"),
                      # drain, drainTimeoutSeconds: models/drain_spec.py DRAIN_KEYS
                      "rollout": ("maxUnavailable", "dryRun", "drain", "drainTimeoutSeconds")}
TEMPLATE_DESIRED_FIELDS = ("allow_api_server_disruption", "failing")
HOST_FACTS = ("api_server_ip", "module_aliases", "kernel_modules")  # ObservedHost, not a kind's
NODE_STATUS = ("templates", "truncated", "summary", "address_claims", "conditions")
# Link kinds the agent does not manage whose IFLA_LINK is a parent too (status `parent`).
FOREIGN_STACKED_KINDS = ("macvlan", "ipvlan", "macvtap")


def _every(kinds=None) -> tuple[Kind, ...]:
    return tuple(kinds if kinds is not None else KINDS) + CROSS_CUTTING


def spec_keys(path: str, kinds=None) -> frozenset[str]:
    """The properties at `path` of the spec ("" the spec, "interfaceConfig[]" an entry), of
    every kind and of the template itself: what models/parse.py accepts there."""
    keys = set(TEMPLATE_SPEC_KEYS.get(path, ()))
    for kind in _every(kinds):
        keys.update(kind.spec_keys.get(path, ()))
    return frozenset(keys)


def spec_paths(kinds=None) -> set[str]:
    return set(TEMPLATE_SPEC_KEYS) | {path for kind in _every(kinds) for path in kind.spec_keys}


def merge_order(kinds=None) -> tuple[Kind, ...]:
    """The kinds that own a DesiredState field, in merge order."""
    return tuple(kind for kind in (kinds if kinds is not None else KINDS) if kind.merge)


def plan_order(kinds=None) -> tuple[Kind, ...]:
    """The kinds with a planner room, each after the kinds in its `after` (and their rooms),
    else in KINDS order. Raises ValueError on a cycle or an unknown name."""
    kinds = tuple(kinds if kinds is not None else KINDS)
    names = {kind.name for kind in kinds}
    placed: list[Kind] = []
    done: set[str] = set()
    pending = list(kinds)
    while pending:
        for kind in pending:
            unknown = set(kind.after) - names
            if unknown:
                raise ValueError(f"kind {kind.name}: after names unknown kinds {sorted(unknown)}")
            if all(dep in done for dep in kind.after):
                break
        else:
            raise ValueError("kinds' `after` form a cycle: "
                             + ", ".join(kind.name for kind in pending))
        pending.remove(kind)
        done.add(kind.name)
        if kind.plan_room:
            placed.append(kind)
    return tuple(placed)


def cleanup_order(kinds=None) -> tuple[Cleanup, ...]:
    """Every ledger key kind's cleanup, kinds and cross-cutting records, by rank."""
    return tuple(sorted((c for kind in _every(kinds) for c in kind.cleanups),
                        key=lambda c: c.rank))


def interface_key_kinds(kinds=None) -> tuple[str, ...]:
    """Ledger key kinds whose key names an interface (models/keys.py)."""
    return tuple(key for kind in _every(kinds) for key in kind.interface_keys)


def parents(kinds=None) -> tuple[Parent, ...]:
    return tuple(kind.parent for kind in (kinds if kinds is not None else KINDS) if kind.parent)


def stacked_link_kinds(kinds=None) -> tuple[str, ...]:
    """Observed link kinds whose IFLA_LINK is a parent (status_builder.py)."""
    return tuple(k for parent in parents(kinds) for k in parent.link_kinds) \
        + FOREIGN_STACKED_KINDS


def verbs_with_role(role: str, kinds=None) -> tuple[str, ...]:
    """The verbs the API-path guard reads as `role` (kinds/base.py API_PATH_ROLES)."""
    return tuple(verb for kind in _every(kinds) for verb, r in kind.verbs.items() if r == role)


def unchanged_when(kinds=None) -> dict[str, str]:
    """{verb: UNCHANGED_WHEN policy} of every kind (host/executor.py certainly_unchanged)."""
    return {verb: policy for kind in _every(kinds) for verb, policy in kind.unchanged_when.items()}


def omit_when_empty(kinds=None) -> tuple[str, ...]:
    return tuple(path for kind in _every(kinds) for path in kind.omit_when_empty)


def by_name(kinds=None) -> dict[str, Kind]:
    return {kind.name: kind for kind in _every(kinds)}


ROUTING_VERBS = verbs_with_role(ROUTING)
REMOVING_VERBS = verbs_with_role(REMOVING)
