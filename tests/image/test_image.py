"""The built image: its entrypoint takes the manifest's args, the tools and imports the agent needs
are there, the trimming held, and nothing of the build is left in it."""
from __future__ import annotations

import pytest

from tests.image.container import image_size_bytes, load_agent_pod, podman, ulimit_args

pytestmark = [pytest.mark.image, pytest.mark.privileged]

# What the image adds to its base (the agent's venv + ovs-vsctl and its libraries): 65 MB when
# measured; an untrimmed venv alone is 172 MB. The bound catches losing a trimming step.
MAX_ADDED_BYTES = 90_000_000


def _in_image(image: str, *argv: str, entrypoint: str = "") -> str:
    options = ["--entrypoint", entrypoint] if entrypoint else []
    proc = podman("run", "--rm", *ulimit_args(), *options, image, *argv, check=False)
    assert proc.returncode == 0, f"{argv} in {image}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_the_manifests_args_parse_with_the_images_entrypoint(agent_image):
    pod = load_agent_pod()
    assert "command" not in pod.container, "update this test: the manifest now sets a command"
    out = _in_image(agent_image, *[str(a) for a in pod.container["args"]], "--help")
    assert out.startswith("usage: plumber-agent run"), out


def test_the_agent_finds_its_tools_and_dependencies(agent_image):
    assert "Open vSwitch" in _in_image(agent_image, "--version", entrypoint="ovs-vsctl")
    assert "not found" not in _in_image(agent_image, "/usr/bin/ovs-vsctl", entrypoint="ldd")
    script = ("import kubernetes, kubernetes.client, kubernetes.config, kubernetes.watch, "
              "pyroute2, pyudev, plumber_agent.cli, plumber_agent.host.netlink, "
              "plumber_agent.host.sriov, plumber_agent.host.ovs\n"
              "from importlib import resources\n"
              "print(sorted(p.name for p in resources.files('plumber_agent').joinpath('examples')"
              ".iterdir() if p.name.endswith('.yaml')))")
    examples = _in_image(agent_image, "-B", "-c", script, entrypoint="python3")
    assert "01-hostconfig-kernel-eno2.yaml" in examples, examples


def test_the_trimming_held_and_the_build_left_nothing_behind(agent_image):
    script = ("import importlib.util, os, sys, sysconfig\n"
              "site = sysconfig.get_path('purelib')\n"
              "print(sys.executable)\n"
              "print(importlib.util.find_spec('kubernetes.aio'), importlib.util.find_spec('aiohttp'))\n"
              "print([p for p in ('/src', '/wheels', '/tmp/wheels', '/root/.cache/pip') if os.path.exists(p)])\n"
              "print([d for d, _, _ in os.walk(site) if os.path.basename(d) == 'tests'])")
    lines = _in_image(agent_image, "-B", "-c", script, entrypoint="python3").splitlines()
    assert lines[0].startswith("/opt/plumber-agent/bin/"), lines
    assert lines[1:] == ["None None", "[]", "[]"], lines


def test_the_image_adds_little_to_its_base(agent_image, standin_base):
    total, base = image_size_bytes(agent_image), image_size_bytes(standin_base)
    added = total - base
    print(f"\n{agent_image}: {total / 1e6:.0f} MB = base {base / 1e6:.0f} MB + {added / 1e6:.1f} MB")
    assert 0 < added <= MAX_ADDED_BYTES, f"{added} bytes over the base (bound {MAX_ADDED_BYTES})"


def test_the_copied_ovs_libraries_leave_the_bases_own_alone(agent_image, standin_base):
    """Only libraries the base lacks are copied with ovs-vsctl: a libc from the OVS stage (newer
    after its apt-get) over the base's would break every program in the image."""
    libs = [f"/usr/lib/x86_64-linux-gnu/{n}" for n in ("libc.so.6", "libm.so.6", "libz.so.1", "libssl.so.3")]
    assert (_in_image(agent_image, *libs, entrypoint="sha256sum")
            == _in_image(standin_base, *libs, entrypoint="sha256sum"))
