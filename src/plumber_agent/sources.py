"""Where the reconciler reads templates and this node's labels from.

`TemplateSource` is the seam between the reconciler and the outside world: the kube layer's
reflector stores in cluster mode (see agent.py), a directory of YAML files in local mode.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Callable, Optional, Protocol

import yaml

from plumber_agent.models.spec import Template, template_from_object

log = logging.getLogger(__name__)
KIND = "HostNetworkTemplate"


class TemplateSource(Protocol):
    def synced(self) -> bool:
        """True once the first full list arrived (nothing is cleaned up before that)."""

    def templates(self) -> list[Template]: ...

    def node_labels(self) -> Optional[dict[str, str]]:
        """This node's labels; None while the Node is unknown."""


class StoreSource:
    """Cluster mode: reads the reflectors' stores (plain dicts, docs/pitfalls.md 10)."""

    def __init__(self, *, templates_store: Callable[[], dict], node_store: Callable[[], dict],
                 synced: Callable[[], bool]) -> None:
        self._templates_store = templates_store
        self._node_store = node_store
        self._synced = synced

    def synced(self) -> bool:
        return self._synced()

    def templates(self) -> list[Template]:
        return [template_from_object(obj) for obj in self._templates_store().values()]

    def node_labels(self) -> Optional[dict[str, str]]:
        nodes = list(self._node_store().values())
        if not nodes:
            return None
        labels = (nodes[0].get("metadata") or {}).get("labels") or {}
        return {str(k): str(v) for k, v in labels.items()}


class DirectorySource:
    """Local mode: every HostNetworkTemplate in the YAML files of a directory (or one file).

    Reloaded when a file changes (mtime/size polled by `changed()`); a file that does not parse
    becomes an Invalid template named after the file, so the problem shows in the status.
    The generation of a template counts its content changes, as the API server's would.
    """

    def __init__(self, path: str, labels: dict[str, str]) -> None:
        self._path = Path(path)
        self._labels = dict(labels)
        self._lock = threading.Lock()
        self._fingerprint: Optional[tuple] = None
        self._templates: list[Template] = []
        self._generations: dict[str, tuple[int, str]] = {}
        self.reload()

    def _files(self) -> list[Path]:
        if self._path.is_file():
            return [self._path]
        return sorted(p for p in self._path.glob("*") if p.suffix in (".yaml", ".yml", ".json"))

    def _fingerprint_now(self) -> tuple:
        out = []
        for file in self._files():
            try:
                st = file.stat()
                out.append((str(file), st.st_mtime_ns, st.st_size))
            except OSError:
                continue
        return tuple(out)

    def changed(self) -> bool:
        """Reload if any file changed; True when it did."""
        if self._fingerprint_now() == self._fingerprint:
            return False
        self.reload()
        return True

    def reload(self) -> None:
        fingerprint = self._fingerprint_now()
        templates: list[Template] = []
        for file in self._files():
            try:
                docs = load_yaml_documents(file.read_text())
            except (OSError, yaml.YAMLError) as exc:
                templates.append(Template(name=file.name, generation=0, creation_timestamp="",
                                          spec=None, problems=[f"{file.name}: {exc}"]))
                continue
            for doc in docs:
                if not isinstance(doc, dict) or doc.get("kind") != KIND:
                    continue
                template = template_from_object(doc)
                text = yaml.safe_dump(doc.get("spec"), sort_keys=True)
                gen, old = self._generations.get(template.name, (0, None))
                if old != text:
                    gen += 1
                    self._generations[template.name] = (gen, text)
                template.generation = gen
                templates.append(template)
        with self._lock:
            self._templates = templates
            self._fingerprint = fingerprint
        log.info("templates loaded", extra={"count": len(templates), "path": str(self._path)})

    def synced(self) -> bool:
        return True

    def templates(self) -> list[Template]:
        with self._lock:
            return list(self._templates)

    def node_labels(self) -> Optional[dict[str, str]]:
        return dict(self._labels)


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1's base-60 numbers: the seed writes PCI addresses bare
    (`pciAddr: 0000:03:00.0`), which PyYAML would otherwise read as the float 180.0. kubectl reads
    them as text, and so do we."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_SEXAGESIMAL_FREE_INT = r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"""
_SEXAGESIMAL_FREE_FLOAT = (r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?"""
                           r"""|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""")
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(_SEXAGESIMAL_FREE_INT),
                              list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(_SEXAGESIMAL_FREE_FLOAT),
                              list("-+0123456789."))


def load_yaml_documents(text: str) -> list:
    """All non-empty YAML documents in `text`, read as kubectl would (no base-60 numbers)."""
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]


def default_labels(node_name: str, extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    labels = {"kubernetes.io/hostname": node_name}
    labels.update(extra or {})
    return labels


def parse_labels(text: str) -> dict[str, str]:
    """'a=b,c=d' -> {'a': 'b', 'c': 'd'}."""
    out = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"label {part!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def node_name_default() -> str:
    return os.environ.get("NODE_NAME") or os.uname().nodename
