"""Where claims live: AddressClaim objects in the cluster (`KubeClaims`), or a file on the
node in local mode (`FileClaims`, no fleet to share a pool with).

A claim is one object per address, named after the address: creating it is the lock
(docs/address-pools.md). Both stores answer in plain `Claim`s. `ClaimWatch` is what an agent
reads of the cluster's claims: each pool's, by its label, and this node's own; never all of them.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Optional

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


STOP_CHECK_S = 1.0
"""How often the claim watch's loop looks at its stop event between pool changes."""


def pool_selector(pool_id: str) -> str:
    """The claims of one pool: equality on the pool label (labels.Parse's `key=value`)."""
    return f"{POOL_LABEL}={pool_id}"


def node_selector(node: str) -> str:
    """This node's claims, of any pool, including pools that are gone (to release them)."""
    return f"{NODE_LABEL}={label_value(node)}"


class ClaimWatch:
    """The AddressClaims an agent reads: one watch per pool of the cluster's templates, selected
    by the pool label, and one of this node's own claims, selected by the node label.

    Why not one watch of every claim: a pool reads its pool, not the fleet (issue 19). Why
    every template's pools and not only this node's: any agent may become the status writer,
    which counts every pool's claims (`status.pools[].allocated`) and must have them at once.
    Why the node's own watch: a claim of a pool that is gone (its template deleted or its CIDR
    edited) is in no pool's watch, and only its owner releases it. No watch at all until a
    template uses a pool (no idle requests). `make_reflector(name, selector)` builds a
    reflector over the claims a label selector matches."""

    def __init__(self, *, node: str, pool_ids: Callable[[], Iterable[str]],
                 make_reflector: Callable[[str, str], object]) -> None:
        self.node = node
        self._pool_ids, self._make = pool_ids, make_reflector
        self._lock = threading.Lock()
        self._own = None  # the node's reflector, once a template uses a pool
        self._pools: dict[str, tuple[object, threading.Event]] = {}  # pool id -> (reflector, stop)
        self._changed = threading.Event()
        self._changed.set()

    def pools_changed(self) -> None:
        """A template changed: recompute the pools soon (called from the template watch)."""
        self._changed.set()

    def store(self) -> dict:
        """Every claim read: the pools' and the node's own (key: name)."""
        with self._lock:
            reflectors = [r for r, _ in self._pools.values()]
            own = self._own
        merged: dict = {}
        for reflector in reflectors:
            merged.update(reflector.store())
        if own is not None:
            merged.update(own.store())  # the node's own watch is the one to trust for its own
        return merged

    def pool_synced(self, pool_id: str) -> bool:
        """The node's own claims and this pool's are listed: an allocation may choose."""
        with self._lock:
            own, entry = self._own, self._pools.get(pool_id)
        return own is not None and own.has_synced() and entry is not None \
            and entry[0].has_synced()

    def has_synced(self) -> bool:
        """Every pool of the templates has its claims listed, and the node's own are (True
        when no template uses a pool). Until then a pass would not know this node's own claim
        and undo its pool address as a cleanup, and the status writer would count short."""
        return all(self.pool_synced(pool_id) for pool_id in self._pool_ids())

    def run(self, stop: threading.Event) -> None:
        """Keep one watch per current pool (and the node's) until `stop`."""
        try:
            while not stop.is_set():
                if self._changed.wait(STOP_CHECK_S):
                    self._changed.clear()
                    self._follow(set(self._pool_ids()), stop)
        finally:
            with self._lock:
                pools, self._pools = self._pools, {}
            for _, pool_stop in pools.values():
                pool_stop.set()

    def _follow(self, wanted: set[str], stop: threading.Event) -> None:
        with self._lock:
            start_own = self._own is None and bool(wanted)
            if start_own:
                self._own = self._make(f"claims-{self.node}", node_selector(self.node))
            gone = [self._pools.pop(pid) for pid in set(self._pools) - wanted]
            new = {pid: (self._make(f"claims-{pid}", pool_selector(pid)), threading.Event())
                   for pid in sorted(wanted - set(self._pools))}
            self._pools.update(new)
        for _, pool_stop in gone:
            pool_stop.set()  # the reflector closes its stream within a watchdog tick
        if start_own:
            self._spawn(self._own, stop)
        for reflector, pool_stop in new.values():
            self._spawn(reflector, pool_stop)  # set when the pool is gone or the agent stops

    @staticmethod
    def _spawn(reflector, stop: threading.Event) -> None:
        threading.Thread(target=reflector.run, args=(stop,), name=reflector.name,
                         daemon=True).start()


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
