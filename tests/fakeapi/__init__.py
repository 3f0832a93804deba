"""An in-repo fake Kubernetes API server with real HTTP and real semantics (see server.py)."""
from tests.fakeapi.server import (  # noqa: F401
    ADDRESSCLAIMS, EVENTS, GROUP, HOSTNETWORKS, LEASES, NODES, TEMPLATES, VERSION, FakeApiServer,
    RequestRecord,
    json_patch, merge_patch,
)

__all__ = ["ADDRESSCLAIMS", "LEASES", "EVENTS", "GROUP", "HOSTNETWORKS", "NODES", "TEMPLATES", "VERSION", "FakeApiServer",
           "RequestRecord", "json_patch", "merge_patch"]
