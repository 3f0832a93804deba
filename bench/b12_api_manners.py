"""B12: API manners (issue 19, part 5), each figure beside its baseline in the same run.

1. Retry spread after an outage. 1,000 agents lose the API server at the same instant and retry
   until it is back, 5 minutes later. With the old backoff (delays stretched by up to half,
   then clipped to the 30 s cap) every agent at the cap waits exactly 30 s, so the fleet keeps
   the phase it had when it reached the cap; with full jitter at every step (plumber_agent/retry.py)
   it keeps spreading. Measured: the most attempts in any one second once all agents are at the
   cap, against that phase's own average (a peak near the average is an even spread), and in
   the first 30 s after the server is back (the herd a recovering server meets); and the price:
   full jitter's mean delay at the cap is half the cap, so an agent retries about twice as often
   during a long outage.
   Simulated time (event by event, seeded): the figures are counts, not timings.
2. A runaway request loop. One client asks the fake API server for the same object in a tight
   loop for BENCH_B12_LOOP_S seconds of real time, once without and once with the agent's token
   bucket (the defaults of --kube-api-qps and --kube-api-burst): requests the server received.
"""
from __future__ import annotations

import collections
import random
import time

from common import Row, env_int, fake_api, log, temp_dir

AGENTS = 1000
OUTAGE_S = 300.0
CAP_S = 30.0
INITIAL_S = 0.8
FACTOR = 2.0
OLD_STRETCH = 0.5  # the old backoff: base * (1 + 0.5 * r), clipped to the cap
SEED = 19
# Every agent is at the cap after 7 failures (0.8 s doubling); the slowest gets there by ~90 s.
AT_CAP_FROM_S = 120.0


def old_delays(rng: random.Random):
    base = INITIAL_S
    while True:
        yield min(CAP_S, base * (1.0 + OLD_STRETCH * rng.random()))
        base = min(CAP_S, base * FACTOR)


def new_delays(rng: random.Random):
    from plumber_agent.retry import Backoff
    backoff = Backoff(initial_s=INITIAL_S, max_s=CAP_S, factor=FACTOR, rng=rng)
    while True:
        yield backoff.next()


def attempts(delays_of) -> list[float]:
    """Every agent's attempt times: failing until OUTAGE_S, the first one after it succeeds."""
    rng = random.Random(SEED)
    times = []
    for _ in range(AGENTS):
        t, delays = 0.0, delays_of(rng)
        while t < OUTAGE_S:
            t += next(delays)
            times.append(t)
    return times


def peak_per_second(times: list[float], start_s: float, end_s: float) -> int:
    buckets = collections.Counter(int(t) for t in times if start_s <= t < end_s)
    return max(buckets.values(), default=0)


def runaway_loop(limited: bool, loop_s: float) -> int:
    from plumber_agent.clock import RealClock
    from plumber_agent.kube.client import KubeClient
    from plumber_agent.kube.flowcontrol import DEFAULT_BURST, DEFAULT_QPS, TokenBucket
    with temp_dir("plumbbench-b11-") as tmp, fake_api(tmp) as (server, kubeconfig):
        client = KubeClient.from_kubeconfig(kubeconfig)
        if limited:
            client.rate_limiter = TokenBucket(qps=DEFAULT_QPS, burst=DEFAULT_BURST,
                                              clock=RealClock())
        before = len(server.requests())
        deadline = time.monotonic() + loop_s
        while time.monotonic() < deadline:
            client.get_template("missing")
        client.close()
        return len(server.requests()) - before


def run_bench() -> list[Row]:
    from plumber_agent.kube.flowcontrol import DEFAULT_BURST, DEFAULT_QPS
    old, new = attempts(old_delays), attempts(new_delays)
    window_s = OUTAGE_S - AT_CAP_FROM_S

    def at_cap(times):
        peak = peak_per_second(times, AT_CAP_FROM_S, OUTAGE_S)
        mean = sum(1 for t in times if AT_CAP_FROM_S <= t < OUTAGE_S) / window_s
        return peak, mean

    (new_peak, new_mean), (old_peak, old_mean) = at_cap(new), at_cap(old)
    rows = [
        Row(id="B12", measure=f"{AGENTS} agents at the 30 s cap: most retries in one second / "
                              "that phase's mean per second",
            value=round(new_peak / new_mean, 2), unit="x mean",
            baseline=round(old_peak / old_mean, 2),
            baseline_label=f"old backoff ({old_peak}/s against {old_mean:.0f}/s)",
            target="< 1.5x (even)", ok=new_peak / new_mean < 1.5,
            note=f"full jitter: {new_peak}/s against {new_mean:.0f}/s"),
        Row(id="B12", measure="most retries in one second in the 30 s after the server is back",
            value=peak_per_second(new, OUTAGE_S, OUTAGE_S + CAP_S), unit="",
            baseline=peak_per_second(old, OUTAGE_S, OUTAGE_S + CAP_S),
            baseline_label="old backoff"),
        Row(id="B12", measure=f"retries per agent during the {OUTAGE_S:.0f} s outage (the price "
                              "of full jitter: mean delay half the cap)",
            value=round(len(new) / AGENTS, 1), unit="", baseline=round(len(old) / AGENTS, 1),
            baseline_label="old backoff"),
    ]
    loop_s = float(env_int("BENCH_B12_LOOP_S", 5))
    log(f"B12: a runaway loop for {loop_s:.0f} s, unlimited then limited")
    unlimited, limited = runaway_loop(False, loop_s), runaway_loop(True, loop_s)
    bound = DEFAULT_BURST + DEFAULT_QPS * loop_s
    rows.append(Row(id="B12", measure=f"requests from a runaway loop in {loop_s:.0f} s "
                                      f"(--kube-api-qps {DEFAULT_QPS:g}, burst {DEFAULT_BURST})",
                    value=limited, unit="", baseline=unlimited, baseline_label="no rate limit",
                    target=f"<= burst + qps x {loop_s:.0f} s = {bound:.0f}",
                    ok=limited <= bound + 1))
    return rows
