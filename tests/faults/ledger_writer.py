"""A process that records a known sequence of ledger changes and can die at chosen points, for
tests/faults/test_ledger_kills.py.

Why a process: a SIGKILL is the crash under test, and only a real one shows what the kernel
keeps of a journal (every completed write(2)) and what a torn write leaves. The kill points are
our own seams in host/ledger.py (`_write_all`, `_truncate`, `write_atomic`): the process kills
itself there with SIGKILL, so nothing after the seam runs. It prints the index of every change
once its call returned, so the parent knows which changes were recorded before the kill.

  python -m tests.faults.ledger_writer STATE_DIR --seed S --ops N [--kill POINT:K]
  POINT: append-mid (the K-th append writes half its line), before-truncate (the K-th
  compaction wrote its snapshot, not yet emptied the journal), snapshot-tmp (the K-th
  compaction dies while writing its temporary file).
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import sys

from plumber_agent.host import ledger as ledger_mod
from plumber_agent.host.ledger import Ledger

NOW = "2026-01-02T03:04:05Z"
KEY_POOL = 40
COMPACT_MIN_BYTES = 2048  # small, so that a few hundred changes compact several times


def changes(seed: int, count: int) -> list[tuple[str, str, int]]:
    """(verb, key, i): intend/confirm pairs, claims without intent and releases, over a pool of
    keys so that records are created, confirmed, forgotten and created again."""
    rng = random.Random(seed)
    live: dict[str, bool] = {}  # key -> pending
    out = []
    for i in range(count):
        key = f"addr:eno1:10.0.0.{rng.randrange(KEY_POOL) + 1}/24"
        if key not in live:
            verb = rng.choice(["intend", "claim"])
            live[key] = verb == "intend"
        elif live[key]:
            verb, live[key] = "claim", False
        else:
            verb = "release"
            del live[key]
        out.append((verb, key, i))
    return out


def expected(ops: list[tuple[str, str, int]]) -> dict[str, dict]:
    """What the ledger must hold after exactly these changes (its documented semantics)."""
    records: dict[str, dict] = {}
    for verb, key, i in ops:
        if verb == "release":
            records.pop(key)
        elif key in records:  # a confirm
            records[key] = dict(records[key], templates=["t"], value={"i": i})
            records[key].pop("pending", None)
        else:
            records[key] = {"prior": None, "created": True, "templates": ["t"], "since": NOW,
                            "value": {"i": i}}
            if verb == "intend":
                records[key]["pending"] = True
    return records


def apply(led: Ledger, verb: str, key: str, i: int) -> None:
    if verb == "release":
        led.release(key)
    else:
        getattr(led, verb)(key, prior=None, created=True, templates=["t"], value={"i": i})


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install_kill(point: str, nth: int) -> None:
    seen = {"n": 0}

    def due() -> bool:
        seen["n"] += 1
        return seen["n"] == nth

    if point == "append-mid":
        real_write = ledger_mod._write_all

        def write_all(fd, data):
            if due():
                os.write(fd, data[: len(data) // 2])
                die()
            real_write(fd, data)
        ledger_mod._write_all = write_all
    elif point == "before-truncate":
        real_truncate = ledger_mod._truncate

        def truncate(fd):
            if due():
                die()
            real_truncate(fd)
        ledger_mod._truncate = truncate
    elif point == "snapshot-tmp":
        real_atomic = ledger_mod.write_atomic

        def write_atomic(path, data, **kwargs):
            if due():
                with open(f"{ledger_mod.tmp_prefix(path)}dead0001.tmp", "wb") as f:
                    f.write(data[: len(data) // 2])
                die()
            real_atomic(path, data, **kwargs)
        ledger_mod.write_atomic = write_atomic
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("state_dir")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--ops", type=int, required=True)
    parser.add_argument("--kill", default="")
    args = parser.parse_args()
    if args.kill:
        point, nth = args.kill.split(":")
        install_kill(point, int(nth))
    led = Ledger(args.state_dir, now=lambda: NOW, compact_min_bytes=COMPACT_MIN_BYTES)
    if not led.acquire():
        print("lock held", file=sys.stderr)
        return 2
    for verb, key, i in changes(args.seed, args.ops):
        apply(led, verb, key, i)
        print(i, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
