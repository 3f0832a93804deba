"""The models' JSON codec: dataclasses-json, imported on first use, and a plain encoder for the
conversions every pass makes.

Why: `dataclass_json` on a class imports dataclasses-json, and dataclasses-json imports
marshmallow, typing-inspect and mypy-extensions: 2 MiB of resident memory in every agent on
every node (bench B4, README "Footprint") for what the agent's passes never call. A pass
encodes a status (`status.to_api`, a cached field table: dataclasses-json's `to_dict` took
0.2-0.4 s for a 1,000-interface status) and a template's network spec (`spec.network_spec_dict`,
for the rollout identity and the approved-specs file), both with `plain_dict` below. What
still uses dataclasses-json is rare: decoding a spec back from the node's rollout state file
(`TemplateSpec.from_network_dict`, at start-up and when an approval is read) and tools/tests.

How: `camel_json` records a class and gives it `to_dict`, `from_dict`, `to_json`, `from_json`
and `schema` placeholders; the first use of any of them, on any recorded class, applies
dataclasses-json's own `dataclass_json(letter_case=LetterCase.CAMEL)` to every recorded class
(nested classes need their letter case too), which replaces the placeholders with the real
methods. Behaviour is dataclasses-json's exactly; only the time of its import moves.
tests/unit/test_codec.py checks `plain_dict` against `to_dict(encode_json=True)` and that a pass
imports neither package.
"""
from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any, Optional

_METHODS = ("to_dict", "from_dict", "to_json", "from_json", "schema")
_recorded: list[type] = []
_decorated: set[type] = set()
_applied = False


def camel_json(cls: type) -> type:
    """`dataclass_json(letter_case=LetterCase.CAMEL)`, applied when first used (module doc)."""
    _recorded.append(cls)
    if _applied:
        _apply_dataclasses_json()
        return cls
    for name in _METHODS:
        setattr(cls, name, _Deferred(name))
    return cls


class _Deferred:
    """A placeholder for one dataclasses-json method: applies dataclasses-json, then answers
    with the real method (bound to the instance or the class asked)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type) -> Any:
        _apply_dataclasses_json()
        return getattr(owner if instance is None else instance, self.name)


def _apply_dataclasses_json() -> None:
    """Decorate every recorded class not decorated yet. No lock (the models are pure, no
    threading): two threads' first uses at once decorate a class twice, which dataclasses-json
    allows (it only assigns the same methods again)."""
    global _applied
    from dataclasses_json import LetterCase, dataclass_json
    decorate = dataclass_json(letter_case=LetterCase.CAMEL)
    for cls in list(_recorded):
        if cls not in _decorated:
            decorate(cls)
            _decorated.add(cls)
    _applied = True


def camel(name: str) -> str:
    """A Python field name as its API key (`num_vfs` -> `numVfs`): dataclasses-json's
    LetterCase.CAMEL for the snake_case names the models use."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


_FIELDS: dict[type, tuple] = {}  # dataclass -> ((attribute, camelCase key), ...)


def field_table(cls: type) -> Optional[tuple]:
    """The (attribute, key) table of a dataclass type, or None for any other type."""
    table = _FIELDS.get(cls)
    if table is None and dataclasses.is_dataclass(cls):
        table = _FIELDS[cls] = tuple((f.name, camel(f.name)) for f in dataclasses.fields(cls))
    return table


def plain_dict(value: Any) -> Any:
    """`value.to_dict(encode_json=True)` of a camel_json model, None values kept, without
    dataclasses-json: nested models as dicts, lists and tuples as lists, enums as their
    values."""
    table = field_table(type(value))
    if table is not None:
        return {key: plain_dict(getattr(value, name)) for name, key in table}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {key: plain_dict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_dict(item) for item in value]
    return value
