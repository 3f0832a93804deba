"""Links, addresses and routes of one network namespace, over rtnetlink.

  messages.py  the rtnetlink ABI and a parser for its messages (no pyroute2)
  netns.py     opening sockets inside a namespace without forking
  reader.py    RtnlReader: requests and dumps on a plain socket, parsed by messages.py
  snapshot.py  the discovery snapshot: the last dump, kept exact from change notifications
  bond.py      bonds: their netlink attributes parsed, and the driver's bond verbs
  driver.py    Netlink, the driver: reads through the above, writes through pyroute2 (the only
               module that imports it, and only on the first write)

The names below are what the rest of the code imports from `plumber_agent.host.netlink`.
"""
from plumber_agent.host.netlink.driver import Netlink
from plumber_agent.host.netlink.messages import (CHANGE_GROUPS, NetlinkOSError, errno_text,
                                                 iter_messages, parse_addr, parse_link,
                                                 parse_route)
from plumber_agent.host.netlink.netns import (new_plain_rtnl_socket, new_rtnl_socket,
                                              open_netns_sockets)
from plumber_agent.host.netlink.reader import RtnlReader

__all__ = ["CHANGE_GROUPS", "Netlink", "NetlinkOSError", "RtnlReader", "errno_text",
           "iter_messages", "new_plain_rtnl_socket", "new_rtnl_socket", "open_netns_sockets",
           "parse_addr", "parse_link", "parse_route"]
