"""The DaemonSet -> `podman run` translation (no podman needed): what the image e2e runs is what
the manifest says, and a manifest feature it cannot reproduce is an error naming the field."""
from __future__ import annotations

import copy
import os

import pytest

from tests.image.container import (AgentPod, ManifestError, load_agent_pod, run_args,
                                   unprivileged_security_context)

@pytest.fixture
def pod() -> AgentPod:
    return load_agent_pod()


@pytest.fixture
def paths(tmp_path) -> dict[str, str]:
    """A simulated node's counterparts of the DaemonSet's hostPaths."""
    (tmp_path / "sys").mkdir()  # hostPath type Directory must exist
    (tmp_path / "modules").mkdir()
    return {"/sys": str(tmp_path / "sys"), "/var/run/openvswitch": str(tmp_path / "ovs"),
            "/var/lib/plumber-agent": str(tmp_path / "state"),
            "/lib/modules": str(tmp_path / "modules")}


FIELD_REFS = {"spec.nodeName": "node-a", "metadata.namespace": "plumber-system"}


def _translate(pod: AgentPod, paths: dict[str, str]):
    return run_args(pod, host_paths=paths, field_refs=FIELD_REFS)


def _values(options: list[str], flag: str) -> list[str]:
    return [options[i + 1] for i, o in enumerate(options) if o == flag]


def test_the_manifest_translates_to_privileged_host_network_with_its_mounts(pod, paths):
    options, argv = _translate(pod, paths)
    assert "--privileged" in options
    assert _values(options, "--network") == ["host"]
    assert _values(options, "--env") == ["NODE_NAME=node-a", "POD_NAMESPACE=plumber-system"]
    mounts = dict(v.split(":", 1) for v in _values(options, "--volume"))
    assert mounts == {paths["/sys"]: "/sys",
                      paths["/var/run/openvswitch"]: "/var/run/openvswitch",
                      paths["/var/lib/plumber-agent"]: "/var/lib/plumber-agent",
                      paths["/lib/modules"]: "/lib/modules:ro"}
    # No `command`: the image's ENTRYPOINT runs with the manifest's args.
    assert "--entrypoint" not in options
    assert argv == [str(a) for a in pod.container["args"]]
    assert argv[0] == "run"


def test_directory_or_create_host_paths_are_created(pod, paths):
    _translate(pod, paths)
    for path in ("/var/run/openvswitch", "/var/lib/plumber-agent"):
        assert os.path.isdir(paths[path])


def test_a_command_replaces_the_entrypoint(pod, paths):
    pod.container["command"] = ["/opt/plumber-agent/bin/plumber-agent", "--log-format", "text"]
    options, argv = _translate(pod, paths)
    assert _values(options, "--entrypoint") == ["/opt/plumber-agent/bin/plumber-agent"]
    assert argv[:3] == ["--log-format", "text", "run"]


@pytest.mark.parametrize("mutate,message", [
    (lambda p: p.pod_spec["volumes"].append({"name": "dev", "hostPath": {"path": "/dev"}})
     or p.container["volumeMounts"].append({"name": "dev", "mountPath": "/dev"}),
     "spec.template.spec.volumes[4].hostPath.path '/dev': this simulated node has no counterpart"),
    (lambda p: p.container["volumeMounts"][0].update(subPath="x"),
     "containers[0].volumeMounts[0]: ['subPath'] not reproduced"),
    (lambda p: p.container["volumeMounts"].append({"name": "nope", "mountPath": "/x"}),
     "volumeMounts[4]: no volume named 'nope'"),
    (lambda p: p.container["securityContext"].update(runAsUser=1000),
     "securityContext: ['runAsUser'] not reproduced"),
    (lambda p: p.container["env"].append({"name": "POD_IP", "valueFrom": {"fieldRef": {
        "fieldPath": "status.podIP"}}}),
     "env[2] (POD_IP): only literal values and fieldRefs"),
    (lambda p: p.container.update(workingDir="/tmp"),
     "fields ['workingDir'] are not reproduced"),
])
def test_what_cannot_be_reproduced_is_an_error_naming_the_field(pod, paths, mutate, message):
    broken = copy.deepcopy(pod)
    mutate(broken)
    with pytest.raises(ManifestError) as info:
        _translate(broken, paths)
    assert message in str(info.value)
    assert "daemonset.yaml: spec.template.spec" in str(info.value) or "spec.template.spec.volumes" in str(info.value)


def test_a_missing_directory_host_path_is_an_error(pod, paths, tmp_path):
    paths["/sys"] = str(tmp_path / "absent")
    with pytest.raises(ManifestError, match=r"volumes\[0\]\.hostPath: type Directory, but .*absent"):
        _translate(pod, paths)


def test_a_split_mount_mounts_each_entry_over_the_containers_directory(pod, paths):
    for entry in ("bus", "class", "devices", ".emu"):
        os.mkdir(os.path.join(paths["/sys"], entry))
    options, _ = run_args(pod, host_paths=paths, field_refs=FIELD_REFS,
                          split_mounts=frozenset({"/sys"}))
    mounts = [v for v in _values(options, "--volume") if v.endswith(("/bus", "/class", "/devices"))]
    assert mounts == [f"{paths['/sys']}/{e}:/sys/{e}" for e in ("bus", "class", "devices")]
    assert not [v for v in _values(options, "--volume") if v.startswith(paths["/sys"] + ":")
                or ".emu" in v]


def test_the_unprivileged_components_security_context_translates_to_capabilities(pod, paths):
    """manifests/components/unprivileged: NET_ADMIN only, no privileged; what the capability
    probe (test_security_context.py) runs with."""
    pod.container["securityContext"] = unprivileged_security_context()
    options, _ = _translate(pod, paths)
    assert "--privileged" not in options
    assert _values(options, "--cap-drop") == ["ALL"]
    assert _values(options, "--cap-add") == ["NET_ADMIN"]
    assert set(_values(options, "--security-opt")) == {
        "no-new-privileges", "apparmor=unconfined", "label=type:spc_t"}
