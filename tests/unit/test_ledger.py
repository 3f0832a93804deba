"""The ownership ledger: survival across restarts, corruption handling, lock; the journal's
format (torn tail, corrupt middle, compaction, migration) and its fsync policy."""
import json
import logging
import os
import subprocess
import sys

import pytest

from plumber_agent.errors import HostError
from plumber_agent.host.ledger import (JOURNAL_FILE, LEDGER_FILE, Ledger, frame,
                                       read_records)
from tests.helpers.wait import wait_for

LOCK_WAIT_S = 20.0  # bound for waiting on the helper process (never asserted on)


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path)
    assert led.acquire()
    yield led
    led.release_lock()


def on_disk(path) -> dict:
    """What a fresh reader finds (snapshot + journal), without touching the files."""
    return read_records(path)


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


def test_the_interface_identity_is_kept_from_the_first_claim_or_intent(ledger):
    ident = {"pciAddress": "0000:3b:00.0"}
    ledger.intend("mtu:eno1", prior=1500, created=False, templates=["t"], link=ident)
    ledger.claim("mtu:eno1", prior=1500, created=False, templates=["t"],
                 link={"pciAddress": "0000:af:00.0"})
    assert ledger.get("mtu:eno1")["link"] == ident
    ledger.claim("mtu:eno2", prior=1500, created=False, templates=["t"])
    assert "link" not in ledger.get("mtu:eno2")
    ledger.claim("mtu:eno2", prior=1500, created=False, templates=["t"], link=ident)
    assert ledger.get("mtu:eno2")["link"] == ident  # an older record learns it


def test_move_rekeys_a_record_and_keeps_one_written_ahead(tmp_path, ledger):
    ledger.claim("mtu:eth0", prior=1500, created=False, templates=["t"], value={"mtu": 9000})
    ledger.move("mtu:eth0", "mtu:nic7")
    assert set(on_disk(tmp_path)) == {"mtu:nic7"}
    assert on_disk(tmp_path)["mtu:nic7"]["prior"] == 1500
    # An intent the executor wrote ahead for the new key owns it already: kept as it is.
    ledger.claim("addr:eth0:10.0.0.5/24", prior=None, created=True, templates=["t"])
    ledger.intend("addr:nic7:10.0.0.5/24", prior=None, created=True, templates=["t"])
    ledger.move("addr:eth0:10.0.0.5/24", "addr:nic7:10.0.0.5/24")
    assert ledger.get("addr:nic7:10.0.0.5/24")["pending"] is True
    assert "addr:eth0:10.0.0.5/24" not in ledger.records()
    ledger.move("mtu:absent", "mtu:other")  # tolerated
    assert "mtu:other" not in ledger.records()


def test_moves_given_the_records_swap_two_keys_in_either_order(tmp_path, ledger):
    a = {"prior": 1500, "created": False, "templates": ["t"], "value": {"mtu": 9000}}
    b = {"prior": 1400, "created": False, "templates": ["t"], "value": {"mtu": 9100}}
    ledger.claim("mtu:eth0", **a)
    ledger.claim("mtu:eth1", **b)
    ledger.move("mtu:eth1", "mtu:eth0", record=ledger.get("mtu:eth1"), drop=False)
    ledger.move("mtu:eth0", "mtu:eth1", record=dict(ledger.get("mtu:eth1"), prior=1500,
                                                    value={"mtu": 9000}), drop=False)
    records = on_disk(tmp_path)
    assert (records["mtu:eth0"]["prior"], records["mtu:eth1"]["prior"]) == (1400, 1500)


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
    assert sorted(os.listdir(tmp_path)) == [JOURNAL_FILE, "ledger.lock"]


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
    before = (tmp_path / JOURNAL_FILE).read_bytes()
    assert ledger.intend("mtu:eno1", prior=9000, created=False, templates=["t"],
                         value={"mtu": 4000}) is False
    assert (tmp_path / JOURNAL_FILE).read_bytes() == before
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


# ---- the journal's format -------------------------------------------------------------------

FIXED_NOW = "2026-01-02T03:04:05Z"


def die(ledger) -> None:
    """What a SIGKILL does to a Ledger: its descriptors (and so the flock) go, nothing else
    runs (no compaction on close)."""
    for fd in (ledger._journal_fd, ledger._lock_fd):
        os.close(fd)
    ledger._journal_fd = ledger._lock_fd = None


def fill(ledger, n: int, *, prefix: str = "addr:eno1:10.0.") -> dict:
    """n confirmed records the executor's way (intent, then confirm); returns what they hold."""
    for i in range(n):
        key = f"{prefix}{i // 250}.{i % 250 + 1}/24"
        ledger.intend(key, prior=None, created=True, templates=["t"], value={"i": i})
        ledger.claim(key, prior=None, created=True, templates=["t"], value={"i": i})
    return ledger.records()


def test_a_torn_last_line_is_dropped_and_cut_off_when_the_lock_is_taken(tmp_path, ledger,
                                                                       caplog):
    kept = fill(ledger, 3)
    journal = tmp_path / JOURNAL_FILE
    good_size = journal.stat().st_size
    whole = frame({"seq": 7, "key": "k", "rec": {"created": True}})
    with open(journal, "ab") as f:
        f.write(whole[: len(whole) // 2])  # what a kill in the middle of write(2) leaves
    die(ledger)
    again = Ledger(tmp_path)
    assert again.records() == kept and again.recovered_from_corruption is False
    assert "dropped a torn last record" in caplog.text
    assert journal.stat().st_size > good_size  # a reader without the lock changes nothing
    assert again.acquire()
    assert journal.stat().st_size == good_size
    again.claim("mtu:eno1", prior=1500, created=False, templates=["t"])
    assert set(on_disk(tmp_path)) == set(kept) | {"mtu:eno1"}
    again.release_lock()


@pytest.mark.parametrize("tail", [b"\x00" * 300, b"\n", b"deadbeef {}\n"])
def test_a_zero_filled_or_garbled_tail_is_a_torn_write_not_corruption(tmp_path, ledger, tail):
    ledger.intend("vlan:eno1.5", prior=None, created=True, templates=["t"])
    kept = ledger.records()
    with open(tmp_path / JOURNAL_FILE, "ab") as f:
        f.write(tail)  # e.g. blocks allocated but never written before a power loss
    again = Ledger(tmp_path)
    assert again.records() == kept and again.recovered_from_corruption is False


def test_a_damaged_line_followed_by_intact_ones_is_corruption(tmp_path, ledger, caplog):
    fill(ledger, 2)
    journal = tmp_path / JOURNAL_FILE
    lines = journal.read_bytes().splitlines(keepends=True)
    assert len(lines) == 4
    lines[1] = lines[1].replace(b'"i":0', b'"i":7')  # one flipped digit: checksum mismatch
    journal.write_bytes(b"".join(lines))
    die(ledger)
    led = Ledger(tmp_path, now=lambda: FIXED_NOW)
    assert led.records() == {} and led.recovered_from_corruption is True
    assert os.path.basename(led.corrupt_copy) == "ledger.journal.corrupt-2026-01-02T030405Z"
    assert "line 2 is damaged and line 3 after it is intact" in caplog.text
    assert not journal.exists() and not (tmp_path / LEDGER_FILE).exists()
    assert (tmp_path / "ledger.journal.corrupt-2026-01-02T030405Z").read_bytes() == b"".join(
        lines)


def test_a_gap_in_the_sequence_is_corruption(tmp_path, ledger, caplog):
    ledger.claim("a", prior=None, created=True, templates=["t"])
    with open(tmp_path / JOURNAL_FILE, "ab") as f:
        f.write(frame({"seq": 3, "key": "b", "rec": {"created": True}}))
    assert Ledger(tmp_path).recovered_from_corruption is True
    assert "change 3 follows 1 (a gap)" in caplog.text


def test_a_well_framed_line_of_the_wrong_shape_is_corruption(tmp_path, ledger):
    ledger.claim("a", prior=None, created=True, templates=["t"])
    with open(tmp_path / JOURNAL_FILE, "ab") as f:
        f.write(frame({"seq": 2, "key": "b", "rec": {"created": "yes"}}))
    assert Ledger(tmp_path).recovered_from_corruption is True


def test_compaction_bounds_the_journal_and_keeps_every_record(tmp_path):
    led = Ledger(tmp_path, compact_min_bytes=4096)
    assert led.acquire()
    kept = fill(led, 200)
    for key in list(kept)[:50]:
        led.release(key)
        del kept[key]
    assert led.compactions >= 2
    snapshot = json.loads((tmp_path / LEDGER_FILE).read_text())
    assert snapshot["version"] == 2
    bound = max(4096, 2 * len((tmp_path / LEDGER_FILE).read_bytes()))
    assert (tmp_path / JOURNAL_FILE).stat().st_size <= bound
    assert on_disk(tmp_path) == kept == led.records()
    led.release_lock()
    assert (tmp_path / JOURNAL_FILE).stat().st_size == 0  # closing compacts
    assert Ledger(tmp_path).records() == kept


def test_a_crash_between_the_snapshot_and_the_truncation_replays_nothing_twice(tmp_path,
                                                                               ledger):
    fill(ledger, 3)
    ledger.release("addr:eno1:10.0.0.1/24")
    journal = (tmp_path / JOURNAL_FILE).read_bytes()
    ledger.release_lock()  # the snapshot now holds all of it ...
    (tmp_path / JOURNAL_FILE).write_bytes(journal)  # ... and the journal was never truncated
    again = Ledger(tmp_path)
    assert again.records() == ledger.records()
    assert again.acquire()
    again.release("addr:eno1:10.0.0.2/24")  # appended after the stale lines: seq follows on
    again.claim("mtu:eno1", prior=1500, created=False, templates=["t"])
    assert set(on_disk(tmp_path)) == {"addr:eno1:10.0.0.3/24", "mtu:eno1"}
    again.release_lock()


def test_left_over_temporary_files_of_a_killed_compaction_are_removed(tmp_path, ledger):
    ledger.claim("a", prior=None, created=True, templates=["t"])
    ledger.release_lock()
    (tmp_path / ".ledger.json.0badf00d.tmp").write_bytes(b'{"version": 2, "rec')
    assert Ledger(tmp_path).records() == ledger.records()
    again = Ledger(tmp_path)
    assert again.acquire()
    assert sorted(os.listdir(tmp_path)) == [JOURNAL_FILE, LEDGER_FILE, "ledger.lock"]
    again.release_lock()


def test_files_keep_their_permissions(tmp_path):
    state = tmp_path / "state"
    led = Ledger(state, compact_min_bytes=0)
    assert led.acquire()
    led.claim("a", prior=None, created=True, templates=["t"])  # compacts at once
    modes = {name: os.stat(state / name).st_mode & 0o777 for name in os.listdir(state)}
    assert modes == {LEDGER_FILE: 0o600, JOURNAL_FILE: 0o600, "ledger.lock": 0o600}
    assert os.stat(state).st_mode & 0o777 == 0o700
    led.release_lock()


# ---- migration from the whole-file ledger (format version 1) -----------------------------------

V1_RECORDS = {
    "mtu:eno1": {"prior": 1500, "created": False, "templates": ["t"], "since": FIXED_NOW,
                 "value": {"mtu": 9000}},
    "vlan:eno1.5": {"prior": None, "created": True, "templates": ["t"], "since": FIXED_NOW,
                    "value": {"parent": "eno1", "vlan_id": 5}, "pending": True},
    "addr:eno1:10.0.0.1/24": {"prior": None, "created": True, "templates": ["t"],
                              "since": FIXED_NOW, "value": None},  # no `pending`: confirmed
}


def write_v1(state) -> bytes:
    """The file exactly as main's whole-file ledger wrote it."""
    data = json.dumps({"version": 1, "records": V1_RECORDS}, sort_keys=True,
                      indent=1).encode("utf-8")
    (state / LEDGER_FILE).write_bytes(data)
    return data


def test_a_version_1_ledger_is_read_and_migrated_when_the_lock_is_taken(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    data = write_v1(tmp_path)
    led = Ledger(tmp_path)
    assert led.records() == V1_RECORDS and led.recovered_from_corruption is False
    assert led.pending_keys() == ["vlan:eno1.5"]
    assert (tmp_path / LEDGER_FILE).read_bytes() == data  # a reader without the lock writes not
    assert led.acquire()
    assert json.loads((tmp_path / LEDGER_FILE).read_text()) == {
        "version": 2, "seq": 0, "records": V1_RECORDS}
    assert "migrated from format version 1 to 2" in caplog.text
    led.claim("vlan:eno1.5", prior=None, created=True, templates=["t"],
              value={"parent": "eno1", "vlan_id": 5})
    led.release_lock()
    after = Ledger(tmp_path).records()
    assert "pending" not in after["vlan:eno1.5"] and after["mtu:eno1"] == V1_RECORDS["mtu:eno1"]


def test_a_journal_beside_a_version_1_ledger_predates_it_and_is_set_aside(tmp_path):
    led = Ledger(tmp_path)
    assert led.acquire()
    led.claim("bridge:br-old", prior=None, created=True, templates=["t"])  # a version 2 agent
    die(led)  # ... killed, then a downgraded agent wrote ledger.json (version 1)
    write_v1(tmp_path)
    again = Ledger(tmp_path, now=lambda: FIXED_NOW)
    assert again.records() == V1_RECORDS
    assert again.acquire()
    assert again.records() == V1_RECORDS
    assert (tmp_path / "ledger.journal.stale-2026-01-02T030405Z").exists()
    again.release_lock()
    assert read_records(tmp_path) == V1_RECORDS


# ---- the fsync policy --------------------------------------------------------------------------

class FsyncCounter:
    def __init__(self, monkeypatch):
        self.calls = 0
        real = os.fsync

        def counting(fd):
            self.calls += 1
            real(fd)
        monkeypatch.setattr(os, "fsync", counting)

    def take(self) -> int:
        calls, self.calls = self.calls, 0
        return calls


def test_write_ahead_records_are_fsynced_at_once_and_follow_ups_by_the_next_fsync(ledger,
                                                                                 monkeypatch):
    fsyncs = FsyncCounter(monkeypatch)
    assert ledger.intend("vlan:eno1.5", prior=None, created=True, templates=["t"]) is True
    assert fsyncs.take() == 1  # on disk before the host change it guards
    ledger.claim("vlan:eno1.5", prior=None, created=True, templates=["t"])
    ledger.release("vlan:eno1.5")
    ledger.intend("vlan:eno1.6", prior=None, created=True, templates=["t"])
    ledger.abandon("vlan:eno1.6")
    assert fsyncs.take() == 1  # the follow-ups rode on the second intent's fsync ...
    ledger.records()
    assert fsyncs.take() == 1  # ... and the abandon on the next plan's read
    ledger.records()
    assert fsyncs.take() == 0  # nothing left to sync
    ledger.claim("mtu:eno1", prior=1500, created=False, templates=["t"])
    assert fsyncs.take() == 1  # a claim with no intent before it owns its change alone


def test_a_batch_fsyncs_its_write_ahead_records_once(tmp_path, ledger, monkeypatch):
    fsyncs = FsyncCounter(monkeypatch)
    with ledger.batch():
        for i in range(50):
            ledger.intend(f"vlan:eno1.{i}", prior=None, created=True, templates=["t"])
        assert fsyncs.take() == 0
    assert fsyncs.take() == 1
    assert len(on_disk(tmp_path)) == 50


@pytest.mark.parametrize("failure", ["raises", "fsync-fails"])
def test_a_failed_batch_leaves_disk_and_memory_as_before_it(tmp_path, ledger, monkeypatch,
                                                            failure):
    ledger.intend("vlan:eno1.5", prior=None, created=True, templates=["t"])
    before, journal = ledger.records(), (tmp_path / JOURNAL_FILE).read_bytes()

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")
    with pytest.raises(OSError):
        with ledger.batch():
            ledger.intend("vlan:eno1.5", prior={"mtu": 1500}, created=False, templates=["t"])
            ledger.intend("vlan:eno1.6", prior=None, created=True, templates=["t"])
            ledger.release("vlan:eno1.6")
            ledger.claim("mtu:eno1", prior=1500, created=False, templates=["t"])
            if failure == "raises":
                raise OSError(5, "the caller failed")
            monkeypatch.setattr(os, "fsync", broken_fsync)
    monkeypatch.undo()
    assert ledger.records() == before
    assert (tmp_path / JOURNAL_FILE).read_bytes() == journal
    ledger.claim("mtu:eno2", prior=1500, created=False, templates=["t"])  # seq follows on
    assert set(on_disk(tmp_path)) == {"vlan:eno1.5", "mtu:eno2"}


def test_a_failed_write_that_cannot_be_cut_off_stops_all_later_writes(tmp_path, ledger,
                                                                      monkeypatch):
    """Its line may still be in the journal: the next one would repeat its seq, so the ledger
    refuses to record more (no host change is made without a record) until a restart re-reads
    the journal."""
    def broken(*args):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fsync", broken)
    monkeypatch.setattr(os, "ftruncate", broken)
    with pytest.raises(OSError):
        ledger.intend("vlan:eno1.5", prior=None, created=True, templates=["t"])
    monkeypatch.undo()
    with pytest.raises(HostError, match="could not be cut off"):
        ledger.intend("vlan:eno1.6", prior=None, created=True, templates=["t"])
    ledger.release_lock()
    again = Ledger(tmp_path)
    assert again.acquire() and again.pending_keys() == ["vlan:eno1.5"]  # safe: it is pending
    again.intend("vlan:eno1.6", prior=None, created=True, templates=["t"])
    assert sorted(on_disk(tmp_path)) == ["vlan:eno1.5", "vlan:eno1.6"]
    again.release_lock()
