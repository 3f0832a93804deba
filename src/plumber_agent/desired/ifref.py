"""Interface references (plumber_agent.models.ifref) resolved against the observed host: the one
place where `pci:`, `mac:` and `altname:` become kernel names, before any kind's merge sees the
spec, on every pass -- so a NIC the kernel renames between passes (a new kernel, new firmware,
udev rules) is followed, and every kind, present or future, gets the same rule.

Rule: a reference must match exactly one interface of this node. None, or more than one (two
netdevs on one PCI function: a multi-port function, switchdev representors), is a per-template
failure naming the field, never a guess. The entry holding it (one interfaceConfig, route,
ovsConfig or sriovConfig entry) is left out of the merge and the template is Failed, which makes
it HOLD what it applied (planner `_without_held`): a NIC that vanished undoes nothing.

Which fields hold references is declared by their kinds (`interface_refs` in kinds/), so a new
kind's field is resolved by declaring it: REFERENCE_FIELDS. Pure: reads only the ObservedHost.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from plumber_agent.kinds import interface_refs
from plumber_agent.kinds.base import CSV, ONE
from plumber_agent.models.codec import camel
from plumber_agent.models.ifref import ALTNAME, MAC, PCI, parse_ifref
from plumber_agent.models.observed import ObservedHost

# {spec path: form} of every field naming an existing interface, from the kinds registry.
REFERENCE_FIELDS: Mapping[str, str] = interface_refs()

LISTED_MATCHES = 4  # interfaces named in an "matches N interfaces" message


@dataclass(frozen=True)
class Resolution:
    """A reference's kernel name, or why there is none."""

    name: Optional[str] = None
    problem: Optional[str] = None


class LinkIndex:
    """The observed links by PCI address, permanent MAC and altname, built once per merge and
    only when some template uses a reference."""

    def __init__(self, observed: ObservedHost):
        self.observed = observed
        self.by: dict[str, dict[str, list[str]]] = {PCI: {}, MAC: {}, ALTNAME: {}}
        for ifname in sorted(observed.links):
            link = observed.links[ifname]
            if link.pci_addr:
                self.by[PCI].setdefault(link.pci_addr, []).append(ifname)
            if link.perm_mac:
                self.by[MAC].setdefault(link.perm_mac, []).append(ifname)
            for alt in link.altnames:
                self.by[ALTNAME].setdefault(alt, []).append(ifname)

    def resolve(self, text: str) -> Resolution:
        ref = parse_ifref(text)
        if ref.kind is None:
            return Resolution(name=ref.value)
        names = self.by[ref.kind].get(ref.value, [])
        if len(names) == 1:
            return Resolution(name=names[0])
        if names:
            shown = ", ".join(names[:LISTED_MATCHES]) + (", ..." if len(names) > LISTED_MATCHES
                                                         else "")
            return Resolution(problem=f"{text} matches {len(names)} interfaces on this node "
                                      f"({shown}); name one of them by altname: or kernel name")
        return Resolution(problem=f"{text} matches no interface on this node"
                                  f"{self._hint(ref.kind, ref.value)}")

    def _hint(self, kind: str, value: str) -> str:
        """Why a near miss is not a match (a MAC that is only the current one)."""
        if kind != MAC:
            return ""
        for ifname in sorted(self.observed.links):
            link = self.observed.links[ifname]
            if link.mac == value and link.perm_mac != value:
                perm = link.perm_mac or "none reported by its driver"
                return (f" ({ifname} has it as its current MAC, but a reference names the "
                        f"permanent MAC: {perm})")
        return ""


@dataclass
class SpecResolution:
    spec: Any  # the spec with every reference replaced by its kernel name
    references: dict[str, str]  # reference text -> kernel name, for the status
    problems: list[str]  # path-annotated; the entries holding them were left out


class Resolver:
    """Resolves the references of each template's spec in one merge (index built on first use).
    `fields` is REFERENCE_FIELDS but for a test of a kind's declaration."""

    def __init__(self, observed: ObservedHost, fields: Optional[Mapping[str, str]] = None):
        self.observed = observed
        self._index: Optional[LinkIndex] = None
        self._plans = _DEFAULT_PLANS if fields is None else _Plans(fields)

    def resolve(self, text: str) -> Resolution:
        if ":" not in text:  # a kernel name: no index needed
            return Resolution(name=text)
        if self._index is None:
            self._index = LinkIndex(self.observed)
        return self._index.resolve(text)

    def resolve_spec(self, spec: Any, path: str = "spec") -> SpecResolution:
        out = SpecResolution(spec=spec, references={}, problems=[])
        resolved = self._walk(spec, path, "", out)
        out.spec = spec if resolved is None else resolved
        return out

    # The walk: only through fields that can hold a reference (`_Plans`), copying only what
    # changes, so a template without references costs a few attribute reads per entry.
    def _walk(self, obj: Any, path: str, where: str, out: SpecResolution) -> Any:
        """`obj` (at spec path `where`) with its references resolved (obj itself when none
        changed), or None when one failed (the caller leaves the entry out)."""
        changes = {}
        for name, key, role in self._plans.of(type(obj), where):
            value = getattr(obj, name)
            fpath = f"{path}.{key}"
            fwhere = f"{where}.{key}" if where else key
            if role == _CHILD:
                new = self._walk_child(value, fpath, fwhere, out)
                if new is _DROP:
                    return None
            else:
                new = self._field(role, value, fpath, out)
                if new is None and value is not None:
                    return None
            if new is not value:
                changes[name] = new
        return dataclasses.replace(obj, **changes) if changes else obj

    def _walk_child(self, value: Any, path: str, where: str, out: SpecResolution) -> Any:
        if isinstance(value, list):
            kept, changed = [], False
            for i, item in enumerate(value):
                new = self._walk(item, f"{path}[{i}]", f"{where}[]", out)
                changed |= new is not item
                if new is not None:
                    kept.append(new)
            return kept if changed else value
        if dataclasses.is_dataclass(value):
            new = self._walk(value, path, where, out)
            return _DROP if new is None else new
        return value

    def _field(self, role: str, value: Any, path: str, out: SpecResolution) -> Any:
        if value is None:
            return None
        if role == ONE:
            return self._one(value, path, out)
        items = value.split(",") if role == CSV else value
        names = [self._one(item, path if role == CSV else f"{path}[{i}]", out)
                 for i, item in enumerate(items)]
        if any(name is None for name in names):
            return None
        if names == list(items):
            return value
        return ",".join(names) if role == CSV else names

    def _one(self, text: str, path: str, out: SpecResolution) -> Optional[str]:
        if ":" not in text:
            return text
        found = self.resolve(text)
        if found.name is None:
            out.problems.append(f"{path}: {found.problem}")
            return None
        out.references[text] = found.name
        return found.name


_DROP = object()
_CHILD = "child"  # a dataclass (or a list of them) with such fields below it


class _Plans:
    """(attribute, JSON key, role) of a spec class's fields at a spec path that hold a
    reference (role: the field's form) or lead to one (_CHILD), computed once per class and
    path from the declared fields."""

    def __init__(self, fields: Mapping[str, str]):
        self.fields = dict(fields)
        self._cache: dict[tuple[type, str], tuple] = {}

    def of(self, cls: type, where: str) -> tuple:
        plan = self._cache.get((cls, where))
        if plan is None:
            entries = []
            if dataclasses.is_dataclass(cls):
                for f in dataclasses.fields(cls):
                    key = camel(f.name)
                    path = f"{where}.{key}" if where else key
                    role = self.fields.get(path)
                    if role is None and any(p.startswith((path + ".", path + "[]."))
                                            for p in self.fields):
                        role = _CHILD
                    if role is not None:
                        entries.append((f.name, key, role))
            plan = self._cache[(cls, where)] = tuple(entries)
        return plan


_DEFAULT_PLANS = _Plans(REFERENCE_FIELDS)
