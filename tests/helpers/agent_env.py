"""The environment of every `python -m plumber_agent` (and `python -m tests.*`) subprocess.

Why: a child process must import this checkout's package (`src/`) and the test helpers (the
repository root, for `python -m tests.fakeapi` and `tests.sriov_emu`) whatever the caller's
PYTHONPATH or current directory, without losing what the caller had on its path.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional

from tests.helpers.paths import REPO_ROOT, SRC_DIR


def agent_pythonpath(existing: Optional[str] = None) -> str:
    """src/ and the repository root first, then `existing` (the caller's PYTHONPATH)."""
    return os.pathsep.join([str(SRC_DIR), str(REPO_ROOT)] + ([existing] if existing else []))


def agent_env(extra: Optional[Mapping[str, str]] = None, *,
              drop: tuple[str, ...] = ()) -> dict[str, str]:
    """os.environ with PYTHONPATH set for this checkout, `drop` removed and `extra` added."""
    env = dict(os.environ)
    env["PYTHONPATH"] = agent_pythonpath(env.get("PYTHONPATH"))
    for name in drop:
        env.pop(name, None)
    env.update(extra or {})
    return env
