"""Small JSON files in the agent's state directory (rolled-back generations, approved rollout
specs, local pool claims): read forgivingly, written atomically.

Why one place: each file must survive a crash mid-write (write a temporary file, fsync, rename)
and an unreadable one must not stop the agent (it is set aside in the log and started over).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional

log = logging.getLogger(__name__)


def load_json(path: Optional[str], default: Any) -> Any:
    """The file's JSON, or `default` when there is no path, no file, or it cannot be read or
    is not of the default's type."""
    if not path or not os.path.exists(path):
        return default
    try:
        with open(path) as fh:
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
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
