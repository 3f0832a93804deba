"""`python -m tests.sriov_emu --mount DIR [--preset seed] [--pf k=v,...] [--knobs JSON]`

Runs the SR-IOV sysfs emulator in the foreground until unmounted or sent SIGTERM/SIGINT, so an
agent process can be pointed at it with `--sysfs-root DIR`. Faults are flipped at run time by
writing JSON to DIR/.emu/faults (see tests/sriov_emu/kernel.py for the knobs).
"""
from __future__ import annotations

import argparse
import json
import sys

from tests.sriov_emu.fuse_fs import mount
from tests.sriov_emu.kernel import KernelSysfs
from tests.sriov_emu.tree import PRESETS, PfSpec


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.sriov_emu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mount", required=True, help="empty directory to mount the sysfs on")
    parser.add_argument("--preset", default="seed", choices=sorted(PRESETS),
                        help="PFs to start with (default: the seed README's eno1/eno2)")
    parser.add_argument("--pf", action="append", default=[], metavar="KEY=VALUE,...",
                        help="a PF (repeatable), e.g. pci_addr=0000:01:00.1,ifname=eno2,num_vfs=8;"
                             " keys: " + ", ".join(f for f in PfSpec.__dataclass_fields__)
                             + ". Added to the preset (use --preset empty for only these)")
    parser.add_argument("--knobs", default="{}", help="initial knobs as a JSON object")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        pfs = PRESETS[args.preset] + tuple(PfSpec.from_arg(text) for text in args.pf)
        model = KernelSysfs(pfs, knobs=json.loads(args.knobs))
    except ValueError as exc:
        print(f"sriov_emu: {exc}", file=sys.stderr)
        return 2
    try:
        mount(model, args.mount)
    finally:
        model.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
