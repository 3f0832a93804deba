"""Paths the tests share, named once: the checkout, its package sources and the test data."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SRC_DIR = REPO_ROOT / "src"
TEST_DATA_DIR = REPO_ROOT / "tests" / "data"
# The HostNetwork object of the original README, verbatim (the one copy in the repository).
SEED_HOSTNETWORK_YAML = TEST_DATA_DIR / "seed_hostnetwork.yaml"
MANIFESTS_DIR = REPO_ROOT / "manifests"
EXAMPLES_DIR = MANIFESTS_DIR / "examples"  # the example templates (shipped in the wheel too)
