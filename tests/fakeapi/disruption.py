"""policy/v1 PodDisruptionBudgets and the pods/eviction subresource in the fake API server
(README.md beside this file, "Pods, PodDisruptionBudgets and eviction").

Two upstream pieces, each ported function by function:
- the disruption controller (pkg/controller/disruption/disruption.go): a budget's status
  (currentHealthy, desiredHealthy, expectedPods, disruptionsAllowed, disruptedPods, the
  DisruptionAllowed condition) from the pods its selector matches. The real controller is
  asynchronous (its informers, a second or so later); here it runs at once, under the server's
  lock, after every change of a pod or a budget, as the garbage collector does in server.py;
- the eviction subresource (pkg/registry/core/pod/storage/eviction.go EvictionREST.Create):
  terminal, pending and terminating pods are deleted without a budget; a pod no budget
  selects is deleted; more than one budget is a 500; with one, `checkAndDecrement` refuses with
  429 while the budget allows no disruption, else takes one disruption (disruptedPods) and the
  pod is deleted (pods.py: gracefully).

Controllers' scale (the /scale a percentage or maxUnavailable needs, getExpectedScale's
finders): this fake serves no ReplicaSets, Deployments or StatefulSets; a test gives the scale
of a pod's controller with `FakeApiServer.set_controller_scale(uid, replicas)`. Without it the
controller fails as upstream does for a pod whose controller it cannot find (failSafe).
"""
from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import tests.fakeapi.server as server
from tests.fakeapi import pods as pod_api
from tests.fakeapi.selectors import InvalidSelector, selector_empty, selector_matches

# disruption.go DeletionTimeout: how long an eviction's entry in disruptedPods counts the pod
# as going away before the controller assumes it will not.
DELETION_TIMEOUT_S = 120.0
# eviction.go MaxDisruptedPodSize.
MAX_DISRUPTED_POD_SIZE = 2000
# policy/v1 types.go: the condition and its reasons.
DISRUPTION_ALLOWED_CONDITION = "DisruptionAllowed"
SUFFICIENT_PODS_REASON = "SufficientPods"
INSUFFICIENT_PODS_REASON = "InsufficientPods"
SYNC_FAILED_REASON = "SyncFailed"
DISRUPTION_BUDGET_CAUSE = "DisruptionBudget"  # policyv1.DisruptionBudgetCause
EVICTION_VIOLATES_MSG = "Cannot evict pod as it would violate the pod's disruption budget."
MULTIPLE_PDBS_MSG = ("This pod has more than one PodDisruptionBudget, which the eviction "
                     "subresource does not support.")
STILL_PROCESSING_RETRY_S = 10  # createTooManyRequestsError's retryAfterSeconds
EVICTION_GROUP_VERSIONS = ("policy/v1", "policy/v1beta1")  # EvictionREST.AcceptsGroupVersion


@dataclass
class DisruptionState:
    """The controller's own state on the server: controllers' scales, and whether it is
    writing a status now (its own writes do not wake it again)."""

    scales: dict[str, int] = field(default_factory=dict)  # controller uid -> replicas
    syncing: bool = False


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _rfc3339(at: datetime.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: Any) -> Optional[datetime.datetime]:
    try:
        return datetime.datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def is_pod_ready(pod: dict) -> bool:
    """pkg/api/v1/pod/util.go IsPodReady: the Ready condition is True."""
    return any(isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or ())


def _labels(obj: dict) -> dict:
    return (obj.get("metadata") or {}).get("labels") or {}


# -- the disruption controller (pkg/controller/disruption/disruption.go) -----------------------
def get_pods_for_pdb(api: "server.FakeApiServer", pdb: dict) -> list[dict]:
    """DisruptionController.getPodsForPdb: the pods of the budget's namespace its selector
    matches (a nil selector matches none, an empty one all); raises InvalidSelector."""
    namespace = pdb["metadata"].get("namespace", "")
    selector = (pdb.get("spec") or {}).get("selector")
    return [pod for (ns, _), pod in sorted(api._objects[server.PODS].items())
            if ns == namespace and selector_matches(selector, _labels(pod))]


class SyncError(Exception):
    """trySync failed: failSafe records it."""


def scaled_value(value: Any, total: int, *, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.endswith("%"):
        try:
            percent = int(value[:-1])
        except ValueError:
            raise SyncError(f"invalid value for IntOrString: invalid value {value!r}") from None
        scaled = percent * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    raise SyncError("invalid value for IntOrString: invalid type: string is not a percentage")


def get_expected_scale(api: "server.FakeApiServer", pods: list[dict]) -> int:
    """DisruptionController.getExpectedScale: the sum of the scales of the pods' controllers
    (set_controller_scale); a pod whose controller is unknown fails the sync."""
    scales: dict[str, int] = {}
    for pod in pods:
        ref = next((r for r in pod["metadata"].get("ownerReferences") or ()
                    if isinstance(r, dict) and r.get("controller") is True), None)
        if ref is None:
            continue  # an unmanaged pod: logged upstream, not counted
        uid = str(ref.get("uid") or "")
        if uid in scales:
            continue
        if uid not in api.disruption.scales:
            raise SyncError(f'found no controllers for pod "{pod["metadata"]["name"]}"')
        scales[uid] = api.disruption.scales[uid]
    return sum(scales.values())


def get_expected_pod_count(api: "server.FakeApiServer", pdb: dict,
                           pods: list[dict]) -> tuple[int, int]:
    """DisruptionController.getExpectedPodCount: (expectedCount, desiredHealthy)."""
    spec = pdb.get("spec") or {}
    if spec.get("maxUnavailable") is not None:
        expected = get_expected_scale(api, pods)
        desired = expected - scaled_value(spec["maxUnavailable"], expected, round_up=True)
        return expected, max(desired, 0)
    if spec.get("minAvailable") is not None:
        min_available = spec["minAvailable"]
        if isinstance(min_available, int) and not isinstance(min_available, bool):
            return len(pods), min_available
        expected = get_expected_scale(api, pods)
        return expected, scaled_value(min_available, expected, round_up=True)
    return 0, 0


def build_disrupted_pod_map(pods: list[dict], pdb: dict, now: datetime.datetime) -> dict:
    """DisruptionController.buildDisruptedPodMap: the evicted pods still expected to go (not
    yet terminating, evicted less than DeletionTimeout ago)."""
    disrupted = (pdb.get("status") or {}).get("disruptedPods") or {}
    result = {}
    for pod in pods:
        name = pod["metadata"]["name"]
        if pod_api.terminating(pod) or name not in disrupted:
            continue
        at = _parse_time(disrupted[name])
        if at is not None and at + datetime.timedelta(seconds=DELETION_TIMEOUT_S) >= now:
            result[name] = disrupted[name]
    return result


def count_healthy_pods(pods: list[dict], disrupted: dict) -> int:
    """countHealthyPods: Ready pods neither terminating nor about to be (disruptedPods)."""
    return sum(1 for pod in pods if not pod_api.terminating(pod)
               and pod["metadata"]["name"] not in disrupted and is_pod_ready(pod))


def set_status_condition(conditions: list, condition: dict, now: datetime.datetime) -> list:
    """apimachinery meta.SetStatusCondition: lastTransitionTime moves only with the status."""
    out = [dict(c) for c in conditions if isinstance(c, dict)]
    for existing in out:
        if existing.get("type") == condition["type"]:
            if existing.get("status") != condition["status"]:
                existing["lastTransitionTime"] = _rfc3339(now)
            existing.update({k: v for k, v in condition.items() if k != "type"})
            return out
    out.append({**condition, "lastTransitionTime": _rfc3339(now)})
    return out


def _allowed_condition(status: dict) -> dict:
    """component-helpers poddisruptionbudget UpdateDisruptionAllowedCondition's condition."""
    allowed = status.get("disruptionsAllowed", 0) > 0
    condition = {"type": DISRUPTION_ALLOWED_CONDITION, "status": "True" if allowed else "False",
                 "reason": SUFFICIENT_PODS_REASON if allowed else INSUFFICIENT_PODS_REASON,
                 "message": ""}
    if status.get("observedGeneration"):
        condition["observedGeneration"] = status["observedGeneration"]
    return condition


def update_disruption_allowed_condition(status: dict, now: datetime.datetime) -> None:
    status["conditions"] = set_status_condition(status.get("conditions") or [],
                                                _allowed_condition(status), now)


def conditions_are_up_to_date(pdb: dict) -> bool:
    """poddisruptionbudget ConditionsAreUpToDate."""
    status = pdb.get("status") or {}
    condition = next((c for c in status.get("conditions") or ()
                      if c.get("type") == DISRUPTION_ALLOWED_CONDITION), None)
    if condition is None or status.get("observedGeneration") != pdb["metadata"].get("generation"):
        return False
    wanted = _allowed_condition(status)
    return condition.get("status") == wanted["status"] and \
        condition.get("reason") == wanted["reason"]


def _write_status_locked(api: "server.FakeApiServer", pdb: dict, status: dict) -> None:
    """The controller's UpdateStatus (only when something changed)."""
    if status == pdb.get("status"):
        return
    updated = server._clone(pdb)
    updated["status"] = status
    key = (pdb["metadata"].get("namespace", ""), pdb["metadata"]["name"])
    api._commit(server.PDBS, key, "MODIFIED", updated)


def update_pdb_status(api: "server.FakeApiServer", pdb: dict, *, current_healthy: int,
                      desired_healthy: int, expected_count: int, disrupted: dict,
                      now: datetime.datetime) -> None:
    """DisruptionController.updatePdbStatus: disruptionsAllowed = currentHealthy -
    desiredHealthy, 0 while it is negative or no pod is expected."""
    allowed = current_healthy - desired_healthy
    if expected_count <= 0 or allowed <= 0:
        allowed = 0
    old = pdb.get("status") or {}
    generation = pdb["metadata"].get("generation", 1)
    if (old.get("currentHealthy") == current_healthy
            and old.get("desiredHealthy") == desired_healthy
            and old.get("expectedPods") == expected_count
            and old.get("disruptionsAllowed") == allowed
            and (old.get("disruptedPods") or {}) == disrupted
            and old.get("observedGeneration") == generation and conditions_are_up_to_date(pdb)):
        return
    status: dict = {"observedGeneration": generation, "disruptionsAllowed": allowed,
                    "currentHealthy": current_healthy, "desiredHealthy": desired_healthy,
                    "expectedPods": expected_count, "conditions": old.get("conditions") or []}
    if disrupted:
        status["disruptedPods"] = disrupted
    update_disruption_allowed_condition(status, now)
    _write_status_locked(api, pdb, status)


def fail_safe(api: "server.FakeApiServer", pdb: dict, error: str,
              now: datetime.datetime) -> None:
    """DisruptionController.failSafe: disruptionsAllowed 0, DisruptionAllowed False/SyncFailed."""
    status = server._clone(pdb.get("status") or {})
    status["disruptionsAllowed"] = 0
    condition = {"type": DISRUPTION_ALLOWED_CONDITION, "status": "False",
                 "reason": SYNC_FAILED_REASON, "message": error}
    if status.get("observedGeneration"):
        condition["observedGeneration"] = status["observedGeneration"]
    status["conditions"] = set_status_condition(status.get("conditions") or [], condition, now)
    _write_status_locked(api, pdb, status)


def try_sync(api: "server.FakeApiServer", pdb: dict) -> None:
    """DisruptionController.sync/trySync of one budget, failSafe when it fails."""
    now = _now()
    try:
        pods = get_pods_for_pdb(api, pdb)
        expected, desired = get_expected_pod_count(api, pdb, pods)
    except (SyncError, InvalidSelector) as exc:
        fail_safe(api, pdb, str(exc), now)
        return
    disrupted = build_disrupted_pod_map(pods, pdb, now)
    update_pdb_status(api, pdb, current_healthy=count_healthy_pods(pods, disrupted),
                      desired_healthy=desired, expected_count=expected, disrupted=disrupted,
                      now=now)


def changed_locked(api: "server.FakeApiServer", resource: str, obj: dict) -> None:
    """A pod or a budget changed: the controller's event handlers (addPod, updatePod,
    deletePod, addDB, updateDB) enqueue the budgets, synced here at once. The controller's own
    status writes wake nothing."""
    state = api.disruption
    if resource not in (server.PODS, server.PDBS) or state.syncing:
        return
    namespace = obj["metadata"].get("namespace", "")
    state.syncing = True
    try:
        for (ns, name), pdb in sorted(api._objects[server.PDBS].items()):
            if ns == namespace and (resource == server.PODS or name == obj["metadata"]["name"]):
                try_sync(api, api._objects[server.PDBS][(ns, name)])
    finally:
        state.syncing = False


def prepare_pdb_for_create(obj: dict) -> None:
    """pkg/registry/policy/poddisruptionbudget/strategy.go PrepareForCreate: the status is the
    controller's (zero values)."""
    obj["status"] = {"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0,
                     "expectedPods": 0}


# -- the eviction subresource (pkg/registry/core/pod/storage/eviction.go) ----------------------
def can_ignore_pdb(pod: dict) -> bool:
    """canIgnorePDB: a terminal, pending or terminating pod is deleted without a budget."""
    phase = (pod.get("status") or {}).get("phase")
    return phase in ("Succeeded", "Failed", "Pending") or pod_api.terminating(pod)


def should_enforce_resource_version(pod: dict) -> bool:
    """shouldEnforceResourceVersion: not for terminal or terminating pods."""
    phase = (pod.get("status") or {}).get("phase")
    return not (phase in ("Succeeded", "Failed") or pod_api.terminating(pod))


def get_pod_disruption_budgets(api: "server.FakeApiServer", pod: dict) -> list[dict]:
    """EvictionREST.getPodDisruptionBudgets: the pod's namespace's budgets whose selector
    matches it; an invalid, nil or empty selector matches nothing here."""
    namespace = pod["metadata"].get("namespace", "")
    found = []
    for (ns, _), pdb in sorted(api._objects[server.PDBS].items()):
        selector = (pdb.get("spec") or {}).get("selector")
        try:
            if ns != namespace or not isinstance(selector, dict) or selector_empty(selector) \
                    or not selector_matches(selector, _labels(pod)):
                continue
        except InvalidSelector:
            continue
        found.append(pdb)
    return found


def too_many_requests_for(cause: str, retry_after_s: int) -> "server.ApiError":
    """errors.NewTooManyRequests with the budget's StatusCause (its JSON key is `reason`)."""
    return server.ApiError(429, "TooManyRequests", EVICTION_VIOLATES_MSG,
                           details=server._details(
                               causes=[{"reason": DISRUPTION_BUDGET_CAUSE, "message": cause}],
                               retry_after_s=retry_after_s))


def create_too_many_requests_error(name: str) -> "server.ApiError":
    """createTooManyRequestsError: the budget is still being processed (retry in 10 s)."""
    return too_many_requests_for(
        f"The disruption budget {name} is still being processed by the server.",
        STILL_PROCESSING_RETRY_S)


def check_and_decrement(api: "server.FakeApiServer", pod_name: str, pdb: dict, *,
                        dry_run: bool) -> None:
    """EvictionREST.checkAndDecrement: refuse (429, 403) or take one disruption."""
    name = pdb["metadata"]["name"]
    status = pdb.get("status") or {}
    if status.get("observedGeneration", 0) < pdb["metadata"].get("generation", 1):
        raise create_too_many_requests_error(name)
    allowed = int(status.get("disruptionsAllowed") or 0)
    if allowed < 0:
        raise server.ApiError(403, "Forbidden", f'poddisruptionbudget.policy "{name}" is '
                              "forbidden: pdb disruptions allowed is negative",
                              details=server._details(name=name, group="policy",
                                                      kind="poddisruptionbudget"))
    if len(status.get("disruptedPods") or {}) > MAX_DISRUPTED_POD_SIZE:
        raise server.ApiError(403, "Forbidden", f'poddisruptionbudget.policy "{name}" is '
                              "forbidden: DisruptedPods map too big - too many evictions not "
                              "confirmed by PDB controller",
                              details=server._details(name=name, group="policy",
                                                      kind="poddisruptionbudget"))
    if allowed == 0:
        raise too_many_requests_for(
            f"The disruption budget {name} needs {status.get('desiredHealthy', 0)} healthy pods "
            f"and has {status.get('currentHealthy', 0)} currently", 0)
    if dry_run:
        return
    status = server._clone(status)
    status["disruptionsAllowed"] = allowed - 1
    if status["disruptionsAllowed"] == 0:
        update_disruption_allowed_condition(status, _now())
    status["disruptedPods"] = {**(status.get("disruptedPods") or {}),
                               pod_name: _rfc3339(_now())}
    updated = server._clone(pdb)
    updated["status"] = status
    key = (pdb["metadata"].get("namespace", ""), name)
    api._commit(server.PDBS, key, "MODIFIED", updated)


def _with_resource_version(options: dict, resource_version: str) -> dict:
    """setPreconditionsResourceVersion."""
    return {**options, "preconditions": {**(options.get("preconditions") or {}),
                                         "resourceVersion": resource_version}}


def _resource_version_unset(options: dict) -> bool:
    return not (options.get("preconditions") or {}).get("resourceVersion")


def _delete(api: "server.FakeApiServer", key: tuple[str, str], options: dict,
            dry_run: bool) -> None:
    """r.store.Delete: the preconditions (409), then the pod strategy's deletion."""
    pod = api._objects[server.PODS].get(key)
    if pod is None:
        raise server.not_found("pods", key[1])
    server._check_delete_preconditions(options, pod, "Pod")
    pod_api.delete_pod_locked(api, key, options, dry_run=dry_run)


SUCCESS = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
           "code": 201}


def create_eviction_locked(api: "server.FakeApiServer", namespace: str, name: str,
                           eviction: Any, query: dict) -> tuple[int, dict]:
    """EvictionREST.Create: (HTTP code, answer)."""
    if not isinstance(eviction, dict) or eviction.get("kind") != "Eviction" or \
            eviction.get("apiVersion") not in EVICTION_GROUP_VERSIONS:
        kind = eviction.get("kind") if isinstance(eviction, dict) else type(eviction).__name__
        raise server.bad_request(f"not a Eviction object: {kind}")
    meta = eviction.get("metadata") if isinstance(eviction.get("metadata"), dict) else {}
    if meta.get("namespace") and meta["namespace"] != namespace:
        raise server.bad_request("the namespace of the provided object does not match the "
                                 "namespace sent on the request")  # handlers/create.go
    if meta.get("name") != name:
        raise server.bad_request("name in URL does not match name in Eviction object")
    options = eviction.get("deleteOptions") if isinstance(eviction.get("deleteOptions"),
                                                          dict) else {}
    dry_run = bool(options.get("dryRun") or query.get("dryRun"))  # propagateDryRun
    key = (namespace, name)
    pod = api._objects[server.PODS].get(key)
    if pod is None:
        raise server.not_found("pods", name)
    if can_ignore_pdb(pod):
        delete_options = options
        if should_enforce_resource_version(pod) and _resource_version_unset(options):
            delete_options = _with_resource_version(options, pod["metadata"]["resourceVersion"])
        _delete(api, key, delete_options, dry_run)
        return 201, dict(SUCCESS)
    pdbs = get_pod_disruption_budgets(api, pod)
    if len(pdbs) > 1:
        # A Status returned, not an error: code 500, no reason.
        return 500, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                     "status": "Failure", "message": MULTIPLE_PDBS_MSG, "code": 500}
    update_deletion_options = False
    if pdbs:
        pdb = pdbs[0]
        status = pdb.get("status") or {}
        if not is_pod_ready(pod) and status.get("currentHealthy", 0) >= \
                status.get("desiredHealthy", 0) and status.get("desiredHealthy", 0) > 0:
            update_deletion_options = True  # not ready: it does not count, take nothing
        else:
            check_and_decrement(api, name, pdb, dry_run=dry_run)
    delete_options = options
    if update_deletion_options:
        delete_options = _with_resource_version(options, pod["metadata"]["resourceVersion"])
    try:
        _delete(api, key, delete_options, dry_run)
    except server.ApiError as exc:
        if exc.code == 409 and update_deletion_options and _resource_version_unset(options):
            raise create_too_many_requests_error(pdbs[0]["metadata"]["name"]) from None
        raise
    return 201, dict(SUCCESS)


__all__ = ["DisruptionState", "changed_locked", "create_eviction_locked", "try_sync"]
