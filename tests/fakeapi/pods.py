"""core/v1 Pods in the fake API server: what the pod strategy does on create and delete, and the
kubelet's part of a graceful deletion (README.md beside this file, "Pods, PodDisruptionBudgets
and eviction").

- create (pkg/registry/core/pod/strategy.go podStrategy.PrepareForCreate): the status a client
  sends is dropped, the pod starts `Pending`; pkg/apis/core/v1/defaults.go SetDefaults_PodSpec
  gives `terminationGracePeriodSeconds` 30 when unset (the other defaults are not modelled).
  An administrator's `put_object` keeps the status (a running, Ready pod for a test);
- delete (staging/src/k8s.io/apiserver/pkg/registry/rest/delete.go BeforeDelete with
  podStrategy.CheckGracefulDelete): the grace period is DeleteOptions.gracePeriodSeconds, else
  the pod's terminationGracePeriodSeconds; 0 for a pod not bound to a node or already terminal.
  With a grace period the pod stays, with `deletionTimestamp` (now + period) and
  `deletionGracePeriodSeconds`; a second delete only shortens it. The pod store sets
  ReturnDeletedObject, so the answer is the pod (200), never a Status;
- the kubelet (pkg/kubelet/status/status_manager.go syncPod: a DELETE with grace 0 once the
  containers stopped) is `FakeApiServer.finish_pod_terminations()`, or happens at once when
  `kubelet_stops_pods_at_once` is set: the watch sees MODIFIED (terminating), then DELETED.
"""
from __future__ import annotations

import datetime
from typing import Any, Optional

import tests.fakeapi.server as server

# pkg/apis/core/v1/defaults.go SetDefaults_PodSpec: v1.DefaultTerminationGracePeriodSeconds.
DEFAULT_TERMINATION_GRACE_PERIOD_S = 30
TERMINAL_PHASES = ("Succeeded", "Failed")


def _rfc3339(at: datetime.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def prepare_for_create(obj: dict) -> None:
    """podStrategy.PrepareForCreate (status reset to Pending) and SetDefaults_PodSpec's grace."""
    obj["status"] = {"phase": "Pending"}
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = obj["spec"] = {}
    if spec.get("terminationGracePeriodSeconds") is None:
        spec["terminationGracePeriodSeconds"] = DEFAULT_TERMINATION_GRACE_PERIOD_S


def grace_period_s(pod: dict, options: dict) -> int:
    """podStrategy.CheckGracefulDelete: the period a delete of `pod` gets."""
    requested = options.get("gracePeriodSeconds")
    spec = pod.get("spec") or {}
    if requested is not None:
        period = int(requested)
    else:
        period = int(spec.get("terminationGracePeriodSeconds") or 0)
    if not spec.get("nodeName"):
        period = 0  # never scheduled: nothing runs it
    if (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
        period = 0  # already terminated
    if period < 0:
        period = 1
    return period


def terminating(pod: dict) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def delete_pod_locked(api: "server.FakeApiServer", key: tuple[str, str], options: dict,
                      *, dry_run: bool = False) -> dict:
    """store.go Delete of a pod after its preconditions held: graceful (rest.BeforeDelete) or
    at once; the pod as the answer (ReturnDeletedObject)."""
    pod = api._objects[server.PODS][key]
    period = grace_period_s(pod, options)
    meta = pod["metadata"]
    if dry_run:
        return server._clone(pod)
    if period > 0:
        now = datetime.datetime.now(datetime.timezone.utc)
        current = meta.get("deletionGracePeriodSeconds")
        if terminating(pod) and current is not None and period >= int(current):
            return server._clone(pod)  # BeforeDelete: a graceful deletion already pending
        updated = server._clone(pod)
        updated["metadata"]["deletionTimestamp"] = _rfc3339(
            now + datetime.timedelta(seconds=period))
        updated["metadata"]["deletionGracePeriodSeconds"] = period
        answer = server._clone(api._commit(server.PODS, key, "MODIFIED", updated))
        if api.kubelet_stops_pods_at_once:
            api._delete_with_dependents_locked(server.PODS, key)
        return answer
    return api._delete_with_dependents_locked(server.PODS, key)


def finish_terminations_locked(api: "server.FakeApiServer",
                               namespace: Optional[str] = None) -> int:
    """The kubelet's final DELETE (grace 0) of every terminating pod (in `namespace`)."""
    keys = [key for key, pod in sorted(api._objects[server.PODS].items())
            if terminating(pod) and namespace in (None, key[0])]
    for key in keys:
        api._delete_with_dependents_locked(server.PODS, key)
    return len(keys)


def field_value(pod: dict, label: str) -> Optional[Any]:
    """The value of a pod field label (pkg/registry/core/pod/strategy.go ToSelectableFields:
    spec.hostNetwork as "true"/"false"), None for the generic lookup."""
    if label == "spec.hostNetwork":
        return "true" if (pod.get("spec") or {}).get("hostNetwork") is True else "false"
    return None


# pkg/apis/core/v1/conversion.go AddFieldLabelConversionsForPod: the labels pods select by.
POD_FIELD_LABELS = frozenset({
    "metadata.name", "metadata.namespace", "spec.nodeName", "spec.restartPolicy",
    "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork", "status.phase",
    "status.podIP", "status.nominatedNodeName"})
