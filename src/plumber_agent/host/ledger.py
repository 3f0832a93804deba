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
                "since": ISO time of the first claim, "value": what we last set,
                "pending": true while the change may or may not have happened (absent = false)}.

Write-ahead intents (why: a SIGKILL between a host change and its ledger write would leave a
change no record owns, never undone, and a VLAN/bridge/address we created would then count as
pre-existing forever). Before a creating/changing action the executor calls `intend()`: when no
record exists yet it writes one with the prior, the created flag and the value about to be set,
marked `pending: true`, and fsyncs it. After the change `claim()` confirms it (pending removed,
value recorded). A failure that certainly left the host unchanged `abandon()`s the fresh intent;
a failure that may have changed it (a timeout, a multi-step driver call, fewer VFs enabled)
keeps it. An existing record already owns the object (the first prior and created flag are kept
forever), so `intend()` writes nothing for it: at most one extra fsync'd write per action.

A pending record means "this change may have happened". The planner reads it so that BOTH
outcomes are safe (undo when it happened, forget when it did not) and never deletes what the
host shows is not ours. Per key kind (models/keys.py; the cleanup functions in planner/):
- vlan (created): delete only if a VLAN with that name exists AND has the parent and VLAN id we
  were creating (`value`); a missing link, another kind, another id or parent is not ours ->
  forget. While still wanted, a same-named link that does not match is left alone (a note), not
  deleted as drift.
- addr created=True (add_address): it was absent when planned; present -> we added it ->
  delete; absent -> forget. addr created=False (delete_address of a pre-existing address, prior
  = the address): present -> the delete never happened -> forget; absent -> add it back.
- route created=True: delete only if a main-table route with that (family, dst, metric) exists
  and has the gateway (and dev, when we set one) we were adding, else forget. created=False
  (replace): equal to the prior -> forget, else put the prior back.
- bridge / port created=True: delete only if present AND tagged external_ids:plumber-managed
  (the driver tags in the same OVS transaction that creates them); untagged -> not ours ->
  forget. created=False: restore the prior settings, or forget when they are already there.
- mtu, numvfs, vfdriver (always created=False, prior = the value found): equal to the prior ->
  forget (the change did not happen, or was undone), else restore the prior.
The one case no host fact can settle: a crash before the change, and then someone else creates
exactly the object we were creating (same address, same VLAN) before cleanup. That is the same
race as someone creating it between our plan and our write, and we treat it as ours.
A record file without `pending` (written before intents existed) reads as confirmed.
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
from plumber_agent.models.keys import parse_key

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
            with os.fdopen(os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW),
                           "rb") as f:  # a planted symbolic link is ELOOP, never followed
                raw = f.read()
        except FileNotFoundError:
            return {}
        try:
            doc = json.loads(raw.decode("utf-8"))
            records = doc["records"]
            if doc.get("version") != FORMAT_VERSION or not isinstance(records, dict) or not all(
                    isinstance(k, str) and isinstance(r, dict) and isinstance(r.get("created"), bool)
                    and isinstance(r.get("pending", False), bool)
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
            try:
                parsed = parse_key(key)
            except ValueError:
                continue  # unreadable: the planner reports it
            if parsed is not None and parsed.ifname:
                out.add(parsed.ifname)
        return out

    def get(self, key: str) -> Optional[dict]:
        rec = self._records.get(key)
        return copy.deepcopy(rec) if rec is not None else None

    def pending_keys(self) -> list[str]:
        """Keys whose change may or may not have happened (an intent never confirmed)."""
        return sorted(k for k, r in self._records.items() if r.get("pending"))

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    # -- locking ------------------------------------------------------------------------------

    def acquire(self, blocking: bool = False) -> bool:
        """Take the node's agent lock; False if another process (or Ledger) holds it."""
        if self._lock_fd is not None:
            return True
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
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

    def intend(self, key: str, *, prior: Any, created: bool, templates: list[str],
               value: Any = None) -> bool:
        """Write-ahead: record, BEFORE the host change, that we are about to create/change
        `key` (marked pending, fsync'd). True when this wrote a fresh record (so a failure that
        left the host unchanged may `abandon` it); False when a record already owns `key`
        (nothing written: its first prior and created flag stay as they are). A PENDING record
        whose prior/created differ is rewritten: the planner found its change never happened
        and passes what the host has now (still pending; not fresh)."""
        self._require_lock()
        rec = self._records.get(key)
        if rec is not None:
            if rec.get("pending") and (rec.get("prior") != prior
                                       or rec.get("created") != bool(created)):
                new = dict(self._records)
                new[key] = dict(rec, prior=copy.deepcopy(prior), created=bool(created),
                                value=copy.deepcopy(value))
                self._write(new)
                self._records = new
            return False
        new = dict(self._records)
        new[key] = {"prior": copy.deepcopy(prior), "created": bool(created),
                    "templates": sorted(set(templates)), "since": self._now(),
                    "value": copy.deepcopy(value), "pending": True}
        self._write(new)
        self._records = new
        return True

    def claim(self, key: str, *, prior: Any, created: bool, templates: list[str],
              value: Any = None) -> None:
        """Record (confirm) that we created/changed `key`. The FIRST claim's (or intent's) prior
        and created flag are kept forever (until release); later claims update templates and
        value only, and a pending intent becomes confirmed."""
        self._require_lock()
        rec = self._records.get(key)
        if rec is None:
            rec = {"prior": copy.deepcopy(prior), "created": bool(created),
                   "templates": sorted(set(templates)), "since": self._now(),
                   "value": copy.deepcopy(value)}
        else:
            rec = dict(rec, templates=sorted(set(templates)) or rec.get("templates", []),
                       value=copy.deepcopy(value))
            rec.pop("pending", None)
        new = dict(self._records)
        new[key] = rec
        self._write(new)
        self._records = new

    confirm = claim

    def abandon(self, key: str) -> bool:
        """Drop a PENDING record (its change certainly did not happen). A confirmed record is
        never touched. True when something was dropped."""
        self._require_lock()
        rec = self._records.get(key)
        if rec is None or not rec.get("pending"):
            return False
        new = dict(self._records)
        del new[key]
        self._write(new)
        self._records = new
        return True

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
