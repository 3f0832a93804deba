"""Fixtures of the full-kernel tier: is the VM available, and what CI does when it is not; and
the tier's duration next to its limit at the end of every run.

Why: a tier that silently skips in CI is a tier that never runs. Locally a missing VM is a skip
with the fix in its reason; with CI=true it is a failure with the same message. The duration
line is printed even on success, so CI output shows how close the tier comes to its timeout
before it starts failing on a loaded machine.
"""

from __future__ import annotations

import pytest

from tests.fullkernel.vm import in_ci, missing_artifacts

#: (what, duration_s, limit_s) of each tier run in this session, filled by test_fullkernel_tier.
TIER_DURATIONS: list[tuple[str, float, float]] = []


@pytest.fixture(scope="session")
def vm_available() -> None:
    """Fail (CI=true) or skip (locally) unless scripts/fetch-vm-kernel.sh has prepared the VM."""
    reason = missing_artifacts()
    if reason is None:
        return
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def pytest_terminal_summary(terminalreporter) -> None:
    for what, duration_s, limit_s in TIER_DURATIONS:
        terminalreporter.write_line(
            f"full-kernel tier: {duration_s:.0f} s of {limit_s:.0f} s limit ({what})")
