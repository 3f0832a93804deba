"""`plumber-agent show` and `plumber-agent plan` as a user runs them, against a throw-away
namespace: show prints this host's HostNetwork; plan prints the ordered actions and changes
nothing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.netns import ip, ip_json, netns_name, veth_pair  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.privileged


def agent(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    return subprocess.run([sys.executable, "-m", "plumber_agent", "--log-level", "warning", *args],
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def node(netns_name, tmp_path):  # noqa: F811
    veth_pair(netns_name, "enp3s0f1", "peer1")
    ip(netns_name, "addr", "add", "10.66.0.1/24", "dev", "enp3s0f1")
    (tmp_path / "sysfs").mkdir()
    return netns_name, tmp_path


def test_show_prints_the_hostnetwork(node):
    ns, tmp = node
    seams = ["--netns", ns, "--sysfs-root", str(tmp / "sysfs"), "--ovsdb", f"unix:{tmp}/none.sock"]
    proc = agent("show", "--node-name", "n1", *seams)
    assert proc.returncode == 0, proc.stderr
    obj = yaml.safe_load(proc.stdout)
    assert obj["kind"] == "HostNetwork" and obj["metadata"]["name"] == "n1"
    iface = {i["pfName"]: i for i in obj["status"]["interfaceStatus"]}["enp3s0f1"]
    assert iface["ipv4"]["address"] == ["10.66.0.1/24"]
    assert iface["mtu"] == ip_json(ns, "link", "show", "dev", "enp3s0f1")[0]["mtu"]
    assert {"dev": "enp3s0f1", "dst": "10.66.0.0/24", "src": "10.66.0.1"} in obj["status"]["routes"]["ipv4"]
    assert "Open vSwitch is not reachable" in obj["status"]["ovsError"]
    as_json = json.loads(agent("show", "-o", "json", "--node-name", "n1", *seams).stdout)
    assert as_json["status"] == obj["status"]


def test_plan_prints_ordered_actions_and_changes_nothing(node):
    ns, tmp = node
    seams = ["--netns", ns, "--sysfs-root", str(tmp / "sysfs"), "--state-dir", str(tmp / "state")]
    before = ip_json(ns, "addr", "show")
    example = REPO / "manifests" / "examples" / "05-interface-addresses.yaml"
    proc = agent("plan", "-f", str(example), "--node-name", "10.128.237.204", *seams)
    assert proc.returncode == 0, proc.stderr
    actions = [line.split()[1:3] for line in proc.stdout.splitlines() if not line.startswith("#")]
    assert actions == [["set_mtu", "enp3s0f1"], ["delete_address", "enp3s0f1"],
                       ["add_address", "enp3s0f1"], ["add_address", "enp3s0f1"],
                       ["add_address", "enp3s0f1"]], proc.stdout
    assert "delete_address enp3s0f1 address=10.66.0.1/24" in proc.stdout
    assert ip_json(ns, "addr", "show") == before
    assert not (tmp / "state").exists()
    # A template that selects another node plans nothing.
    other = agent("plan", "-f", str(example), "--node-name", "other", *seams)
    assert "# template hostconfig-kernel-enp3: NotSelected" in other.stdout
    assert "# no host changes: the host already matches" in other.stdout
