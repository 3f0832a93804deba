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

from plumber_agent import GROUP, VERSION
from plumber_agent.errors import UsageError
from plumber_agent.models.parse import metadata_problems, template_from_object
from plumber_agent.models.spec import Template

log = logging.getLogger(__name__)
KIND = "HostNetworkTemplate"
API_VERSION = f"{GROUP}/{VERSION}"


class TemplateSource(Protocol):
    def synced(self) -> bool:
        """True once the first full list arrived (nothing is cleaned up before that)."""

    def templates(self) -> list[Template]: ...

    def node_labels(self) -> Optional[dict[str, str]]:
        """This node's labels; None while the Node is unknown."""


class StoreSource:
    """Cluster mode: reads the reflectors' stores (plain dicts, docs/pitfalls.md 10)."""

    def __init__(self, *, templates_store: Callable[[], dict], node_store: Callable[[], dict],
                 synced: Callable[[], bool],
                 guard: Optional[Callable[[dict], dict]] = None) -> None:
        """`guard`: the template objects a pass may act on, from the store's (crd_guard.py:
        a CRD deletion does not read as the user deleting every template)."""
        self._templates_store = templates_store
        self._node_store = node_store
        self._synced = synced
        self._guard = guard or (lambda objects: objects)

    def synced(self) -> bool:
        return self._synced()

    def templates(self) -> list[Template]:
        return [template_from_object(obj)
                for obj in self._guard(self._templates_store()).values()]

    def node_labels(self) -> Optional[dict[str, str]]:
        nodes = list(self._node_store().values())
        if not nodes:
            return None
        labels = (nodes[0].get("metadata") or {}).get("labels") or {}
        return {str(k): str(v) for k, v in labels.items()}


ALLOW_EMPTY_FLAG = "--allow-empty-templates"


class TemplateSourceError(UsageError):
    """The templates cannot be read as a whole (a missing directory, a file that does not
    parse, two files naming one template, metadata the API server would refuse). Nothing may be
    applied or undone from such a read: a typo must not look like "no templates"."""


class DirectorySource:
    """Local mode: every HostNetworkTemplate in the YAML files of a directory (or one file).

    Reloaded when a file changes (mtime/size polled by `changed()`). A read that fails as a
    whole raises TemplateSourceError at start-up (the agent refuses to start) and, later, keeps
    the last good templates (logged as an error) until the files are fixed. Metadata is
    checked by the cluster's own rule (`metadata_problems`); a spec that does not validate is
    an Invalid template, exactly as it is in cluster mode.
    The generation of a template counts its content changes, as the API server's would.
    A read that finds no template at all is refused too unless `allow_empty`: an empty or
    unmounted directory is far more often a mistake than a wish to undo everything.
    """

    def __init__(self, path: str, labels: dict[str, str], *, allow_empty: bool = False) -> None:
        self._path = Path(path)
        self._labels = dict(labels)
        self._allow_empty = allow_empty
        self._lock = threading.Lock()
        self._fingerprint: Optional[tuple] = None
        self._templates: list[Template] = []
        self._generations: dict[str, tuple[int, str]] = {}
        self.error: Optional[TemplateSourceError] = None  # the last failed reload, if any
        self.reload()

    def _files(self) -> list[Path]:
        """The template files; raises TemplateSourceError when the path cannot be listed."""
        try:
            if self._path.is_file():
                return [self._path]
            names = os.listdir(self._path)
        except OSError as exc:
            raise TemplateSourceError([f"{self._path}: {exc.strerror or exc}"]) from None
        return sorted(self._path / name for name in names
                      if Path(name).suffix in (".yaml", ".yml", ".json"))

    def _fingerprint_now(self) -> tuple:
        out = []
        try:
            files = self._files()
        except TemplateSourceError as exc:
            return ("error", str(exc))
        for file in files:
            try:
                st = file.stat()
                out.append((str(file), st.st_mtime_ns, st.st_size))
            except OSError:
                continue
        return tuple(out)

    def changed(self) -> bool:
        """Reload if any file changed; True when the templates did (a failed reload keeps the
        last good ones and returns False)."""
        if self._fingerprint_now() == self._fingerprint:
            return False
        try:
            self.reload()
        except TemplateSourceError as exc:
            log.error("templates not reloaded, the last good ones stay applied: %s", exc)
            return False
        return True

    def reload(self) -> None:
        """Read every file; all or nothing (raises TemplateSourceError, changing nothing)."""
        fingerprint = self._fingerprint_now()
        try:
            docs = self._read_all()
        except TemplateSourceError as exc:
            self.error, self._fingerprint = exc, fingerprint
            raise
        templates: list[Template] = []
        generations = dict(self._generations)
        for doc in docs:
            template = template_from_object(doc)
            text = yaml.safe_dump(doc.get("spec"), sort_keys=True)
            gen, old = generations.get(template.name, (0, None))
            if old != text:
                gen += 1
                generations[template.name] = (gen, text)
            template.generation = gen
            templates.append(template)
        with self._lock:
            self._templates = templates
            self._generations = generations
            self._fingerprint = fingerprint
            self.error = None
        log.info("templates loaded", extra={"count": len(templates), "path": str(self._path)})

    def _read_all(self) -> list[dict]:
        """Every HostNetworkTemplate document, checked as the API server would check it before
        storing it; every problem of every file, each naming its file."""
        problems: list[str] = []
        found: list[dict] = []
        where: dict[str, str] = {}
        for file in self._files():
            try:
                docs = load_yaml_documents(read_bounded(file))
            except OSError as exc:
                problems.append(f"{file}: {exc.strerror or exc}")
                continue
            except (yaml.YAMLError, ValueError) as exc:
                problems.append(f"{file}: {yaml_error_text(exc)}")
                continue
            for index, doc in enumerate(docs):
                label = f"{file} (document {index + 1})" if len(docs) > 1 else str(file)
                if not isinstance(doc, dict):
                    problems.append(f"{label}: not an object (a YAML map with kind, "
                                    "apiVersion, metadata and spec)")
                    continue
                if doc.get("kind") != KIND:
                    continue  # another kind of object in the same file (kubectl apply -f)
                if doc.get("apiVersion") != API_VERSION:
                    problems.append(f"{label}: apiVersion: must be {API_VERSION}, "
                                    f"not {doc.get('apiVersion')!r}")
                    continue
                meta = metadata_problems(doc)
                if meta:
                    problems.extend(f"{label}: {problem}" for problem in meta)
                    continue
                name = doc["metadata"]["name"]
                if name in where:
                    problems.append(f"{label}: template {name!r} is also defined in "
                                    f"{where[name]}; a name may be used once")
                    continue
                where[name] = label
                found.append(doc)
        if problems:
            raise TemplateSourceError(problems)
        if not found and not self._allow_empty:
            raise TemplateSourceError([
                f"{self._path}: no HostNetworkTemplate found; nothing is undone (an empty or "
                f"unmounted directory is taken for a mistake): to undo everything this agent "
                f"applied, pass {ALLOW_EMPTY_FLAG}"])
        return found

    def synced(self) -> bool:
        return True

    def templates(self) -> list[Template]:
        with self._lock:
            return list(self._templates)

    def node_labels(self) -> Optional[dict[str, str]]:
        return dict(self._labels)


# The API server's limit on a request body (MaxRequestBodyBytes, 3 MB): a template file larger
# than that could never have been created in a cluster.
MAX_FILE_BYTES = 3 * 1024 * 1024


def read_bounded(file: Path, max_bytes: int = MAX_FILE_BYTES) -> str:
    """A file's text, refused (ValueError) above `max_bytes` rather than read whole."""
    with open(file, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"larger than {max_bytes} bytes, the API server's limit for an object")
    return data.decode("utf-8")


def yaml_error_text(exc: Exception) -> str:
    """One line: 'line L, column C: problem' (PyYAML's own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"{context}: {problem}" if context else problem
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {text}"
    return " ".join(str(text).split())


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


def _refuse_aliases(self, parent, index):
    """Anchors and aliases are refused: a few KB of nested aliases expand to gigabytes (the
    "billion laughs"), and no template needs them."""
    if self.check_event(yaml.AliasEvent):
        event = self.peek_event()
        raise yaml.composer.ComposerError(
            None, None, f"YAML aliases (*{event.anchor}) are not accepted in templates; "
            "write the value out", event.start_mark)
    return yaml.SafeLoader.compose_node(self, parent, index)


_Loader.compose_node = _refuse_aliases


def load_yaml_documents(text: str) -> list:
    """All non-empty YAML documents in `text`, read as kubectl would (no base-60 numbers);
    aliases refused."""
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
