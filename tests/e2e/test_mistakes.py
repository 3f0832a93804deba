"""Issue 20's "mistakes" table: ordinary mistakes made with the real `plumber-agent` command in
local mode, each after a template has been applied to a throw-away namespace. For every row:
the exit status and the message the user sees, and a snapshot of the host (links with MTU and
state, every address, every route of both families) that must be the same before and after.
No row may undo what was applied, nor apply anything."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.agent_env import agent_env
from tests.helpers.netns import ip, ip_json, ipv6_settled, veth_pair
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]
SETTLE_TIMEOUT_S = 10.0

GOOD = """apiVersion: plumber.k8s.pf9.io/v1
kind: HostNetworkTemplate
metadata:
  name: {name}
spec:
  interfaceConfig:
    - name: eth1
      mtu: 1400
      ipv4:
{ipv4}
  routes:
    ipv4:
      - dst: 198.51.100.0/24
        gw: 192.0.2.1
"""
ADDRESSES = "        address: [192.0.2.10/24]"


def good(name: str = "mistakes", ipv4: str = ADDRESSES) -> str:
    return GOOD.format(name=name, ipv4=ipv4)


def alias_bomb() -> str:
    lines = ['a0: &a0 ["lol"]'] + [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]"
                                   for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def snapshot(ns: str) -> dict:
    links = {link["ifname"]: (link.get("mtu"), link.get("operstate"))
             for link in ip_json(ns, "link", "show")}
    addresses = sorted((link["ifname"], a["local"], a["prefixlen"])
                       for link in ip_json(ns, "addr", "show") for a in link.get("addr_info") or [])
    # The main table (what templates manage); the local table's entries follow link-locals
    # and multicast that the kernel manages by itself.
    routes = [sorted(ip_json(ns, family, "route", "show", "table", "main"), key=repr)
              for family in ("-4", "-6")]
    return {"links": links, "addresses": addresses, "routes": routes}


class Node:
    def __init__(self, ns: str, tmp: Path) -> None:
        self.ns, self.tmp = ns, tmp
        (tmp / "sysfs").mkdir()
        self.templates = tmp / "templates"
        self.templates.mkdir()

    def agent(self, *args: str) -> subprocess.CompletedProcess:
        command, rest = args[0], args[1:]
        seams = ["--netns", self.ns, "--sysfs-root", str(self.tmp / "sysfs"),
                 "--ovsdb", f"unix:{self.tmp}/no-ovs.sock", "--node-name", "n1"]
        if command != "show":
            seams += ["--state-dir", str(self.tmp / "state")]
        if command == "run":
            seams += ["--once", "--no-monitor"]
        return subprocess.run([sys.executable, "-m", "plumber_agent", "--log-level", "error",
                               command, *seams, *rest], capture_output=True, text=True,
                              timeout=60, env=agent_env(drop=("KUBECONFIG",)))

    def write(self, files: dict[str, str]) -> None:
        for old in self.templates.iterdir():
            old.unlink()
        for name, text in files.items():
            (self.templates / name).write_text(text)


@pytest.fixture
def node(netns_name, tmp_path):
    veth_pair(netns_name, "eth1", "peer1")
    wait_for(lambda: ipv6_settled(netns_name, ("eth1", "peer1")), timeout_s=SETTLE_TIMEOUT_S, what="link-locals settled")
    host = Node(netns_name, tmp_path)
    host.write({"good.yaml": good()})
    applied = host.agent("run", "--templates", str(host.templates))
    assert applied.returncode == 0, applied.stderr
    assert "192.0.2.10/24" in str(ip(netns_name, "addr", "show", "dev", "eth1"))
    return host


# (id, files in the templates directory, command, exit status, text expected in stderr+stdout)
ROWS = [
    ("missing-dir", None, ("run", "--templates", "{tmp}/no-such-dir"), 1,
     "plumber-agent run: error: {tmp}/no-such-dir: No such file or directory"),
    ("empty-dir", {}, ("run", "--templates", "{templates}"), 1,
     "{templates}: no HostNetworkTemplate found; nothing is undone"),
    ("plan-empty-dir", {}, ("plan", "-f", "{templates}"), 1,
     "{templates}: no HostNetworkTemplate found; nothing is undone"),
    ("yaml-syntax-error", {"good.yaml": good().replace("[192.0.2.10/24]", "[192.0.2.10/24")},
     ("run", "--templates", "{templates}"), 1, "{templates}/good.yaml: line "),
    ("duplicate-names", {"a.yaml": good(), "b.yaml": good().replace("mtu: 1400", "mtu: 9000")},
     ("run", "--templates", "{templates}"), 1,
     "{templates}/b.yaml: template 'mistakes' is also defined in {templates}/a.yaml"),
    ("invalid-metadata", {"good.yaml": good(name="Mistakes_1")},
     ("run", "--templates", "{templates}"), 1, "{templates}/good.yaml: metadata.name: "),
    ("namespace-on-cluster-scoped", {"good.yaml": good().replace(
        "  name: mistakes\n", "  name: mistakes\n  namespace: default\n")},
     ("run", "--templates", "{templates}"), 1, "metadata.namespace: not allowed on this type"),
    ("yaml-alias-bomb", {"good.yaml": good(), "bomb.yaml": alias_bomb()},
     ("run", "--templates", "{templates}"), 1, "YAML aliases (*a0) are not accepted"),
    # Invalid spec: reported Invalid in the status (exit 1), and what it applied stays.
    ("empty-ipv4-block", {"good.yaml": good(ipv4="        {}")},
     ("run", "--templates", "{templates}"), 1,
     "an empty ipv4 block would remove every IPv4 address of the interface: give address (an "
     "empty list to remove them all) or pool, or leave ipv4 out to leave its addresses alone "
     "(generation 1 stays applied)"),
    ("plan-empty-ipv4-block", {"good.yaml": good(ipv4="        {}")},
     ("plan", "-f", "{templates}"), 1,
     "# template mistakes: invalid: spec.interfaceConfig[0].ipv4: an empty ipv4 block"),
    ("plan-missing-file", None, ("plan", "-f", "{tmp}/nosuch.yaml"), 1,
     "plumber-agent plan: error: {tmp}/nosuch.yaml: No such file or directory"),
    ("plan-nothing-to-do", {"good.yaml": good()}, ("plan", "-f", "{templates}"), 0,
     "# template mistakes: selected, the host already matches"),
    ("plan-changes", {"good.yaml": good().replace("mtu: 1400", "mtu: 1450")},
     ("plan", "-f", "{templates}"), 2, "# template mistakes: selected, 1 change(s) planned"),
    # A typo'd interface name is not a move: what eth1 got stays until eth9 exists.
    ("typo-in-interface-name", {"good.yaml": good().replace("- name: eth1", "- name: eth9")},
     ("run", "--templates", "{templates}"), 1,
     "interface eth9 does not exist on this node; nothing it applied before is undone while it "
     "fails here (2 object(s) kept: addr:eth1:192.0.2.10/24, mtu:eth1)"),
    # Issue 20 item 2: moving the address drops the route the template applied through it;
    # plan says so (the kernel's collateral) before anything is done.
    ("plan-names-kernel-collateral", {"good.yaml": good(ipv4="        address: [192.0.2.11/24]")},
     ("plan", "-f", "{templates}"), 2,
     "drops route 198.51.100.0/24 via 192.0.2.1 dev eth1 (the kernel removes it with "
     "192.0.2.10/24)"),
    ("show-no-such-netns", None, ("show", "--netns", "nosuch-ns"), 1,
     "plumber-agent show: error: network namespace 'nosuch-ns' does not exist"),
]


@pytest.mark.parametrize("files, argv, status, expected",
                         [pytest.param(*row[1:], id=row[0]) for row in ROWS])
def test_a_mistake_changes_nothing(node, files, argv, status, expected):
    if files is not None:
        node.write(files)
    where = {"tmp": node.tmp, "templates": node.templates}
    before = snapshot(node.ns)
    proc = node.agent(*(part.format(**where) for part in argv))
    output = proc.stderr + proc.stdout
    assert proc.returncode == status, output
    # Whitespace collapsed: the status YAML wraps long messages.
    assert " ".join(expected.format(**where).split()) in " ".join(output.split()), output
    assert "Traceback" not in output, output
    assert snapshot(node.ns) == before
