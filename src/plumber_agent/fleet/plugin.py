"""`kubectl plumber`: a template's rollout, node by node, from the objects that already hold it.

Why a kubectl plugin: the people who roll templates out already live in kubectl. kubectl finds
any `kubectl-<name>` executable on PATH and runs it for `kubectl <name> ...`, and they already
know its conventions (`--kubeconfig`, `--context`, KUBECONFIG, `-o json`, the "Error from
server (NotFound)" line). `kubectl get hnt` gives the counts; this gives the per-node view
that is spread over every HostNetwork and the slot Leases (docs/rollout.md).

It only reads (GET and LIST; no write, no watch), through plumber_agent.kube.client.KubeClient
like the agent, so a cluster that the agent can read is one the plugin can read.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any, Optional

from plumber_agent.fleet.rollout import (
    MESSAGE_ANNOTATION,
    PHASE_ANNOTATION,
    SLOT_SELECTOR,
    SPEC_HASH_ANNOTATION,
    TEMPLATE_UID_ANNOTATION,
    template_spec_hash,
)
from plumber_agent.models.parse import template_from_object
from plumber_agent.models.status import TemplateState
from plumber_agent.models.text import truncate

DEFAULT_NAMESPACE = "plumber-system"
TEMPLATE_RESOURCE = "hostnetworktemplates.plumber.k8s.pf9.io"
UNKNOWN = "Unknown"
# Row order of `status`: what needs a human first, what is done last.
STATE_ORDER = {"Failed": 0, "Conflict": 0, "Invalid": 0, TemplateState.APPLYING: 1,
               "Waiting": 2, UNKNOWN: 3, "Previewed": 4, "Applied": 5}
OTHER_STATES_RANK = 6
COUNT_KEYS = ("matching", "applied", "failed", "conflict", "invalid", "waiting", "applying",
              "previewed", "wouldChange", "unknown")
# The MESSAGE column never shrinks below this, however narrow the terminal.
MIN_MESSAGE_WIDTH = 20
TABLE_COLUMNS = ("NODE", "STATE", "GENERATION", "SLOT", "MESSAGE")


class PluginError(Exception):
    """A failure worded for the user, printed on stderr with exit code 1."""


# -- reading the cluster -------------------------------------------------------------------
def connect(kubeconfig: Optional[str], context: Optional[str]):
    """A KubeClient chosen the way kubectl chooses: --kubeconfig, else $KUBECONFIG (a list),
    else ~/.kube/config, else the pod's service account."""
    from plumber_agent.kube.client import KubeClient

    path = kubeconfig or os.environ.get("KUBECONFIG") or None
    if path is None:
        default = os.path.expanduser("~/.kube/config")
        if os.path.exists(default):
            path = default
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            return KubeClient.in_cluster()
        else:
            raise PluginError("no kubeconfig: pass --kubeconfig, set KUBECONFIG or create "
                              "~/.kube/config")
    return KubeClient.from_kubeconfig(path, context=context)


def api_error_text(exc: BaseException) -> str:
    """An API error as kubectl words it: `Error from server (Reason): message`."""
    body = getattr(exc, "body", None)
    if getattr(exc, "status", None) is not None:
        try:
            status = json.loads(body) if body else {}
        except (TypeError, ValueError):
            status = {}
        if isinstance(status, dict) and status.get("message"):
            return f"Error from server ({status.get('reason') or exc.status}): {status['message']}"
        return f"Error from server ({getattr(exc, 'reason', None) or exc.status})"
    return f"error: {exc}"


def selector_matches(selector: Optional[dict], labels: Optional[dict]) -> bool:
    """spec.nodeSelector: every key equal on the node; an empty selector matches every node."""
    labels = labels or {}
    return all(labels.get(key) == value for key, value in (selector or {}).items())


def template_entry(hostnetwork: dict, template: str) -> Optional[dict]:
    for entry in (hostnetwork.get("status") or {}).get("templates") or []:
        if isinstance(entry, dict) and entry.get("name") == template:
            return entry
    return None


def current_slots(leases: list[dict], template: dict) -> dict[str, dict]:
    """Holder node -> its slot Lease for this template's uid and network spec (a Lease of
    another uid or spec is a free slot, docs/rollout.md)."""
    parsed = template_from_object(template)
    identity = template_spec_hash(parsed)
    slots = {}
    for lease in sorted(leases, key=lambda obj: obj["metadata"].get("name", "")):
        annotations = lease["metadata"].get("annotations") or {}
        holder = (lease.get("spec") or {}).get("holderIdentity")
        if (holder and annotations.get(TEMPLATE_UID_ANNOTATION) == parsed.uid
                and annotations.get(SPEC_HASH_ANNOTATION) == identity):
            slots.setdefault(holder, lease)
    return slots


def node_rows(template: dict, nodes: list[dict], hostnetworks: list[dict],
              leases: list[dict]) -> list[dict]:
    """One row per node the template matches or that reports an entry for it (other than
    NotSelected), failing first, done last. `generation` is the template generation the state
    is about, `stale` when that is older than the template's; `entry` is the node's HostNetwork
    entry as published (None: no entry yet)."""
    name = template["metadata"]["name"]
    generation = template["metadata"].get("generation")
    selector = (template.get("spec") or {}).get("nodeSelector")
    entries = {}
    for hostnetwork in hostnetworks:
        entry = template_entry(hostnetwork, name)
        if entry is not None:
            entries[hostnetwork["metadata"]["name"]] = entry
    names = {node["metadata"]["name"] for node in nodes
             if selector_matches(selector, node["metadata"].get("labels"))}
    names |= {node for node, entry in entries.items() if entry.get("state") != TemplateState.NOT_SELECTED}
    slots = current_slots(leases, template)
    rows = []
    for node in names:
        entry = entries.get(node)
        state = (entry or {}).get("state") or UNKNOWN
        about = (entry or {}).get("observedGeneration")
        message = (entry or {}).get("message") or ""
        slot = None
        lease = slots.get(node)
        if lease is not None:
            annotations = lease["metadata"].get("annotations") or {}
            slot = {"name": lease["metadata"]["name"],
                    "phase": annotations.get(PHASE_ANNOTATION, "")}
            if annotations.get(MESSAGE_ANNOTATION):
                slot["message"] = annotations[MESSAGE_ANNOTATION]
            if slot["phase"] == TemplateState.APPLYING:
                # The Lease says what the node does right now (with the current generation);
                # its HostNetwork entry is written only at the end of a pass.
                state, about = TemplateState.APPLYING, generation
            elif not message and slot.get("message"):
                message = slot["message"]
        stale = isinstance(about, int) and isinstance(generation, int) and about < generation
        rows.append({"node": node, "state": state, "generation": about, "stale": stale,
                     "slot": slot, "message": message, "entry": entry})
    rows.sort(key=lambda row: (STATE_ORDER.get(row["state"], OTHER_STATES_RANK), row["node"]))
    return rows


def read_fleet(client, template_name: str, namespace: str):
    """(template, nodes, hostnetworks, slot leases, warnings); PluginError when the template
    does not exist. Leases that cannot be read leave SLOT empty with a warning."""
    template = client.get_template(template_name)
    if template is None:
        raise PluginError(f'Error from server (NotFound): {TEMPLATE_RESOURCE} '
                          f'"{template_name}" not found')
    nodes, _ = client.list_nodes()
    hostnetworks, _ = client.list_hostnetworks()
    warnings = []
    try:
        leases, _ = client.list_leases(namespace, SLOT_SELECTOR)
    except Exception as exc:  # noqa: BLE001 - no slot view is no reason to show nothing
        leases = []
        warnings.append(f"warning: slot Leases in namespace {namespace} not read: "
                        f"{api_error_text(exc)}")
    return template, nodes, hostnetworks, leases, warnings


# -- printing --------------------------------------------------------------------------------
def state_text(row: dict) -> str:
    if row["stale"]:
        return f"{row['state']} (gen {row['generation']})"
    return row["state"]


def slot_text(row: dict) -> str:
    slot = row["slot"]
    return f"{slot['name']} ({slot['phase']})" if slot else ""


def one_line(text: str, width: int) -> str:
    """`text` on one line (a row), cut to `width`."""
    return truncate(" ".join(text.split()), width)


def status_header(template: dict) -> list[str]:
    meta = template["metadata"]
    status = template.get("status")
    lines = [f"Template:        {meta['name']}"]
    generation = f"Generation:      {meta.get('generation')}"
    if not status:
        return lines + [generation, "Status:          no status yet"]
    if status.get("observedGeneration") is not None:
        generation += f" (status observed {status['observedGeneration']})"
    counts = status.get("nodes") or {}
    lines += [generation,
              f"Phase:           {status.get('phase', '')}",
              f"MaxUnavailable:  {status.get('maxUnavailable', '')}",
              "Nodes:           " + ", ".join(f"{key} {counts[key]}" for key in COUNT_KEYS
                                             if key in counts)]
    return lines


def status_table(rows: list[dict], width: int) -> list[str]:
    cells = [[row["node"], state_text(row), "" if row["generation"] is None
              else str(row["generation"]), slot_text(row), row["message"]]
             for row in rows]
    widths = [max([len(TABLE_COLUMNS[i])] + [len(c[i]) for c in cells]) for i in range(4)]
    used = sum(widths) + 3 * len(widths)
    message_width = max(MIN_MESSAGE_WIDTH, width - used)
    lines = []
    for line in [list(TABLE_COLUMNS)] + cells:
        lead = "   ".join(cell.ljust(widths[i]) for i, cell in enumerate(line[:4]))
        lines.append((lead + "   " + one_line(line[4], message_width)).rstrip())
    return lines


# `kubectl plumber status` with no template: one row per template, its counts as the elected
# status writer published them (status.nodes), so it costs one LIST whatever the fleet's size.
SUMMARY_COLUMNS = ("NAME", "PHASE", "GENERATION", "MATCHING", "APPLIED", "FAILED", "CONFLICT",
                   "INVALID", "WAITING", "APPLYING", "UNKNOWN")
SUMMARY_COUNT_KEYS = ("matching", "applied", "failed", "conflict", "invalid", "waiting",
                      "applying", "unknown")
NO_STATUS = "<none>"


def summary_row(template: dict) -> dict:
    """A template's line of the summary: phase, generation (with the one its status is about
    when that lags) and the counts; a template without status yet shows NO_STATUS."""
    meta = template["metadata"]
    status = template.get("status") or {}
    counts = status.get("nodes") or {}
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    return {"name": meta["name"], "phase": status.get("phase") or NO_STATUS,
            "generation": generation, "observedGeneration": observed,
            "counts": {key: counts[key] for key in COUNT_KEYS if key in counts}}


def summary_table(rows: list[dict]) -> list[str]:
    def generation_text(row: dict) -> str:
        generation, observed = row["generation"], row["observedGeneration"]
        text = "" if generation is None else str(generation)
        if isinstance(observed, int) and isinstance(generation, int) and observed < generation:
            text += f" (status {observed})"
        return text

    cells = [[row["name"], row["phase"], generation_text(row)]
             + [str(row["counts"].get(key, "")) for key in SUMMARY_COUNT_KEYS] for row in rows]
    widths = [max([len(SUMMARY_COLUMNS[i])] + [len(c[i]) for c in cells])
              for i in range(len(SUMMARY_COLUMNS))]
    return ["   ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip()
            for line in [list(SUMMARY_COLUMNS)] + cells]


def print_summary(client, args, out) -> int:
    templates, _ = client.list_templates()
    rows = [summary_row(t) for t in sorted(templates, key=lambda t: t["metadata"]["name"])]
    if args.output == "json":
        json.dump({"templates": rows}, out, indent=2)
        out.write("\n")
        return 0
    if not rows:
        print(f"No resources found: no {TEMPLATE_RESOURCE} in the cluster.", file=out)
        return 0
    print("\n".join(summary_table(rows)), file=out)
    return 0


def print_status(client, args, out) -> int:
    if args.template is None:
        return print_summary(client, args, out)
    template, nodes, hostnetworks, leases, warnings = read_fleet(client, args.template,
                                                                 args.namespace)
    rows = node_rows(template, nodes, hostnetworks, leases)
    for warning in warnings:
        print(warning, file=sys.stderr)
    if args.output == "json":
        meta = template["metadata"]
        json.dump({"template": meta["name"], "uid": meta.get("uid"),
                   "generation": meta.get("generation"), "status": template.get("status"),
                   "slotNamespace": args.namespace, "nodes": rows}, out, indent=2)
        out.write("\n")
        return 0
    print("\n".join(status_header(template)), file=out)
    print(file=out)
    if not rows:
        print("No nodes match the template's nodeSelector.", file=out)
        return 0
    width = shutil.get_terminal_size((120, 24)).columns
    print("\n".join(status_table(rows, width)), file=out)
    return 0


def print_plan(client, args, out) -> int:
    template, _, hostnetworks, _, _ = read_fleet(client, args.template, args.namespace)
    name = template["metadata"]["name"]
    generation = template["metadata"].get("generation")
    plans = []
    for hostnetwork in sorted(hostnetworks, key=lambda obj: obj["metadata"]["name"]):
        entry = template_entry(hostnetwork, name)
        if entry is None or ("plannedActions" not in entry
                             and entry.get("state") not in ("Previewed", "Waiting")):
            continue
        plans.append((hostnetwork["metadata"]["name"], entry))
    if not plans:
        print(f"# no node has published a plan for {name} (plans appear while "
              "spec.rollout.dryRun is true and while nodes wait for a rollout slot)", file=out)
        return 0
    changing = [node for node, entry in plans if plan_size(entry)]
    print(f"# {name} generation {generation}: {len(changing)} of {len(plans)} node(s) with a "
          "plan would change", file=out)
    for node, entry in plans:
        state = entry.get("state", UNKNOWN)
        observed = entry.get("observedGeneration")
        if isinstance(observed, int) and isinstance(generation, int) and observed < generation:
            state += f" (gen {observed})"
        count = plan_size(entry)
        print(file=out)
        if not count:
            print(f"# node {node}: no host changes", file=out)
            continue
        print(f"# node {node}: {state}, {count} planned action(s)", file=out)
        for line in entry.get("plannedActions") or []:
            print(line, file=out)
    return 0


def plan_size(entry: dict) -> int:
    """plannedActionCount (the full count; the list is cut at 20), else the list's length."""
    count = entry.get("plannedActionCount")
    return count if isinstance(count, int) else len(entry.get("plannedActions") or [])


# -- command line ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    def connection_options(parser: argparse.ArgumentParser, default) -> None:
        # On the main parser and on each command, so `--kubeconfig` works before or after the
        # command; the commands' copies default to SUPPRESS so they never undo the main one.
        parser.add_argument("--kubeconfig", default=default(None),
                            help="path to the kubeconfig file (default: $KUBECONFIG, then "
                                 "~/.kube/config)")
        parser.add_argument("--context", default=default(None),
                            help="the kubeconfig context to use")
        parser.add_argument("-n", "--namespace",
                            default=default(os.environ.get("POD_NAMESPACE") or DEFAULT_NAMESPACE),
                            help="namespace of the rollout slot Leases (default: $POD_NAMESPACE, "
                                 f"else {DEFAULT_NAMESPACE})")

    parser = argparse.ArgumentParser(
        prog="kubectl plumber",
        description="Read a HostNetworkTemplate's rollout: per-node state and planned actions.")
    connection_options(parser, lambda value: value)
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="the template's phase, counts and one row per "
                                 "node; without a template, every template with its counts")
    status.add_argument("template", nargs="?", default=None,
                        help="HostNetworkTemplate name (default: list every template)")
    status.add_argument("-o", "--output", choices=("table", "json"), default="table")
    connection_options(status, lambda value: argparse.SUPPRESS)
    plan = commands.add_parser("plan", help="each node's planned actions (dryRun or waiting)")
    plan.add_argument("template", help="HostNetworkTemplate name")
    connection_options(plan, lambda value: argparse.SUPPRESS)
    return parser


def main(argv: Optional[list[str]] = None, out: Any = None) -> int:
    args = build_parser().parse_args(argv)
    out = out if out is not None else sys.stdout
    try:
        client = connect(args.kubeconfig, args.context)
    except Exception as exc:  # noqa: BLE001 - a bad kubeconfig is the user's message, not a trace
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        command = print_status if args.command == "status" else print_plan
        return command(client, args, out)
    except PluginError as exc:
        print(exc, file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - API and connection errors, worded like kubectl
        print(api_error_text(exc), file=sys.stderr)
        return 1
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
