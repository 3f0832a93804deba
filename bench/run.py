"""`make bench`: every benchmark (B1..B12, B21, B22) side by side with its baseline, one table at the end.

Run as root (namespaces). Each benchmark sets up and tears down its own namespaces, fake API
server and agent processes; a benchmark that fails is reported as a FAIL row with its error and
the others still run. Knobs (environment):

  BENCH_ONLY=B1,B6     run only these
  BENCH_REPEATS=7      repeats for medians (B1, B6)
  BENCH_IDLE_S=120     B4's idle window (the issue's 10 minutes: 600); B5's idle window is
                       min(BENCH_IDLE_S, 60) unless BENCH_B5_IDLE_S is set
  BENCH_B4_BASELINE_S=30  B4's baseline window: the same agent through a kubeconfig
  BENCH_B5_NODES=50    simulated nodes for B5
  BENCH_B7_NODES=50    simulated nodes for B7 (maxUnavailable 10 beside "100%")
  BENCH_B7_SCALE_NODES=1000  in-process simulated agents for B7's claim attempts (and 50)
  BENCH_B8_NODES=50    simulated nodes for B8 (one pool of exactly that many addresses)
  BENCH_B8_FLEET_NODES=1000  B8 at fleet size: allocators simulated in-process (and again
                       at BENCH_B8_NODES), realistic HostNetworks in the fake API server
  BENCH_B2_CHANGES=50  changes timed in B2
  BENCH_LEDGER_DIR=/var/tmp  where B11 writes its ledgers (a real disk, not tmpfs)
  BENCH_LEDGER_BASELINE_BUDGET_S=90  B11's bound for the whole-file baseline (500, 1,000, 2,000)
  BENCH_B9_SIZES=100,1000,5000  simulated fleet sizes for B9 (BENCH_B9_FULL_MAX=1000: the
                       largest also measured with the whole-object baseline; BENCH_B9_WINDOW_S=10)
  BENCH_B10_S=60       B10's churn window, each for the agent and its baseline (the issue's 60)
  BENCH_B12_LOOP_S=5   B12's runaway request loop, seconds (each of two runs)
  BENCH_B21_CONNECTIONS=4000  idle connections B21 opens to each ops server
  BENCH_B22_ENTRIES=200  bonds under Linux bridges for B22 (and as many VLANs, its baseline)
  BENCH_JSON=PATH      also write the rows as JSON
  BENCH_MARKDOWN=1     print the table as Markdown (for bench/RESULTS.md)
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import Row, install_signal_cleanup, log, machine_description, table  # noqa: E402

BENCHMARKS = [("B1", "b1_discovery"), ("B6", "b6_status_size"), ("B3", "b3_drift"),
              ("B2", "b2_latency"), ("B4", "b4_idle"), ("B5", "b5_fanout"), ("B7", "b7_rollout"),
              ("B8", "b8_pools"), ("B9", "b9_fleet_size"), ("B10", "b10_churn"),
              ("B11", "b11_ledger"), ("B12", "b12_api_manners"), ("B21", "b21_ops_connections"),
              ("B22", "b22_kinds")]


def main() -> int:
    if os.geteuid() != 0:
        print("make bench needs root (network namespaces)", file=sys.stderr)
        return 2
    install_signal_cleanup()
    only = {x.strip().upper() for x in os.environ.get("BENCH_ONLY", "").split(",") if x.strip()}
    rows: list[Row] = []
    started = time.time()
    for bench_id, module_name in BENCHMARKS:
        if only and bench_id not in only:
            continue
        log(f"{bench_id}: {module_name}")
        t0 = time.time()
        try:
            module = importlib.import_module(module_name)
            rows += module.run_bench()
        except Exception as exc:  # one broken benchmark must not hide the others
            traceback.print_exc()
            rows.append(Row(id=bench_id, measure=f"did not run: {type(exc).__name__}: "
                                                 f"{str(exc).splitlines()[0][:120] if str(exc) else ''}",
                            value=None, unit="", ok=False))
        log(f"{bench_id}: {time.time() - t0:.0f} s")
    print(f"\nmachine: {machine_description()}; total {time.time() - started:.0f} s")
    print(table(rows, markdown=os.environ.get("BENCH_MARKDOWN") == "1"))
    if os.environ.get("BENCH_JSON"):
        with open(os.environ["BENCH_JSON"], "w") as fh:
            json.dump({"machine": machine_description(), "rows": [r.as_dict() for r in rows]}, fh,
                      indent=1)
    return 0 if all(r.ok is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
