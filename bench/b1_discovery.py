"""B1: full host discovery (links, addresses, v4+v6 routes, sysfs) against `ip -j` on the same
namespace, at three sizes.

Why: discovery runs on every reconcile, so its cost at 1,000 links and 10k routes is paid on every
change and every resync. The baseline is what iproute2 needs for the same facts: the four
commands `ip -j -d link; ip -j addr; ip -j route; ip -j -6 route`, each a process, output read
into a pipe (not parsed). The agent's figure is the in-process discovery the reconciler calls:
raw-netlink dumps of links, addresses and both main route tables, plus the sysfs reads
(PCI annotation of every link and the SR-IOV PF scan of the sysfs root).

Three agent figures: the target row is a cold discovery (a new driver each time, so every kernel
message is parsed: `plumber-agent show`, an agent's first pass); at 1,000 links two more rows
show what a running agent pays: a full re-dump in which unchanged messages are not parsed again
(after a sysfs/OVS change, or when the last dump is older than SNAPSHOT_MAX_AGE_S), and a
discovery when the kernel has notified no change since the last one.
"""
from __future__ import annotations

from common import Row, env_int, log, median, netns, populate, run, timed

SIZES = [(100, 1_000), (1_000, 10_000), (5_000, 50_000)]
TARGET_RATIO = 5.0
LINEAR_TOLERANCE = 1.5
"""Cost per object (link or route) at the largest size may exceed the middle size's by this much."""
BASELINE_COMMANDS = [["-d", "link"], ["addr"], ["route"], ["-6", "route"]]


def _baseline(ns: str) -> None:
    for args in BASELINE_COMMANDS:
        run(["ip", "-j", "-n", ns, *args])


def _discovery(ns: str, sysfs_root: str = "/sys"):
    """discover(driver, reuse) the way Host.discover does it, on a given netlink driver."""
    from plumber_agent.host.sriov import Sysfs
    sysfs = Sysfs(sysfs_root)

    def discover(netlink, reuse: bool):
        links, routes = netlink.discover(reuse=reuse)
        sysfs.annotate_links(links)
        sysfs.discover_pfs()
        return links, routes
    return discover


def _cold(ns: str, discover):
    from plumber_agent.host.netlink import Netlink
    with Netlink(ns) as netlink:
        return discover(netlink, False)


def measure(links: int, routes: int, repeats: int) -> dict:
    from plumber_agent.host.netlink import Netlink
    with netns("b1-") as ns:
        log(f"B1: building {links} links / {routes} routes")
        shape = populate(ns, links=links, routes=routes)
        discover = _discovery(ns)
        found_links, found_routes = _cold(ns, discover)
        cold = timed(lambda: _cold(ns, discover), repeats)
        with Netlink(ns) as netlink:
            discover(netlink, False)
            redump = timed(lambda: discover(netlink, False), repeats)
            unchanged = timed(lambda: discover(netlink, True), repeats)
        base = timed(lambda: _baseline(ns), repeats)
        return {"agent_s": median(cold), "redump_s": median(redump),
                "unchanged_s": median(unchanged), "baseline_s": median(base),
                "links_seen": len(found_links), "routes_seen": len(found_routes), **shape}


def run_bench() -> list[Row]:
    repeats = env_int("BENCH_REPEATS", 7)
    rows = []
    results = {}
    for links, routes in SIZES:
        res = measure(links, routes, repeats if links <= 1000 else max(5, repeats // 2))
        results[(links, routes)] = res
        key = links == 1000
        rows.append(Row(
            id="B1", measure=f"discovery {links} links/{routes // 1000}k routes, cold "
                             f"(seen {res['links_seen']} links, {res['routes_seen']} routes)",
            value=res["agent_s"] * 1000, unit="ms", baseline=res["baseline_s"] * 1000,
            baseline_label="ip -j x4",
            target=f"<= {TARGET_RATIO:.0f}x baseline" if key else "",
            ok=(res["agent_s"] <= TARGET_RATIO * res["baseline_s"]) if key else None))
        if key:
            for field, what in (("redump_s", "full re-dump, unchanged messages not re-parsed"),
                                ("unchanged_s", "no change notified since the last one")):
                rows.append(Row(id="B1", measure=f"discovery {links} links, {what}",
                                value=res[field] * 1000, unit="ms",
                                baseline=res["baseline_s"] * 1000, baseline_label="ip -j x4",
                                ok=None))
    mid, big = results[SIZES[1]], results[SIZES[2]]
    per_mid = mid["agent_s"] / (mid["links_seen"] + mid["routes_seen"])
    per_big = big["agent_s"] / (big["links_seen"] + big["routes_seen"])
    rows.append(Row(id="B1", measure="discovery cost per object, 5000/50k vs 1000/10k",
                    value=per_big * 1e6, unit="us", baseline=per_mid * 1e6,
                    baseline_label="us at 1000/10k",
                    target=f"linear (<= {LINEAR_TOLERANCE}x)",
                    ok=per_big <= LINEAR_TOLERANCE * per_mid))
    return rows


if __name__ == "__main__":
    from common import install_signal_cleanup, table
    install_signal_cleanup()
    print(table(run_bench()))
