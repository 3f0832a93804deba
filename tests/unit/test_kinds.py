"""The kinds registry's checklist (src/plumber_agent/kinds/): every registered kind has every
part (spec keys in the CRD, a merge, a planner, a cleanup per key kind, verbs the executor
carries out, what it reads from the host, its status), and every part of every layer (a Verb, a
KeyKind, a DesiredState field, a CRD property under spec, an executor handler, a room module,
an observed or status field) belongs to a kind; interest.py reads every kind's desired objects.
`checklist` names what is missing; the tests below show it naming the part removed from a
declaration, and the part a registry lacks."""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path
from typing import Iterable, Optional

import pytest
import yaml

from plumber_agent import desired as desired_pkg
from plumber_agent import kinds as registry
from plumber_agent import planner as planner_pkg
from plumber_agent.desired import DesiredState
from plumber_agent.host.executor import _POLICIES, Executor
from plumber_agent.kinds.base import API_PATH_ROLES, UNCHANGED_WHEN, Kind, Merge
from plumber_agent.models.actions import VERBS, Verb
from plumber_agent.models.keys import KeyKind
from plumber_agent.models.observed import ObservedHost, ObservedLink
from plumber_agent.models.status import HostNetworkStatus, InterfaceStatus, OvsBridgeStatus

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_CRD = REPO / "manifests" / "crds" / "hostnetworktemplates.yaml"

# Modules of a layer's package that are not a kind's room.
DESIRED_SHARED = {"base"}  # the ownership rule every room uses
# The shared facts; the guard over the whole plan; what the plan takes from pods (drain).
PLANNER_SHARED = {"context", "apipath", "disruption"}

# Which kernel events a pass is interested in (interest_of) reads every kind's desired objects.
INTEREST_SOURCE = (REPO / "src" / "plumber_agent" / "interest.py").read_text(encoding="utf-8")

# Where observed and status paths point: "links[].mtu" is ObservedLink.mtu.
OBSERVED_ENTRIES = {"links": ObservedLink}
STATUS_ENTRIES = {"interface_status": InterfaceStatus, "ovs_status": OvsBridgeStatus}


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _paths(top, entries: dict) -> set[str]:
    """Every field of `top` and, for the lists in `entries`, every field of their entries."""
    out = _fields(top)
    for name, cls in entries.items():
        out |= {f"{name}[].{field}" for field in _fields(cls)}
    return out


def crd_spec_properties(path: Path = TEMPLATE_CRD) -> dict[str, set[str]]:
    """{JSON path under spec: its property names} of the HostNetworkTemplate CRD ("" = spec)."""
    (crd,) = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    (version,) = crd["spec"]["versions"]
    out: dict[str, set[str]] = {}

    def walk(node: dict, where: str) -> None:
        if node.get("type") == "array":
            walk(node.get("items") or {}, where + "[]")
            return
        props = node.get("properties") or {}
        if props:
            out[where] = set(props)
        for name, child in props.items():
            walk(child, f"{where}.{name}" if where else name)

    walk(version["schema"]["openAPIV3Schema"]["properties"]["spec"], "")
    return out


def _room(package, name: Optional[str]):
    try:
        return importlib.import_module(f"{package.__name__}.{name}")
    except ImportError:
        return None


def _submodules(package) -> set[str]:
    return {m.name for m in pkgutil.iter_modules(package.__path__)}


def _kind_problems(kind: Kind, names: dict[str, Kind], *, cross: bool, crd: dict,
                   handlers: set) -> list[str]:
    """What one declaration lacks, or names that do not exist."""
    out: list[str] = []
    where = f"kind {kind.name}"
    if not kind.doc:
        out.append(f"{where}: no doc")
    if not kind.spec_keys and not cross:
        out.append(f"{where}: no spec keys (its CRD schema fragment)")
    for path, keys in kind.spec_keys.items():
        missing = set(keys) - crd.get(path, set())
        if missing:
            out.append(f"{where}: spec keys {sorted(missing)} at {path or 'spec'!r} are not "
                       "in the CRD")
    if not cross:
        if bool(kind.merge) == bool(kind.merged_with):
            out.append(f"{where}: needs a merge (a Merge) or merged_with")
        if kind.merge and kind.merge.field not in _fields(DesiredState):
            out.append(f"{where}: merge field {kind.merge.field!r} is not a DesiredState field")
        if kind.merge:
            room = _room(desired_pkg, kind.merge.room)
            for function in (kind.merge.offer, kind.merge.assemble):
                if not callable(getattr(room, function, None)):
                    out.append(f"{where}: desired.{kind.merge.room}.{function} does not exist")
        if kind.merged_with and not (names.get(kind.merged_with) and
                                     names[kind.merged_with].merge):
            out.append(f"{where}: merged_with {kind.merged_with!r} is not a kind with a merge")
        if bool(kind.plan_room) == bool(kind.planned_with):
            out.append(f"{where}: needs a planner (plan_room) or planned_with")
        if kind.plan_room and not callable(getattr(_room(planner_pkg, kind.plan_room), "plan",
                                                   None)):
            out.append(f"{where}: planner.{kind.plan_room}.plan does not exist")
        if kind.planned_with and not (names.get(kind.planned_with) and
                                      names[kind.planned_with].plan_room):
            out.append(f"{where}: planned_with {kind.planned_with!r} is not a kind with a "
                       "planner")
        for dep in kind.after:
            if dep not in names:
                out.append(f"{where}: after names no kind {dep!r}")
        if kind.parent and kind.parent.desired_field not in _fields(DesiredState):
            out.append(f"{where}: parent.desired_field {kind.parent.desired_field!r} is not a "
                       "DesiredState field")
        if kind.merge and f"desired.{kind.merge.field}" not in INTEREST_SOURCE:
            out.append(f"{where}: interest.py never reads desired.{kind.merge.field} (its "
                       "kernel events would all count as unmanaged)")
        if not kind.observed and not kind.merged_with:
            out.append(f"{where}: reads nothing from the host (observed)")
        if not kind.status:
            out.append(f"{where}: no status shape")
    if not kind.cleanups:
        out.append(f"{where}: no cleanup (a ledger key kind with its undo)")
    for cleanup in kind.cleanups:
        if cleanup.key_kind not in set(KeyKind):
            out.append(f"{where}: cleanup of {cleanup.key_kind!r}, which is no KeyKind")
        if not callable(getattr(_room(planner_pkg, cleanup.room), cleanup.function, None)):
            out.append(f"{where}: planner.{cleanup.room}.{cleanup.function} does not exist")
    for key in kind.interface_keys:
        if key not in kind.key_kinds:
            out.append(f"{where}: interface key {key!r} is not one of its key kinds")
    if not kind.verbs:
        out.append(f"{where}: no executor verbs")
    for verb, role in kind.verbs.items():
        if verb not in set(Verb):
            out.append(f"{where}: verb {verb!r} is no Verb")
        elif verb not in VERBS:
            out.append(f"{where}: verb {verb} has no VERBS row")
        elif verb not in handlers:
            out.append(f"{where}: verb {verb} has no executor handler")
        if role not in API_PATH_ROLES:
            out.append(f"{where}: verb {verb}'s API-path role {role!r} is not one of "
                       f"{API_PATH_ROLES}")
    for verb, policy in kind.unchanged_when.items():
        if verb not in kind.verbs:
            out.append(f"{where}: unchanged_when names {verb!r}, not one of its verbs")
        if policy not in UNCHANGED_WHEN:
            out.append(f"{where}: unchanged_when {policy!r} for {verb} is not one of "
                       f"{UNCHANGED_WHEN}")
    observed, status = _paths(ObservedHost, OBSERVED_ENTRIES), _paths(HostNetworkStatus,
                                                                       STATUS_ENTRIES)
    out += [f"{where}: observed {p!r} is no ObservedHost field" for p in kind.observed
            if p not in observed]
    out += [f"{where}: status {p!r} is no HostNetworkStatus field" for p in kind.status
            if p not in status]
    spec_paths = {f"{path}.{key}" if path else key
                  for path, keys in crd.items() for key in keys}
    out += [f"{where}: omit_when_empty {p!r} is no spec path" for p in kind.omit_when_empty
            if p not in spec_paths]
    return out


def _owned_once(what: str, owners: dict[str, list[str]], every: Iterable[str]) -> list[str]:
    out = []
    for part in sorted(every):
        names = owners.get(part, [])
        if not names:
            out.append(f"{what} {part} belongs to no kind")
        elif len(names) > 1:
            out.append(f"{what} {part} is claimed by {', '.join(names)}")
    return out


def checklist(kinds: tuple[Kind, ...] = registry.KINDS,
              cross: tuple[Kind, ...] = registry.CROSS_CUTTING, *,
              crd: Optional[dict[str, set[str]]] = None) -> list[str]:
    """Every missing part, as a sentence naming the kind or the part; [] when complete."""
    crd = crd_spec_properties() if crd is None else crd
    handlers = set(Executor(None, None, None, None)._handlers)
    every = tuple(kinds) + tuple(cross)
    names = {kind.name: kind for kind in every}
    out = [f"kind {name} is registered twice" for name in names
           if sum(kind.name == name for kind in every) > 1]
    for kind in every:
        out += _kind_problems(kind, names, cross=kind in cross, crd=crd, handlers=handlers)

    def owners(parts) -> dict[str, list[str]]:
        table: dict[str, list[str]] = {}
        for kind in every:
            for part in parts(kind):
                table.setdefault(part, []).append(kind.name)
        return table

    out += _owned_once("Verb", owners(lambda k: k.verbs), {str(v) for v in Verb})
    out += _owned_once("executor handler", owners(lambda k: k.verbs), {str(v) for v in handlers})
    out += _owned_once("KeyKind (its cleanup)", owners(lambda k: k.key_kinds),
                       {str(k) for k in KeyKind})
    out += _owned_once("DesiredState field",
                       owners(lambda k: [k.merge.field] if k.merge else []),
                       _fields(DesiredState) - set(registry.TEMPLATE_DESIRED_FIELDS))
    crd_props = {(path, key) for path, keys in crd.items() for key in keys}
    claimed = owners(lambda k: [(p, key) for p, keys in k.spec_keys.items() for key in keys])
    for path, keys in registry.TEMPLATE_SPEC_KEYS.items():
        for key in keys:
            claimed.setdefault((path, key), []).append("the template")
    out += [f"CRD property {key!r} at {path or 'spec'!r} belongs to no kind"
            for path, key in sorted(crd_props) if (path, key) not in claimed]
    out += [f"CRD property {key!r} at {path or 'spec'!r} is claimed by {', '.join(names_)}"
            for (path, key), names_ in sorted(claimed.items())
            if len(set(names_)) > 1 and key in crd.get(path, ())]
    merge_rooms = owners(lambda k: [k.merge.room] if k.merge else [])
    out += [f"desired room {room} belongs to no kind"
            for room in sorted(_submodules(desired_pkg) - DESIRED_SHARED) if room not in merge_rooms]
    rooms = owners(lambda k: set([k.plan_room] if k.plan_room else [])
                   | {c.room for c in k.cleanups})
    out += [f"planner room {room} belongs to no kind"
            for room in sorted(_submodules(planner_pkg) - PLANNER_SHARED) if room not in rooms]
    # What is read from the host and shown in status may be shared (a VF's settings are read
    # with its PF's): each field needs a kind, not exactly one.
    read, shown = owners(lambda k: k.observed), owners(lambda k: k.status)
    out += [f"observed field {f} belongs to no kind" for f in sorted(
        _paths(ObservedHost, OBSERVED_ENTRIES) - set(registry.HOST_FACTS)) if f not in read]
    out += [f"status field {f} belongs to no kind" for f in sorted(
        _paths(HostNetworkStatus, STATUS_ENTRIES) - set(registry.NODE_STATUS)) if f not in shown]
    try:
        registry.plan_order(kinds)
    except ValueError as exc:
        out.append(str(exc))
    return out


def test_the_registry_is_complete():
    assert checklist() == []
    assert set(_POLICIES) == set(UNCHANGED_WHEN)  # the executor reads every policy


def test_the_layers_take_their_tables_from_the_registry():
    """The tables the layers use are the registry's, in its order."""
    from plumber_agent.desired import MERGERS
    from plumber_agent.models.keys import _INTERFACE_KINDS
    from plumber_agent.planner import CLEANUPS, PLANNERS
    from plumber_agent.planner.apipath import _REMOVING_VERBS, _ROUTING_VERBS
    from plumber_agent.status_builder import STACKED_KINDS

    assert [field for field, _, _ in MERGERS] == ["pfs", "links", "vlans", "bonds", "routes",
                                                  "bridges", "linux_bridges",
                                                  "linux_bridge_ports", "vfs"]
    assert [p.__module__.rsplit(".", 1)[1] for p in PLANNERS] == [
        "sriov", "bond", "vlan", "lbridge", "links", "addresses", "routes", "ovs", "vfattrs"]
    assert list(CLEANUPS) == [KeyKind.VLAN, KeyKind.BOND, KeyKind.BOND_MEMBER, KeyKind.LBRIDGE,
                              KeyKind.LBPORT, KeyKind.LBVLAN, KeyKind.NUMVFS, KeyKind.BRIDGE,
                              KeyKind.PORT, KeyKind.ROUTE, KeyKind.ADDR, KeyKind.VFDRIVER,
                              KeyKind.VFATTR, KeyKind.MTU, KeyKind.COLLATERAL]
    assert set(_INTERFACE_KINDS) == {KeyKind.VLAN, KeyKind.MTU, KeyKind.ADDR, KeyKind.BOND,
                                     KeyKind.BOND_MEMBER, KeyKind.LBRIDGE, KeyKind.LBPORT,
                                     KeyKind.LBVLAN}
    assert set(_REMOVING_VERBS) == {Verb.DELETE_LINK, Verb.DELETE_PORT, Verb.DELETE_BRIDGE,
                                    Verb.RELEASE_MEMBER, Verb.SET_LINUX_BRIDGE_PORT}
    assert set(_ROUTING_VERBS) == {Verb.ADD_ROUTE, Verb.DELETE_ROUTE, Verb.ADD_ADDRESS,
                                   Verb.DELETE_ADDRESS, Verb.SET_UP}
    assert STACKED_KINDS == ("vlan", "macvlan", "ipvlan", "macvtap")


def _without(name: str, **changes) -> tuple[Kind, ...]:
    return tuple(dataclasses.replace(k, **changes) if k.name == name else k
                 for k in registry.KINDS)


@pytest.mark.parametrize("name, changes, named", [
    ("vlan", {"cleanups": ()}, ["kind vlan: no cleanup", "KeyKind (its cleanup) vlan belongs "
                                "to no kind"]),
    ("routes", {"verbs": {}}, ["kind routes: no executor verbs", "Verb add_route belongs to no "
                               "kind", "executor handler delete_route belongs to no kind"]),
    ("sriov", {"spec_keys": {}}, ["kind sriov: no spec keys", "CRD property 'numVfs' at "
                                  "'sriovConfig[]' belongs to no kind"]),
    ("ovs_bridge", {"merge": None},
     ["kind ovs_bridge: needs a merge", "DesiredState field bridges belongs to no kind",
      "desired room ovs belongs to no kind", "kind ovs_port: merged_with 'ovs_bridge' is not"]),
    ("link", {"plan_room": None}, ["kind link: needs a planner"]),
    ("routes", {"merge": Merge("routes_v2", "routes")},
     ["kind routes: merge field 'routes_v2' is not a DesiredState field",
      "kind routes: interest.py never reads desired.routes_v2",
      "DesiredState field routes belongs to no kind"]),
    ("routes", {"observed": ()}, ["kind routes: reads nothing from the host",
                                  "observed field routes belongs to no kind"]),
    ("addresses", {"status": ()}, ["kind addresses: no status shape",
                                   "status field interface_status[].ipv4 belongs to no kind"]),
    ("vlan", {"verbs": {"ensure_vlan": "maybe", "delete_link": "removing"}},
     ["kind vlan: verb ensure_vlan's API-path role 'maybe'"]),
    ("vlan", {"after": ("team",)}, ["kind vlan: after names no kind 'team'"]),
    ("vlan", {"unchanged_when": {"set_mtu": "if NotAvailable"}},
     ["kind vlan: unchanged_when names 'set_mtu', not one of its verbs"]),
    ("link", {"after": ("addresses",)}, ["kinds' `after` form a cycle"]),
    ("routes", {"spec_keys": {"": ("routes",), "routes": ("ipv4", "ipv6", "ipv5")}},
     ["kind routes: spec keys ['ipv5'] at 'routes' are not in the CRD",
      "CRD property 'dst' at 'routes.ipv4[]' belongs to no kind"]),
])
def test_the_checklist_names_a_part_removed_from_a_kind(name, changes, named):
    problems = checklist(_without(name, **changes))
    for text in named:
        assert any(p.startswith(text) for p in problems), (text, problems)


def test_the_checklist_names_the_parts_of_a_kind_left_out_of_the_list():
    """A kind whose modules exist but whose line in KINDS is missing: all its parts are named."""
    problems = checklist(tuple(k for k in registry.KINDS if k.name != "routes"))
    for text in ("Verb add_route belongs to no kind", "KeyKind (its cleanup) route belongs",
                 "DesiredState field routes belongs", "CRD property 'routes' at 'spec' belongs",
                 "desired room routes belongs", "planner room routes belongs",
                 "observed field routes belongs", "status field routes belongs"):
        assert any(p.startswith(text) for p in problems), (text, problems)


def test_the_checklist_names_a_crd_property_no_kind_claims():
    crd = crd_spec_properties()
    crd["interfaceConfig[]"] = crd["interfaceConfig[]"] | {"bond"}
    assert checklist(crd=crd) == ["CRD property 'bond' at 'interfaceConfig[]' belongs to no "
                                  "kind"]


def test_a_part_claimed_twice_is_named():
    twice = _without("link", verbs={"set_mtu": "device", "set_up": "routing",
                                    "add_route": "routing"})
    assert "Verb add_route is claimed by link, routes" in checklist(twice)


def test_a_spec_using_no_newer_kind_keeps_its_rollout_identity():
    """network_spec_dict of a spec that sets none of the kinds added since (bonds, Linux bridges,
    ...) is the dict of before they existed: a new kind's spec field must be declared in its
    omit_when_empty, or upgrading the agent starts a rollout of every template."""
    from plumber_agent.models.spec import TemplateSpec, network_spec_dict

    assert network_spec_dict(TemplateSpec()) == {
        "nodeSelector": {}, "sriovConfig": [], "interfaceConfig": [], "ovsConfig": [],
        "routes": None, "allowApiServerDisruption": False}
