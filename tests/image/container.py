"""Podman plumbing for the image tests, and the DaemonSet -> `podman run` translation.

Why translate the manifest instead of writing the `podman run` by hand: the point of running the
agent from its image is to catch a manifest and an image that disagree (a mount the agent does
not read from, a tool the image lacks, args the entrypoint does not take). So the container's
command, args, env, securityContext, volumeMounts and hostPath volumes are read from
manifests/agent/daemonset.yaml, and anything the translation does not understand is an error
naming the manifest path, never silently dropped.

Facts about this machine family (CI included), measured: podman needs `--runtime runc` (crun
refuses the hybrid cgroup v1/v2 layout) and small `--ulimit` values (podman's default raises
nofile, which is refused; see ulimit_args); it picks the cgroupfs cgroup manager and the
file events backend by itself when systemd is not PID 1, so those need no flags.
"""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from tests.helpers.paths import REPO_ROOT

DAEMONSET = REPO_ROOT / "manifests" / "agent" / "daemonset.yaml"
UNPRIVILEGED_COMPONENT = REPO_ROOT / "manifests" / "components" / "unprivileged" / "kustomization.yaml"
BUILD_IMAGE_SCRIPT = REPO_ROOT / "scripts" / "build-image.sh"
BASE_IMAGE_SCRIPT = REPO_ROOT / "scripts" / "make-base-image.sh"
# Not hostplumber/plumber-agent:latest: a test run must not replace the image a developer built.
TEST_IMAGE = "localhost/plumber-agent:image-test"
BASE_BUILD_TIMEOUT_S = 900.0  # debootstrap from the mirror: about 90 s here
IMAGE_BUILD_TIMEOUT_S = 900.0  # about 65 s cold here, a few seconds warm
PODMAN_TIMEOUT_S = 120.0  # one podman command other than build/run
CONTAINER_NOFILE = 8192
CONTAINER_NPROC = 4096
# Where the DaemonSet's service account token lands in a pod (client-go's and the Python
# client's in-cluster config read it there).
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class ManifestError(ValueError):
    """The DaemonSet uses something the local translation cannot reproduce."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def podman_missing_reason() -> Optional[str]:
    """Why the image cannot be built and run here (None when it can)."""
    if os.geteuid() != 0:
        return "building and running the image with podman needs root"
    for tool, package in (("podman", "podman"), ("debootstrap", "debootstrap")):
        if shutil.which(tool) is None:
            return (f"{tool} is not installed (Debian package {package}; "
                    "scripts/install-deps.sh installs it)")
    return None


def oci_runtime() -> Optional[str]:
    """runc when installed (the rule scripts/build-image.sh follows), else podman's default."""
    return os.environ.get("PODMAN_RUNTIME") or shutil.which("runc")


def podman_argv() -> list[str]:
    """`podman` plus the global flags every call here uses."""
    runtime = oci_runtime()
    return ["podman", *(["--runtime", runtime] if runtime else [])]


def ulimit_args() -> list[str]:
    """Small nofile/nproc limits for every container: podman's defaults (nofile 1048576) are
    refused here, and so is nproc at this process's own hard limit; these are plenty for the
    agent and never above what this process has."""
    out = []
    for name, which, want in (("nofile", resource.RLIMIT_NOFILE, CONTAINER_NOFILE),
                              ("nproc", resource.RLIMIT_NPROC, CONTAINER_NPROC)):
        _, hard = resource.getrlimit(which)
        value = want if hard == resource.RLIM_INFINITY else min(want, hard)
        out += ["--ulimit", f"{name}={value}:{value}"]
    return out


def podman(*args: str, timeout_s: float = PODMAN_TIMEOUT_S,
           check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*podman_argv(), *args], capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} exited {proc.returncode}: "
                           f"{proc.stderr.strip()[-2000:]}")
    return proc


@dataclass
class Timed:
    value: str
    seconds: float


def _run_script(script: Path, *, env: dict, timeout_s: float) -> Timed:
    started = time.monotonic()
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env,
                          timeout=timeout_s, cwd=str(REPO_ROOT), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{script.relative_to(REPO_ROOT)} exited {proc.returncode}:\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return Timed(proc.stdout.strip().splitlines()[-1], time.monotonic() - started)


def build_standin_base() -> Timed:
    """The Debian-package stand-in for python:3.11-slim-bookworm (cached by podman tag)."""
    return _run_script(BASE_IMAGE_SCRIPT, env=dict(os.environ, CONTAINER_RUNTIME="podman"),
                       timeout_s=BASE_BUILD_TIMEOUT_S)


def build_image(*, base: str, image: str = TEST_IMAGE) -> Timed:
    env = dict(os.environ, CONTAINER_RUNTIME="podman", IMAGE=image, BASE_IMAGE=base)
    runtime = oci_runtime()
    if runtime:
        env["PODMAN_RUNTIME"] = runtime
    return _run_script(BUILD_IMAGE_SCRIPT, env=env, timeout_s=IMAGE_BUILD_TIMEOUT_S)


def image_size_bytes(image: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


# ------------------------------------------------------------------ manifest -> podman run
@dataclass
class AgentPod:
    """The parts of the DaemonSet's pod template that decide how the agent runs."""

    container: dict
    pod_spec: dict
    namespace: str  # the DaemonSet's, which its pods' service account files name
    path: str  # where in the manifest the container is, for error messages


def load_agent_pod(path: Path = DAEMONSET, container_name: str = "plumber-agent") -> AgentPod:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    daemonsets = [d for d in docs if d.get("kind") == "DaemonSet"]
    if len(daemonsets) != 1:
        raise ManifestError(f"{path}: expected one DaemonSet, found {len(daemonsets)}")
    pod_spec = daemonsets[0]["spec"]["template"]["spec"]
    namespace = daemonsets[0]["metadata"].get("namespace", "default")
    for index, container in enumerate(pod_spec.get("containers") or []):
        if container.get("name") == container_name:
            return AgentPod(container, pod_spec, namespace, f"{path.name}: spec.template.spec.containers[{index}]")
    raise ManifestError(f"{path}: no container named {container_name!r}")


# securityContext keys the translation reproduces; any other one is an error (a manifest that
# drops privileges must be tested with them dropped, not run privileged by accident).
_SECURITY_KEYS = {"privileged", "capabilities", "allowPrivilegeEscalation", "seccompProfile",
                  "appArmorProfile", "seLinuxOptions"}


def unprivileged_security_context(path: Path = UNPRIVILEGED_COMPONENT) -> dict:
    """The securityContext manifests/components/unprivileged puts on the agent container."""
    component = yaml.safe_load(path.read_text(encoding="utf-8"))
    (patch,) = component["patches"]
    (op,) = yaml.safe_load(patch["patch"])
    if op["path"] != "/spec/template/spec/containers/0/securityContext":
        raise ManifestError(f"{path}: the patch replaces {op['path']}, not the securityContext")
    return op["value"]


def security_options(security: dict, where: str) -> list[str]:
    """`podman run` options for a container securityContext (manifests/components/unprivileged
    uses every key here). RuntimeDefault seccomp is podman's default profile; Unconfined AppArmor
    and an SELinux type are passed on (podman ignores them on a host without that LSM)."""
    extra = set(security) - _SECURITY_KEYS
    if extra:
        raise ManifestError(f"{where}.securityContext: {sorted(extra)} not reproduced")
    options: list[str] = []
    if security.get("privileged"):
        options.append("--privileged")
    capabilities = security.get("capabilities") or {}
    for key, flag in (("drop", "--cap-drop"), ("add", "--cap-add")):
        for cap in capabilities.get(key) or []:
            options += [flag, str(cap)]
    if security.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    seccomp = (security.get("seccompProfile") or {}).get("type")
    if seccomp not in (None, "RuntimeDefault"):
        raise ManifestError(f"{where}.securityContext.seccompProfile: {seccomp!r} not reproduced")
    apparmor = (security.get("appArmorProfile") or {}).get("type")
    if apparmor == "Unconfined":
        options += ["--security-opt", "apparmor=unconfined"]
    elif apparmor not in (None, "RuntimeDefault"):
        raise ManifestError(f"{where}.securityContext.appArmorProfile: {apparmor!r} not reproduced")
    selinux = security.get("seLinuxOptions") or {}
    if set(selinux) - {"type"}:
        raise ManifestError(f"{where}.securityContext.seLinuxOptions: only type is reproduced")
    if selinux.get("type"):
        options += ["--security-opt", f"label=type:{selinux['type']}"]
    return options
_CONTAINER_KEYS_IGNORED = {"name", "image", "imagePullPolicy", "ports", "livenessProbe",
                           "readinessProbe", "resources"}


def run_args(pod: AgentPod, *, host_paths: dict[str, str], field_refs: dict[str, str],
             split_mounts: frozenset[str] = frozenset(),
             extra_mounts: tuple[tuple[str, str, bool], ...] = (),
             extra_env: Optional[dict[str, str]] = None) -> tuple[list[str], list[str]]:
    """(`podman run` options, the container's argv after the image) for the agent container.

    host_paths maps each hostPath the manifest mounts onto this node's simulated counterpart;
    field_refs gives the values of the downward-API fields its env uses (spec.nodeName...).
    A hostPath in split_mounts is mounted entry by entry (LOCAL/bus on MOUNTPATH/bus, ...) over
    the container's own directory: for /sys, where runc must still create /sys/fs/cgroup, which
    the emulated sysfs tree (bus, class, devices only) cannot hold. Hidden entries (the
    emulator's control directory) are not mounted: no real sysfs has them.
    """
    container, spec, where = pod.container, pod.pod_spec, pod.path
    unknown = set(container) - _CONTAINER_KEYS_IGNORED - {"command", "args", "env",
                                                          "securityContext", "volumeMounts"}
    if unknown:
        raise ManifestError(f"{where}: fields {sorted(unknown)} are not reproduced by "
                            "tests/image/container.py run_args")
    options: list[str] = []
    if spec.get("hostNetwork"):
        options += ["--network", "host"]
    options += security_options(container.get("securityContext") or {}, where)

    for index, var in enumerate(container.get("env") or []):
        if "value" in var:
            value = str(var["value"])
        else:
            field_path = ((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            if field_path not in field_refs:
                raise ManifestError(f"{where}.env[{index}] ({var.get('name')}): only literal "
                                    f"values and fieldRefs {sorted(field_refs)} are reproduced")
            value = field_refs[field_path]
        options += ["--env", f"{var['name']}={value}"]
    for name, value in (extra_env or {}).items():
        options += ["--env", f"{name}={value}"]

    volumes = {v.get("name"): (i, v) for i, v in enumerate(spec.get("volumes") or [])}
    for index, mount in enumerate(container.get("volumeMounts") or []):
        mwhere = f"{where}.volumeMounts[{index}]"
        unsupported = set(mount) - {"name", "mountPath", "readOnly"}
        if unsupported:
            raise ManifestError(f"{mwhere}: {sorted(unsupported)} not reproduced")
        if mount["name"] not in volumes:
            raise ManifestError(f"{mwhere}: no volume named {mount['name']!r} in spec.template.spec.volumes")
        vindex, volume = volumes[mount["name"]]
        vwhere = f"spec.template.spec.volumes[{vindex}]"
        host_path = (volume.get("hostPath") or {}).get("path")
        if host_path is None:
            raise ManifestError(f"{vwhere} ({mount['name']}): only hostPath volumes are reproduced")
        if host_path not in host_paths:
            raise ManifestError(f"{vwhere}.hostPath.path {host_path!r}: this simulated node has no "
                                f"counterpart (known: {sorted(host_paths)})")
        local = Path(host_paths[host_path])
        kind = volume["hostPath"].get("type", "")
        if kind == "DirectoryOrCreate":
            local.mkdir(parents=True, exist_ok=True)
        elif kind == "Directory" and not local.is_dir():
            raise ManifestError(f"{vwhere}.hostPath: type Directory, but {local} is not a directory")
        suffix = ":ro" if mount.get("readOnly") else ""
        if host_path in split_mounts:
            for entry in sorted(e for e in os.listdir(local) if not e.startswith(".")):
                options += ["--volume", f"{local / entry}:{mount['mountPath'].rstrip('/')}/{entry}{suffix}"]
        else:
            options += ["--volume", f"{local}:{mount['mountPath']}{suffix}"]
    for local, inside, read_only in extra_mounts:
        options += ["--volume", f"{local}:{inside}{':ro' if read_only else ''}"]

    if container.get("command"):
        options += ["--entrypoint", str(container["command"][0])]
        argv = [str(a) for a in container["command"][1:]] + [str(a) for a in container.get("args") or []]
    else:
        argv = [str(a) for a in container.get("args") or []]
    return options, argv
