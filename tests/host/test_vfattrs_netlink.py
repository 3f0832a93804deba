"""The VF-attribute driver call against real rtnetlink, as far as this kernel goes: no device
here has VFs (docs/environment.md), so a set_vf on a real link must fail with a message naming
the VF and the link, also on the path that first reads the VF's current rates, and change
nothing."""
from __future__ import annotations

import pytest

from plumber_agent.errors import HostError
from plumber_agent.host.netlink import Netlink
from tests.helpers.netns import ip_json, veth_pair

pytestmark = pytest.mark.privileged


@pytest.mark.parametrize("settings", [{"max_tx_rate": 100}, {"min_tx_rate": 5},
                                      {"vlan": 10, "qos": 2}, {"link_state": 2}])
def test_set_vf_on_a_link_without_vfs_fails_clearly_and_changes_nothing(netns_name, settings):
    veth_pair(netns_name, "eth1", "peer1")
    before = ip_json(netns_name, "link", "show", "eth1")
    with Netlink(netns_name) as nl:
        with pytest.raises(HostError, match="setting VF 3 of eth1 in network namespace"):
            nl.set_vf("eth1", 3, settings)
        assert nl.discover_vfs("eth1") == []
    assert ip_json(netns_name, "link", "show", "eth1") == before
