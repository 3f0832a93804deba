"""Fixtures of the full-kernel tier: is the VM available, and what CI does when it is not.

Why: a tier that silently skips in CI is a tier that never runs. Locally a missing VM is a skip
with the fix in its reason; with CI=true it is a failure with the same message.
"""

from __future__ import annotations

import pytest

from tests.fullkernel.vm import in_ci, missing_artifacts


@pytest.fixture(scope="session")
def vm_available() -> None:
    """Fail (CI=true) or skip (locally) unless scripts/fetch-vm-kernel.sh has prepared the VM."""
    reason = missing_artifacts()
    if reason is None:
        return
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
