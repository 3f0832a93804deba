"""A CRD deletion must not undo the fleet: the templates a pass may act on while the
HostNetworkTemplate CRD is being deleted, or is gone, are the ones from before.

Why: deleting the CRD deletes every template at once (the API server's crdFinalizer,
apiextensions-apiserver pkg/controller/finalizer/crd_finalizer.go, deletes all instances before
the CRD goes), and each agent's watch sees N ordinary DELETEs. Taken at face value, every agent
would undo every template in the same second: the whole fleet, no rollout limit, most likely by
someone uninstalling who meant to keep the configuration (README "Upgrade and uninstall").

So when templates vanish, before a pass acts on it, the agent reads the CRD once:
- terminating (deletionTimestamp set) or gone (404): HOLD. The templates as they were stay the
  desired state: nothing is undone, drift is still repaired. Checked again at most every
  `recheck_s`; the hold ends when the CRD exists and is not terminating (it was reinstalled),
  and that pass acts on the templates that exist then;
- there and not terminating: a user deleted those templates; acted on at once, as always;
- unreadable (a network error, a 5xx): hold as for a deletion (asked again after
  `recheck_s`): an unanswered question must not undo anything;
- 403 (a ClusterRole from before this check): acted on as before, with an error logged once.

A finalizer on templates was the alternative and is worse: the crdFinalizer's DeleteCollection
would then wait for every agent to remove it, i.e. to undo everything first (ungated), or block
`kubectl delete crd` for as long as agents run.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

log = logging.getLogger(__name__)

DEFAULT_RECHECK_S = 30.0
"""While holding, the CRD is read at most this often (one GET per agent: 1,000 agents about
33 requests/s at worst, only while a CRD deletion is in progress)."""

PRESENT, DELETING, GONE, UNKNOWN, FORBIDDEN = "present", "deleting", "gone", "unknown", "forbidden"


def crd_state(read: Callable[[], Optional[dict]]) -> str:
    """PRESENT, DELETING (deletionTimestamp set), GONE (`read` returned None: 404), FORBIDDEN
    (a 403) or UNKNOWN (any other error)."""
    try:
        crd = read()
    except Exception as exc:  # noqa: BLE001 - a failed read is a state, never a crash
        if getattr(exc, "status", None) == 403:
            return FORBIDDEN
        log.warning("could not read the HostNetworkTemplate CRD: %s", exc)
        return UNKNOWN
    if crd is None:
        return GONE
    return DELETING if (crd.get("metadata") or {}).get("deletionTimestamp") else PRESENT


class CrdDeletionGuard:
    """`view(objects)` -> the template objects a pass may act on (see the module docstring).
    Called from the reconciler's thread only (StoreSource.templates)."""

    def __init__(self, *, read_crd: Callable[[], Optional[dict]], monotonic: Callable[[], float],
                 crd_name: str, recheck_s: float = DEFAULT_RECHECK_S) -> None:
        self._read = read_crd
        self._monotonic = monotonic
        self._crd_name = crd_name
        self._recheck_s = recheck_s
        self._last: dict = {}  # what the last pass acted on
        self._held: Optional[dict] = None  # while holding: the templates kept
        self._checked_at = float("-inf")
        self._warned_forbidden = False

    @property
    def holding(self) -> bool:
        return self._held is not None

    def view(self, objects: dict) -> dict:
        if self._held is not None:
            if self._monotonic() - self._checked_at < self._recheck_s:
                return self._held
            state = self._check()
            if state not in (PRESENT, FORBIDDEN):
                return self._held
            log.warning("the CRD %s is back: acting on the %d template(s) that exist now "
                        "(templates of before the deletion that were not re-created are "
                        "undone)", self._crd_name, len(objects))
            self._held = None
        elif set(self._last) - set(objects):
            state = self._check()
            if state in (DELETING, GONE, UNKNOWN):
                self._held = self._last
                log.warning(
                    "%d template(s) vanished while the CRD %s is %s: keeping the host as it is "
                    "(nothing is undone) until the CRD is back; to remove the configuration, "
                    "delete the templates before the CRD (README \"Upgrade and uninstall\")",
                    len(set(self._last) - set(objects)), self._crd_name,
                    "unreadable" if state == UNKNOWN else state)
                return self._held
            if state == FORBIDDEN and not self._warned_forbidden:
                self._warned_forbidden = True
                log.error("cannot read the CRD %s (403: the ClusterRole lacks get on "
                          "customresourcedefinitions): deleted templates are undone at once, "
                          "also when the CRD itself is being deleted", self._crd_name)
        self._last = dict(objects)
        return objects

    def _check(self) -> str:
        self._checked_at = self._monotonic()
        return crd_state(self._read)
