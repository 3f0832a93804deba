"""Opening netlink sockets inside a network namespace without forking.

pyroute2 0.9.7's `IPRoute(netns=...)` forks a child (`config.child_process_mode = "fork"`, and
"mp" is multiprocessing's default *fork* start method on Linux/Python 3.11, so it forks too) to
setns() and pass the socket back, and it *creates* a missing namespace unless flags=0
(docs/pitfalls.md 15, 16). Instead a short-lived helper thread setns()es into the existing /var/run/netns/NAME
(network namespaces are per thread) and opens the sockets there; the thread then ends. A missing
namespace is NotAvailable and is never created. pyroute2's global config is left alone.
"""
from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
from typing import Callable, Optional

from plumber_agent.errors import HostError, HostTimeout, NotAvailable
from plumber_agent.host.netlink.messages import (NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK,
                                                 NETLINK_ROUTE, SOL_NETLINK, errno_text)
from plumber_agent.validation import require

NETNS_RUN_DIR = "/var/run/netns"
NETNS_OPEN_TIMEOUT_S = 5.0
"""Bound on the helper thread that opens sockets inside a namespace."""
SOCKET_RCVBUF_BYTES = 4 * 1024 * 1024
CLONE_NEWNET = 0x40000000


def check_netns_name(value) -> Optional[str]:
    if not isinstance(value, str) or not value:
        return f"{value!r} is not a namespace name"
    if value in (".", "..") or "/" in value or len(value) > 255:
        return f"{value!r} is not a valid namespace name"
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        return f"{value!r} is not a valid namespace name (printable ASCII, no whitespace)"
    if value.startswith("-"):
        return f"{value!r} is not a valid namespace name (starts with '-')"
    return None


_libc = ctypes.CDLL(None, use_errno=True)


def _setns_net(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def open_netns_sockets(netns: Optional[str],
                       factories: list[Callable[[], socket.socket]]) -> list[socket.socket]:
    """One socket per factory, made inside namespace `netns` (None: this thread's own).

    The namespace must already exist (NotAvailable otherwise; it is never created). A helper
    thread enters it with setns(), which changes only that thread, opens the sockets and ends:
    no fork, safe in a threaded program, nothing in the caller's thread changes namespace.
    """
    if netns is None:
        return _make_all(factories)
    require(check_netns_name, netns, "netns")
    path = os.path.join(NETNS_RUN_DIR, netns)
    try:
        ns_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotAvailable(f"network namespace {netns!r} does not exist ({path} is missing); "
                           "it is not created automatically") from None
    except OSError as exc:
        raise NotAvailable(f"network namespace {netns!r}: cannot open {path}: "
                           f"{errno_text(exc.errno or 0)}") from None
    result: dict = {}

    def enter_and_open() -> None:
        try:
            _setns_net(ns_fd)
            result["sockets"] = _make_all(factories)
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    try:
        helper = threading.Thread(target=enter_and_open, name=f"netns-open:{netns}", daemon=True)
        helper.start()
        helper.join(NETNS_OPEN_TIMEOUT_S)
        if helper.is_alive():
            raise HostTimeout(f"opening sockets in network namespace {netns!r} took longer "
                              f"than {NETNS_OPEN_TIMEOUT_S} s")
    finally:
        os.close(ns_fd)
    if "error" in result:
        exc = result["error"]
        if isinstance(exc, OSError):
            code = exc.errno or 0
            if code == errno.EINVAL:
                raise NotAvailable(f"{path} is not a network namespace") from None
            raise HostError(f"cannot enter network namespace {netns!r}: {errno_text(code)}") \
                from None
        raise exc
    return result["sockets"]


def _make_all(factories: list[Callable[[], socket.socket]]) -> list[socket.socket]:
    made: list[socket.socket] = []
    try:
        for factory in factories:
            made.append(factory())
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made


def new_plain_rtnl_socket() -> socket.socket:
    """An unbound NETLINK_ROUTE socket with kernel defaults, handed to pyroute2 for writes
    (SOCK_DGRAM: asyncio's datagram transport, which pyroute2 0.9 uses, insists on it)."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                         NETLINK_ROUTE)


def new_rtnl_socket(groups: int = 0) -> socket.socket:
    """A plain NETLINK_ROUTE socket (bound, strict dump checking on when the kernel has it)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_RCVBUF_BYTES)
        for option in (NETLINK_GET_STRICT_CHK, NETLINK_EXT_ACK):
            try:
                sock.setsockopt(SOL_NETLINK, option, 1)
            except OSError:
                pass  # old kernel: the reader filters in userspace as well
        sock.bind((0, groups))
    except BaseException:
        sock.close()
        raise
    return sock

