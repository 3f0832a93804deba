"""B22: what the new kinds cost per object in the agent's own pipeline, next to today's kinds
in the same run: a template of bonds under VLAN-filtering Linux bridges beside a template of
VLANs with addresses, both N entries, on the test fake host.

Why not B2/B5 with bonds: those drive real agents on this machine's kernel, which has no
bonding module (bonds run only in the full-kernel VM, where TCG timings mean nothing). What the
kinds add is pure code -- merge, plan, the ledger, the status -- and that is what is timed here:
  apply     the reconciler's converge loop from nothing to converged (merge, discover, plan,
            execute on the fake drivers, ledger writes), per ledger record it leaves
            (informational: it includes the fake drivers' own work, which differs by kind);
  pass      one converged pass (discover, merge, plan: empty), per ledger record;
  status    one status build of the converged host, per interface listed.
A converged pass calls no driver but the fake's discovery (a copy of its links), so the pass
and status figures are the agent's own cost. Those two are the fastest of their repeats (as
timeit reports): on a shared machine the least disturbed run is the code's cost, and a 3 ms
status build swung 2.5x between medians of the same host under load; apply is a median.
"""
from __future__ import annotations

import tempfile
import time

from common import Row, env_int, log, median, timed

ENTRIES = 200  # bonds (2 members each) under as many bridges; as many VLANs with an address
PASS_REPEATS = 15
MEASURE_REPEATS = 3  # fresh hosts per kind; the medians are reported


def _fake(entries: int, *, bonds: bool):
    from tests.support.fakehost import FakeHost
    host = FakeHost()
    for i in range(entries):
        if bonds:
            host.add_link(f"m{i}a")
            host.add_link(f"m{i}b", up=False)
        else:
            host.add_link(f"p{i}")
    return host


def _template(entries: int, *, bonds: bool):
    from tests.support.fakehost import make_template
    if bonds:
        return make_template("b22", {
            "bondConfig": [{"name": f"bond{i}", "mode": "active-backup",
                            "members": [f"m{i}a", f"m{i}b"], "options": {"miimon": 100}}
                           for i in range(entries)],
            "linuxBridgeConfig": [{"name": f"br{i}", "vlanFiltering": True,
                                   "ports": [{"name": f"bond{i}", "tagged": [100, "200-210"]}]}
                                  for i in range(entries)]})
    return make_template("b22", {"interfaceConfig": [
        {"name": f"p{i}", "vlan": [{"id": 100}]} for i in range(entries)] + [
        {"name": f"p{i}.100", "ipv4": {"address": [f"10.{i // 250}.{i % 250}.1/24"]}}
        for i in range(entries)]})


def _measure(entries: int, *, bonds: bool) -> dict:
    from plumber_agent.status_builder import build_status
    from tests.support.fakehost import Node
    with tempfile.TemporaryDirectory(prefix="b22-") as state:
        node = Node(_fake(entries, bonds=bonds), state)
        template = _template(entries, bonds=bonds)
        t0 = time.perf_counter()
        rounds, final = node.reconcile([template])
        apply_s = time.perf_counter() - t0
        assert final.actions == [] and all(report.ok for _, report in rounds), "not converged"
        records = len(node.ledger.records())

        def one_pass() -> None:
            _, result = node.plan([template])
            assert result.actions == []
        passes = timed(one_pass, PASS_REPEATS, warmup=2)
        observed = node.host.discover()
        statuses: list = []
        builds = timed(lambda: statuses.append(build_status(observed)), PASS_REPEATS, warmup=2)
        status = statuses[-1]
        node.ledger.release_lock()
        return {"records": records, "apply_s": apply_s, "pass_s": min(passes),
                "status_s": min(builds), "interfaces": len(status.interface_status),
                "rounds": len(rounds)}


def run_bench() -> list[Row]:
    entries = env_int("BENCH_B22_ENTRIES", ENTRIES)
    _measure(entries, bonds=False)  # once each first: imports, caches, the allocator
    _measure(entries, bonds=True)
    runs = {True: [], False: []}
    for _ in range(MEASURE_REPEATS):  # alternating, so load swings hit both alike
        for bonds in (True, False):
            runs[bonds].append(_measure(entries, bonds=bonds))
    new, old = ({key: (min if key in ("pass_s", "status_s") else median)(
        [r[key] for r in runs[bonds]]) for key in runs[bonds][0]} for bonds in (True, False))
    log(f"B22: bonds+bridges {new}; VLANs+addresses {old}")
    rows = []
    for key, what, per in (("apply_s", "apply from nothing", "records"),
                           ("pass_s", "converged pass (discover, merge, plan)", "records"),
                           ("status_s", "status build", "interfaces")):
        value = new[key] / new[per] * 1e6
        baseline = old[key] / old[per] * 1e6
        rows.append(Row(id="B22", measure=f"{what}, per {per[:-1]}: {entries} bonds under "
                                          f"bridges ({new[per]:.0f} {per})",
                        value=value, unit="us", baseline=baseline,
                        baseline_label=f"{entries} VLANs with an address ({old[per]:.0f} {per})",
                        target="" if key == "apply_s" else "<= 2x baseline",
                        ok=None if key == "apply_s" else value <= 2 * baseline,
                        note=(f"{new['rounds']:.0f} vs {old['rounds']:.0f} rounds; with the fake "
                              "drivers' own work" if key == "apply_s" else "")))
    return rows


if __name__ == "__main__":
    import sys

    from common import table
    sys.exit(print(table(run_bench())))
