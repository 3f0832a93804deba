"""The node side of a rollout: which version of each template this pass applies.

Each pass the reconciler hands the gate the templates it sees; the gate answers with the
templates to merge and, per template, what to report (`Verdict`):
- a template whose network spec is the one this node approved before (`ApprovedSpecs`) is
  applied as is: drift repair is never gated;
- a new network spec (an edit, a new template, a node that newly matches) is previewed first:
  the plan it would cause here beyond what the approved specs cause. `dryRun` publishes that plan
  and changes nothing; an empty plan is approved at once (nothing to do, nothing to risk);
  otherwise the node needs a rollout slot (`SlotClaims`, Leases): with one it applies the new
  spec, without one it keeps the approved spec (or nothing) and reports Waiting;
- after the pass, `finish` approves what converged and releases its slot, or marks the slot
  Failed so it keeps counting against the limit.
Templates that do not select the node pass through (their cleanup puts back an approved state
and is not gated), except an EDIT that stops selecting a node where the approved spec still
selects it (a nodeSelector typo): that undo is a change of the new generation, so it waits for a
slot like an apply, keeping the approved spec meanwhile. An invalid edit keeps the approved spec
applied (reported Invalid).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable, Collection, Optional, Protocol

from plumber_agent.fleet.rollout import Admission, template_spec_hash
from plumber_agent.models.fleet import resolve_max_unavailable, selects
from plumber_agent.models.spec import Template, TemplateSpec, network_spec_dict
from plumber_agent.models.status import TemplateState
from plumber_agent.pipeline import PodsReader, plan_templates
from plumber_agent.statefile import load_json, save_json

log = logging.getLogger(__name__)

APPROVED_FILE = "rollout.json"
NO_LIMIT = "100%"


@dataclass
class Verdict:
    """What the gate decided for one template this pass."""

    template: Template
    state: Optional[str] = None  # TemplateState to report instead of the merge's (Waiting, Previewed)
    message: str = ""
    planned: Optional[list[str]] = None  # the new spec's plan on this node, when computed
    applying: bool = False  # this pass applies a new spec (under a slot when `slot`)
    slot: bool = False  # applying under a rollout slot: each host action is fenced (may_start)


@dataclass
class GatePass:
    effective: list[Template]
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    retry_after_s: Optional[float] = None  # look again then (a slot may expire)
    # Templates waiting for a slot whose current spec this node began to apply under a slot
    # that was then fenced: what that apply changed is kept (pipeline.hold_back), not undone.
    kept_partial: set[str] = field(default_factory=set)
    # Templates whose drift repair or cleanup drains this node under a slot of its own
    # (`drain_slot`): fenced like an apply's, released (or marked Failed) by `finish`.
    drain_slots: dict[str, Template] = field(default_factory=dict)


class SlotClaims(Protocol):
    """Rollout slots (fleet/slots.py over Leases); None in local mode (no fleet to limit)."""

    def admission(self, template: Template, limit: int) -> Admission: ...

    def claim(self, template: Template, admission: Admission) -> bool: ...

    def release(self, template: Template) -> None: ...

    def forget_absent(self, keep: set[str]) -> None: ...

    def fail(self, template: Template, message: str) -> None: ...

    def wait_hint_s(self, admission: Admission) -> Optional[float]: ...

    def set_waiting(self, waiting: dict[str, tuple[Template, int]]) -> None: ...

    def cluster_nodes(self) -> Optional[int]: ...

    def claim_problem(self, template: Template) -> Optional[str]: ...

    def fence(self, template: Template) -> Optional[str]: ...

    def drain_admission(self, template: Template, limit: int) -> Admission: ...


class ApprovedSpecs:
    """What this node approved per template: uid, generation and network spec, in
    `<state-dir>/rollout.json` (written atomically), so a waiting node keeps and repairs what it
    had also across agent restarts. None path: in memory only."""

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self._records: dict[str, dict] = load_json(path, {})

    def get(self, name: str) -> Optional[dict]:
        return self._records.get(name)

    def matches(self, template: Template) -> bool:
        record = self._records.get(template.name)
        return (record is not None and template.spec is not None
                and record.get("uid") == template.uid
                and record.get("network") == network_spec_dict(template.spec))

    def approved_version(self, template: Template) -> Optional[Template]:
        """The template as this node last approved it (None: never, or another uid)."""
        record = self._records.get(template.name)
        if not record or record.get("uid") != template.uid:
            return None
        try:
            spec = TemplateSpec.from_network_dict(record["network"])
        except Exception as exc:  # noqa: BLE001 - a record from another version: start over
            log.warning("forgetting the approved spec of %s: %s", template.name, exc)
            return None
        return replace(template, generation=int(record.get("generation") or 0), spec=spec,
                       problems=[])

    def approve(self, template: Template) -> None:
        record = {"uid": template.uid, "generation": template.generation,
                  "network": network_spec_dict(template.spec)}
        if self._records.get(template.name) != record:
            self._records[template.name] = record
            self._save()

    def forget_except(self, names: set[str]) -> None:
        stale = set(self._records) - names
        for name in stale:
            del self._records[name]
        if stale:
            self._save()

    def _save(self) -> None:
        save_json(self.path, self._records)


def _plan_lines(templates: list[Template], labels: dict, observed, records, api_path,
                prepare: Callable[[list[Template]], list[Template]],
                pods: Optional[PodsReader] = None) -> list[str]:
    """What `plumber-agent plan` would print for these templates: refusals, then actions
    (a disruptive one naming the pods it hits, when `pods()` can read them)."""
    planned = plan_templates(prepare(templates), observed, labels=labels, records=records,
                             api_path=api_path, pods=pods)
    if planned.pods_problem is not None:  # the preview says "not read"; the drain fails
        log.warning("rollout preview: cannot read the node's pods: %s", planned.pods_problem)
    return planned.lines()


def limit_of(template: Template, *, cluster_nodes: Optional[int]) -> int:
    """maxUnavailable as this node enforces it, from the spec alone: no status field is trusted
    for it (a forged `status.maxUnavailable` changes nothing). An integer as is (the schema
    bounds it). A percentage of the nodes of the cluster, the one count an agent has without
    reading other nodes (one list with `limit=1`): never below the writer's exact value over the
    matching nodes, so the writer's offers decide how wide a rollout goes and this bound only
    stops a forged offer from going wider than the percentage of the whole cluster. Unknown
    count: 1 (the most careful value: the rollout still moves)."""
    value = template.spec.rollout.max_unavailable
    if isinstance(value, int):
        return value
    return resolve_max_unavailable(value, cluster_nodes or 0)


class RolloutGate:
    def __init__(self, *, approved: ApprovedSpecs, slots: Optional[SlotClaims],
                 pods: Optional[Callable[[], Optional[list]]] = None) -> None:
        """`pods()`: this node's pods (fleet/drain.py PassPods.get), for the previews."""
        self.approved = approved
        self.slots = slots
        self.pods = pods
        # template name -> (uid, network spec hash, generation) of an apply stopped part-way by
        # the fence (in memory: after a restart the undo of a waiting node applies again)
        self._stopped: dict[str, tuple[str, str, int]] = {}

    def forget_deleted(self, keep: set[str]) -> None:
        """Forget the slots of template uids not in `keep` (SlotClaims.forget_absent)."""
        if self.slots is not None:
            self.slots.forget_absent(keep)

    def select(self, templates: list[Template], labels: dict, observed, records, api_path,
               prepare: Callable[[list[Template]], list[Template]] = list) -> GatePass:
        """`prepare` turns templates into what the merge takes (pools into the address each
        would get here, claiming nothing): the previews use it."""
        effective: list[Template] = []
        pending: list[Template] = []
        kept_invalid: dict[str, Verdict] = {}
        for template in templates:
            if template.spec is None:
                self._keep_through_invalid(template, effective, kept_invalid)
            elif not selects(template.spec.node_selector, labels):
                if self._unselected_by_edit(template, labels):
                    pending.append(template)  # its undo here is the edit's change: gated
                else:
                    effective.append(template)  # not selected: its cleanup is not gated
            elif self.approved.matches(template):
                if self.approved.get(template.name).get("generation") != template.generation:
                    self.approved.approve(template)  # only `rollout` (or nothing) changed
                effective.append(template)
            else:
                pending.append(template)
        self.approved.forget_except(set(kept_invalid) | {t.name for t in pending} | {
            t.name for t in effective
            if t.spec is not None and selects(t.spec.node_selector, labels)})
        gate = GatePass(effective=effective, verdicts=kept_invalid)
        # A stopped apply of a spec that is no longer pending (applied, deleted, deselected, or
        # edited: then its half is undone like a failed one's) is forgotten.
        current = {t.name: (t.uid, template_spec_hash(t)) for t in pending}
        self._stopped = {name: stop for name, stop in self._stopped.items()
                         if current.get(name) == stop[:2]}
        if not pending:
            if self.slots is not None:
                self.slots.set_waiting({})
            return gate
        fallback = {t.name: self.approved.approved_version(t) for t in pending}
        base = effective + [v for v in fallback.values() if v is not None]
        base_lines: Optional[set[str]] = None  # what the approved specs cause (computed once)
        waiting: dict[str, tuple[Template, int]] = {}
        for template in pending:
            if not template.spec.rollout.dry_run and (
                    self.slots is None or template.spec.rollout.max_unavailable == NO_LIMIT):
                # Nothing to coordinate and nothing to preview: apply (no plan computed twice).
                gate.verdicts[template.name] = verdict = Verdict(template=template)
                self._applying(template, verdict, "no limit")
                effective.append(template)
                continue
            if base_lines is None:
                base_lines = set(_plan_lines(base, labels, observed, records, api_path, prepare,
                                            self.pods))
            others = [t for t in base if t.name != template.name]
            lines = [line for line in _plan_lines(others + [template], labels, observed, records,
                                                   api_path, prepare, self.pods) if line not in base_lines]
            verdict = Verdict(template=template, planned=lines)
            gate.verdicts[template.name] = verdict
            keep = fallback[template.name]
            if template.spec.rollout.dry_run:
                verdict.state = TemplateState.PREVIEWED
                verdict.message = (f"dry run: {len(lines)} planned action(s), nothing changed"
                                   if lines else "dry run: no host changes")
            elif not lines:
                self.approved.approve(template)
                verdict.planned = None
                keep = template
            elif self._admitted(template, verdict, gate, waiting):
                keep = template
            if keep is not None:
                effective.append(keep)
        if self.slots is not None:
            self.slots.set_waiting(waiting)
        return gate

    def _unselected_by_edit(self, template: Template, labels: dict) -> bool:
        """The template stopped selecting this node because it was edited (the spec approved
        here still selects the node's labels as they are), not because the node was
        relabelled (one node, by a deliberate act)."""
        approved = self.approved.approved_version(template)
        return (approved is not None and approved.spec is not None
                and approved.generation != template.generation
                and selects(approved.spec.node_selector, labels))

    def _keep_through_invalid(self, template: Template, effective: list,
                              kept: dict[str, Verdict]) -> None:
        """An invalid edit changes nothing: the spec this node approved stays applied (else an
        invalid edit would undo the template on every node at once, ungated)."""
        approved = self.approved.approved_version(template)
        if approved is None:
            effective.append(template)  # never applied here: reported Invalid, nothing to keep
            return
        effective.append(approved)
        kept[template.name] = Verdict(
            template=template, state=TemplateState.INVALID,
            message="; ".join(template.problems)
            + f" (generation {approved.generation} stays applied)")

    def _admitted(self, template: Template, verdict: Verdict, gate: GatePass,
                  waiting: dict) -> bool:
        nodes = (self.slots.cluster_nodes()
                 if isinstance(template.spec.rollout.max_unavailable, str) else None)
        limit = limit_of(template, cluster_nodes=nodes)
        admission = self.slots.admission(template, limit)
        if admission.admit and self.slots.claim(template, admission):
            verdict.slot = True
            return self._applying(template, verdict, admission.reason)
        verdict.state = TemplateState.WAITING
        # Only a 409 is "another node took it": any other failure of this node's last claim
        # says what is wrong, also while it waits for its next turn (a free slot exists).
        problem = (self.slots.claim_problem(template)
                   if admission.admit or admission.free else None)
        verdict.message = problem or (
            admission.reason if not admission.admit
            else "waiting for a rollout slot: another node took it first")
        stopped = self._stopped.get(template.name)
        if stopped is not None:
            gate.kept_partial.add(template.name)
            verdict.message += (f"; what this node applied of generation {stopped[2]} before "
                                f"its slot stopped being confirmed is kept, not undone")
        waiting[template.name] = (template, limit)
        hint = self.slots.wait_hint_s(admission)
        if hint is not None:
            gate.retry_after_s = min(hint, gate.retry_after_s or hint)
        return False

    @staticmethod
    def _applying(template: Template, verdict: Verdict, why: str) -> bool:
        verdict.applying = True
        log.info("rollout: applying %s generation %s (%s)", template.name, template.generation,
                 why, extra={"template": template.name, "rollout": "applying"})
        return True

    def may_start(self, gate: GatePass) -> Optional[Callable[[object], Optional[str]]]:
        """The executor's question before each host action (host/executor.py `may_start`):
        None when it may start, else why not. An action of a template applied under a slot,
        or drained for under one (`drain_slot`, claimed during the pass: looked up at each
        call), starts only while that slot is confirmed (slots `fence`: pitfall "a lease is
        not a lock without fencing"); others (drift repair, cleanup, no limit) are not gated.
        None: no fleet to fence against."""
        if self.slots is None:
            return None

        def check(action) -> Optional[str]:
            for name in getattr(action, "templates", None) or ():
                verdict = gate.verdicts.get(name)
                template = (verdict.template if verdict is not None and verdict.applying
                            and verdict.slot else gate.drain_slots.get(name))
                why = self.slots.fence(template) if template is not None else None
                if why:
                    return why
            return None
        return check

    def drain_slot(self, gate: GatePass, template: Template) -> Optional[str]:
        """A drain that no apply under a slot covers (drift repair of an applied template, the
        undo of a deleted one: `template` then stands for it, fleet/drain.py) takes a slot of
        the template's current rollout first, so the rollout limit bounds how many nodes drain
        at once, whatever the drain is for (issue 23). None: the drain may go ahead (a slot
        held, claimed now, or nothing to coordinate); else why it waits.

        The slot is tried when `decide` finds one free, without waiting for the status
        writer's offer (`choose`): drift is one node's, not a fleet's wave; the Lease create is
        the lock all the same."""
        verdict = gate.verdicts.get(template.name)
        if verdict is not None and verdict.applying:
            return None  # applying now: under its slot, or with no limit to keep
        if template.name in gate.drain_slots or self.slots is None or template.spec is None \
                or template.spec.rollout.max_unavailable == NO_LIMIT:
            return None
        nodes = (self.slots.cluster_nodes()
                 if isinstance(template.spec.rollout.max_unavailable, str) else None)
        admission = self.slots.drain_admission(template, limit_of(template, cluster_nodes=nodes))
        if admission.admit and self.slots.claim(template, admission):
            gate.drain_slots[template.name] = template
            log.info("rollout: %s drains node under a slot (%s)", template.name, admission.reason,
                     extra={"template": template.name, "rollout": "drain-slot"})
            return None
        hint = self.slots.wait_hint_s(admission)
        if hint is not None:
            gate.retry_after_s = min(hint, gate.retry_after_s or hint)
        problem = self.slots.claim_problem(template) if admission.admit else None
        why = problem or ("waiting for a rollout slot to drain the node: "
                          + (admission.reason if not admission.admit
                             else "another node took it first"))
        if verdict is None:
            gate.verdicts[template.name] = Verdict(template=template,
                                                   state=TemplateState.WAITING, message=why)
        elif why not in verdict.message:  # already waiting (a new spec) or previewed: both said
            verdict.message = f"{verdict.message}; {why}" if verdict.message else why
            verdict.state = verdict.state or TemplateState.WAITING
        return why

    def finish(self, gate: GatePass, failures: dict[str, list[str]], *,
               unsettled: Collection[str] = (), fenced: Collection[str] = ()) -> None:
        """After the pass: approve and release what converged; a failure keeps its slot (as
        Failed), and a template still `unsettled` (host work planned when another template's
        failure cut the pass short) or `fenced` (an action not started because its slot was not
        confirmed in time) keeps it as is: the retry re-claims it (or waits, if it was lost)."""
        for verdict in gate.verdicts.values():
            if not verdict.applying:
                continue
            template = verdict.template
            problems = failures.get(template.name)
            if template.name in fenced:
                self._stopped[template.name] = (template.uid, template_spec_hash(template),
                                                template.generation)
                log.warning("rollout: %s generation %s stopped between host actions: its slot "
                            "is not confirmed; the retry re-claims it or waits", template.name,
                            template.generation,
                            extra={"template": template.name, "rollout": "fenced"})
                continue
            if not problems and template.name in unsettled:
                continue
            if problems:
                log.warning("rollout: %s generation %s failed here; keeping the slot",
                            template.name, template.generation,
                            extra={"template": template.name, "rollout": "failed"})
                if self.slots is not None:
                    self.slots.fail(template, "; ".join(problems))
                continue
            self.approved.approve(template)
            log.info("rollout: applied %s generation %s", template.name, template.generation,
                     extra={"template": template.name, "rollout": "applied"})
            if self.slots is not None:
                self.slots.release(template)
        for name, template in gate.drain_slots.items():  # slots taken to drain (drain_slot)
            if self.slots is None or name in fenced:
                continue  # fenced: kept as is for the retry, as an apply's
            problems = failures.get(name)
            if problems:
                self.slots.fail(template, "; ".join(problems))
            else:
                self.slots.release(template)
