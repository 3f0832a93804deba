"""`plumber-agent show` and `plumber-agent plan` as a user runs them, against a throw-away
namespace: show prints this host's HostNetwork; plan prints the ordered actions and changes
nothing."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.helpers.agent_env import REPO_ROOT, agent_env
from tests.helpers.netns import ip, ip_json, ipv6_settled, veth_pair
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.privileged
LINK_LOCAL_TIMEOUT_S = 10.0


def agent(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plumber_agent", "--log-level", "warning", *args],
                          capture_output=True, text=True, timeout=60, env=agent_env())


@pytest.fixture
def node(netns_name, tmp_path):
    veth_pair(netns_name, "enp3s0f1", "peer1")
    ip(netns_name, "addr", "add", "10.66.0.1/24", "dev", "enp3s0f1")
    wait_for(lambda: ipv6_settled(netns_name, ("enp3s0f1", "peer1")), timeout_s=LINK_LOCAL_TIMEOUT_S,
             what="IPv6 link-local addresses settled")
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
    example = REPO_ROOT / "manifests" / "examples" / "05-interface-addresses.yaml"
    proc = agent("plan", "-f", str(example), "--node-name", "10.128.237.204", *seams)
    assert proc.returncode == 2, proc.stderr  # changes planned
    actions = [line.split()[1:3] for line in proc.stdout.splitlines() if not line.startswith("#")]
    assert actions == [["set_mtu", "enp3s0f1"], ["delete_address", "enp3s0f1"],
                       ["add_address", "enp3s0f1"], ["add_address", "enp3s0f1"],
                       ["add_address", "enp3s0f1"]], proc.stdout
    assert "delete_address enp3s0f1 address=10.66.0.1/24" in proc.stdout
    assert ip_json(ns, "addr", "show") == before
    assert not (tmp / "state").exists()
    # A template that selects another node plans nothing.
    other = agent("plan", "-f", str(example), "--node-name", "other", *seams)
    assert other.returncode == 0, other.stderr
    assert ("# template hostconfig-kernel-enp3: not selected (its nodeSelector does not match "
            "this node)") in other.stdout
    assert "# no host changes: the host already matches" in other.stdout


PLAN_TEMPLATE = """apiVersion: plumber.k8s.pf9.io/v1
kind: HostNetworkTemplate
metadata: {{name: plan-mtu}}
spec:
  interfaceConfig:
    - name: enp3s0f1
      mtu: {mtu}
"""


def test_plan_exit_status_is_0_nothing_2_changes_1_errors(node):
    """Issue 20: plan exited 0 whatever it found and called invalid templates Applied."""
    ns, tmp = node
    seams = ["--netns", ns, "--sysfs-root", str(tmp / "sysfs"), "--ovsdb", f"unix:{tmp}/none.sock",
             "--state-dir", str(tmp / "state"), "--node-name", "n1"]
    mtu = ip_json(ns, "link", "show", "dev", "enp3s0f1")[0]["mtu"]
    path = tmp / "t.yaml"
    path.write_text(PLAN_TEMPLATE.format(mtu=mtu))
    same = agent("plan", "-f", str(path), *seams)
    assert same.returncode == 0, same.stderr
    assert "# template plan-mtu: selected, the host already matches" in same.stdout
    path.write_text(PLAN_TEMPLATE.format(mtu=mtu + 100))
    change = agent("plan", "-f", str(path), *seams)
    assert change.returncode == 2, change.stderr
    assert "# template plan-mtu: selected, 1 change(s) planned" in change.stdout
    path.write_text(PLAN_TEMPLATE.format(mtu=12))
    invalid = agent("plan", "-f", str(path), *seams)
    assert invalid.returncode == 1, invalid.stderr
    assert invalid.stdout.splitlines() == [
        "# template plan-mtu: invalid: spec.interfaceConfig[0].mtu: 12 is outside 68..65535",
        "# no plan: 1 invalid template(s); nothing would change until they are fixed"]
    missing = agent("plan", "-f", str(tmp / "nosuch.yaml"), *seams)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr == (f"plumber-agent plan: error: {tmp / 'nosuch.yaml'}: "
                              "No such file or directory\n")
    assert ip_json(ns, "link", "show", "dev", "enp3s0f1")[0]["mtu"] == mtu


def test_user_mistakes_are_one_line_errors_not_tracebacks(tmp_path):
    """Issue 20: `show --netns nosuch` and `run` with no cluster printed tracebacks."""
    (tmp_path / "sysfs").mkdir()
    show = agent("show", "--netns", "nosuch-ns", "--sysfs-root", str(tmp_path / "sysfs"))
    assert show.returncode == 1 and show.stdout == ""
    assert show.stderr == ("plumber-agent show: error: network namespace 'nosuch-ns' does not "
                           "exist (/var/run/netns/nosuch-ns is missing); it is not created "
                           "automatically\n")
    env = agent_env(drop=("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"))
    run = subprocess.run([sys.executable, "-m", "plumber_agent", "--log-level", "warning", "run",
                          "--state-dir", str(tmp_path / "state"), "--sysfs-root",
                          str(tmp_path / "sysfs"), "--no-monitor"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 1, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.startswith("plumber-agent run: error: no --kubeconfig, no $KUBECONFIG, "
                                 "and: not in a cluster: KUBERNETES_SERVICE_HOST/PORT unset; ")
    assert "--templates DIR" in run.stderr


def test_help_cites_no_missing_document():
    text = agent("--help").stdout
    assert "architecture.md" not in text and "README.md" in text
    assert (REPO_ROOT / "README.md").is_file()


def test_plan_leaves_a_corrupt_ledger_where_it_is(node):
    """Issue 20: plan set a corrupt ledger aside without the agent's lock, under a running
    agent's feet; it now reads a copy of the state directory and writes nothing there."""
    ns, tmp = node
    state = tmp / "state"
    state.mkdir(mode=0o700)
    (state / "ledger.json").write_text("{ torn")
    path = tmp / "t.yaml"
    path.write_text(PLAN_TEMPLATE.format(mtu=1500))
    proc = agent("plan", "-f", str(path), "--netns", ns, "--sysfs-root", str(tmp / "sysfs"),
                 "--ovsdb", f"unix:{tmp}/none.sock", "--state-dir", str(state), "--node-name", "n1")
    assert proc.returncode in (0, 2), proc.stderr
    assert sorted(os.listdir(state)) == ["ledger.json"]
    assert (state / "ledger.json").read_text() == "{ torn"
