"""A private userspace Open vSwitch (ovsdb-server + ovs-vswitchd) for tests and e2e harnesses.

Why: the CI kernel has no OVS datapath module, but userspace OVS with `datapath_type=netdev` works,
so tests can drive a *real* OVS instead of a mock. Each instance lives in its own directory (database,
sockets, pid files, logs) and, when given a network namespace, runs its daemons inside it: two
userspace instances in one namespace fight over the `ovs-netdev` tap device and the second one's
bridges fail with exit status 0 (see docs/environment.md). Several instances can run at
once, one per namespace. Both daemons are stopped on exit, even when the body failed; stragglers are
killed by the pid they wrote (never by name).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from tests.helpers.wait import WaitTimeout, wait_for

OVS_BINARIES = ("ovsdb-tool", "ovsdb-server", "ovs-vsctl", "ovs-vswitchd", "ovs-appctl")
OVS_SCHEMA_CANDIDATES = ("/usr/share/openvswitch/vswitch.ovsschema",
                         "/usr/local/share/openvswitch/vswitch.ovsschema")
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.02
# A unix socket path must fit in sun_path (108 bytes). The longest path under the instance dir is
# a bridge's "<dir>/<15-char bridge>.snoop"; keep a margin.
MAX_DIR_LEN = 80


class OvsUnavailable(RuntimeError):
    """Raised instead of pytest.skip when the caller is not a pytest test (skip_missing=False)."""


def missing_ovs_reason() -> Optional[str]:
    """Why a userspace OVS cannot be started here, or None when it can."""
    missing = [name for name in OVS_BINARIES if shutil.which(name) is None]
    if missing:
        return (f"Open vSwitch userspace tools missing ({', '.join(missing)}); "
                "install the Debian package openvswitch-switch")
    if _schema_path() is None:
        return f"Open vSwitch schema not found in {', '.join(OVS_SCHEMA_CANDIDATES)}"
    if os.geteuid() != 0:
        return "userspace Open vSwitch needs root (tap devices, network namespaces)"
    return None


def _schema_path() -> Optional[str]:
    pkgdata = os.environ.get("OVS_PKGDATADIR")
    candidates = ([os.path.join(pkgdata, "vswitch.ovsschema")] if pkgdata else []) + list(
        OVS_SCHEMA_CANDIDATES)
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    return None


def _pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _pid_is(pid: int, program: str) -> bool:
    """Guard against pid reuse: is `pid` still the program we started?"""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv0 = cmdline.read().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return False
    return os.path.basename(argv0).startswith(program) or program in argv0


def _wait_gone(pid: int, timeout_s: float) -> bool:
    """True once `pid` is gone, False if it is still there after `timeout_s`."""
    try:
        wait_for(lambda: not _pid_alive(pid), timeout_s=timeout_s, interval_s=POLL_INTERVAL_S,
                 what=f"pid {pid} to exit")
    except WaitTimeout:
        return False
    return True


def _pidfile_pid(path: Path) -> Optional[int]:
    """The pid in a pid file; None while it is missing or half written."""
    try:
        text = path.read_text().strip()
        return int(text) if text else None
    except (FileNotFoundError, ValueError):
        return None


def _read_pidfile(path: Path, timeout_s: float) -> int:
    try:
        return wait_for(lambda: _pidfile_pid(path), timeout_s=timeout_s,
                        interval_s=POLL_INTERVAL_S, what=f"{path} to appear")
    except WaitTimeout as exc:
        raise RuntimeError(str(exc)) from None


@dataclass
class UserspaceOvs:
    """A running private OVS. `db` is what Ovs(db=...) and `ovs-vsctl --db=` take."""

    dir: Path
    netns: Optional[str]
    db: str
    ovsdb_pid: Optional[int] = None
    vswitchd_pid: Optional[int] = None
    _env: dict = field(default_factory=dict, repr=False)

    # Paths ---------------------------------------------------------------------------------
    @property
    def db_sock(self) -> Path:
        return self.dir / "db.sock"

    @property
    def vswitchd_ctl(self) -> Path:
        return self.dir / "ovs-vswitchd.ctl"

    @property
    def ovsdb_ctl(self) -> Path:
        return self.dir / "ovsdb-server.ctl"

    @property
    def vswitchd_log(self) -> Path:
        return self.dir / "ovs-vswitchd.log"

    # Helpers for tests ---------------------------------------------------------------------
    def netns_argv(self, argv: list[str]) -> list[str]:
        """`argv` run inside this instance's network namespace (if any)."""
        return (["ip", "netns", "exec", self.netns] + argv) if self.netns else list(argv)

    def vsctl(self, *args: str, timeout_s: float = 10.0, check: bool = True
              ) -> subprocess.CompletedProcess:
        """Run ovs-vsctl against this instance (for tests to set up or cross-check state)."""
        argv = ["ovs-vsctl", f"--db={self.db}", f"--timeout={max(1, int(timeout_s))}", *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 5,
                                check=False, env=self._env or None)
        if check and result.returncode != 0:
            raise RuntimeError(f"{argv} exited {result.returncode}: {result.stderr.strip()}")
        return result

    def kill_vswitchd(self) -> None:
        """SIGKILL ovs-vswitchd (fault injection): the database stays reachable."""
        self._kill(self.vswitchd_pid, "ovs-vswitchd")

    def kill_ovsdb(self) -> None:
        """SIGKILL ovsdb-server (fault injection): the socket file stays, connections fail."""
        self._kill(self.ovsdb_pid, "ovsdb-server")

    def _kill(self, pid: Optional[int], program: str) -> None:
        if pid is None or not _pid_alive(pid) or not _pid_is(pid, program):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not _wait_gone(pid, STOP_TIMEOUT_S):
            raise RuntimeError(f"{program} pid {pid} survived SIGKILL for {STOP_TIMEOUT_S} s")

    # Lifecycle -----------------------------------------------------------------------------
    def _run(self, argv: list[str], *, timeout_s: float = START_TIMEOUT_S,
             in_netns: bool = False, log_name: Optional[str] = None) -> None:
        if in_netns:
            argv = self.netns_argv(argv)
        # Daemons keep inherited pipes open until they close their standard fds; write to a file
        # so run() never waits on a detached child.
        out_path = self.dir / (log_name or "commands.out")
        with open(out_path, "ab") as out:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    timeout=timeout_s, check=False, env=self._env)
        if result.returncode != 0:
            tail = out_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{argv} exited {result.returncode}: {tail}")

    def start(self) -> None:
        d = self.dir
        self._run(["ovsdb-tool", "create", str(d / "conf.db"), str(_schema_path())])
        self._run(["ovsdb-server", str(d / "conf.db"), f"--remote=punix:{self.db_sock}",
                   f"--pidfile={d / 'ovsdb-server.pid'}", f"--unixctl={self.ovsdb_ctl}",
                   f"--log-file={d / 'ovsdb-server.log'}", "--detach", "--no-chdir"],
                  in_netns=True, log_name="ovsdb-server.out")
        self.ovsdb_pid = _read_pidfile(d / "ovsdb-server.pid", START_TIMEOUT_S)
        self._run(["ovs-vsctl", f"--db={self.db}", "--no-wait", "init"])
        self._run(["ovs-vswitchd", self.db, f"--pidfile={d / 'ovs-vswitchd.pid'}",
                   f"--unixctl={self.vswitchd_ctl}", f"--log-file={self.vswitchd_log}",
                   "--detach", "--no-chdir"], in_netns=True, log_name="ovs-vswitchd.out")
        self.vswitchd_pid = _read_pidfile(d / "ovs-vswitchd.pid", START_TIMEOUT_S)
        # --detach returns once ovs-vswitchd applied the initial configuration; check that its
        # control socket answers (bounded) so a half-started daemon fails here, not in a test.
        self._run(["ovs-appctl", f"--timeout={int(START_TIMEOUT_S)}", "-t", str(self.vswitchd_ctl),
                   "version"])

    def stop(self) -> None:
        """Graceful exit (vswitchd with --cleanup removes its tap devices), then SIGKILL."""
        for pid, program, ctl, extra in ((self.vswitchd_pid, "ovs-vswitchd", self.vswitchd_ctl,
                                          ["--cleanup"]),
                                         (self.ovsdb_pid, "ovsdb-server", self.ovsdb_ctl, [])):
            if pid is None:  # start() failed before reading the pid file: read it now
                with contextlib.suppress(RuntimeError):
                    pid = _read_pidfile(self.dir / f"{program}.pid", 0)
            if pid is None or not _pid_alive(pid):
                continue
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                subprocess.run(["ovs-appctl", f"--timeout={int(STOP_TIMEOUT_S)}", "-t", str(ctl),
                                "exit", *extra], capture_output=True, timeout=STOP_TIMEOUT_S + 2,
                               check=False, env=self._env)
            if not _wait_gone(pid, STOP_TIMEOUT_S):
                self._kill(pid, program)


@contextlib.contextmanager
def userspace_ovs(workdir, netns: Optional[str] = None, *, skip_missing: bool = True
                  ) -> Iterator[UserspaceOvs]:
    """Start ovsdb-server + ovs-vswitchd in a fresh directory under `workdir` (inside `ip netns
    exec NETNS` when given); yield the running instance; stop both on exit, even on failure.

    Skips the calling pytest test (or raises OvsUnavailable when skip_missing=False) when the
    OVS userspace tools are missing or we are not root.
    """
    reason = missing_ovs_reason()
    if reason:
        if skip_missing:
            import pytest  # only when used from a test

            pytest.skip(reason)
        raise OvsUnavailable(reason)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    parent = workdir if len(str(workdir)) < MAX_DIR_LEN - 12 else None
    created_short_dir = parent is None
    # Too long for unix socket paths: fall back to a short private directory (removed on exit).
    instance_dir = Path(tempfile.mkdtemp(prefix="ovs-", dir=parent))
    env = dict(os.environ)
    # Bridges' management sockets (<bridge>.mgmt) and default logs go to the private directory
    # instead of the host's /var/run/openvswitch, so instances never collide.
    env.update(OVS_RUNDIR=str(instance_dir), OVS_LOGDIR=str(instance_dir),
               OVS_DBDIR=str(instance_dir))
    instance = UserspaceOvs(dir=instance_dir, netns=netns, db=f"unix:{instance_dir / 'db.sock'}",
                            _env=env)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        if created_short_dir:
            shutil.rmtree(instance_dir, ignore_errors=True)
