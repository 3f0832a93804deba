"""The on-host ownership ledger: what the agent created or changed, and what it found before.

Why on the host (a hostPath state dir) and not in the API: ownership is a fact about this
node's kernel state; it must survive agent restarts and API outages, and only this node's agent
may ever undo it (sriov-network-operator's pkg/host/store does the same).

On disk (format version 2): a snapshot `ledger.json` ({"version": 2, "seq": N, "records":
{...}}, the live records after the N-th change) and a journal `ledger.journal`, one line per
change after it: `<crc32 of the JSON, 8 hex> <JSON>\n`, the JSON being {"seq": n, "key": k,
"rec": record} or, for a forgotten key, "rec": null. Reading = snapshot + replay of the lines
with seq > N, in order (n = N+1, N+2, ...). Why a journal: rewriting the whole file for each
record made n records cost O(n^2) (2,000 records: 98 s); an appended line costs O(1).

Safety rules:
- A record is appended as one line by one write(2) and kept in memory only once that returned:
  a killed agent (SIGKILL, OOM) loses nothing written, because the page cache is the kernel's.
- fsync (for a power loss or a kernel crash): a WRITE-AHEAD record -- an intent, a pending
  intent rewritten, a claim of a key with no record -- is fsync'd before its method returns, so
  no host change is ever made before the record that owns it is on disk. A FOLLOW-UP record --
  a confirm or update of an existing record, an abandon, a release -- is appended and made
  durable by the next fsync: the next write-ahead record, the next `records()` (what each plan
  reads, so at the latest at the end of the executor's pass) or closing. Losing one is what a
  crash a moment earlier, between the host change and its confirm/release, already gives today:
  a pending record stays pending (safe either way, below), a released one is still listed for an
  object already undone (cleanup finds it gone, or not ours, and forgets it).
- `batch()` groups records: the block's records are fsync'd once, at its end, all or nothing.
  For a caller that changes nothing on the host under them before the block ends: the executor
  writes the intents of up to 64 upcoming actions in one batch before the first of them runs
  (host/executor.py INTENT_GROUP_ACTIONS), so they cost one fsync, not 64 (bench B11).
- Whatever the crash leaves is a PREFIX of the changes: a torn or zero-filled last line (a kill
  or power loss mid-append) fails its checksum or lacks its newline and is dropped (it belongs to
  a call that never returned); it is cut off when the lock is next taken.
- Compaction keeps the journal short: when it exceeds COMPACT_RATIO times the last snapshot (and
  COMPACT_MIN_BYTES), and when the lock is released, the live records are written as a new
  snapshot (statefile.write_atomic: temporary file, fsync, rename, fsync of the directory), then
  the journal is truncated. A crash in between leaves the new snapshot and the old journal,
  whose lines it already contains (seq <= N): they are skipped.
- A corrupt ledger -- a snapshot that is not one, a bad line FOLLOWED by good ones (not a torn
  tail; after a power loss that can also be lines never fsync'd, written back out of order),
  a gap in the sequence -- is moved aside (`ledger.json.corrupt-<ts>`, and the journal
  beside it), logged, and the ledger starts EMPTY: with no records the planner deletes nothing
  (it only undoes what it recorded), so corruption can at worst leave our changes in place,
  never remove something not ours. `recovered_from_corruption` says so, for the status.
- Migration: a version 1 `ledger.json` (one file rewritten per record, before the journal) is
  read as a snapshot at seq 0 and rewritten as version 2 when the lock is taken; a journal found
  beside it predates it (a downgrade wrote the v1 file later) and is set aside. A version 1
  agent reading a version 2 ledger finds it corrupt and starts empty: it undoes nothing.
- A lock file (fcntl.flock on `ledger.lock`) keeps a second agent for the same node from acting:
  `acquire(blocking=False)` returns False when another holds it. Mutations need the lock. A
  reader without it (`plan`) never writes but a corrupt ledger's move aside, and re-reads when a
  compaction replaced the snapshot under it. Files are created 0600 in a 0700 directory.

Record: key -> {"prior": value found before, "created": bool, "templates": [...],
                "since": ISO time of the first claim, "value": what we last set,
                "pending": true while the change may or may not have happened (absent = false),
                "link": {"pciAddress", "permMac"} of the interface an mtu/addr record is about,
                when it has a stable identity (absent otherwise): planner/renames.py re-keys
                the record when the kernel renames that interface}.

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
race as someone creating it between our plan and our write, and we treat it as ours. (With
intents written a group ahead, "before the change" covers the group's actions not started yet.)
A record file without `pending` (written before intents existed) reads as confirmed.
"""
from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import fcntl
import json
import logging
import os
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from plumber_agent.errors import HostError
from plumber_agent.models.keys import parse_key
from plumber_agent.statefile import TMP_SUFFIX, fsync_dir, tmp_prefix, write_atomic

LEDGER_FILE = "ledger.json"
JOURNAL_FILE = "ledger.journal"
LOCK_FILE = "ledger.lock"
FORMAT_VERSION = 2
LEGACY_VERSION = 1  # the whole-file ledger, rewritten per record; migrated on first lock
FILE_MODE = 0o600
DIR_MODE = 0o700
COMPACT_RATIO = 2
"""Compact when the journal exceeds this many times the last snapshot (the live records when
they were last written whole): a compaction writes at most the snapshot plus the journal, after
at least twice the snapshot's bytes of appends, so it costs O(1) per record amortised, and a
start-up replays at most this many times the snapshot."""
COMPACT_MIN_BYTES = 256 * 1024
"""Below this a journal is never compacted during a run (a few thousand records replay in
milliseconds); closing compacts any non-empty journal."""
READ_ATTEMPTS = 5
"""A reader without the lock re-reads when the snapshot changed while it read (a compaction)."""

logger = logging.getLogger(__name__)


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _with_link(rec: dict, link: Optional[dict]) -> dict:
    """`rec` with the stable identity of its interface (`link`: PCI address, permanent MAC),
    when it has one, so the record can follow a rename (planner/renames.py)."""
    if link:
        rec["link"] = dict(link)
    return rec


class LedgerCorrupt(ValueError):
    """The ledger cannot be read as written by us; the message names the file and the spot."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path


def _valid_record(key: Any, rec: Any) -> bool:
    return (isinstance(key, str) and isinstance(rec, dict) and isinstance(rec.get("created"), bool)
            and isinstance(rec.get("pending", False), bool))


def frame(change: dict) -> bytes:
    """One journal line: the checksum lets a reader tell a torn or zero-filled line from ours."""
    payload = json.dumps(change, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def _unframe(line: bytes) -> Optional[dict]:
    """The change a complete line holds, or None when it is not one of ours (torn, zeros)."""
    if not line.endswith(b"\n") or len(line) < 11 or line[8:9] != b" ":
        return None
    payload = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(payload):
            return None
        change = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return change if isinstance(change, dict) else None


@dataclass
class Parsed:
    """What a snapshot and a journal say, and what a lock holder must repair."""

    records: dict[str, dict]
    seq: int = 0
    legacy: bool = False  # a version 1 snapshot: rewrite it as version 2
    snapshot_bytes: int = 0  # the live records' size when they were last written whole
    journal_good_bytes: int = 0  # where the journal's valid prefix ends
    torn_bytes: int = 0  # bytes after it (a torn last line), dropped
    stale_journal: bool = False  # a journal beside a version 1 snapshot: set it aside


def parse(snapshot: Optional[bytes], journal: Optional[bytes], *, snapshot_path: str = LEDGER_FILE,
          journal_path: str = JOURNAL_FILE) -> Parsed:
    """Snapshot + replay. Raises LedgerCorrupt (naming the file and line) for anything but a
    torn tail; a missing snapshot is an empty one at seq 0."""
    out = Parsed(records={})
    if snapshot is not None:
        try:
            doc = json.loads(snapshot.decode("utf-8"))
            records = doc["records"]
            version = doc.get("version")
            seq = doc.get("seq", 0) if version == FORMAT_VERSION else 0
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise LedgerCorrupt(snapshot_path, f"not a ledger snapshot ({exc})") from None
        if version not in (FORMAT_VERSION, LEGACY_VERSION):
            raise LedgerCorrupt(snapshot_path, f"unknown format version {version!r}")
        if not isinstance(records, dict) or not all(
                _valid_record(k, r) for k, r in records.items()):
            raise LedgerCorrupt(snapshot_path, "unexpected structure")
        if not _is_seq(seq):
            raise LedgerCorrupt(snapshot_path, f"bad seq {seq!r}")
        out.records, out.seq, out.legacy = records, seq, version == LEGACY_VERSION
        out.snapshot_bytes = len(snapshot)
    if not journal:
        return out
    if out.legacy:
        out.stale_journal = True  # older than the version 1 file beside it: not replayed
        return out
    pos, lineno, bad_at, last_seq = 0, 0, None, None
    while pos < len(journal):
        end = journal.find(b"\n", pos)
        end = len(journal) if end < 0 else end + 1
        line, lineno = journal[pos:end], lineno + 1
        change = _unframe(line)
        if change is None:
            if bad_at is None:
                bad_at = (pos, lineno)
            pos = end
            continue
        if bad_at is not None:
            raise LedgerCorrupt(journal_path, f"line {bad_at[1]} is damaged and line {lineno} "
                                "after it is intact (not a torn last write)")
        last_seq = _replay(out, change, last_seq=last_seq, where=(journal_path, lineno))
        pos = end
        out.journal_good_bytes = pos
    out.torn_bytes = len(journal) - out.journal_good_bytes
    return out


def _is_seq(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _replay(out: Parsed, change: dict, *, last_seq: Optional[int],
            where: tuple[str, int]) -> int:
    """Apply one change over the snapshot; returns its seq. Lines are numbered one after
    another; those up to the snapshot's seq are already in it (a crash between a compaction's
    snapshot and its truncation) and skipped."""
    path, lineno = where
    seq, key, rec = change.get("seq"), change.get("key"), change.get("rec")
    if not _is_seq(seq) or not isinstance(key, str) or not (rec is None
                                                             or _valid_record(key, rec)):
        raise LedgerCorrupt(path, f"line {lineno}: unexpected structure")
    if (last_seq is not None and seq != last_seq + 1) or seq > out.seq + 1:
        raise LedgerCorrupt(path, f"line {lineno}: change {seq} follows "
                                  f"{out.seq if last_seq is None else last_seq} (a gap)")
    if seq <= out.seq:
        return seq
    out.seq = seq
    if rec is None:
        out.records.pop(key, None)
    else:
        out.records[key] = rec
    return seq


def _read(path: str) -> Optional[bytes]:
    """The file's bytes, None when absent; a planted symbolic link is ELOOP, never followed."""
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _identity(path: str) -> Optional[tuple]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def read_records(state_dir: str) -> dict[str, dict]:
    """The records a state directory holds (snapshot + journal), read only: for tests and tools.
    Raises LedgerCorrupt."""
    state_dir = os.fspath(state_dir)
    snap_path, journal_path = (os.path.join(state_dir, LEDGER_FILE),
                               os.path.join(state_dir, JOURNAL_FILE))
    return parse(_read(snap_path), _read(journal_path), snapshot_path=snap_path,
                 journal_path=journal_path).records


class Ledger:
    def __init__(self, state_dir: str, *, log: logging.Logger = logger,
                 now: Callable[[], str] = _utc_now, compact_ratio: float = COMPACT_RATIO,
                 compact_min_bytes: int = COMPACT_MIN_BYTES):
        self.state_dir = os.fspath(state_dir)
        self.path = os.path.join(self.state_dir, LEDGER_FILE)
        self.journal_path = os.path.join(self.state_dir, JOURNAL_FILE)
        self.lock_path = os.path.join(self.state_dir, LOCK_FILE)
        self.log = log
        self._now = now
        self.compact_ratio = compact_ratio
        self.compact_min_bytes = compact_min_bytes
        self._lock_fd: Optional[int] = None
        self._journal_fd: Optional[int] = None
        self._unsynced = False  # follow-up records appended since the last fsync
        self._batch: Optional[_Batch] = None
        self._broken = False  # a failed write could not be cut off: no more writes
        self.recovered_from_corruption = False
        self.corrupt_copy: Optional[str] = None
        self.compactions = 0
        os.makedirs(self.state_dir, mode=DIR_MODE, exist_ok=True)
        self._state = self._load()

    # -- reading ------------------------------------------------------------------------------

    @property
    def _records(self) -> dict[str, dict]:
        return self._state.records

    def _load(self) -> Parsed:
        for _ in range(READ_ATTEMPTS):
            before = _identity(self.path)
            snapshot, journal = _read(self.path), _read(self.journal_path)
            if _identity(self.path) == before:
                break  # no compaction replaced the snapshot while we read the journal
        try:
            parsed = parse(snapshot, journal, snapshot_path=self.path,
                           journal_path=self.journal_path)
        except LedgerCorrupt as exc:
            self._set_aside(exc)
            return Parsed(records={})
        if parsed.torn_bytes:
            self.log.warning("ledger %s: dropped a torn last record (%d bytes): its call never "
                             "returned", self.journal_path, parsed.torn_bytes)
        return parsed

    def _set_aside(self, exc: LedgerCorrupt) -> None:
        stamp = self._now().replace(":", "")
        suffix, n = f".corrupt-{stamp}", 1
        while any(os.path.exists(p + suffix) for p in (self.path, self.journal_path)):
            suffix, n = f".corrupt-{stamp}-{n}", n + 1
        moved = []
        for path in (self.path, self.journal_path):
            if os.path.exists(path):
                os.replace(path, path + suffix)
                moved.append(path + suffix)
        fsync_dir(self.state_dir)
        self.log.error("ledger %s is corrupt (%s); moved aside to %s; starting empty, so "
                       "nothing recorded before will be undone", exc.path, exc,
                       ", ".join(moved))
        self.recovered_from_corruption = True
        self.corrupt_copy = exc.path + suffix

    def records(self) -> dict[str, dict]:
        """A deep copy (the planner gets data, never the ledger's own state). Every plan reads
        this, so the follow-up records of the pass before are made durable first."""
        self.sync()
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
        """Take the node's agent lock; False if another process (or Ledger) holds it. Holding
        it, re-read the ledger (another agent may have written since we opened it) and repair
        what a crash left: a torn tail cut off, a version 1 file migrated, temporary files of a
        killed compaction removed."""
        if self._lock_fd is not None:
            return True
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                     FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._lock_fd = fd
            self._open_journal()
        except BaseException:
            self._close_journal()
            self._lock_fd = None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
        return True

    def _open_journal(self) -> None:
        self._state = self._load()
        self._remove_stale_temporaries()
        if self._state.stale_journal:
            aside = f"{self.journal_path}.stale-{self._now().replace(':', '')}"
            os.replace(self.journal_path, aside)
            fsync_dir(self.state_dir)
            self.log.warning("ledger: %s predates the version %d file %s beside it (the agent "
                             "was downgraded and upgraded again); moved aside to %s, not "
                             "replayed", self.journal_path, LEGACY_VERSION, self.path, aside)
        created = not os.path.exists(self.journal_path)
        self._journal_fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                                   | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        if created:
            fsync_dir(self.state_dir)
        elif self._state.torn_bytes:
            os.ftruncate(self._journal_fd, self._state.journal_good_bytes)
            os.fsync(self._journal_fd)
            self._state.torn_bytes = 0
        if self._state.legacy:
            self._compact()
            self.log.info("ledger %s migrated from format version %d to %d (%d records)",
                          self.path, LEGACY_VERSION, FORMAT_VERSION, len(self._records))

    def _remove_stale_temporaries(self) -> None:
        prefix = os.path.basename(tmp_prefix(self.path))
        for name in os.listdir(self.state_dir):
            if name.startswith(prefix) and name.endswith(TMP_SUFFIX):
                os.unlink(os.path.join(self.state_dir, name))  # a killed compaction's

    def _close_journal(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None

    @property
    def held(self) -> bool:
        return self._lock_fd is not None

    def release_lock(self) -> None:
        """Compact (the next start reads one snapshot), then let another agent act."""
        if self._lock_fd is None:
            return
        try:
            if self._state.journal_good_bytes:
                self._compact()
            else:
                self.sync()
        finally:
            self._close_journal()
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
               value: Any = None, link: Optional[dict] = None) -> bool:
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
                self._append(key, dict(rec, prior=copy.deepcopy(prior), created=bool(created),
                                       value=copy.deepcopy(value)), durable=True)
            return False
        self._append(key, _with_link({"prior": copy.deepcopy(prior), "created": bool(created),
                                      "templates": sorted(set(templates)), "since": self._now(),
                                      "value": copy.deepcopy(value), "pending": True}, link),
                     durable=True)
        return True

    def claim(self, key: str, *, prior: Any, created: bool, templates: list[str],
              value: Any = None, link: Optional[dict] = None) -> None:
        """Record (confirm) that we created/changed `key`. The FIRST claim's (or intent's) prior
        and created flag are kept forever (until release); later claims update templates and
        value only, and a pending intent becomes confirmed. A claim of a key with no record is
        fsync'd at once (nothing else owns that change); a confirm is a follow-up."""
        self._require_lock()
        rec = self._records.get(key)
        if rec is None:
            self._append(key, _with_link({"prior": copy.deepcopy(prior),
                                          "created": bool(created),
                                          "templates": sorted(set(templates)),
                                          "since": self._now(), "value": copy.deepcopy(value)},
                                         link), durable=True)
            return
        rec = dict(rec, templates=sorted(set(templates)) or rec.get("templates", []),
                   value=copy.deepcopy(value))
        if link and not rec.get("link"):
            rec["link"] = dict(link)
        rec.pop("pending", None)
        self._append(key, rec, durable=False)

    def abandon(self, key: str) -> bool:
        """Drop a PENDING record (its change certainly did not happen). A confirmed record is
        never touched. True when something was dropped."""
        self._require_lock()
        rec = self._records.get(key)
        if rec is None or not rec.get("pending"):
            return False
        self._append(key, None, durable=False)
        return True

    def move(self, key: str, to: str, *, record: Optional[dict] = None, drop: bool = True) -> None:
        """Re-key a record (its NIC was renamed: planner/renames.py): `to` gets `record` (the
        planner's copy of `key`'s record: when two NICs swap names each key gets the other's
        record, whatever order the moves run in) or, without one, `key`'s record unless `to`
        is owned already; then `key` is dropped unless `drop` is False (another record moves
        there). A crash in between leaves both; the next plan forgets the stale one."""
        self._require_lock()
        if record is None:
            record = self._records.get(key)
            if record is None or to in self._records:
                record = None
        if record is not None:
            self._append(to, copy.deepcopy(record), durable=True)
        if drop and key in self._records:
            self._append(key, None, durable=False)

    def release(self, key: str) -> None:
        """Forget `key` (after it was undone). Absent is fine."""
        self._require_lock()
        if key in self._records:
            self._append(key, None, durable=False)

    def sync(self) -> None:
        """Make every record appended so far durable (one fsync for all follow-ups)."""
        if self._unsynced and self._journal_fd is not None and self._batch is None:
            os.fsync(self._journal_fd)
            self._unsynced = False

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Records written inside the block are fsync'd ONCE, when it ends, and kept only if
        that succeeds: all or nothing. For a caller that makes no host change guarded by one of
        them before the block ends -- the executor writing a pass's intents ahead of its first
        host change, a benchmark -- so N write-ahead records cost one fsync, not N. If the
        block raises, or the fsync fails, they are cut off the journal and forgotten again.
        Compaction waits for the end of the block. A batch inside a batch joins it."""
        if self._batch is not None:
            yield
            return
        self._require_lock()
        state = self._state
        self._batch = _Batch(start=state.journal_good_bytes, seq=state.seq)
        try:
            yield
            if self._batch.undo:
                os.fsync(self._journal_fd)
        except BaseException:
            self._roll_back(self._batch)
            raise
        finally:
            self._batch = None
        self._unsynced = False
        self._maybe_compact()

    def _roll_back(self, batch: "_Batch") -> None:
        state = self._state
        self._cut(batch.start)
        for key, old in reversed(batch.undo):
            if old is None:
                state.records.pop(key, None)
            else:
                state.records[key] = old
        state.seq, state.journal_good_bytes = batch.seq, batch.start

    def _append(self, key: str, rec: Optional[dict], *, durable: bool) -> None:
        """One line, one write(2); memory changes only once it is written (and, for a durable
        record outside a batch, fsync'd). A failure cuts the line off again, so disk and
        memory agree."""
        if self._broken:
            raise HostError(f"ledger {self.journal_path}: a failed write could not be cut off; "
                            "refusing to record more until the agent restarts (and re-reads "
                            "it)")
        state = self._state
        line = frame({"seq": state.seq + 1, "key": key, "rec": rec})
        start = state.journal_good_bytes
        try:
            _write_all(self._journal_fd, line)
            if durable and self._batch is None:
                os.fsync(self._journal_fd)  # all follow-ups before it too
        except BaseException:
            self._cut(start)
            raise
        if self._batch is not None:
            self._batch.undo.append((key, state.records.get(key)))
        else:
            self._unsynced = not durable
        state.seq += 1
        state.journal_good_bytes += len(line)
        if rec is None:
            state.records.pop(key, None)
        else:
            state.records[key] = rec
        if self._batch is None:
            self._maybe_compact()

    def _cut(self, size: int) -> None:
        """Cut the journal back to `size` bytes after a failed write."""
        try:
            os.ftruncate(self._journal_fd, size)
        except OSError as exc:
            self._broken = True  # the next line would repeat a seq the file already has
            self.log.error("ledger %s: could not cut off a failed write (%s)",
                           self.journal_path, exc)

    def _maybe_compact(self) -> None:
        state = self._state
        if state.journal_good_bytes > max(self.compact_min_bytes,
                                          self.compact_ratio * state.snapshot_bytes):
            self._compact()

    def _compact(self) -> None:
        """Snapshot the live records (atomically, fsync'd), then empty the journal."""
        state = self._state
        # Compact JSON: with `indent` the json module falls back to its pure-Python encoder,
        # ten times slower on 10,000 records.
        data = json.dumps({"version": FORMAT_VERSION, "seq": state.seq, "records": state.records},
                          sort_keys=True, separators=(",", ":")).encode("utf-8")
        write_atomic(self.path, data, mode=FILE_MODE)
        state.snapshot_bytes = len(data)
        _truncate(self._journal_fd)
        state.journal_good_bytes = 0
        state.legacy = False
        self._unsynced = False
        self.compactions += 1


@dataclass
class _Batch:
    start: int  # the journal's size when the batch began
    seq: int
    undo: list = field(default_factory=list)  # (key, record before or None), in order


def _write_all(fd: int, data: bytes) -> None:
    """The append seam (tests kill the process here, mid-line)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _truncate(fd: int) -> None:
    """Empty the journal once the snapshot holds everything (the fault tests kill before it)."""
    os.ftruncate(fd, 0)
    os.fsync(fd)
