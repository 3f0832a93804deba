"""The rooms talk through models/ only: host/ never imports the planner (or desired/), the
pure layers never import host/ or kube/, and every verb the planner may emit has one row in the
verb table and one driver call in the executor."""
import subprocess
import sys

import pytest

from plumber_agent.host.executor import Executor
from plumber_agent.models.actions import VERBS, Action, Phase, Verb
from plumber_agent.models.keys import KeyKind, LedgerKey, key_addr, key_port, key_route, parse_key


def _imported_by(module: str) -> set[str]:
    code = (f"import sys, {module}; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('plumber_agent'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("module, forbidden", [
    ("plumber_agent.host", ("plumber_agent.planner", "plumber_agent.desired",
                            "plumber_agent.reconciler", "plumber_agent.kube")),
    ("plumber_agent.planner", ("plumber_agent.host", "plumber_agent.kube",
                               "plumber_agent.reconciler")),
    ("plumber_agent.agent", ("plumber_agent.cli",)),
])
def test_layers_do_not_import_each_other(module, forbidden):
    imported = _imported_by(module)
    assert not [m for m in imported if m.startswith(forbidden)], sorted(imported)


def test_every_verb_has_a_table_row_and_a_driver_call():
    executor = Executor(None, None, None, None)
    assert set(VERBS) == set(Verb)
    assert set(executor._handlers) == set(Verb)
    for verb, spec in VERBS.items():
        if spec.undo is not None:
            assert spec.creates, verb  # only a created object is undone by another verb


@pytest.mark.parametrize("key, parsed", [
    (key_addr("eno1", "fe80::1/64"), LedgerKey(KeyKind.ADDR, name="eno1", cidr="fe80::1/64")),
    (key_route(6, "2001:db8::/64", 1024),
     LedgerKey(KeyKind.ROUTE, family=6, dst="2001:db8::/64", metric=1024)),
    (key_route(4, None, 0), LedgerKey(KeyKind.ROUTE, family=4, dst=None, metric=0)),
    (key_port("br0", "eth1"), LedgerKey(KeyKind.PORT, name="br0", port="eth1")),
    ("numvfs:0000:01:00.0", LedgerKey(KeyKind.NUMVFS, name="0000:01:00.0")),
    ("someday:x", None),  # a kind a later version wrote: left alone
])
def test_ledger_keys_parse_back(key, parsed):
    assert parse_key(key) == parsed


@pytest.mark.parametrize("key", ["addr:eno1", "route:4:10.0.0.0/8", "route:x:default:0",
                                 "vlan:"])
def test_malformed_ledger_keys_are_refused(key):
    with pytest.raises(ValueError):
        parse_key(key)


def test_an_action_knows_whether_it_creates_and_what_it_records():
    create = Action(Phase.LINK_CREATE, "ensure_vlan", "eno1.10", {"parent": "eno1", "vlan_id": 10},
                    ledger_op="claim")
    change = Action(Phase.SRIOV_NUMVFS, Verb.SET_NUM_VFS, "0000:01:00.0",
                    {"num_vfs": 4, "destroys_vfs": True}, ledger_op="claim", ledger_prior=2)
    assert create.verb is Verb.ENSURE_VLAN and create.creates and not change.creates
    assert change.ledger_value() == {"num_vfs": 4}
    assert change.summary() == "sriov_numvfs       set_num_vfs 0000:01:00.0 destroys_vfs=True num_vfs=4"


def _real_time_calls(path) -> list[str]:
    import ast
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{path.name}:{node.lineno}" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("monotonic", "sleep", "time")
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "time"]


def test_only_the_clock_and_the_host_drivers_read_real_time():
    """clock.py's rule: code that schedules takes a Clock (tests then never sleep); only the
    host drivers' bounded kernel polls use real time."""
    from pathlib import Path

    import plumber_agent
    root = Path(plumber_agent.__file__).parent
    offenders = [call for path in sorted(root.rglob("*.py"))
                 if path.name != "clock.py" and "host" not in path.relative_to(root).parts[:1]
                 for call in _real_time_calls(path)]
    assert offenders == []
