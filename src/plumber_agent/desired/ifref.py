"""Interface references (plumber_agent.models.ifref) resolved against the observed host: the one
place where `pci:`, `mac:` and `altname:` become kernel names, before any kind's merge sees the
spec, on every pass -- so a NIC the kernel renames between passes (a new kernel, new firmware,
udev rules) is followed, and every kind, present or future, gets the same rule.

Rule: a reference must match exactly one interface of this node. None, or more than one (two
netdevs on one PCI function: a multi-port function, switchdev representors), is a per-template
failure naming the field, never a guess. The entry holding it (one interfaceConfig, route,
ovsConfig or sriovConfig entry) is left out of the merge and the template is Failed, which makes
it HOLD what it applied (planner `_without_held`): a NIC that vanished undoes nothing.

Which fields hold references is declared on the spec types themselves (`IFREF*` field metadata),
so a new kind's field is resolved by marking it. Pure: reads only the ObservedHost.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Optional

from plumber_agent.models.codec import camel
from plumber_agent.models.ifref import ALTNAME, IFREF_METADATA_KEY, MAC, PCI, parse_ifref
from plumber_agent.models.observed import ObservedHost

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
    """Resolves the references of each template's spec in one merge (index built on first use)."""

    def __init__(self, observed: ObservedHost):
        self.observed = observed
        self._index: Optional[LinkIndex] = None

    def resolve(self, text: str) -> Resolution:
        if ":" not in text:  # a kernel name: no index needed
            return Resolution(name=text)
        if self._index is None:
            self._index = LinkIndex(self.observed)
        return self._index.resolve(text)

    def resolve_spec(self, spec: Any, path: str = "spec") -> SpecResolution:
        out = SpecResolution(spec=spec, references={}, problems=[])
        resolved = self._walk(spec, path, out)
        out.spec = spec if resolved is None else resolved
        return out

    # The walk: only through fields that can hold a reference (`_plan`), copying only what
    # changes, so a template without references costs a few attribute reads per entry.
    def _walk(self, obj: Any, path: str, out: SpecResolution) -> Any:
        """`obj` with its references resolved (obj itself when none changed), or None when one
        failed (the caller leaves the entry out)."""
        changes = {}
        for name, role in _plan(type(obj)):
            value = getattr(obj, name)
            fpath = f"{path}.{camel(name)}"
            if role == "child":
                new = self._walk_child(value, fpath, out)
                if new is _DROP:
                    return None
            else:
                new = self._field(role, value, fpath, out)
                if new is None and value is not None:
                    return None
            if new is not value:
                changes[name] = new
        return dataclasses.replace(obj, **changes) if changes else obj

    def _walk_child(self, value: Any, path: str, out: SpecResolution) -> Any:
        if isinstance(value, list):
            kept, changed = [], False
            for i, item in enumerate(value):
                new = self._walk(item, f"{path}[{i}]", out)
                changed |= new is not item
                if new is not None:
                    kept.append(new)
            return kept if changed else value
        if dataclasses.is_dataclass(value):
            new = self._walk(value, path, out)
            return _DROP if new is None else new
        return value

    def _field(self, role: str, value: Any, path: str, out: SpecResolution) -> Any:
        if value is None:
            return None
        if role == "one":
            return self._one(value, path, out)
        items = value.split(",") if role == "csv" else value
        names = [self._one(item, path if role == "csv" else f"{path}[{i}]", out)
                 for i, item in enumerate(items)]
        if any(name is None for name in names):
            return None
        if names == list(items):
            return value
        return ",".join(names) if role == "csv" else names

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
_PLANS: dict[type, tuple] = {}


def _plan(cls: type) -> tuple:
    """(field, role) of `cls`'s fields that can hold a reference: role "one"/"list"/"csv" from
    the field's IFREF metadata, "child" for a dataclass (or list of them) that has such fields."""
    plan = _PLANS.get(cls)
    if plan is None:
        _PLANS[cls] = ()  # a recursive type ends here
        try:
            hints = typing.get_type_hints(cls)
        except (NameError, TypeError):  # a hint naming what its module cannot see
            hints = {}
        entries = []
        for f in dataclasses.fields(cls):
            role = f.metadata.get(IFREF_METADATA_KEY)
            if role is None and any(_plan(sub) for sub in _dataclasses_in(hints.get(f.name))):
                role = "child"
            if role is not None:
                entries.append((f.name, role))
        plan = _PLANS[cls] = tuple(entries)
    return plan


def _dataclasses_in(hint: Any) -> list[type]:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return [hint]
    return [cls for arg in typing.get_args(hint) for cls in _dataclasses_in(arg)]
