"""Leader election over one Lease, client-go's rules: one agent in the fleet writes template
status; any other takes over when the holder stops renewing.

- The holder renews every third of the lease duration and steps down when it could not renew
  for two thirds of it (client-go's renew deadline), before anyone may take over. Measured from
  when its last successful renewal was SENT; the writer also asks `confirmed()` before each
  status write, so a renewal stalled inside a slow API server (the elector's loop blocked in
  it) cannot let it write on after another agent took over.
- A candidate takes over a Lease that has not changed for the lease duration plus
  rollout.TAKEOVER_MARGIN_S as seen on its own monotonic clock (never by comparing another node's renewTime with its clock: clocks differ).
- Candidates read the Lease from the agent's Lease watch, not with a GET per try: a fleet of
  idle candidates sends no requests; only the holder writes (its renewals).
- Every write is optimistic (create: 409 if another won; PUT at the resourceVersion read).
- On a clean stop the holder deletes the Lease, so the next leader starts at once.
- A 429 or 5xx with Retry-After holds the next try until the server's time is over
  (plumber_agent/retry.py); a holder that cannot renew by its deadline steps down as usual.
- A failure is named (plumber_agent/apierrors.py: Forbidden, NamespaceNotFound, ServerError,
  Timeout...), not only logged: `problem()` is the node's HostNetwork condition
  (LeaderElectionFailing, README "Errors, named"), a Warning Event when it starts or changes,
  and `plumber_leader_election_failures_total{reason}`. A 409 or a 404 of an update is a race
  another agent won, not a failure. A class that needs a person (403, a missing namespace) is
  reported at the first failure; one that passes by itself (5xx, 429, a timeout) only once it
  lasted the renew deadline, so a blip costs no status write.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, Optional

from plumber_agent.apierrors import (ApiFailure, ApiReason, Target, api_error_metric, classify,
                                     describe, metric_name)
from plumber_agent.clock import Clock, micro_time
from plumber_agent.fleet.rollout import (LEASE_ROLE_LABEL, MANAGED_BY, MANAGED_BY_LABEL,
                                         TAKEOVER_MARGIN_S)
from plumber_agent.fleet.slots import LEASES_RESOURCE, RENEW_DEADLINE_FRACTION
from plumber_agent.retry import RetryAfterGate

log = logging.getLogger(__name__)

LEADER_LEASE = "plumber-status-writer"
LEADER_ROLE = "leader"
DEFAULT_DURATION_S = 15.0
FAILURES_METRIC = "plumber_leader_election_failures_total"
CONDITION_TYPE = "LeaderElectionFailing"
EVENT_REASON = "LeaderElectionFailing"
EVENT_ACTION = "LeaderElection"
# The holder could not renew within the renew deadline and stepped down (the reason of the
# step-down, whatever the requests' errors were: a stalled request raises nothing).
RENEW_DEADLINE_EXCEEDED = "RenewDeadlineExceeded"
WARN_EVERY_S = 60.0  # one log line per kind of failure this often (the loop tries every 1 s)
OPERATION = "leader_election"  # plumber_api_errors_total's operation label


@dataclass(frozen=True)
class LeaderProblem:
    """Why this agent cannot take part in the election: `reason` an apierrors.ApiReason (or
    RENEW_DEADLINE_EXCEEDED), `message` for a person."""

    reason: str
    message: str

    def condition(self) -> dict:
        """The HostNetwork status condition (abnormal-true: present only while failing)."""
        return {"type": CONDITION_TYPE, "status": "True", "reason": self.reason,
                "message": self.message}


class LeaderElector:
    def __init__(self, *, client, namespace: str, identity: str, clock: Clock,
                 lead: Callable[[threading.Event], None], read: Callable[[], Optional[dict]],
                 duration_s: float = DEFAULT_DURATION_S, name: str = LEADER_LEASE,
                 metrics=None, events=None,
                 on_problem: Callable[[], None] = lambda: None) -> None:
        """`metrics`: an ops.Metrics for the failure counters; `events`: a reconciler.EventSink
        for the Warning Event; `on_problem()`: `problem()` changed (the agent republishes its
        status)."""
        self.client, self.namespace, self.identity = client, namespace, identity
        self._read = read  # the Lease as the watch last saw it (None: absent)
        self.clock, self.lead, self.duration_s, self.name = clock, lead, duration_s, name
        self._seen: Optional[tuple[str, float]] = None  # (resourceVersion, first seen at)
        self._lease: Optional[dict] = None  # ours, as last written
        self._renewed_at = float("-inf")
        self._term_stop: Optional[threading.Event] = None
        self._term: Optional[threading.Thread] = None
        self.terms = 0
        self._server_hold = RetryAfterGate()  # a 429/5xx's Retry-After
        self.metrics, self.events, self._on_problem = metrics, events, on_problem
        self._problem: Optional[LeaderProblem] = None
        self._failing_since: Optional[float] = None  # first failure of the current run
        self._warned: dict[str, float] = {}  # reason -> last log line's monotonic time
        self._lock = threading.Lock()

    def problem(self) -> Optional[LeaderProblem]:
        with self._lock:
            return self._problem

    def confirmed(self) -> bool:
        """May the holder act as the writer now: its last successful write of the Lease was
        sent less than the renew deadline ago (client-go LeaderElector.renew's RenewDeadline)."""
        return self.clock.monotonic() - self._renewed_at < self.duration_s * RENEW_DEADLINE_FRACTION

    @property
    def leading(self) -> bool:
        return self._term_stop is not None and not self._term_stop.is_set()

    def _body(self, over: Optional[dict]) -> dict:
        now = micro_time(self.clock.time())
        spec = (over or {}).get("spec") or {}
        ours = spec.get("holderIdentity") == self.identity
        meta = {"name": self.name, "namespace": self.namespace,
                "labels": {LEASE_ROLE_LABEL: LEADER_ROLE, MANAGED_BY_LABEL: MANAGED_BY}}
        if over is not None:
            meta["resourceVersion"] = over["metadata"]["resourceVersion"]
        return {"metadata": meta, "spec": {
            "holderIdentity": self.identity, "leaseDurationSeconds": max(1, round(self.duration_s)),
            "acquireTime": spec.get("acquireTime") if ours and spec.get("acquireTime") else now,
            "renewTime": now,
            "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if ours or not over else 1)}}

    def try_acquire_or_renew(self) -> bool:
        """One round; True when this agent holds the Lease afterwards."""
        now = self.clock.monotonic()
        seen = self._read()
        if seen is not None:
            version = str(seen["metadata"].get("resourceVersion"))
            if self._seen is None or self._seen[0] != version:
                self._seen = (version, now)
        current = self._lease if self._lease is not None else seen
        if self._server_hold.remaining_s(now) > 0:
            return False  # the server asked for a pause: no write until it is over
        verb = "create" if current is None else "update"
        try:
            if current is None:
                self._lease = self.client.create_lease(self.namespace, self._body(None))
            else:
                holder = (current.get("spec") or {}).get("holderIdentity")
                if holder != self.identity:
                    expired = self._seen is not None and \
                        now - self._seen[1] >= self.duration_s + TAKEOVER_MARGIN_S
                    if holder and not expired:
                        # Another agent leads: the election works (what this agent could not
                        # write is found out again when it next has to).
                        self._set_problem(None)
                        self._failing_since = None
                        return False
                elif now - self._renewed_at < self.duration_s / 3:
                    return True  # ours, and renewed recently enough
                self._lease = self.client.replace_lease(self.namespace, self.name,
                                                        self._body(current))
        except Exception as exc:  # noqa: BLE001 - 409/404: another won or it is gone; retry
            self._server_hold.note(exc, now)
            self._failed(classify(exc), verb=verb, now=now)
            self._lease = None
            return False
        self._set_problem(None)
        self._failing_since = None
        self._renewed_at = now
        self._seen = (str(self._lease["metadata"].get("resourceVersion")), now)
        return True

    def _failed(self, failure: ApiFailure, *, verb: str, now: float) -> None:
        """Name one failed write of the Lease (see the module doc)."""
        race = failure.reason == ApiReason.CONFLICT or (
            failure.reason == ApiReason.NOT_FOUND and verb != "create")
        if race:  # another agent won, or the Lease went away: the API works
            self._set_problem(None)
            self._failing_since = None
            return
        self._count(failure.reason)
        if self.metrics is not None:
            self.metrics.inc(api_error_metric(OPERATION, failure.reason))
        message = ("cannot take part in the status writer's leader election: " + describe(
            failure, verb=verb, target=Target(LEASES_RESOURCE, name=self.name,
                                              namespace=self.namespace, namespaced_role=True)))
        if self._failing_since is None:
            self._failing_since = now
        if self._warn_due(failure.reason, now):
            log.warning("%s", message)
        lasted_s = now - self._failing_since
        if not failure.transient or lasted_s >= self.duration_s * RENEW_DEADLINE_FRACTION:
            self._set_problem(LeaderProblem(str(failure.reason), message))

    def _count(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.inc(metric_name(FAILURES_METRIC, reason=reason))

    def _warn_due(self, reason: str, now: float) -> bool:
        last = self._warned.get(reason)
        if last is not None and now - last < WARN_EVERY_S:
            return False
        self._warned[reason] = now
        return True

    def _set_problem(self, problem: Optional[LeaderProblem]) -> None:
        """Keep `problem`; on a change, tell the agent (status) and, when it starts or its
        reason changes, record a Warning Event (the recorder folds repeats into a series)."""
        with self._lock:
            old, self._problem = self._problem, problem
        if old == problem:
            return
        if problem is not None and (old is None or old.reason != problem.reason) \
                and self.events is not None:
            self.events.emit(reason=EVENT_REASON, warning=True, message=problem.message,
                             action=EVENT_ACTION)
        if problem is None:
            log.info("leader election %s works again", self.name)
        self._on_problem()

    def _start_term(self) -> None:
        self.terms += 1
        log.info("became the status writer (term %d)", self.terms, extra={"leader": self.identity})
        stop = threading.Event()
        self._term_stop = stop

        def body():
            try:
                self.lead(stop)
            except Exception:  # a broken term must not kill the agent: step down, retry
                log.exception("status writer term failed")
                stop.set()
        self._term = threading.Thread(target=body, name="status-writer", daemon=True)
        self._term.start()

    def _end_term(self, why: str) -> None:
        if self._term_stop is not None and not self._term_stop.is_set():
            log.info("stopped being the status writer: %s", why)
            self._term_stop.set()
        if self._term is not None:
            self._term.join(timeout=10)
        self._term_stop, self._term = None, None

    def _stepped_down(self) -> None:
        """The holder could not renew by the renew deadline (client-go's "failed to renew
        lease"): step down, and say so with what the last failure was."""
        deadline_s = self.duration_s * RENEW_DEADLINE_FRACTION
        last = self.problem()
        why = f"could not renew Lease {self.namespace}/{self.name} within the renew deadline " \
              f"({deadline_s:g} s of {self.duration_s:g} s)"
        self._end_term(why)
        self._count(RENEW_DEADLINE_EXCEEDED)
        self._set_problem(LeaderProblem(RENEW_DEADLINE_EXCEEDED, "stopped being the status "
                                        f"writer: {why}" + (f"; {last.message}" if last else "")))

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            held = self.try_acquire_or_renew()
            if held and not self.leading:
                self._start_term()
            elif not held and self.leading and not self.confirmed():
                self._stepped_down()
            # Cheap either way: a candidate reads the watch's copy, the holder writes only when
            # a third of the duration has passed.
            self.clock.wait(stop, min(1.0, self.duration_s / 6))
        if self.leading:
            self._end_term("shutting down")
            lease = self._lease
            if lease is not None:
                try:
                    self.client.delete_lease(self.namespace, self.name,
                                             resource_version=lease["metadata"].get("resourceVersion"))
                except Exception as exc:  # noqa: BLE001 - it expires by itself
                    log.info("could not release %s: %s", self.name, exc)
