"""Fixtures shared by several test directories, registered once here: a test names them as
parameters and never imports them (an imported fixture used as a parameter reads as a
redefinition to pyflakes, and conftests importing each other's fixtures hide where they live).

- `netns_name`: a fresh network namespace (lo up) per test; skips with the reason when
  namespaces cannot be made here (tests/helpers/netns.py).
- `node_ns`: that namespace with two NIC-like veth pairs, eth1/peer1 and eth2/peer2, all up.
- `static_sysfs`: the seed preset (eno1/eno2 i40e PFs) as a plain on-disk sysfs tree.
"""
from __future__ import annotations

import pytest

from tests.helpers import netns as netns_helpers
from tests.helpers.netns import veth_pair

netns_name = netns_helpers.netns_name  # registers the fixture for every test directory


@pytest.fixture
def node_ns(netns_name):
    """A namespace with two NIC-like veth pairs: eth1/peer1 and eth2/peer2 (all up)."""
    veth_pair(netns_name, "eth1", "peer1")
    veth_pair(netns_name, "eth2", "peer2")
    return netns_name


@pytest.fixture
def static_sysfs(tmp_path):
    """The seed preset (eno1/eno2 i40e PFs) as a plain on-disk tree."""
    from tests.sriov_emu import build_static_tree
    root = tmp_path / "sys"
    build_static_tree(str(root))
    return root
