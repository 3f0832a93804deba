"""Command line (README "Command line"); it only parses and wires.

  plumber-agent run     the agent (cluster mode; or local mode with --templates DIR)
  plumber-agent show    discover this host, print its HostNetwork
  plumber-agent plan    print the ordered host actions a template would cause here
"""
from __future__ import annotations

import argparse
import os
import re
import sys

from plumber_agent import __version__
from plumber_agent.crd_guard import DEFAULT_RECHECK_S
from plumber_agent.host import DEFAULT_STATE_DIR
from plumber_agent.interest import DEFAULT_STATUS_EXCLUDE, StatusFilter
from plumber_agent.kube.flowcontrol import DEFAULT_BURST, DEFAULT_QPS
from plumber_agent.models.observed import DEFAULT_PF_CLASSES
from plumber_agent.ops import DEFAULT_HEALTH_PORT, DEFAULT_METRICS_PORT, LOOPBACK
from plumber_agent.sources import ALLOW_EMPTY_FLAG, node_name_default


DESCRIPTION = ("HostPlumber node agent: configures this node's networking from "
               "HostNetworkTemplates and publishes what it has as its HostNetwork "
               "(README.md, section \"Command line\").")


LIVENESS_STALE_S = 180.0
"""Three times the longest bounded wait inside a pass (the 60 s API-loss rollback window): a
loop silent longer is stuck, not busy."""

_PCI_CLASS_PREFIX = re.compile(r"0x[0-9a-f]{2}(?:[0-9a-f]{2}){0,2}")


def pci_class_prefixes(text: str) -> tuple[str, ...]:
    """--pf-pci-classes: comma-separated prefixes of sysfs `class` values ("0x02", "0x0108"),
    each 0x and 2, 4 or 6 lower-case hex digits."""
    prefixes = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    bad = [p for p in prefixes if not _PCI_CLASS_PREFIX.fullmatch(p)]
    if not prefixes or bad:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected PCI class prefixes like 0x02 or 0x0108, comma-separated")
    return prefixes


def _host_seams(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("host seams (default: the real host)")
    group.add_argument("--netns", metavar="NAME",
                       help="manage the network namespace NAME (under /var/run/netns) instead of our own")
    group.add_argument("--sysfs-root", metavar="PATH", default="/sys",
                       help="sysfs root for SR-IOV and PCI discovery (default /sys)")
    group.add_argument("--pf-pci-classes", metavar="PREFIX,...", type=pci_class_prefixes,
                       default=DEFAULT_PF_CLASSES,
                       help="PCI class prefixes accepted as SR-IOV PFs (default 0x02: network "
                            "controllers; e.g. 0x02,0x1200 to also accept an accelerator)")
    group.add_argument("--ovsdb", metavar="unix:PATH",
                       help="OVS database socket (default the host's /var/run/openvswitch/db.sock)")


def _node(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node-name", default=None,
                        help="this node's name (default $NODE_NAME, else the hostname)")


def _log_options(parser: argparse.ArgumentParser, *, default_level, default_format) -> None:
    parser.add_argument("--log-level", default=default_level,
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default=default_format, choices=["json", "text"],
                        help="json (one object per line, the default) or text")


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def _status_filter(text: str) -> StatusFilter:
    try:
        return StatusFilter.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _api_probe(text: str):
    from plumber_agent.apiprobe import parse_target
    try:
        return parse_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _api_endpoint(text: str):
    from plumber_agent.apiprobe import parse_endpoint
    try:
        return parse_endpoint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plumber-agent", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"plumber-agent {__version__}")
    _log_options(parser, default_level="info", default_format="json")
    # Also accepted after the subcommand (`plumber-agent run --log-format text`).
    common = argparse.ArgumentParser(add_help=False)
    _log_options(common, default_level=argparse.SUPPRESS, default_format=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the agent", parents=[common])
    _node(run)
    _host_seams(run)
    run.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                     help=f"where the ownership ledger lives (default {DEFAULT_STATE_DIR})")
    run.add_argument("--kubeconfig", help="kubeconfig file (default in-cluster config, else $KUBECONFIG)")
    run.add_argument("--templates", metavar="DIR",
                     help="local mode: read HostNetworkTemplates from YAML files in DIR (no cluster)")
    run.add_argument("--node-labels", default="", metavar="K=V,...",
                     help="local mode: this node's labels (kubernetes.io/hostname is always set)")
    _allow_empty(run)
    run.add_argument("--output", "-O", default="-", metavar="FILE",
                     help="local mode: write the HostNetwork YAML here on every change (default stdout)")
    run.add_argument("--once", action="store_true",
                     help="local mode: converge, print the HostNetwork and exit (1 if a template failed)")
    ops = run.add_argument_group("ops endpoints (README \"Ops endpoints\")")
    ops.add_argument("--metrics-addr", default=None, metavar="HOST:PORT",
                     help=f"serve /metrics, /healthz and /readyz here (e.g. "
                          f"{LOOPBACK}:{DEFAULT_METRICS_PORT}; :PORT binds {LOOPBACK}); an "
                          "address beyond loopback only with --metrics-secure")
    ops.add_argument("--metrics-secure", action="store_true",
                     help="serve --metrics-addr over HTTPS, /metrics only to bearer tokens the "
                          "API server authenticates (TokenReview) and allows to get /metrics "
                          "(SubjectAccessReview); cluster mode")
    ops.add_argument("--metrics-cert-dir", default=None, metavar="DIR",
                     help="tls.crt and tls.key for --metrics-secure (default: a self-signed "
                          "certificate made at start)")
    ops.add_argument("--health-addr", default=None, metavar="HOST:PORT",
                     help=f"also serve /healthz and /readyz (plain HTTP, no credentials) here, "
                          f"for kubelet's probes (e.g. {LOOPBACK}:{DEFAULT_HEALTH_PORT})")
    ops.add_argument("--liveness-stale-s", type=float, default=LIVENESS_STALE_S,
                     help="/healthz fails when the reconcile loop has not turned for this long "
                          "(default %(default)g; more than --api-loss-rollback-s, the longest "
                          "wait inside a pass)")
    run.add_argument("--resync-period-s", type=float, default=60.0,
                     help="re-check the host for drift at least this often (default 60)")
    run.add_argument("--unmanaged-publish-interval-s", type=_non_negative, default=60.0,
                     help="publish changes to interfaces and routes no template manages or "
                          "depends on (pod veths) at most this often, without a reconcile pass "
                          "each; template results and managed changes are written at once "
                          "(default 60, kubernetes-nmstate's refresh; 0: every change at once)")
    run.add_argument("--status-exclude-interfaces", type=_status_filter,
                     default=StatusFilter.parse(DEFAULT_STATUS_EXCLUDE), metavar="GLOB,...",
                     help="leave interfaces matching these patterns, and their routes, out of "
                          "the HostNetwork unless a template manages or depends on them "
                          f"(default {DEFAULT_STATUS_EXCLUDE!r}, as kubernetes-nmstate; '' lists "
                          "every interface)")
    run.add_argument("--watch-inactivity-timeout-s", type=float, default=80.0,
                     help="treat a watch that brought no event or bookmark for this long as dead "
                          "(default 80; bookmarks arrive about every minute)")
    run.add_argument("--api-loss-rollback-s", type=_non_negative, default=60.0,
                     help="after a pass that touched the node's path to the API server, roll "
                          "its changes back if the --api-probe targets do not answer within "
                          "this many seconds (default 60; kubernetes-nmstate waits 120)")
    run.add_argument("--api-probe", action="append", type=_api_probe, metavar="TARGET",
                     help="what must answer after such a pass (repeatable; all must answer): "
                          "api (an API endpoint answers HTTP(S); the default), "
                          "tcp:HOST:PORT, dns:NAME, ping:ADDR, ping:gateway")
    run.add_argument("--api-endpoint", action="append", type=_api_endpoint,
                     metavar="URL|HOST[:PORT]",
                     help="an API endpoint whose path the guard keeps (repeatable; added to "
                          "the API client's server; in local mode, with --kubeconfig's server, "
                          "the only ones)")
    api = run.add_argument_group("API manners (cluster mode; README \"API manners\")")
    api.add_argument("--kube-api-qps", type=float, default=DEFAULT_QPS, metavar="QPS",
                     help="client-side limit on API requests per second, a token bucket like "
                          "client-go's (default %(default)g; kubelet uses 50 for far more "
                          "work); 0 disables it")
    api.add_argument("--kube-api-burst", type=int, default=DEFAULT_BURST, metavar="N",
                     help="requests allowed at once above --kube-api-qps (default "
                          "%(default)d: a start, the busiest moment, runs unthrottled)")
    fleet = run.add_argument_group("fleet rollout (cluster mode; docs/rollout.md)")
    fleet.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE") or "plumber-system",
                       help="namespace of the rollout slot and status-writer Leases "
                            "(default $POD_NAMESPACE, else plumber-system)")
    fleet.add_argument("--slot-lease-duration-s", type=float, default=30.0,
                       help="a rollout slot of an agent that stops renewing frees after this")
    fleet.add_argument("--leader-lease-duration-s", type=float, default=15.0,
                       help="another agent takes over writing template status this long after "
                            "the writer stops renewing")
    fleet.add_argument("--leader-watch", choices=["metadata", "full"], default="metadata",
                       help="how the template status writer watches Nodes and HostNetworks: "
                            "metadata (default: names, labels and each node's template-results "
                            "annotation) or full (whole objects: the cost before issue 19, "
                            "bench B9's baseline)")
    fleet.add_argument("--crd-recheck-s", type=float, default=DEFAULT_RECHECK_S, metavar="S",
                       help="while the HostNetworkTemplate CRD is being deleted or is gone, the "
                            "host is kept as it is and the CRD read again this often (README "
                            "\"Upgrade and uninstall\")")
    run.add_argument("--no-monitor", action="store_true",
                     help="do not subscribe to kernel netlink events or PCI uevents "
                          "(drift then waits for the resync)")
    run.add_argument("--dry-run", action="store_true", help="plan and log, change nothing")

    show = sub.add_parser("show", help="discover this host and print its HostNetwork",
                          parents=[common])
    _node(show)
    _host_seams(show)
    show.add_argument("-o", "--output", default="yaml", choices=["yaml", "json"])

    plan = sub.add_parser("plan", help="print the actions a template would cause here; change nothing",
                          parents=[common])
    _node(plan)
    _host_seams(plan)
    plan.add_argument("-f", "--filename", required=True, help="HostNetworkTemplate YAML (or a directory)")
    plan.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                      help="ledger to read (read only; default %(default)s)")
    plan.add_argument("--node-labels", default="", metavar="K=V,...",
                      help="labels to evaluate nodeSelectors against")
    _allow_empty(plan)
    plan.add_argument("--api-endpoint", action="append", type=_api_endpoint,
                      metavar="URL|HOST[:PORT]",
                      help="an API endpoint whose path to keep, as `run` would (repeatable)")
    plan.add_argument("--pods", metavar="FILE",
                      help="this node's pods (a PodList as JSON or YAML, e.g. `kubectl get pods "
                           "-A --field-selector spec.nodeName=NODE -o json`): a disruptive action "
                           "names the pods it hits")
    return parser


def _allow_empty(parser) -> None:
    parser.add_argument(ALLOW_EMPTY_FLAG, action="store_true",
                        help="local mode: a directory with no template means undo everything "
                             "(refused otherwise, as a likely mistake)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run" and (args.kube_api_qps < 0 or args.kube_api_burst < 1):
        parser.error(f"--kube-api-qps must be >= 0 (got {args.kube_api_qps:g}) and "
                     f"--kube-api-burst >= 1 (got {args.kube_api_burst})")
    if args.command == "run" and not args.liveness_stale_s > args.api_loss_rollback_s:
        parser.error(f"--liveness-stale-s ({args.liveness_stale_s:g}) must be more than "
                     f"--api-loss-rollback-s ({args.api_loss_rollback_s:g}): a pass waits that "
                     "long for the API server, and kubelet would restart an agent that waits")
    from plumber_agent import logs
    logs.setup(args.log_level, args.log_format)
    args.node_name = args.node_name or node_name_default()
    from plumber_agent import agent  # agent never imports cli: the wiring depends on parsing only
    from plumber_agent.errors import NotAvailable, UsageError
    try:
        if args.command == "show":
            return agent.cmd_show(args)
        if args.command == "plan":
            return agent.cmd_plan(args)
        return agent.cmd_run(args)
    except UsageError as exc:  # a user mistake: say what, no traceback, exit 1
        for problem in exc.problems:
            print(f"plumber-agent {args.command}: error: {problem}", file=sys.stderr)
        return 1
    except NotAvailable as exc:  # before any change: a seam that is not there (--netns nosuch)
        print(f"plumber-agent {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
