"""B22: what interface references (pci:, mac:, altname:; README "Stable NIC names") cost the merge,
which runs on every pass.

Why: every template's spec is walked for references before the kinds merge it
(desired/ifref.py). A node's pass must not get slower for templates that use none, and one that
names every NIC by reference should cost about as much as by name. In-process, no kernel: a
synthesised host of BENCH_B22_NICS NICs (PCI address, permanent MAC, an altname each) and one
template configuring the MTU and an address of every NIC, merged:

- baseline: by kernel name with the resolution step bypassed (the merge as it was before);
- by kernel name through the resolver (the walk finds no reference);
- by `pci:` reference (the index of the host built once, one lookup per reference).
"""
from __future__ import annotations

from common import Row, env_int, median, timed

NOISE_FACTOR = 1.25  # the walk must stay within this of the baseline (timing noise on 2 cores)


def _host(nics: int):
    from plumber_agent.models.observed import ObservedHost, ObservedLink
    host = ObservedHost(bridges={})
    for i in range(nics):
        name = f"ens{i}f0"
        host.links[name] = ObservedLink(
            ifname=name, index=10 + i, mtu=1500, mac=f"b4:96:91:{i >> 16 & 255:02x}:"
            f"{i >> 8 & 255:02x}:{i & 255:02x}", perm_mac=f"b4:96:91:{i >> 16 & 255:02x}:"
            f"{i >> 8 & 255:02x}:{i & 255:02x}", pci_addr=_pci(i), altnames=[f"enp{i}s0f0np0"])
    return host


def _pci(i: int) -> str:
    return f"0000:{i >> 8 & 255:02x}:{(i >> 3) & 31:02x}.{i & 7}"


def _template(nics: int, *, by_reference: bool):
    from plumber_agent.models.parse import template_from_object
    entries = [{"name": f"pci:{_pci(i)}" if by_reference else f"ens{i}f0", "mtu": 9000,
                "ipv4": {"address": [f"10.{i >> 8 & 255}.{i & 255}.1/24"]}} for i in range(nics)]
    return template_from_object({"metadata": {"name": "nics", "generation": 1,
                                              "creationTimestamp": "2024-01-01T00:00:00Z"},
                                 "spec": {"interfaceConfig": entries}})


def run_bench() -> list[Row]:
    from plumber_agent.desired import ifref, merge
    nics = env_int("BENCH_B22_NICS", 2000)
    repeats = env_int("BENCH_B22_REPEATS", 15)
    host = _host(nics)
    by_name, by_ref = _template(nics, by_reference=False), _template(nics, by_reference=True)
    assert by_ref.spec is not None and by_name.spec is not None
    resolved = merge([by_ref], {}, host)
    assert len(resolved.desired.links) == nics and resolved.results["nics"].state == "Applied"

    real = ifref.Resolver.resolve_spec

    def bypassed(self, spec, path="spec"):
        return ifref.SpecResolution(spec=spec, references={}, problems=[])

    def baseline_merge():
        ifref.Resolver.resolve_spec = bypassed
        try:
            merge([by_name], {}, host)
        finally:
            ifref.Resolver.resolve_spec = real
    runs = {"baseline": baseline_merge, "walked": lambda: merge([by_name], {}, host),
            "referenced": lambda: merge([by_ref], {}, host)}
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(repeats):  # interleaved, in turning order: load from others hits all alike
        order = list(runs)[i % 3:] + list(runs)[:i % 3]
        for name in order:
            samples[name] += timed(runs[name], 1, warmup=0)
    baseline, walked, referenced = (median(samples[n]) for n in ("baseline", "walked",
                                                                 "referenced"))
    walk_names = median(timed(lambda: ifref.Resolver(host).resolve_spec(by_name.spec), repeats))
    walk_refs = median(timed(lambda: ifref.Resolver(host).resolve_spec(by_ref.spec), repeats))
    label = "merge, resolution bypassed (as before), ms"
    return [
        Row("B22", f"merge of {nics} NICs by kernel name, through the resolver",
            walked * 1000, "ms", baseline * 1000, label,
            target=f"<= {NOISE_FACTOR}x baseline", ok=walked <= baseline * NOISE_FACTOR),
        Row("B22", f"merge of {nics} NICs by pci: reference", referenced * 1000, "ms",
            baseline * 1000, label, note="info"),
        Row("B22", "the resolution step alone, by kernel name (the walk)", walk_names * 1000,
            "ms", baseline * 1000, label, note="info"),
        Row("B22", "the resolution step alone, by pci: reference", walk_refs * 1000, "ms",
            baseline * 1000, label, note="info"),
    ]
