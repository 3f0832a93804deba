"""The on-host ownership ledger: what the agent created or changed, and what it found before.

Why on the host (a hostPath state dir) and not in the API: ownership is a fact about this
node's kernel state; it must survive agent restarts and API outages, and only this node's agent
may ever undo it (sriov-network-operator's pkg/host/store does the same).

Safety rules:
- Every write is atomic: temp file in the same directory, fsync, rename, fsync of the directory.
  A crash leaves either the old or the new file, never a mix.
- A torn or corrupt file is moved aside (`ledger.json.corrupt-<ts>`), logged, and the ledger
  starts EMPTY: with no records the planner deletes nothing (it only undoes what it recorded),
  so corruption can at worst leave our changes in place, never remove something not ours.
  `recovered_from_corruption` says so, for the status.
- A lock file (fcntl.flock on `ledger.lock`) keeps a second agent for the same node from acting:
  `acquire(blocking=False)` returns False when another holds it. Mutations need the lock.

Record: key -> {"prior": value found before, "created": bool, "templates": [...],
                "since": ISO time of the first claim, "value": what we last set}.
"""
from __future__ import annotations

import copy
import datetime as _dt
import fcntl
import json
import logging
import os
import tempfile
from typing import Any, Callable, Optional

from plumber_agent.errors import HostError

LEDGER_FILE = "ledger.json"
LOCK_FILE = "ledger.lock"
FORMAT_VERSION = 1

logger = logging.getLogger(__name__)


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Ledger:
    def __init__(self, state_dir: str, *, log: logging.Logger = logger,
                 now: Callable[[], str] = _utc_now):
        self.state_dir = os.fspath(state_dir)
        self.path = os.path.join(self.state_dir, LEDGER_FILE)
        self.lock_path = os.path.join(self.state_dir, LOCK_FILE)
        self.log = log
        self._now = now
        self._lock_fd: Optional[int] = None
        self.recovered_from_corruption = False
        self.corrupt_copy: Optional[str] = None
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self._records: dict[str, dict] = self._load()

    # -- reading ------------------------------------------------------------------------------

    def _load(self) -> dict[str, dict]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return {}
        try:
            doc = json.loads(raw.decode("utf-8"))
            records = doc["records"]
            if doc.get("version") != FORMAT_VERSION or not isinstance(records, dict) or not all(
                    isinstance(k, str) and isinstance(r, dict) and isinstance(r.get("created"), bool)
                    for k, r in records.items()):
                raise ValueError("unexpected structure")
            return records
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            stamp = self._now().replace(":", "")
            aside = f"{self.path}.corrupt-{stamp}"
            n = 1
            while os.path.exists(aside):
                aside = f"{self.path}.corrupt-{stamp}-{n}"
                n += 1
            os.replace(self.path, aside)
            _fsync_dir(self.state_dir)
            self.log.error("ledger %s is corrupt (%s); moved aside to %s; starting empty, so "
                           "nothing recorded before will be undone", self.path, exc, aside)
            self.recovered_from_corruption = True
            self.corrupt_copy = aside
            return {}

    def records(self) -> dict[str, dict]:
        """A deep copy (the planner gets data, never the ledger's own state)."""
        return copy.deepcopy(self._records)

    def managed_ifnames(self) -> set[str]:
        """Interfaces we created or changed (VLANs, MTUs, addresses): for the status."""
        out: set[str] = set()
        for key in self._records:
            kind, _, rest = key.partition(":")
            if kind in ("vlan", "mtu"):
                out.add(rest)
            elif kind == "addr":
                out.add(rest.split(":", 1)[0])
        return out

    def get(self, key: str) -> Optional[dict]:
        rec = self._records.get(key)
        return copy.deepcopy(rec) if rec is not None else None

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    # -- locking ------------------------------------------------------------------------------

    def acquire(self, blocking: bool = False) -> bool:
        """Take the node's agent lock; False if another process (or Ledger) holds it."""
        if self._lock_fd is not None:
            return True
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return True

    @property
    def held(self) -> bool:
        return self._lock_fd is not None

    def release_lock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    close = release_lock

    # -- writing ------------------------------------------------------------------------------

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise HostError(f"ledger {self.path}: the agent lock is not held; refusing to "
                            "record changes (is another agent running for this node?)")

    def claim(self, key: str, *, prior: Any, created: bool, templates: list[str],
              value: Any = None) -> None:
        """Record that we created/changed `key`. The FIRST claim's prior and created flag are
        kept forever (until release); later claims update templates and value only."""
        self._require_lock()
        rec = self._records.get(key)
        if rec is None:
            rec = {"prior": copy.deepcopy(prior), "created": bool(created),
                   "templates": sorted(set(templates)), "since": self._now(),
                   "value": copy.deepcopy(value)}
        else:
            rec = dict(rec, templates=sorted(set(templates)) or rec.get("templates", []),
                       value=copy.deepcopy(value))
        new = dict(self._records)
        new[key] = rec
        self._write(new)
        self._records = new

    def release(self, key: str) -> None:
        """Forget `key` (after it was undone). Absent is fine."""
        self._require_lock()
        if key not in self._records:
            return
        new = dict(self._records)
        del new[key]
        self._write(new)
        self._records = new

    def _write(self, records: dict[str, dict]) -> None:
        data = json.dumps({"version": FORMAT_VERSION, "records": records}, sort_keys=True,
                          indent=1).encode("utf-8")
        fd, tmp = tempfile.mkstemp(prefix=".ledger.", suffix=".tmp", dir=self.state_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        _fsync_dir(self.state_dir)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
