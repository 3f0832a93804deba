"""Small JSON files in the agent's state directory (rolled-back generations, approved rollout
specs, local pool claims): read forgivingly, written atomically.

Why one place: each file must survive a crash mid-write (write a temporary file, fsync, rename)
and an unreadable one must not stop the agent (it is set aside in the log and started over).
The directory is private (0700: the ledger says what the agent may undo on the host), and no
file in it is reached through a symbolic link (O_NOFOLLOW; temporary files also O_EXCL, with
an unpredictable name), so a link planted there cannot make the agent read or overwrite
another file.
"""
from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
from typing import Any, Optional

log = logging.getLogger(__name__)


def load_json(path: Optional[str], default: Any) -> Any:
    """The file's JSON, or `default` when there is no path, no file, or it cannot be read or
    is not of the default's type."""
    if not path or not os.path.lexists(path):
        return default
    try:
        with os.fdopen(open_nofollow(path, os.O_RDONLY)) as fh:
            loaded = json.load(fh)
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return default
    if not isinstance(loaded, type(default)):
        log.warning("ignoring %s: not a JSON %s", path, type(default).__name__)
        return default
    return loaded


def save_json(path: Optional[str], data: Any) -> None:
    """Write atomically (temporary file, fsync, rename); no path: nothing (in memory only)."""
    if not path:
        return
    directory, name = os.path.split(path)
    # mkstemp: O_CREAT | O_EXCL (never an existing file nor a link), mode 0600, a random name.
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


STATE_DIR_MODE = 0o700


def open_nofollow(path: str, flags: int, mode: int = 0o600) -> int:
    """os.open that refuses a symbolic link as the last component (ELOOP)."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def ensure_state_dir(path: str) -> None:
    """Create the state directory 0700, or make an existing one 0700 (it was 0755)."""
    os.makedirs(path, mode=STATE_DIR_MODE, exist_ok=True)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode != STATE_DIR_MODE:
        log.warning("state directory %s was %o; made %o", path, mode, STATE_DIR_MODE)
        os.chmod(path, STATE_DIR_MODE)
