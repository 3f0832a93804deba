"""Shim for tools that still call setup.py; all metadata lives in setup.cfg.

The example templates exist once, in manifests/examples/; src/plumber_agent/examples is a symlink
to them, so the wheel (and the container image built from it) ships them as package data. A build
context that lacks them (a container ignore file without `!manifests/examples/`) would quietly
produce a wheel without examples, so the build refuses instead.
"""
from pathlib import Path

from setuptools import setup

PACKAGED_EXAMPLES = Path(__file__).resolve().parent / "src" / "plumber_agent" / "examples"

if not any(PACKAGED_EXAMPLES.glob("*.yaml")):
    raise SystemExit(f"{PACKAGED_EXAMPLES}: no example templates (it should be a symlink to "
                     "manifests/examples; is manifests/examples/ in the build context?)")

setup()
