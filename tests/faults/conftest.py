"""Fixtures of the fault suite: a throw-away namespace with veths standing in for NICs, a static
sysfs tree, a state dir, and a fake API server that can be killed and restarted on its port."""
from __future__ import annotations

import pytest

from tests.helpers.netns import netns_name  # noqa: F401  (pytest fixture)
from tests.helpers.netns import veth_pair


@pytest.fixture
def node_ns(netns_name):  # noqa: F811
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
