"""Where claims live: AddressClaim objects in the cluster (`KubeClaims`), or a file on the
node in local mode (`FileClaims`, no fleet to share a pool with).

A claim is one object per address, named after the address: creating it is the lock
(docs/address-pools.md). Both stores answer in plain `Claim`s.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from plumber_agent.kube.reflector import error_status
from plumber_agent.statefile import load_json, save_json

log = logging.getLogger(__name__)

POOL_LABEL = "plumber.k8s.pf9.io/pool"
NODE_LABEL = "plumber.k8s.pf9.io/node"
MAX_LABEL_VALUE = 63


@dataclass(frozen=True)
class Claim:
    name: str
    address: str
    prefix_length: int
    node: str
    node_uid: str
    template: str
    interface: str
    pool: str  # the pool's CIDR, for people
    pool_id: str
    resource_version: str = ""


class ClaimTaken(Exception):
    """Someone else holds this address."""


def label_value(text: str) -> str:
    """A label value (<= 63 characters): the text, or a hash of it when longer."""
    if len(text) <= MAX_LABEL_VALUE:
        return text
    import hashlib
    return "h-" + hashlib.sha256(text.encode()).hexdigest()[:40]


def same_owner(a: Claim, b: Claim) -> bool:
    """The same node (name and uid) for the same pool and interface: a claim found after a 409
    that is this one (its create's answer lost), not merely another claim of this node."""
    return (a.node, a.node_uid, a.pool_id, a.interface) == (b.node, b.node_uid, b.pool_id,
                                                            b.interface)


def claim_from_object(obj: dict) -> Optional[Claim]:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    try:
        return Claim(name=str(meta["name"]), address=str(spec["address"]),
                     prefix_length=int(spec["prefixLength"]), node=str(spec["node"]),
                     node_uid=str(spec.get("nodeUID") or ""), template=str(spec.get("template") or ""),
                     interface=str(spec.get("interface") or ""), pool=str(spec.get("pool") or ""),
                     pool_id=str((meta.get("labels") or {}).get(POOL_LABEL) or ""),
                     resource_version=str(meta.get("resourceVersion") or ""))
    except (KeyError, TypeError, ValueError):
        return None


def claim_object(claim: Claim) -> dict:
    return {"metadata": {"name": claim.name,
                         "labels": {POOL_LABEL: claim.pool_id, NODE_LABEL: label_value(claim.node)},
                         **({"ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                  "name": claim.node, "uid": claim.node_uid}]}
                            if claim.node_uid else {})},
            "spec": {"address": claim.address, "prefixLength": claim.prefix_length,
                     "node": claim.node, "nodeUID": claim.node_uid, "template": claim.template,
                     "interface": claim.interface, "pool": claim.pool}}


class KubeClaims:
    """AddressClaims through the API: reads from a watch (the reflector's store), overlaid with
    this agent's own writes until the watch shows them."""

    def __init__(self, client, store: Callable[[], dict]) -> None:
        self.client, self._store = client, store
        self._lock = threading.Lock()
        self._created: dict[str, Claim] = {}
        self._deleted: set[tuple[str, str]] = set()

    def list(self) -> list[Claim]:
        claims = {}
        for obj in self._store().values():
            claim = claim_from_object(obj)
            if claim is not None:
                claims[claim.name] = claim
        with self._lock:
            for name, claim in self._created.items():
                claims.setdefault(name, claim)
            return [c for c in claims.values() if (c.name, c.resource_version) not in self._deleted]

    def create(self, claim: Claim) -> Claim:
        """The created claim; ClaimTaken when the address is someone else's. A 409 for a claim
        that is ours (a create whose answer was lost: API server restarted) is ours."""
        try:
            created = claim_from_object(self.client.create_address_claim(claim_object(claim)))
        except Exception as exc:  # noqa: BLE001 - 409 decides; others propagate
            if error_status(exc) != 409:
                raise
            existing = claim_from_object(self.client.get_address_claim(claim.name) or {})
            if existing is None or not same_owner(existing, claim):
                raise ClaimTaken(f"{claim.address} is claimed by "
                                 f"{existing.node if existing else 'someone'}") from None
            created = existing
        with self._lock:
            self._created[created.name] = created
        return created

    def delete(self, claim: Claim) -> None:
        self.client.delete_address_claim(claim.name, resource_version=claim.resource_version or None)
        with self._lock:
            self._created.pop(claim.name, None)
            self._deleted.add((claim.name, claim.resource_version))

    def forget_seen(self) -> None:
        """Drop the overlay once the watch has caught up (called each pass)."""
        names = {(o.get("metadata") or {}).get("name") for o in self._store().values()}
        with self._lock:
            for name in [n for n in self._created if n in names]:
                del self._created[name]


class FileClaims:
    """Local mode: the claims of this one node, in `<state-dir>/address-claims.json`."""

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self._claims: dict[str, Claim] = {}
        for raw in load_json(path, []):
            try:
                self._claims[raw["name"]] = Claim(**raw)
            except (KeyError, TypeError) as exc:
                log.warning("ignoring a malformed claim in %s: %s", path, exc)

    def list(self) -> list[Claim]:
        return list(self._claims.values())

    def create(self, claim: Claim) -> Claim:
        held = self._claims.get(claim.name)
        if held is not None:
            if not same_owner(held, claim):
                raise ClaimTaken(f"{claim.address} is claimed")
            return held
        self._claims[claim.name] = claim
        self._save()
        return claim

    def delete(self, claim: Claim) -> None:
        if self._claims.pop(claim.name, None) is not None:
            self._save()

    def forget_seen(self) -> None:
        pass

    def _save(self) -> None:
        save_json(self.path, [asdict(c) for c in self._claims.values()])
