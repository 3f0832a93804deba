"""plumber_agent/packages.py with its second owner, the netlink driver: pyroute2's IPRoute
without pyroute2/__init__.py (NDB, IPDB, nftables...), and the rest of pyroute2 still there for
anyone who asks. In a fresh interpreter: this test process may have imported pyroute2 already."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers.agent_env import agent_env

CHILD_TIMEOUT_S = 120.0

# What pyroute2/__init__.py imports and the driver never uses.
NEVER_LOADED = ("pyroute2.ndb.main", "pyroute2.ipdb", "pyroute2.netlink.nfnetlink.nftsocket",
                "pyroute2.ipset", "pyroute2.netlink.generic.wireguard", "sqlite3")

CHILD = """
import json, sys
from plumber_agent.host.netlink.driver import _pyroute2
IPRoute, NetlinkError = _pyroute2()
with IPRoute() as ipr:  # a read in this namespace: no privilege needed
    loopback = ipr.link("get", index=1)[0].get_attr("IFLA_IFNAME")
    try:
        ipr.link("get", index=2 ** 31 - 1)
        refused = None
    except NetlinkError as exc:
        refused = exc.code
lean = sorted(sys.modules)
import pyroute2
from pyroute2 import NDB  # asks the package for a name it only has once its __init__ ran
print(json.dumps({"lean": lean, "loopback": loopback, "refused": refused,
                  "same": pyroute2.IPRoute is IPRoute, "ndb": NDB.__name__}))
"""


def test_the_driver_loads_iproute_without_the_rest_of_pyroute2():
    out = subprocess.run([sys.executable, "-c", CHILD], env=agent_env(), capture_output=True,
                         text=True, timeout=CHILD_TIMEOUT_S)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    lean = set(result["lean"])
    assert "pyroute2.iproute.linux" in lean
    assert not lean & set(NEVER_LOADED)
    assert (result["loopback"], result["refused"]) == ("lo", 19)  # ENODEV, a NetlinkError
    assert (result["same"], result["ndb"]) == (True, "NDB")
