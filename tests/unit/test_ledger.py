"""The ownership ledger: atomic writes, survival across restarts, corruption handling, lock."""
import json
import os
import subprocess
import sys

import pytest

from plumber_agent.errors import HostError
from plumber_agent.host.ledger import LEDGER_FILE, Ledger
from tests.helpers.wait import wait_for

LOCK_WAIT_S = 20.0  # bound for waiting on the helper process (never asserted on)


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path)
    assert led.acquire()
    yield led
    led.release_lock()


def on_disk(path) -> dict:
    with open(path / LEDGER_FILE) as f:
        return json.load(f)["records"]


def test_claim_is_on_disk_and_survives_a_restart(tmp_path, ledger):
    ledger.claim("mtu:eno1", prior=1500, created=False, templates=["t"], value={"mtu": 9000})
    ledger.claim("vlan:eno1.5", prior=None, created=True, templates=["t"])
    assert on_disk(tmp_path)["mtu:eno1"]["prior"] == 1500
    ledger.release_lock()
    again = Ledger(tmp_path)
    assert again.records() == ledger.records()
    assert again.get("vlan:eno1.5")["created"] is True
    assert again.recovered_from_corruption is False


def test_first_prior_is_kept_and_templates_value_follow_the_latest_claim(ledger):
    ledger.claim("mtu:eno1", prior=1500, created=False, templates=["a"], value={"mtu": 9000})
    ledger.claim("mtu:eno1", prior=9000, created=False, templates=["b"], value={"mtu": 4000})
    rec = ledger.get("mtu:eno1")
    assert (rec["prior"], rec["templates"], rec["value"]) == (1500, ["b"], {"mtu": 4000})


def test_release_forgets_and_tolerates_absence(tmp_path, ledger):
    ledger.claim("k", prior=None, created=True, templates=["t"])
    ledger.release("k")
    ledger.release("k")
    assert ledger.records() == {} and on_disk(tmp_path) == {}


def test_records_are_a_copy(ledger):
    ledger.claim("k", prior=[1], created=False, templates=["t"])
    ledger.records()["k"]["prior"].append(2)
    assert ledger.get("k")["prior"] == [1]


def test_a_failed_write_leaves_the_old_file_and_no_temp_files(tmp_path, ledger, monkeypatch):
    ledger.claim("old", prior=1, created=False, templates=["t"])

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        ledger.claim("new", prior=2, created=False, templates=["t"])
    monkeypatch.undo()
    assert list(on_disk(tmp_path)) == ["old"]
    assert list(ledger.records()) == ["old"]  # memory matches disk
    assert sorted(os.listdir(tmp_path)) == ["ledger.json", "ledger.lock"]


@pytest.mark.parametrize("content", [
    b'{"version": 1, "records": {"mtu:eno1": {"prior": 15',  # torn write
    b"\x00\x00\x00\x00",  # zero-filled after a crash
    b'{"version": 1, "records": ["not", "a", "map"]}',
    b'{"version": 1, "records": {"k": {"prior": 1}}}',  # a record without `created`
    b'{"version": 99, "records": {}}',
    b"",
])
def test_corrupt_file_is_moved_aside_and_nothing_is_undone(tmp_path, content, caplog):
    (tmp_path / LEDGER_FILE).write_bytes(content)
    led = Ledger(tmp_path, now=lambda: "2026-01-02T03:04:05Z")
    assert led.records() == {}
    assert led.recovered_from_corruption is True
    assert os.path.basename(led.corrupt_copy) == "ledger.json.corrupt-2026-01-02T030405Z"
    assert (tmp_path / "ledger.json.corrupt-2026-01-02T030405Z").read_bytes() == content
    assert not (tmp_path / LEDGER_FILE).exists()
    assert "is corrupt" in caplog.text
    # It keeps working afterwards.
    assert led.acquire()
    led.claim("k", prior=None, created=True, templates=["t"])
    assert Ledger(tmp_path).recovered_from_corruption is False


def test_two_corruptions_in_the_same_second_keep_both_copies(tmp_path):
    for _ in range(2):
        (tmp_path / LEDGER_FILE).write_bytes(b"garbage")
        Ledger(tmp_path, now=lambda: "2026-01-02T03:04:05Z")
    assert len([n for n in os.listdir(tmp_path) if ".corrupt-" in n]) == 2


def test_mutations_need_the_lock(tmp_path):
    led = Ledger(tmp_path)
    with pytest.raises(HostError, match="lock is not held"):
        led.claim("k", prior=None, created=True, templates=["t"])
    assert not (tmp_path / LEDGER_FILE).exists()


def test_second_ledger_in_the_same_process_cannot_take_the_lock(tmp_path, ledger):
    other = Ledger(tmp_path)
    assert other.acquire(blocking=False) is False
    ledger.release_lock()
    assert other.acquire(blocking=False) is True
    other.release_lock()


def test_another_process_holding_the_lock_keeps_us_out(tmp_path):
    code = ("import sys; from plumber_agent.host.ledger import Ledger; "
            "led = Ledger(sys.argv[1]); print(led.acquire(), flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "True"
        led = Ledger(tmp_path)
        assert led.acquire() is False
    finally:
        proc.stdin.close()
        proc.wait(timeout=LOCK_WAIT_S)
    wait_for(led.acquire, timeout_s=LOCK_WAIT_S, interval_s=0.01,
             what="the lock, once the other agent exited")
    assert led.held  # released when the other agent exits
    led.release_lock()


def test_managed_ifnames(ledger):
    for key in ("vlan:eno2.1000", "mtu:eno2", "addr:eno1:10.0.0.1/24", "addr:eno1:fc00::1/64",
                "numvfs:0000:01:00.0", "route:4:default:0", "bridge:br0"):
        ledger.claim(key, prior=None, created=True, templates=["t"])
    assert ledger.managed_ifnames() == {"eno2.1000", "eno2", "eno1"}


# ---- write-ahead intents -------------------------------------------------------------------

def test_intent_is_pending_on_disk_and_claim_confirms_it(tmp_path, ledger):
    assert ledger.intend("vlan:eno1.5", prior=None, created=True, templates=["t"],
                         value={"parent": "eno1", "vlan_id": 5}) is True
    assert on_disk(tmp_path)["vlan:eno1.5"]["pending"] is True
    assert ledger.pending_keys() == ["vlan:eno1.5"]
    ledger.claim("vlan:eno1.5", prior="ignored", created=False, templates=["t"],
                 value={"parent": "eno1", "vlan_id": 5})
    rec = on_disk(tmp_path)["vlan:eno1.5"]
    assert "pending" not in rec and (rec["prior"], rec["created"]) == (None, True)
    assert ledger.pending_keys() == []


def test_intent_over_an_existing_record_writes_nothing(tmp_path, ledger):
    ledger.claim("mtu:eno1", prior=1500, created=False, templates=["t"], value={"mtu": 9000})
    before = (tmp_path / LEDGER_FILE).stat().st_mtime_ns, (tmp_path / LEDGER_FILE).stat().st_ino
    assert ledger.intend("mtu:eno1", prior=9000, created=False, templates=["t"],
                         value={"mtu": 4000}) is False
    assert ((tmp_path / LEDGER_FILE).stat().st_mtime_ns,
            (tmp_path / LEDGER_FILE).stat().st_ino) == before
    assert ledger.get("mtu:eno1")["prior"] == 1500 and "pending" not in ledger.get("mtu:eno1")


def test_a_stale_pending_intent_takes_the_new_prior(ledger):
    ledger.intend("route:4:10.7.0.0/16:0", prior=None, created=True, templates=["t"])
    prior = {"family": 4, "dst": "10.7.0.0/16", "dev": "eno2"}
    assert ledger.intend("route:4:10.7.0.0/16:0", prior=prior, created=False,
                         templates=["t"]) is False
    rec = ledger.get("route:4:10.7.0.0/16:0")
    assert (rec["prior"], rec["created"], rec["pending"]) == (prior, False, True)


def test_abandon_drops_only_pending_records(tmp_path, ledger):
    ledger.intend("a", prior=None, created=True, templates=["t"])
    ledger.claim("b", prior=1, created=False, templates=["t"])
    assert ledger.abandon("a") is True and ledger.abandon("b") is False
    assert ledger.abandon("missing") is False
    assert list(on_disk(tmp_path)) == ["b"]


def test_a_pending_record_survives_a_restart(tmp_path, ledger):
    ledger.intend("addr:eno1:10.0.0.1/24", prior=None, created=True, templates=["t"])
    ledger.release_lock()
    again = Ledger(tmp_path)
    assert again.pending_keys() == ["addr:eno1:10.0.0.1/24"]
    assert again.recovered_from_corruption is False


def test_a_non_boolean_pending_flag_is_corruption(tmp_path):
    (tmp_path / LEDGER_FILE).write_text(json.dumps({"version": 1, "records": {
        "k": {"prior": None, "created": True, "pending": "yes"}}}))
    assert Ledger(tmp_path).recovered_from_corruption is True


def test_intents_need_the_lock(tmp_path):
    led = Ledger(tmp_path)
    with pytest.raises(HostError, match="lock is not held"):
        led.intend("k", prior=None, created=True, templates=["t"])
