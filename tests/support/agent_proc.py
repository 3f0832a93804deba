"""Real `plumber-agent` processes for the fault and bad-input suites, plus host snapshots.

Why a process and not the Reconciler in-process: the faults under test (SIGKILL mid-apply, two
agents on one node, an API server vanishing) only mean something for the real program with its
threads, signal handling, ledger lock and exit codes. Every agent started here is stopped by its
own pid on exit (never by name), and its log is kept for the assertion message.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Optional

import yaml

from tests.helpers.agent_env import REPO_ROOT, agent_env

AGENT_ONCE_TIMEOUT_S = 120.0
AGENT_STOP_TIMEOUT_S = 15.0


def agent_argv(*, netns: str, state_dir, sysfs_root, node_name: str = "node-a",
               templates=None, kubeconfig=None, output=None, once: bool = False,
               extra: tuple = ()) -> list[str]:
    argv = [sys.executable, "-m", "plumber_agent", "--log-format", "text", "--log-level", "info",
            "run", "--node-name", node_name, "--netns", netns, "--state-dir", str(state_dir),
            "--sysfs-root", str(sysfs_root)]
    if templates is not None:
        argv += ["--templates", str(templates)]
    if kubeconfig is not None:
        argv += ["--kubeconfig", str(kubeconfig)]
    if output is not None:
        argv += ["--output", str(output)]
    if once:
        argv.append("--once")
    return argv + list(extra)


def run_once(**kwargs) -> subprocess.CompletedProcess:
    """`plumber-agent run --once ...` to completion (bounded)."""
    return subprocess.run(agent_argv(once=True, **kwargs), capture_output=True, text=True,
                          timeout=AGENT_ONCE_TIMEOUT_S, env=agent_env(), cwd=str(REPO_ROOT),
                          stdin=subprocess.DEVNULL, check=False)


class AgentProcess:
    """A long-running agent; its combined output goes to `log_path`."""

    def __init__(self, argv: list[str], log_path, env: Optional[dict] = None):
        self.argv, self.log_path = argv, Path(log_path)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=agent_env(env),
                                     cwd=str(REPO_ROOT), start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self) -> Optional[int]:
        """SIGTERM, then SIGKILL after a bound; returns the exit code."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(AGENT_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(AGENT_STOP_TIMEOUT_S)
        self._log.close()
        return self.proc.returncode

    def wait_exit(self, timeout_s: float) -> Optional[int]:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None


@contextlib.contextmanager
def agent_process(argv: list[str], log_path, env: Optional[dict] = None) -> Iterator[AgentProcess]:
    agent = AgentProcess(argv, log_path, env)
    try:
        yield agent
    finally:
        agent.stop()


def read_hostnetwork(path) -> Optional[dict]:
    """The HostNetwork YAML the local-mode agent wrote (last document), or None."""
    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    except (OSError, yaml.YAMLError):
        return None
    return docs[-1] if docs else None


def template_states(hostnetwork: Optional[dict]) -> dict[str, dict]:
    status = (hostnetwork or {}).get("status") or {}
    return {t["name"]: t for t in status.get("templates") or []}


def write_templates(directory, templates: dict[str, dict]) -> Path:
    """name -> spec, one YAML file per template (HostNetworkTemplate objects)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.yaml"):
        old.unlink()
    for name, spec in templates.items():
        obj = {"apiVersion": "plumber.k8s.pf9.io/v1", "kind": "HostNetworkTemplate",
               "metadata": {"name": name, "creationTimestamp": "2024-01-01T00:00:00Z"},
               "spec": spec}
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(obj))
    return directory


def host_snapshot(ns: str) -> dict:
    """Links, addresses and routes of a namespace from `ip -j`, without volatile fields."""
    from tests.helpers.netns import ip_json
    dump = ip_json(ns, "-d", "addr")  # links with their addresses, in one read
    links = sorted((link["ifname"], link.get("mtu"), "UP" in link.get("flags", []),
                    link.get("link_type"), (link.get("linkinfo") or {}).get("info_kind"))
                   for link in dump)
    addrs = sorted((a["ifname"], i.get("family"), i.get("local"), i.get("prefixlen"))
                   for a in dump for i in a.get("addr_info", [])
                   if not str(i.get("local", "")).startswith("fe80:"))
    routes = sorted(
        (fam, r.get("dst"), r.get("dev"), r.get("gateway"), r.get("metric"), r.get("table"))
        for fam in ("-4", "-6") for r in ip_json(ns, fam, "route", "show", "table", "all")
        if not str(r.get("dst", "")).startswith(("fe80", "ff00", "local", "multicast"))
        and r.get("type") not in ("local", "broadcast", "multicast"))
    return {"links": links, "addrs": addrs, "routes": routes}


def tree_snapshot(root) -> dict:
    """Contents of every regular file under a (static) sysfs tree, symlinks as their targets."""
    out = {}
    root = Path(root)
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            try:
                out[rel] = path.read_text(errors="replace")
            except OSError as exc:
                out[rel] = f"<{exc}>"
    return out
