"""Wires the agent's threads for `plumber-agent run`, and the one-shot `show` and `plan`.

Threads (cluster mode):
  informer   reflector over all HostNetworkTemplates   -> queue.add(NODE_KEY)
  node       reflector over this Node (field selector)  -> queue.add(NODE_KEY) on label changes
  reconciler the single worker: queue.get -> Reconciler.sync -> done / retry with backoff
  reporter   publishes status on change (one patch on /status: cluster.py)
  monitor    kernel netlink events -> queue.add_after(NODE_KEY, debounce) (drift within a second);
             an event about nothing a template manages or depends on (a pod's veth or route,
             interest.py) schedules one status refresh instead, when the reporter may publish
             unmanaged changes again (--unmanaged-publish-interval-s)
  udev       PCI uevents about SR-IOV PFs/VFs -> the same (host/udev.py; off on an emulated sysfs)
  resync     re-enqueues NODE_KEY every --resync-period-s (drift repaired even when all is quiet)
  slots      reflector over the rollout slot Leases -> a pass when a slot this node waits for frees
  leader     leader election; while leading, the status writer keeps template status (fleet/)
The whole desired state of a node is recomputed on every pass, so every event maps to the one key
NODE_KEY; the queue's de-duplication then coalesces bursts of events into one pass.
The node watch needs its own thread because each watch is one blocking HTTP stream.

A thread that dies unexpectedly sets `fatal`, and the process exits non-zero instead of running
half-dead; SIGTERM sets `stop`, threads drain, and the process exits 0.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
from typing import Callable, Optional

import yaml

from plumber_agent.clock import Clock, RealClock
from plumber_agent.fleet.gate import APPROVED_FILE, ApprovedSpecs, RolloutGate
from plumber_agent.pools.claims import FileClaims
from plumber_agent.pools.resolve import PoolResolver
from plumber_agent.heap import CollectorPolicy
from plumber_agent.interest import UNMANAGED, StatusFilter, classify
from plumber_agent.models.events import KernelEvent
from plumber_agent.ops import Heartbeat, Metrics, OpsServer
from plumber_agent.reconciler import Reconciler
from plumber_agent.reporter import Reporter
from plumber_agent.rollback import RolledBack
from plumber_agent.sources import DirectorySource, default_labels, parse_labels
from plumber_agent.workqueue import NODE_KEY

log = logging.getLogger(__name__)

HOST_EVENT_KEY = "host-event"  # a kernel netlink event (possible drift)
REFRESH_KEY = "unmanaged-refresh"  # unmanaged kernel changes to publish (no drift possible)
MONITOR_DEBOUNCE_S = 0.1
UNMANAGED_SETTLE_S = 1.0
"""A refresh waits at least this long after the unmanaged event that asked for it: a pod's veth,
its addresses and its routes arrive within it and are read by one pass."""
REFRESH_LEAD_S = 1.0
"""A refresh pass runs this long before the reporter may write unmanaged changes again, so its
fresh status is the one held and written then (a pass on the busy node takes ~150 ms)."""
LOCAL_POLL_S = 1.0
ROLLED_BACK_FILE = "rolled-back.json"
CLAIMS_FILE = "address-claims.json"  # local mode's pool addresses
ONCE_MAX_PASSES = 5


def _host(args, *, state_dir: Optional[str], dry_run: bool = False):
    from plumber_agent.host import Host
    return Host.for_node(netns=args.netns, sysfs_root=args.sysfs_root, ovsdb=args.ovsdb,
                         state_dir=state_dir, dry_run=dry_run,
                         pf_classes=args.pf_pci_classes)


def hostnetwork_object(node_name: str, status: dict) -> dict:
    from plumber_agent import GROUP, VERSION
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "HostNetwork",
            "metadata": {"name": node_name}, "spec": {}, "status": status}


def dump(obj: dict, fmt: str = "yaml") -> str:
    if fmt == "json":
        return json.dumps(obj, indent=2, sort_keys=False) + "\n"
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


# ----------------------------------------------------------------------------------------------
# show / plan


def cmd_show(args) -> int:
    from plumber_agent.models.status import to_api
    from plumber_agent.status_builder import build_status
    with tempfile.TemporaryDirectory(prefix="plumber-show-") as scratch:
        host = _host(args, state_dir=scratch, dry_run=True)
        status = to_api(build_status(host.discover()))
    sys.stdout.write(dump(hostnetwork_object(args.node_name, status), args.output))
    return 0


def _copy_state(state_dir: str, into: str) -> None:
    """The regular files of the state directory (links not followed, the lock file left out:
    each write there is an atomic rename, so every copied file is whole)."""
    from plumber_agent.statefile import open_nofollow
    for name in os.listdir(state_dir):
        try:
            fd = open_nofollow(os.path.join(state_dir, name), os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue  # a link, gone meanwhile, or unreadable: not state plan can use
        with os.fdopen(fd, "rb") as src:
            if not stat.S_ISREG(os.fstat(src.fileno()).st_mode) or name.endswith(".lock"):
                continue
            with open(os.path.join(into, name), "wb") as dst:
                shutil.copyfileobj(src, dst)


# `plan` exit status, as `terraform plan -detailed-exitcode` and `diff`: scriptable.
PLAN_NO_CHANGES, PLAN_ERROR, PLAN_CHANGES = 0, 1, 2


def cmd_plan(args) -> int:
    """Print what a pass would do here and change nothing. Exit PLAN_NO_CHANGES, PLAN_CHANGES
    or PLAN_ERROR (an invalid template or a change the agent would refuse or fail)."""
    from plumber_agent.pipeline import plan_templates
    source = DirectorySource(args.filename, default_labels(args.node_name, parse_labels(args.node_labels)),
                             allow_empty=args.allow_empty_templates)
    state_dir = args.state_dir if os.path.isdir(args.state_dir) else None
    with tempfile.TemporaryDirectory(prefix="plumber-plan-") as scratch:
        if state_dir:
            # A copy: plan never takes the agent's lock (a running agent holds it), so it must
            # not write there either; a corrupt ledger is set aside in the copy, not in place.
            _copy_state(state_dir, scratch)
        host = _host(args, state_dir=scratch, dry_run=True)
        observed = host.discover()
        # A pool becomes the address this node holds (local mode's claims) or would try first.
        claims_path = os.path.join(state_dir, CLAIMS_FILE) if state_dir else None
        pools = PoolResolver(claims=FileClaims(claims_path), node=args.node_name, node_uid=str)
        templates = pools.resolve(source.templates(), source.node_labels(), claim=False).templates
        endpoints = [e.ip for listed in (args.api_endpoint or []) for e in listed]
        # Read first: an unreadable pods file is a usage error even for a plan that disrupts
        # nothing, never a plan without the pods.
        pods = read_pods_file(args.pods) if args.pods else None
        run = plan_templates(templates, observed, labels=source.node_labels(),
                             records=host.ledger.records(),
                             api_path=host.api_server_paths(endpoints),
                             pods=None if pods is None else lambda: pods)
        result = run.plan
    invalid = {t.name: t.problems for t in source.templates() if t.spec is None}
    if invalid:
        # No plan from a partial read: `run` keeps what an invalid template applied, a plan
        # without it would show its undo.
        for name, template_problems in sorted(invalid.items()):
            for problem in template_problems:
                print(f"# template {name}: invalid: {problem}")
        print(f"# no plan: {len(invalid)} invalid template(s); nothing would change until "
              "they are fixed")
        return PLAN_ERROR
    problems = run.problems()
    planned: dict[str, int] = {}
    for action in result.actions:
        for name in action.templates:
            planned[name] = planned.get(name, 0) + 1
    for name, res in sorted(run.results.items()):
        print(f"# template {name}: {_plan_wording(res, planned.get(name, 0))}")
    for template_name, messages in sorted(problems.items()):
        for message in messages:
            print(f"# template {template_name}: would fail: {message}")
    if not result.actions:
        print("# no host changes" + ("" if problems else ": the host already matches"))
    for action in result.actions:
        print(action.describe())
    if problems:
        return PLAN_ERROR
    return PLAN_CHANGES if result.actions else PLAN_NO_CHANGES


def read_pods_file(path: str) -> list:
    """`plan --pods`: the PodUses of a PodList (or a single Pod, or a list) in JSON or YAML; an
    unreadable file is a UsageError (one line), never a plan without the pods."""
    from plumber_agent.errors import UsageError
    from plumber_agent.models.pods import pod_use
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError([f"--pods {path}: {exc}"]) from None
    items = raw.get("items") if isinstance(raw, dict) and "items" in raw else (
        raw if isinstance(raw, list) else [raw])
    uses = [pod_use(item) for item in items or () if isinstance(item, dict)]
    return [use for use in uses if use is not None]


def _plan_wording(res, planned: int) -> str:
    """A template's line in `plan`: what a pass WOULD do, never a state it is not in."""
    from plumber_agent.models.status import TemplateState
    note = f" ({res.message})" if res.message else ""
    if res.state == TemplateState.NOT_SELECTED:
        return "not selected (its nodeSelector does not match this node)"
    if res.state == TemplateState.CONFLICT:
        return f"in conflict{note}" + (f"; {planned} change(s) planned" if planned else "")
    if res.state == TemplateState.FAILED:
        return f"would fail{note}"
    what = f"{planned} change(s) planned" if planned else "the host already matches"
    return f"selected, {what}{note}"


# ----------------------------------------------------------------------------------------------
# run


class FileSink:
    """Local mode's StatusSink: the whole HostNetwork as YAML, to a file (atomically) or stdout."""

    def __init__(self, node_name: str, path: str) -> None:
        self.node_name, self.path = node_name, path

    def ensure(self) -> Optional[dict]:
        return None

    def write(self, status: dict) -> None:
        text = dump(hostnetwork_object(self.node_name, status))
        if self.path == "-":
            sys.stdout.write("---\n" + text)
            sys.stdout.flush()
            return
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, self.path)


class Supervisor:
    """Starts named threads; any unexpected exit of one sets `fatal`."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.fatal = threading.Event()
        self.threads: list[threading.Thread] = []

    def spawn(self, name: str, target: Callable[[threading.Event], None]) -> None:
        def body():
            try:
                target(self.stop)
            except BaseException:
                log.exception("thread %s crashed", name)
                self.fatal.set()
                return
            if not self.stop.is_set():
                log.error("thread %s exited unexpectedly", name)
                self.fatal.set()
        thread = threading.Thread(target=body, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def alive(self) -> bool:
        return not self.fatal.is_set() and all(t.is_alive() for t in self.threads)

    def wait(self) -> int:
        """Block until SIGTERM/SIGINT (exit 0) or a crashed thread (exit 1)."""
        while not self.stop.is_set() and not self.fatal.is_set():
            self.stop.wait(0.5)
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)
        return 1 if self.fatal.is_set() else 0


def _install_signals(sup: Supervisor) -> None:
    def handler(signum, frame):
        log.info("signal %s: draining", signum)
        sup.stop.set()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class HostEvents:
    """Turns kernel and udev events into work: managed or depended-on ones (and any udev event,
    which arrives as text) into a debounced pass, unmanaged ones (interest.py) into one status
    refresh when the reporter may next publish unmanaged changes. Remembers when each last
    happened, so the worker can skip a pass whose changes a discovery already saw (the echo of
    our own changes, a refresh overtaken by another pass)."""

    def __init__(self, queue, clock: Clock, *, unmanaged_due_in: Optional[Callable[[], float]] = None,
                 status_filter: Optional[StatusFilter] = None,
                 metrics: Optional[Metrics] = None) -> None:
        """`unmanaged_due_in()`: seconds until the reporter may write unmanaged changes (None:
        every event is handled as managed, today's behaviour before issue 19)."""
        self._queue = queue
        self._clock = clock
        self._due_in = unmanaged_due_in
        self._filter = status_filter or StatusFilter()
        self._metrics = metrics or Metrics()
        self._reconciler: Optional[Reconciler] = None
        self.last_event_at = float("-inf")
        self.last_unmanaged_at = float("-inf")

    def watch(self, reconciler: Reconciler) -> None:
        """Classify events against what this reconciler's last pass manages."""
        self._reconciler = reconciler

    def __call__(self, event) -> None:
        if self._unmanaged(event):
            return
        self.last_event_at = self._clock.monotonic()
        self._queue.add_after(HOST_EVENT_KEY, MONITOR_DEBOUNCE_S)

    def _unmanaged(self, event) -> bool:
        if (self._due_in is None or self._reconciler is None
                or not isinstance(event, KernelEvent)
                or classify(event, self._reconciler.interest) is not UNMANAGED):
            return False
        self._metrics.inc("plumber_kernel_events_unmanaged_total")
        if self._filter.hides(event.ifname):
            return True  # left out of the status: nothing to publish either
        self.last_unmanaged_at = self._clock.monotonic()
        self._queue.add_after(REFRESH_KEY, max(UNMANAGED_SETTLE_S, self._due_in() - REFRESH_LEAD_S))
        return True

    def last_pass_at(self) -> float:
        """When the watched reconciler's last discovery started (-inf before its first)."""
        return self._reconciler.last_discovery_started if self._reconciler else float("-inf")

    def already_seen(self, reconciler: Reconciler) -> bool:
        return self.last_event_at < reconciler.last_discovery_started

    def refresh_postponed_s(self, reconciler: Reconciler) -> Optional[float]:
        """None: run the refresh pass now. Else it is skipped: a discovery started after the
        last unmanaged event (0.0), or the reporter could not write it yet (the seconds to
        schedule it again after)."""
        if self.last_unmanaged_at < reconciler.last_discovery_started:
            return 0.0
        wait_s = (self._due_in() if self._due_in else 0.0) - REFRESH_LEAD_S
        return wait_s if wait_s > 0 else None


def _worker(queue, reconciler: Reconciler, metrics: Metrics,
            host_events: Optional[HostEvents] = None,
            collector: Optional[CollectorPolicy] = None, *,
            heartbeat: Optional[Heartbeat] = None,
            synced: Optional[threading.Event] = None) -> Callable[[threading.Event], None]:
    """The client-go worker loop: get a key, always done(), retry policy outside sync().
    Every turn beats `heartbeat` (liveness; the queue wait is bounded, so an idle loop beats
    too); the first pass that runs to its end sets `synced` (readiness) and every pass that ran
    sets plumber_last_reconcile_timestamp_seconds."""
    collector = collector or CollectorPolicy()

    def run(stop: threading.Event) -> None:
        while not stop.is_set():
            if heartbeat is not None:
                heartbeat.beat()
            key = queue.get(timeout_s=0.5)
            if key is None:
                continue
            if key == HOST_EVENT_KEY and host_events and host_events.already_seen(reconciler):
                queue.forget(key)
                queue.done(key)
                continue
            if key == REFRESH_KEY and host_events:
                postponed_s = host_events.refresh_postponed_s(reconciler)
                if postponed_s is not None:
                    if postponed_s > 0:
                        queue.add_after(key, postponed_s)
                    queue.forget(key)
                    queue.done(key)
                    continue
            try:
                outcome = reconciler.sync()
                if outcome.ran:
                    metrics.set("plumber_last_reconcile_timestamp_seconds", reconciler.clock.time())
                    if synced is not None:
                        synced.set()
                if not outcome.ran:
                    queue.add_after(key, 0.5)  # first list not in yet
                elif outcome.failures:
                    queue.add_rate_limited(key)
                else:
                    queue.forget(key)
                if outcome.ran and outcome.retry_after_s is not None:
                    queue.add_after(NODE_KEY, outcome.retry_after_s)  # a slot may expire then
            except Exception:
                log.exception("reconcile failed; retrying with backoff")
                queue.add_rate_limited(key)
            finally:
                queue.done(key)
                collector.after_pass()
    return run


def _resync(queue, period_s: float, clock: Clock,
            last_pass_at: Callable[[], float] = lambda: float("-inf")) -> Callable[[threading.Event], None]:
    """Enqueues NODE_KEY once `period_s` has passed since the last pass (`last_pass_at()`, a
    monotonic time) or the last resync. Any pass checks the whole host for drift, so under pod
    churn the refresh of unmanaged changes is the minute's drift check and the resync adds no
    second pass (bench B10); an otherwise idle agent still resyncs every `period_s`."""
    def run(stop: threading.Event) -> None:
        enqueued = clock.monotonic()
        while True:
            due = max(last_pass_at(), enqueued) + period_s
            if clock.wait(stop, max(0.0, due - clock.monotonic())):
                return
            if clock.monotonic() >= max(last_pass_at(), enqueued) + period_s:
                queue.add(NODE_KEY)
                enqueued = clock.monotonic()
    return run


def _monitor(args, host_events: HostEvents) -> Callable[[threading.Event], None]:
    def run(stop: threading.Event) -> None:
        from plumber_agent.host.monitor import NetlinkMonitor
        NetlinkMonitor(args.netns, host_events, stop_event=stop).run()
    return run


def _kubeconfig_server(path: str) -> Optional[str]:
    """The server URL of a kubeconfig's current context (local mode guards its path too);
    None when the file does not name one."""
    from plumber_agent.errors import UsageError
    try:
        with open(path) as fh:
            config = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError([f"kubeconfig {path}: {exc}"]) from None
    if not isinstance(config, dict):
        return None
    context = next((c.get("context") or {} for c in config.get("contexts") or []
                    if isinstance(c, dict) and c.get("name") == config.get("current-context")),
                   {})
    cluster = next((c.get("cluster") or {} for c in config.get("clusters") or []
                    if isinstance(c, dict) and c.get("name") == context.get("cluster")), {})
    server = cluster.get("server") if isinstance(cluster, dict) else None
    return server if isinstance(server, str) else None


def _api_guard(args, *, api_url: Optional[str], client_probe,
               api_paths: Callable[[], list] = list,
               slices: Optional[Callable[[], list]] = None):
    """(endpoints(), probe) of the API-path guard: the endpoints the agent dials (in a pod the
    `kubernetes` EndpointSlice's addresses, `slices()`, else the API client's server,
    resolved; --api-endpoint; in local mode the --kubeconfig's server) and the --api-probe
    targets checked after a pass that touched their path. No endpoint and no client: nothing
    to guard (probe None). `api_paths()`: the kernel's paths to the endpoints at the last
    pass (their gateways are probed too)."""
    from plumber_agent.apiprobe import Probe, endpoints_from_url
    given = [e for listed in (args.api_endpoint or []) for e in listed]
    if api_url is None and args.kubeconfig:
        api_url = _kubeconfig_server(args.kubeconfig)
    dialled = endpoints_from_url(api_url) if api_url else []
    if not given and not dialled and slices is None and client_probe is None:
        return (lambda: []), None

    def endpoints() -> list:
        """In a pod the Service IP is a kube-proxy rule, not a route: the slice's addresses
        are what the traffic reaches (the Service IP until the slice is listed)."""
        current = (slices() if slices is not None else []) or dialled
        return list(dict.fromkeys(given + current))

    def gateways() -> list[str]:
        return list(dict.fromkeys(p.gw for p in api_paths() if p.gw))
    probe = Probe(args.api_probe or [], endpoints=endpoints, gateways=gateways,
                  client=client_probe)
    return endpoints, probe


def _require_netns(netns: Optional[str]) -> None:
    from plumber_agent.errors import NotAvailable
    from plumber_agent.host.netlink.netns import NETNS_RUN_DIR
    if netns and not os.path.exists(os.path.join(NETNS_RUN_DIR, netns)):
        raise NotAvailable(f"network namespace {netns!r} does not exist "
                           f"({os.path.join(NETNS_RUN_DIR, netns)} is missing); it is not "
                           "created automatically")


def cmd_run(args) -> int:
    from plumber_agent.workqueue import WorkQueue

    sup = Supervisor()
    _install_signals(sup)
    metrics = Metrics()
    clock = RealClock()
    queue = WorkQueue(clock)
    metrics.add_collector(lambda m: m.set("plumber_queue_depth", len(queue)))
    _require_netns(args.netns)  # here, not in the reconciler thread: one line, not a crash
    from plumber_agent.statefile import ensure_state_dir
    ensure_state_dir(args.state_dir)

    if args.templates:
        source = DirectorySource(args.templates, default_labels(args.node_name, parse_labels(args.node_labels)),
                                 allow_empty=args.allow_empty_templates)
        sink = FileSink(args.node_name, args.output)
        events = None
        api_url, client_probe = None, None  # no API client: --api-endpoint / --kubeconfig
        slices = None
        ready = lambda: True  # noqa: E731
        kube = None
    else:
        from plumber_agent.cluster import ClusterWiring, FleetSettings
        in_pod = not (args.kubeconfig or os.environ.get("KUBECONFIG"))
        kube = ClusterWiring(node_name=args.node_name, kubeconfig=args.kubeconfig, clock=clock,
                             watch_api_endpoints=in_pod,
                             metrics=metrics, on_change=lambda: queue.add(NODE_KEY),
                             watch_inactivity_timeout_s=args.watch_inactivity_timeout_s,
                             api_qps=args.kube_api_qps, api_burst=args.kube_api_burst,
                             fleet=FleetSettings(namespace=args.namespace,
                                                 slot_duration_s=args.slot_lease_duration_s,
                                                 leader_duration_s=args.leader_lease_duration_s,
                                                 leader_watch=args.leader_watch,
                                                 crd_recheck_s=args.crd_recheck_s),
                             wake=lambda delay_s: queue.add_after(NODE_KEY, delay_s))
        source, sink, events = kube.source, kube.sink, kube.events
        api_url, client_probe = kube.api_url, kube.api_reachable
        slices = kube.api_endpoints if kube.api_slices is not None else None
        ready = kube.ready

    coalesce_unmanaged = args.unmanaged_publish_interval_s > 0
    reporter = Reporter(sink=sink, metrics=metrics, clock=clock, more_work=queue.has_ready_work,
                        unmanaged_interval_s=args.unmanaged_publish_interval_s)

    # The reconciler thread owns the host (pyroute2 sockets are per thread); the API probe reads
    # the gateways of the last pass's paths to the API server from its reconciler.
    made: list[Reconciler] = []
    heartbeats: list[Heartbeat] = []  # the liveness heartbeat, once it exists (--once: none)
    api_endpoints, api_probe = _api_guard(
        args, api_url=api_url, client_probe=client_probe, slices=slices,
        api_paths=lambda: made[-1].last_api_paths if made else [])

    def make_reconciler() -> Reconciler:
        host = _host(args, state_dir=args.state_dir, dry_run=args.dry_run)
        if not host.ledger.acquire(blocking=False):
            raise RuntimeError(f"another agent holds the ledger lock in {args.state_dir}; "
                               "two agents must not manage one node")
        slots = kube.slots if kube is not None else None  # local mode: no fleet to limit
        # A drain waits up to drainTimeoutSeconds inside one pass: it beats the liveness
        # heartbeat as it goes (set once the heartbeat exists; --once has none).
        drain = _drain_gate(args, kube, clock, metrics,
                            beat=lambda: heartbeats[-1].beat() if heartbeats else None)
        gate = RolloutGate(approved=ApprovedSpecs(os.path.join(args.state_dir, APPROVED_FILE)),
                           slots=slots, pods=drain.pods.get if drain is not None else None)
        if kube is not None:
            pools = PoolResolver(claims=kube.claims, node=args.node_name, node_uid=kube.node_uid,
                                 ready=kube.claim_watch.pool_synced)
        else:  # local mode: this node's claims in its state directory
            pools = PoolResolver(claims=FileClaims(os.path.join(args.state_dir, CLAIMS_FILE)),
                                 node=args.node_name, node_uid=str)
        reconciler = Reconciler(
            host=host, source=source, publish=reporter.publish, metrics=metrics,
            rollout=gate, pools=pools,
            publish_unmanaged=reporter.publish_unmanaged if coalesce_unmanaged else None,
            status_filter=args.status_exclude_interfaces,
            events=events, api_endpoints=api_endpoints, api_probe=api_probe,
            api_loss_deadline_s=args.api_loss_rollback_s,
            rolled_back=RolledBack(os.path.join(args.state_dir, ROLLED_BACK_FILE)),
            clock=clock, conditions=kube.conditions if kube is not None else None,
            drain=drain)
        made.append(reconciler)
        if kube is not None:  # a restart (an upgrade) re-reports no unchanged state as an Event
            reconciler.assume_reported(kube.reported_template_states())
        return reconciler

    if args.once:
        code = _run_once(args, make_reconciler(), reporter)
        if kube is not None:
            kube.broadcaster.drain()  # no event-sender thread runs in --once
        return code

    host_events = HostEvents(
        queue, clock, unmanaged_due_in=reporter.unmanaged_due_in if coalesce_unmanaged else None,
        status_filter=args.status_exclude_interfaces, metrics=metrics)

    heartbeat = Heartbeat(clock.monotonic, stale_after_s=args.liveness_stale_s)
    heartbeats.append(heartbeat)
    synced = threading.Event()

    def reconcile_loop(stop: threading.Event) -> None:
        reconciler = make_reconciler()
        host_events.watch(reconciler)
        _worker(queue, reconciler, metrics, host_events, heartbeat=heartbeat, synced=synced)(stop)

    ops = _ops_server(args, metrics=metrics, kube=kube, clock=clock,
                      healthy=lambda: sup.alive() and heartbeat.fresh(),
                      ready=lambda: sup.alive() and synced.is_set() and ready())
    if ops is not None:
        ops.start()
    queue.add(NODE_KEY)
    sup.spawn("reconciler", reconcile_loop)
    sup.spawn("reporter", reporter.run)
    sup.spawn("resync", _resync(queue, args.resync_period_s, clock,
                                last_pass_at=host_events.last_pass_at))
    if not args.no_monitor:
        sup.spawn("monitor", _monitor(args, host_events))
        from plumber_agent.host.udev import udev_thread
        udev = udev_thread(sysfs_root=args.sysfs_root, callback=host_events, metrics=metrics)
        if udev is not None:
            sup.spawn("udev", udev)
    if kube is not None:
        kube.start(sup.spawn)
    else:
        def poll_templates(stop: threading.Event) -> None:
            while not clock.wait(stop, LOCAL_POLL_S):
                if source.changed():
                    queue.add(NODE_KEY)
        sup.spawn("templates", poll_templates)
    code = sup.wait()
    queue.shut_down()
    log.info("agent stopped", extra={"exit_code": code})
    return code


def _drain_gate(args, kube, clock: Clock, metrics: Metrics, *, beat: Callable[[], None]):
    """The drain before disruptive changes (fleet/drain.py, README "Draining before disruptive
    changes"): only with the cluster (local mode has no pods to evict) and never in --dry-run."""
    if kube is None or args.dry_run:
        return None
    from plumber_agent.fleet.drain import (DRAIN_FILE, DRAIN_SPECS_FILE, DrainGate, Drainer,
                                           PassPods)
    from plumber_agent.fleet.drain_kube import KubeNodeDrain
    from plumber_agent.kube.drain import DrainApi
    node_api = KubeNodeDrain(DrainApi(kube.client), node=args.node_name)
    # The agent's pod is a DaemonSet's (never evicted as such); POD_NAME names it when the
    # agent runs otherwise (a downward-API env var).
    own = os.environ.get("POD_NAME")
    drainer = Drainer(api=node_api, state_path=os.path.join(args.state_dir, DRAIN_FILE),
                      node=args.node_name, own_pod=f"{args.namespace}/{own}" if own else None,
                      clock=clock, beat=beat)
    return DrainGate(drainer=drainer, pods=PassPods(node_api), clock=clock, metrics=metrics,
                     events=kube.events,
                     specs_path=os.path.join(args.state_dir, DRAIN_SPECS_FILE))


def _ops_server(args, *, metrics: Metrics, kube, clock: Clock, healthy: Callable[[], bool],
                ready: Callable[[], bool]) -> Optional[OpsServer]:
    """The ops endpoints the flags ask for (README "Ops endpoints"); a port that cannot be
    bound is a UsageError (one line, exit 1) before any thread starts."""
    from plumber_agent.errors import UsageError
    if not args.metrics_addr and not args.health_addr:
        return None
    tls = authorize = None
    if args.metrics_secure:
        if kube is None:
            raise UsageError(["--metrics-secure needs the cluster (TokenReview and "
                              "SubjectAccessReview); local mode (--templates) has none"])
        if not args.metrics_addr:
            raise UsageError(["--metrics-secure secures --metrics-addr: give one"])
        from plumber_agent.host.tlscert import server_context
        from plumber_agent.kube.review import DelegatingAuth
        tls = server_context(args.metrics_cert_dir, node_name=args.node_name)
        authorize = DelegatingAuth(kube.client, monotonic=clock.monotonic)
    elif args.metrics_cert_dir:
        raise UsageError(["--metrics-cert-dir is for --metrics-secure"])
    return OpsServer(args.metrics_addr, health_addr=args.health_addr, metrics=metrics,
                     healthy=healthy, ready=ready, tls=tls, authorize=authorize)


def _run_once(args, reconciler: Reconciler, reporter: Reporter) -> int:
    """Converge (a few passes), publish once, exit 1 if any template failed."""
    outcome = None
    for _ in range(ONCE_MAX_PASSES):
        outcome = reconciler.sync()
        if outcome.ok:
            break
    reporter.flush()
    from plumber_agent.models.status import TemplateState
    failed = [t for t in (outcome.status or {}).get("templates", [])
              if t["state"] in (TemplateState.FAILED, TemplateState.INVALID)]
    return 1 if failed else 0
