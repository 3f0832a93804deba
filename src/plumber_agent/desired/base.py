"""What every kind's merge shares: the field-ownership rule (`Merger.offer`) and the
per-template results it writes. See plumber_agent.desired for the conflict rule."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Optional, TypeVar

from plumber_agent.models.observed import ObservedHost
from plumber_agent.models.status import (MAX_TEMPLATE_MESSAGE, InterfaceReferenceStatus,
                                         TemplateState, TemplateStatus)
from plumber_agent.models.text import truncate

T = TypeVar("T")

# Which state a template shows when several things happened to it (higher wins).
_SEVERITY = {TemplateState.NOT_SELECTED: 0, TemplateState.APPLIED: 1, TemplateState.CONFLICT: 2,
             TemplateState.FAILED: 3, TemplateState.INVALID: 4}


@dataclass
class Owned(Generic[T]):
    """A desired value and the templates asking for it (the winner first)."""

    value: T
    templates: list[str] = field(default_factory=list)


@dataclass
class TemplateResult:
    name: str
    state: str
    observed_generation: Optional[int] = None
    notes: list[str] = field(default_factory=list)
    # Interface references this pass resolved: reference text -> kernel name (desired/ifref.py).
    interface_references: dict[str, str] = field(default_factory=dict)

    @property
    def message(self) -> str:
        return truncate("; ".join(self.notes), MAX_TEMPLATE_MESSAGE)

    def to_status(self) -> TemplateStatus:
        return TemplateStatus(name=self.name, state=self.state,
                              observed_generation=self.observed_generation,
                              message=self.message or None,
                              interface_references=[
                                  InterfaceReferenceStatus(reference=ref, name=name)
                                  for ref, name in self.interface_references.items()] or None)

    def raise_to(self, state: str, note: Optional[str] = None) -> None:
        if _SEVERITY[state] > _SEVERITY[self.state]:
            self.state = state
        if note and note not in self.notes:
            self.notes.append(note)


@dataclass
class _Field:
    value: Any
    templates: list[str]
    describe: str


class Merger:
    """First writer (in conflict-rule order) owns a field; later disagreeing writers lose."""

    def __init__(self, results: dict[str, TemplateResult]):
        self.fields: dict[tuple, _Field] = {}
        self.results = results

    def offer(self, field_id: tuple, value: Any, template: str, describe: str) -> bool:
        current = self.fields.get(field_id)
        if current is None:
            self.fields[field_id] = _Field(value, [template], describe)
            return True
        if current.value == value:
            if template not in current.templates:
                current.templates.append(template)
            return True
        winner = current.templates[0]
        if winner == template:
            self.results[template].raise_to(
                TemplateState.CONFLICT,
                f"{describe}: two entries of this template disagree "
                f"({_show(current.value)} vs {_show(value)}); the first one is used")
            return False
        self.results[template].raise_to(
            TemplateState.CONFLICT,
            f"{describe}: conflicts with template {winner!r}, which is older and wins "
            f"({_show(current.value)}; this template wants {_show(value)})")
        self.results[winner].raise_to(
            TemplateState.APPLIED,
            f"{describe}: wins over template {template!r} (which wants {_show(value)})")
        return False

    def get(self, field_id: tuple) -> Optional[Owned]:
        f = self.fields.get(field_id)
        return Owned(f.value, list(f.templates)) if f else None


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_show(v)}" for k, v in sorted(value.items())) + "}"
    return str(value)


class MergeContext:
    """One merge: the field owner, the results, the observed host (SR-IOV selectors resolve
    against it) and, per kind, the objects offered in first-offered order."""

    def __init__(self, observed: ObservedHost, results: dict[str, TemplateResult]):
        self.observed = observed
        self.results = results
        self.merger = Merger(results)
        self._order: dict[str, list] = {}

    def touch(self, kind: str, obj: Any) -> None:
        """Remember that an object of `kind` was offered (once)."""
        order = self._order.setdefault(kind, [])
        if obj not in order:
            order.append(obj)

    def objects(self, kind: str) -> list:
        return list(self._order.get(kind, ()))

    def offer(self, field_id: tuple, value: Any, template: str, describe: str) -> bool:
        return self.merger.offer(field_id, value, template, describe)

    def get(self, field_id: tuple) -> Optional[Owned]:
        return self.merger.get(field_id)
