"""B11: recording 500..10,000 ledger records, the journal against the whole-file ledger it replaced.

Why: the ownership ledger (host/ledger.py) used to rewrite its whole file for each record, so n
records cost O(n^2): the issue measured 500, 1,000 and 2,000 records at 3, 20 and 98 s. The
journal appends one checksummed line per record. Both are measured here in the same run, in a
state directory on a real disk (BENCH_LEDGER_DIR, default /var/tmp: fsync must cost what it
costs on a node, tmpfs would hide it):

- baseline: `WholeFileLedger` below, main's write path (f8a469b) kept only here: each claim
  copies the records and rewrites the file (temporary file, fsync, rename, fsync of the
  directory). Run at 500, 1,000 and 2,000 records while the quadratic extrapolation of the
  next size stays within BENCH_LEDGER_BASELINE_BUDGET_S (default 90 s in all).
- the journal, four ways, at 500..10,000 records:
  - "claims, each fsync'd": n claims of new keys; each is fsync'd before it returns, as every
    record of the baseline was (the like-for-like row).
  - "executor, one fsync per action": the executor's pattern before issue 19 part 6's last
    change, n/2 actions each writing an intent (fsync'd before the host change) and its confirm
    (a follow-up, synced by the next fsync), then the next plan's read.
  - "executor, intents grouped": the executor's pattern now (host/executor.py
    INTENT_GROUP_ACTIONS): the intents of the next 64 actions in one batch (one fsync) before
    the first of them runs, each action's confirm a follow-up, then the next plan's read.
  - "one pass, batched": the same n records with the pass's intents written in one batch
    (one fsync, before the first host change), the confirms as follow-ups, the plan's read
    (one more fsync). This is the row with the issue's target: 10,000 records in <= 1 s.
  - opening a 10,000-record ledger (snapshot + replay) and closing it (a compaction).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

from common import Row, env_float, log

SIZES = (500, 1_000, 2_000, 5_000, 10_000)
BASELINE_SIZES = (500, 1_000, 2_000)
TARGET_RECORDS = 10_000
TARGET_S = 1.0
DEFAULT_DIR = "/var/tmp"


class WholeFileLedger:
    """BASELINE ONLY: the write path of main's ledger (f8a469b, before the journal), reduced to
    `claim`. Every record copies the records and rewrites the whole file atomically."""

    def __init__(self, state_dir: str):
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, "ledger.json")
        self._records: dict[str, dict] = {}

    def claim(self, key: str, *, prior, created: bool, templates: list[str], value=None) -> None:
        new = dict(self._records)
        new[key] = {"prior": prior, "created": bool(created), "templates": sorted(set(templates)),
                    "since": "2026-01-02T03:04:05Z", "value": value}
        self._write(new)
        self._records = new

    def _write(self, records: dict[str, dict]) -> None:
        data = json.dumps({"version": 1, "records": records}, sort_keys=True,
                          indent=1).encode("utf-8")
        fd, tmp = tempfile.mkstemp(prefix=".ledger.", suffix=".tmp", dir=self.state_dir)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dfd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _key(i: int) -> str:
    return f"addr:eno1:10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}/24"


def _value(i: int) -> dict:
    return {"address": _key(i).rsplit(":", 1)[1], "dev": "eno1"}


def _claims(led, n: int) -> None:
    for i in range(n):
        led.claim(_key(i), prior=None, created=True, templates=["t"], value=_value(i))


def _executor(led, n: int) -> None:
    for i in range(n // 2):
        led.intend(_key(i), prior=None, created=True, templates=["t"], value=_value(i))
        led.claim(_key(i), prior=None, created=True, templates=["t"], value=_value(i))
    led.sync()  # what the next plan's records() does, without its deep copy


def _executor_grouped(led, n: int) -> None:
    from plumber_agent.host.executor import INTENT_GROUP_ACTIONS
    actions = n // 2
    for start in range(0, actions, INTENT_GROUP_ACTIONS):
        group = range(start, min(actions, start + INTENT_GROUP_ACTIONS))
        with led.batch():
            for i in group:
                led.intend(_key(i), prior=None, created=True, templates=["t"], value=_value(i))
        for i in group:  # each host change, then its confirm
            led.claim(_key(i), prior=None, created=True, templates=["t"], value=_value(i))
    led.sync()


def _one_pass(led, n: int) -> None:
    with led.batch():
        for i in range(n // 2):
            led.intend(_key(i), prior=None, created=True, templates=["t"], value=_value(i))
    for i in range(n // 2):
        led.claim(_key(i), prior=None, created=True, templates=["t"], value=_value(i))
    led.sync()


EXECUTOR_GROUPED = "executor, intents grouped"
WAYS = [("claims, each fsync'd", _claims), ("executor, one fsync per action", _executor),
        (EXECUTOR_GROUPED, _executor_grouped), ("one pass, batched", _one_pass)]
TARGET_WAYS = ("one pass, batched", EXECUTOR_GROUPED)


def _timed_in_fresh_dir(root: str, fn) -> tuple[float, float]:
    """(wall s, CPU s of this process): on a busy machine the CPU time shows the cost apart
    from waiting for the disk and for a core."""
    state = tempfile.mkdtemp(prefix="b11-", dir=root)
    try:
        started, cpu = time.perf_counter(), time.process_time()
        fn(state)
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        shutil.rmtree(state, ignore_errors=True)


def _journal(way):
    from plumber_agent.host.ledger import Ledger

    def run(n: int, state: str) -> None:
        led = Ledger(state)
        assert led.acquire()
        try:
            way(led, n)
            assert len(led) == (n if way is _claims else n // 2)
        finally:
            led._close_journal()  # leave without the closing compaction (timed apart)
            os.close(led._lock_fd)
            led._lock_fd = None
    return run


def _open_and_close(root: str) -> tuple[float, float]:
    from plumber_agent.host.ledger import Ledger
    state = tempfile.mkdtemp(prefix="b11-", dir=root)
    try:
        _journal(_claims)(TARGET_RECORDS, state)
        started = time.perf_counter()
        led = Ledger(state)
        assert led.acquire() and len(led) == TARGET_RECORDS
        opened = time.perf_counter() - started
        started = time.perf_counter()
        led.release_lock()
        return opened, time.perf_counter() - started
    finally:
        shutil.rmtree(state, ignore_errors=True)


def run_bench() -> list[Row]:
    root = os.environ.get("BENCH_LEDGER_DIR", DEFAULT_DIR)
    budget_s = env_float("BENCH_LEDGER_BASELINE_BUDGET_S", 90.0)
    baseline: dict[int, float] = {}
    spent = 0.0
    for n in BASELINE_SIZES:
        if baseline:
            last = max(baseline)
            predicted = baseline[last] * (n / last) ** 2
            if spent + predicted > budget_s:
                log(f"B11: baseline at {n} records skipped (would take ~{predicted:.0f} s)")
                break
        baseline[n], _ = _timed_in_fresh_dir(root,
                                             lambda s, n=n: _claims(WholeFileLedger(s), n))
        spent += baseline[n]
        log(f"B11: baseline, {n} records: {baseline[n]:.2f} s")
    rows = []
    per_action: dict[int, float] = {}  # the executor's former pattern, the grouped row's baseline
    for label, way in WAYS:
        run = _journal(way)
        for n in SIZES:
            took, cpu = _timed_in_fresh_dir(root, lambda s, n=n, run=run: run(n, s))
            log(f"B11: journal, {label}, {n} records: {took:.3f} s ({cpu:.3f} s CPU)")
            target = label in TARGET_WAYS and n == TARGET_RECORDS
            if way is _executor:
                per_action[n] = took
            base, base_label = baseline.get(n), "whole-file ledger, same run"
            if way is _executor_grouped:
                base, base_label = per_action.get(n), "executor, one fsync per action, same run"
            rows.append(Row(
                id="B11", measure=f"{n:,} records, journal: {label} (CPU {cpu:.2f} s)",
                value=took, unit="s",
                baseline=base, baseline_label=base_label if base else "",
                target=f"<= {TARGET_S:g} s" if target else "",
                ok=(took <= TARGET_S) if target else None,
                note=f"CPU {cpu:.3f} s" + ("" if base else f"; baseline not run at {n:,}")))
    opened, closed = _open_and_close(root)
    rows.append(Row(id="B11", measure=f"open {TARGET_RECORDS:,} records (replay) and take the lock",
                    value=opened, unit="s", ok=None))
    rows.append(Row(id="B11", measure=f"close {TARGET_RECORDS:,} records (one compaction)",
                    value=closed, unit="s", ok=None))
    for n, took in sorted(baseline.items()):
        rows.append(Row(id="B11", measure=f"{n:,} records, baseline: whole-file ledger (main)",
                        value=took, unit="s", ok=None))
    return rows


if __name__ == "__main__":
    from common import table
    print(table(run_bench()))
