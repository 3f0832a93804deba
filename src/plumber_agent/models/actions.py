"""Host actions: what the planner emits and the executor carries out, one host change each.

Planning is pure, so an Action is plain data; `describe()` gives the `plan` command's line and
the log line of the executor's chokepoint.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Optional


class Phase(IntEnum):
    """Execution order. Deletions run last, in reverse dependency order."""

    SRIOV_NUMVFS = 10
    SRIOV_VF_DRIVER = 20
    SRIOV_MTU = 25
    LINK_CREATE = 30  # VLAN interfaces
    LINK_MTU = 40
    LINK_UP = 45
    ADDRESS = 50
    ROUTE = 60
    OVS = 70
    OVS_PORT = 75
    DELETE_OVS_PORT = 80
    DELETE_OVS = 85
    DELETE_ROUTE = 90
    DELETE_ADDRESS = 95
    RESTORE_MTU = 100
    DELETE_LINK = 105
    RESTORE_VF_DRIVER = 110
    RESTORE_NUMVFS = 115


@dataclass
class Action:
    phase: Phase
    verb: str  # e.g. 'set_num_vfs', 'bind_vf_driver', 'ensure_vlan', 'set_mtu', 'add_address'...
    target: str  # the object: 'eno2', '0000:01:00.1', 'ovs-br01', 'eno2:192.168.1.7/24'
    params: dict[str, Any] = field(default_factory=dict)
    reason: str = ""  # why: 'template t1', 'drift', 'cleanup of t1'
    # Ledger bookkeeping: the executor records the intent (with the prior value) before the
    # change and confirms it after (write-ahead, so a crash in between leaves nothing unowned).
    ledger_key: Optional[str] = None
    ledger_op: Optional[str] = None  # 'claim' (record prior), 'release' (forget)
    ledger_prior: Any = None
    templates: list[str] = field(default_factory=list)  # templates this action serves
    # Changes the node's path to the API server (let through by allowApiServerDisruption): the
    # reconciler arms the rollback-on-loss probe around it.
    api_risk: bool = False

    def describe(self) -> str:
        params = " ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        text = f"{self.phase.name.lower():<18} {self.verb} {self.target}"
        if params:
            text += f" {params}"
        if self.reason:
            text += f"  # {self.reason}"
        return text
