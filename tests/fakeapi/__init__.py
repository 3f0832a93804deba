"""An in-repo fake Kubernetes API server with real HTTP and real semantics (see server.py)."""
from tests.fakeapi.server import (  # noqa: F401
    EVENTS, GROUP, HOSTNETWORKS, NODES, TEMPLATES, VERSION, FakeApiServer, RequestRecord,
    json_patch, merge_patch,
)

__all__ = ["EVENTS", "GROUP", "HOSTNETWORKS", "NODES", "TEMPLATES", "VERSION", "FakeApiServer",
           "RequestRecord", "json_patch", "merge_patch"]
