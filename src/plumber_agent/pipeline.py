"""The merge->plan pipeline: templates plus what the host has -> a plan and per-template results.

Why one function: the reconciler, the rollout gate's preview (fleet/gate.py), `plumber-agent
plan` and the unit tests' simulated node must all plan alike. Each had its own copy of "merge
the templates, then plan against the host"; a guard added to one (the API path, the undo of a
rolled-back template, the half of a fenced apply that is kept) was missing from the others, so a
preview could promise what a pass would not do. The same holds for the pods a disruptive
action hits (planner/disruption.py): the preview, `plan --pods` and the drain before a round
(fleet/drain.py) read them off the one plan this makes. Pure like its two steps (desired.merge,
planner.plan): no I/O, no clock; the pods come from the caller's `pods()`, called only for a
plan with a disruptive action (a pass that disrupts nothing costs no pod LIST).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

from plumber_agent import desired as desired_mod
from plumber_agent import planner
from plumber_agent.desired import MergeResult, TemplateResult
from plumber_agent.models.actions import LedgerOp, Verb
from plumber_agent.models.observed import ObservedHost
from plumber_agent.models.plan import ApiServerPath, PlanResult
from plumber_agent.models.pods import PodUse
from plumber_agent.models.spec import Template
from plumber_agent.planner.disruption import annotate, any_disruptive

PodsReader = Callable[[], Optional[Sequence[PodUse]]]
"""This node's pods (fleet/drain.py PassPods.get); None: there is nowhere to read them from."""


@dataclass
class Planned:
    """One pipeline run: the merge (desired state and each template's result) and its plan."""

    merged: MergeResult
    plan: PlanResult
    # Why the pods could not be read (the exception's words), for a plan with a disruptive
    # action whose `pods()` failed: its actions say "pods using them not read".
    pods_problem: Optional[str] = None

    @property
    def results(self) -> dict[str, TemplateResult]:
        """Per template (by name): Applied, Conflict, Failed, NotSelected or Invalid, as merged."""
        return self.merged.results

    def problems(self) -> dict[str, list[str]]:
        """What the plan refuses or cannot do, per template."""
        return self.plan.problems_by_template()

    def lines(self) -> list[str]:
        """What `plumber-agent plan` prints of the plan: refusals, then actions (the rollout
        preview compares these)."""
        return [f"# template {name}: {message}"
                for name, messages in sorted(self.problems().items()) for message in messages
                ] + [action.describe() for action in self.plan.actions]


def plan_templates(templates: list[Template], observed: ObservedHost, *, labels: dict,
                   records: dict,
                   api_path: Optional[ApiServerPath | Sequence[ApiServerPath]] = None,
                   undo_allowed: frozenset = frozenset(),
                   kept_partial: frozenset = frozenset(),
                   merged: Optional[MergeResult] = None,
                   pods: Optional[PodsReader] = None) -> Planned:
    """Merge `templates` for a node with `labels`, then plan from `observed` and the ledger's
    `records`. `api_path`: the kernel's paths to the API endpoints (guarded); `undo_allowed`:
    templates being rolled back (their undo may move the path); `kept_partial`: templates whose
    fenced apply is kept, not undone (`hold_back`). `merged`: a merge to reuse instead of
    merging again (the reconciler's later rounds plan the merge of the pass's first discovery
    against the host as it is now). `pods`: names the pods each disruptive action hits."""
    if merged is None:
        merged = desired_mod.merge(templates, labels, observed)
    result = hold_back(planner.plan(merged.desired, observed, records, api_server=api_path,
                                    undo_allowed=undo_allowed), kept_partial)
    problem = None
    if pods is not None and any_disruptive(result.actions):
        try:
            read = pods()
        except Exception as exc:  # noqa: BLE001 - said in the actions' words and `pods_problem`
            read, problem = None, str(exc) or type(exc).__name__
        result = replace(result, actions=annotate(result.actions, observed, read))
    return Planned(merged=merged, plan=result, pods_problem=problem)


def hold_back(result: PlanResult, kept: frozenset | set) -> PlanResult:
    """The plan without the undo of what a fenced apply changed, for templates in `kept`
    (fleet/gate.py `GatePass.kept_partial`): a holder fenced part-way that then lost its slot
    waits for a slot again with its half kept (README: it "keeps what it has already changed").
    Undoing it would be a host change of the template without a slot, while other nodes hold
    them all, and churn (the same spec comes back with the next slot). Only undos whose every
    template is kept, of an object no other action of the plan touches."""
    if not kept:
        return result

    def undo_of_kept(action) -> bool:
        return (action.ledger_op == LedgerOp.RELEASE and action.verb != Verb.FORGET
                and bool(action.templates) and set(action.templates) <= kept)
    touched = {a.ledger_key for a in result.actions if not undo_of_kept(a)}
    actions = [a for a in result.actions if not undo_of_kept(a) or a.ledger_key in touched]
    if len(actions) == len(result.actions):
        return result
    return replace(result, actions=actions)
