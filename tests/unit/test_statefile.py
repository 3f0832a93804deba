"""The state directory is private and never reached through symbolic links (issue 20): it was
0755, and the lock, the ledger and the JSON state files followed links, so a link planted
there could make the agent read or overwrite another file."""
from __future__ import annotations

import errno
import os
import stat

import pytest

from plumber_agent.host.ledger import Ledger
from plumber_agent.statefile import ensure_state_dir, load_json, save_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_state_directory_is_made_0700_and_an_existing_one_tightened(tmp_path):
    fresh = tmp_path / "fresh"
    ensure_state_dir(str(fresh))
    assert _mode(fresh) == 0o700
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    os.chmod(old, 0o755)
    ensure_state_dir(str(old))
    assert _mode(old) == 0o700


def test_json_state_is_not_read_through_a_link(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text('{"secret": 1}')
    link = tmp_path / "state.json"
    link.symlink_to(target)
    assert load_json(str(link), {}) == {}


def test_json_state_is_written_by_replacing_a_link_never_through_it(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text("keep")
    link = tmp_path / "state.json"
    link.symlink_to(target)
    (tmp_path / "state.json.tmp").symlink_to(target)  # the old fixed temporary name
    save_json(str(link), {"a": 1})
    assert target.read_text() == "keep"
    assert not link.is_symlink() and load_json(str(link), {}) == {"a": 1}
    assert _mode(link) == 0o600
    leftovers = [n for n in os.listdir(tmp_path) if n.endswith(".tmp") and n != "state.json.tmp"]
    assert leftovers == []


def test_the_ledger_and_its_lock_are_not_opened_through_links(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    state = tmp_path / "state"
    state.mkdir()
    (state / "ledger.lock").symlink_to(target)
    ledger = Ledger(str(state))
    with pytest.raises(OSError) as caught:
        ledger.acquire()
    assert caught.value.errno == errno.ELOOP
    assert target.read_text() == "keep"
    (state / "ledger.lock").unlink()
    (state / "ledger.json").symlink_to(target)
    with pytest.raises(OSError) as caught:
        Ledger(str(state))
    assert caught.value.errno == errno.ELOOP
    assert target.read_text() == "keep"
