"""A free TCP port on a loopback address, for servers the tests start (metrics, fake API).

The port is free when returned; the caller binds it soon after (the kernel does not hand the
same ephemeral port out again at once). Binding to it and closing also gives a port where nothing
listens, for "connection refused" tests.
"""
from __future__ import annotations

import socket

LOOPBACK_V4 = "127.0.0.1"


def free_port(host: str = LOOPBACK_V4) -> int:
    """A TCP port nothing listens on at `host` right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                       socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
