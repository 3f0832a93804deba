"""Throw-away network namespaces for privileged tests (real kernel netlink, never mocks).

Every namespace gets a unique name and is deleted on exit even when the test fails, so tests can
run in parallel and leave nothing behind. Links are named explicitly (`name A ... peer name B`):
`ip link add a ...` would parse `a` as the `address` keyword.

Usage:
    def test_x(netns_name): ...   # the fixture, registered once in tests/conftest.py
    from tests.helpers.netns import netns, veth_pair, ip_json, ip
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from typing import Iterator

import pytest

NETNS_PREFIX = "plumbtest-"
IP_TIMEOUT_S = 30.0


class IpCommandError(RuntimeError):
    """An `ip` command failed; carries its argv and stderr."""


def _run(argv: list[str], input_text: str | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT_S,
                          check=False, input=input_text)
    if proc.returncode != 0:
        raise IpCommandError(f"{' '.join(argv)} exited {proc.returncode}: "
                             f"{proc.stderr.strip()}")
    return proc.stdout


def ip(ns: str | None, *args: str, input_text: str | None = None) -> str:
    """Run `ip [-n NS] ARGS...` (argv list, no shell; `input_text` on stdin, for -batch -);
    return stdout, raise on failure."""
    argv = ["ip"] + (["-n", ns] if ns else []) + [str(arg) for arg in args]
    return _run(argv, input_text)


def ip_json(ns: str | None, *args: str):
    """Parsed `ip -j [-n NS] ARGS...` output (a list, [] when ip prints nothing)."""
    argv = ["ip", "-j"] + (["-n", ns] if ns else []) + [str(arg) for arg in args]
    out = _run(argv).strip()
    return json.loads(out) if out else []


def ipv6_settled(ns: str | None, ifnames: tuple[str, ...] | None = None) -> bool:
    """Each link named (None: every link but lo) has an IPv6 link-local address and none of its
    addresses is still tentative (duplicate address detection): the kernel changes them by
    itself a second or so after a link comes up, so a before/after comparison or a count of
    the agent's events must start after that."""
    links = {link["ifname"]: link.get("addr_info") or [] for link in ip_json(ns, "addr", "show")}
    names = ifnames if ifnames is not None else [name for name in links if name != "lo"]
    for name in names:
        info = links.get(name) or []
        if any(a.get("tentative") for a in info) or not any(
                a.get("scope") == "link" and a.get("family") == "inet6" for a in info):
            return False
    return True


def unique_netns_name() -> str:
    return f"{NETNS_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join("/var/run/netns", name))


@contextlib.contextmanager
def netns() -> Iterator[str]:
    """A fresh, uniquely named namespace with lo up; deleted on exit (even on failure)."""
    name = unique_netns_name()
    _run(["ip", "netns", "add", name])
    try:
        ip(name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True,
                       timeout=IP_TIMEOUT_S, check=False)


def veth_pair(ns: str, a: str, b: str, *, up: bool = True) -> None:
    """`ip link add name A type veth peer name B` inside NS (both ends there), set up."""
    ip(ns, "link", "add", "name", a, "type", "veth", "peer", "name", b)
    if up:
        ip(ns, "link", "set", a, "up")
        ip(ns, "link", "set", b, "up")


def privileged_skip_reason() -> str | None:
    """Why namespace tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs the iproute2 `ip` command"
    probe = unique_netns_name()
    try:
        _run(["ip", "netns", "add", probe])
    except (IpCommandError, OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` does not work here: {exc}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=IP_TIMEOUT_S,
                   check=False)
    return None


_skip_reason_cache: list = []


def _cached_skip_reason() -> str | None:
    if not _skip_reason_cache:
        _skip_reason_cache.append(privileged_skip_reason())
    return _skip_reason_cache[0]


@pytest.fixture
def netns_name() -> Iterator[str]:
    """A throw-away namespace (lo up) for one test; skips with the reason when not possible."""
    reason = _cached_skip_reason()
    if reason:
        print(f"skipping: {reason}")
        pytest.skip(reason)
    with netns() as name:
        yield name
