"""Command line: wires everything (placeholder until the agent loop lands)."""
import sys


def main(argv=None) -> int:
    print("plumber-agent: not yet", file=sys.stderr)
    return 2
