"""Files in the agent's state directory: small JSON files (rolled-back generations, approved
rollout specs, local pool claims) read forgivingly, and every whole-file write done atomically
(the ledger's snapshot too, host/ledger.py).

Why one place: each file must survive a crash mid-write (write a temporary file, fsync, rename,
fsync the directory) and an unreadable one must not stop the agent (it is set aside in the log
and started over). The directory is private (0700: the ledger says what the agent may undo on
the host), and no file in it is reached through a symbolic link (O_NOFOLLOW; temporary files
also O_EXCL, with an unpredictable name), so a link planted there cannot make the agent read or
overwrite another file.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import stat
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
    """Write atomically (see `write_atomic`); no path: nothing (in memory only)."""
    if not path:
        return
    write_atomic(path, json.dumps(data, sort_keys=True).encode("utf-8"))


TMP_SUFFIX = ".tmp"
DEFAULT_FILE_MODE = 0o600
"""Private, like the directory: what the agent recorded about the host is nobody else's to read."""


def tmp_prefix(path: str) -> str:
    """The name every temporary file of `path` starts with (in the same directory), so that the
    owner of the file can remove those a killed writer left behind."""
    return os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.")


def write_atomic(path: str, data: bytes, *, mode: int = DEFAULT_FILE_MODE) -> None:
    """Replace `path` with `data` so that a crash at any point leaves the old or the new file,
    never a mix: a temporary file of its own in the same directory (a random name, O_EXCL and
    O_NOFOLLOW: never an existing file nor a link; created with `mode`, minus the umask), fsync,
    rename over `path`, fsync of the directory (which makes the rename itself durable). On
    failure the temporary file is removed and `path` is untouched."""
    tmp = f"{tmp_prefix(path)}{secrets.token_hex(8)}{TMP_SUFFIX}"
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(os.path.dirname(path) or ".")


def fsync_dir(path: str) -> None:
    """Make the directory's entries (a create, rename or unlink in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
