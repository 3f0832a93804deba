"""SIGKILL while the ledger appends and while it compacts: what is read back is always the
ledger after a prefix of the changes, and every change whose call returned is in it.

Why: the journal (host/ledger.py) promises that a kill at any point loses nothing recorded and
never yields a mix: a torn last line is dropped, a compaction killed between its snapshot and
its truncation replays nothing twice, a killed compaction's temporary file is ignored. Each
case runs tests/faults/ledger_writer.py, which records a known sequence of changes and dies
with SIGKILL at one of our own seams (or is killed from here at a random moment); the ledger
it leaves is read by a fresh Ledger, compared with the documented semantics of the sequence,
and must then keep working.
"""
from __future__ import annotations

import random
import signal
import subprocess
import sys

import pytest

from plumber_agent.host.ledger import Ledger, read_records
from tests.faults.ledger_writer import changes, expected
from tests.helpers.agent_env import REPO_ROOT, agent_env

pytestmark = [pytest.mark.fault]

WRITER_TIMEOUT_S = 120.0  # a bound for one writer process (never asserted on)
OPS = 300
RANDOM_ROUNDS = 8
RANDOM_SEED = 1919  # printed in the assertion message, so a failing round can be re-run


def run_writer(state, *, seed: int, ops: int = OPS, kill: str = "") -> tuple[int, int]:
    """Run the writer to its end (or its self-inflicted kill): (return code, changes done)."""
    argv = [sys.executable, "-m", "tests.faults.ledger_writer", str(state), "--seed", str(seed),
            "--ops", str(ops)] + (["--kill", kill] if kill else [])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=WRITER_TIMEOUT_S,
                          env=agent_env(), cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL,
                          check=False)
    return proc.returncode, len(proc.stdout.split())


def assert_recovers_a_prefix(state, *, seed: int, done: int, ops: int = OPS) -> int:
    """The ledger read back is the one after `done` changes, or `done`+1 (the change in flight
    when the kill came was written but its caller never returned); it then keeps working.
    Returns how many changes it holds."""
    sequence = changes(seed, ops)
    led = Ledger(state)
    got = led.records()
    assert led.recovered_from_corruption is False
    candidates = [n for n in (done, done + 1) if n <= ops and expected(sequence[:n]) == got]
    assert candidates, (f"seed {seed}: after {done} completed changes the ledger is not the "
                        f"ledger after {done} or {done + 1}: {sorted(got)}")
    assert led.acquire()
    led.claim("mtu:after-recovery", prior=1500, created=False, templates=["t"])
    led.release_lock()
    assert read_records(state) == dict(got, **{"mtu:after-recovery": Ledger(state).get(
        "mtu:after-recovery")})
    return candidates[-1]


@pytest.mark.parametrize("kill,lands_after", [
    ("append-mid:1", 0), ("append-mid:37", 0), ("append-mid:250", 0),
    ("before-truncate:1", 1), ("before-truncate:3", 1),
    ("snapshot-tmp:1", 1), ("snapshot-tmp:2", 1)])
def test_a_kill_at_a_seam_recovers_the_changes_recorded_before_it(tmp_path, kill, lands_after):
    state = tmp_path / "state"
    code, done = run_writer(state, seed=7, kill=kill)
    assert code == -signal.SIGKILL, f"the writer was not killed at {kill} (exit {code})"
    if kill.startswith("append-mid"):
        assert done == int(kill.split(":")[1]) - 1  # one append per change
    if kill.startswith("snapshot-tmp"):
        assert list(state.glob(".ledger.json.*.tmp")), "no temporary file was left"
    held = assert_recovers_a_prefix(state, seed=7, done=done)
    assert held == done + lands_after  # torn line dropped; a compaction's change kept
    assert not list(state.glob(".ledger.json.*.tmp")), "the temporary file was not removed"


def test_kills_at_random_moments_recover_a_prefix_each_time(tmp_path):
    rng = random.Random(RANDOM_SEED)
    for round_ in range(RANDOM_ROUNDS):
        seed, state = rng.randrange(10**6), tmp_path / f"round{round_}"
        wait_for_lines = rng.randrange(1, OPS - 1)
        argv = [sys.executable, "-m", "tests.faults.ledger_writer", str(state), "--seed",
                str(seed), "--ops", str(OPS)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                env=agent_env(), cwd=str(REPO_ROOT), text=True)
        try:
            seen = 0
            while seen < wait_for_lines and proc.stdout.readline():
                seen += 1
            proc.send_signal(signal.SIGKILL)  # our own child, by its pid
            seen += len(proc.stdout.read().split())  # what it printed before it died
        finally:
            proc.kill()
            proc.wait(WRITER_TIMEOUT_S)
            proc.stdout.close()
        assert_recovers_a_prefix(state, seed=seed, done=seen)


def test_a_writer_that_is_not_killed_leaves_exactly_its_changes(tmp_path):
    """The control: the same sequence run to its end reads back whole."""
    state = tmp_path / "state"
    code, done = run_writer(state, seed=7)
    assert (code, done) == (0, OPS)
    assert read_records(state) == expected(changes(7, OPS))
