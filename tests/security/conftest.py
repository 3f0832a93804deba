"""Fixtures for the security tests (the same throw-away node as the fault suite)."""
from tests.faults.conftest import node_ns, static_sysfs  # noqa: F401  (pytest fixtures)
from tests.helpers.netns import netns_name  # noqa: F401
