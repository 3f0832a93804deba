"""scripts/e2e-kind.sh cannot run here (no container engine, no kind), so make it obviously right:
its DRY_RUN=1 command sequence is asserted, it is shellcheck-clean, and a run with stub tools on
PATH (each stub records its argv) shows the failure path: agent logs collected, cluster deleted,
exit status kept."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from plumber_agent import __version__

pytestmark = [pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "e2e-kind.sh"
SCRIPT_TIMEOUT_S = 60.0


def _run(env_extra: dict, *, path_prefix: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "DRY_RUN", "E2E_KIND_OVS")}
    env.update(env_extra)
    if path_prefix:
        env["PATH"] = f"{path_prefix}:{env.get('PATH', '')}"
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, cwd=str(REPO),
                          env=env, timeout=SCRIPT_TIMEOUT_S, check=False)


def _index(lines: list[str], needle: str) -> int:
    for i, line in enumerate(lines):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not among the commands:\n" + "\n".join(lines))


def test_dry_run_prints_the_whole_sequence_in_order():
    proc = _run({"DRY_RUN": "1", "E2E_CONTAINER_RUNTIME": "docker"})
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("+ ")]
    order = [
        _index(lines, "kind create cluster --name plumber-e2e --config"),
        _index(lines, f"docker build -t hostplumber/plumber-agent:{__version__} -f Containerfile ."),
        _index(lines, f"kind load docker-image hostplumber/plumber-agent:{__version__} --name plumber-e2e"),
        _index(lines, "docker exec plumber-e2e-worker2 ip link add name enp3s0f1 type dummy"),
        _index(lines, "kubectl apply -k /"),
        _index(lines, "condition=established --timeout=60s crd/hostnetworktemplates"),
        _index(lines, "kubectl apply -k manifests/admission/"),
        _index(lines, "rollout status daemonset/plumber-agent"),
        _index(lines, "E2E_TARGET=kind"),
        _index(lines, "kind delete cluster --name plumber-e2e"),
    ]
    assert order == sorted(order), "\n".join(lines)
    pytest_line = lines[_index(lines, "E2E_TARGET=kind")]
    assert "-m pytest -q tests/e2e" in pytest_line
    # Kind nodes share the machine's real /sys: the agents must get an empty sysfs root.
    assert "--sysfs-root=" in lines[_index(lines, "patch daemonset plumber-agent")]
    for node in ("plumber-e2e-control-plane", "plumber-e2e-worker", "plumber-e2e-worker2"):
        for nic in ("eno1", "eno2", "enp3s0f0", "enp3s0f1"):
            _index(lines, f"docker exec {node} ip link add name {nic} type dummy")
    assert lines[-1].startswith("+ kind delete cluster"), "the cluster must be deleted last"


def test_dry_run_with_podman_saves_and_loads_an_archive():
    proc = _run({"DRY_RUN": "1", "E2E_CONTAINER_RUNTIME": "podman"})
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert _index(lines, "podman build") < _index(lines, "podman save -o") < \
        _index(lines, "kind load image-archive")


def test_script_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck)")
    proc = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True,
                          timeout=SCRIPT_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


STUB = """#!/usr/bin/env bash
printf '%s' "$(basename "$0")" >> "$STUB_LOG"
printf ' %s' "$@" >> "$STUB_LOG"
printf '\\n' >> "$STUB_LOG"
if [[ "$(basename "$0")" == kind && "$1 $2" == "get nodes" ]]; then
  printf '%s\\n' plumber-e2e-control-plane plumber-e2e-worker plumber-e2e-worker2
fi
if [[ "$(basename "$0")" == fakepython ]]; then
  exit 3   # the scenarios fail
fi
exit 0
"""


def test_failed_scenarios_collect_logs_delete_cluster_and_keep_the_exit_status(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("kind", "kubectl", "docker", "fakepython"):
        path = bindir / tool
        path.write_text(STUB)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.log"
    proc = _run({"STUB_LOG": str(log), "PYTHON": "fakepython", "E2E_CONTAINER_RUNTIME": "docker",
                 "TMPDIR": str(tmp_path)}, path_prefix=str(bindir))
    assert proc.returncode == 3, proc.stderr
    calls = log.read_text().splitlines()
    pytest_call = _index(calls, "fakepython -m pytest -q tests/e2e")
    logs_call = _index(calls, "kubectl logs -n plumber-system -l app.kubernetes.io/name=plumber-agent")
    delete_call = _index(calls, "kind delete cluster --name plumber-e2e")
    assert pytest_call < logs_call < delete_call, "\n".join(calls)
    assert not list(tmp_path.glob("plumber-e2e-kind.*")), "the script's temp dir must be removed"
