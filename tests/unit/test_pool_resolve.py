"""PoolResolver (docs/address-pools.md, "Allocation"): per pass, each pool of a template this
node applies becomes one address in the spec, claimed before the host changes; a node's own
claim is kept; claimed, avoided, excluded and the templates' own addresses (static ones,
gateways) are never chosen; no other host is read; an exhausted or conflicting pool leaves its
interface family out. Also the `pools` part of a template's status.

The claims store here is in memory but answers as KubeClaims does: one claim per address name,
a create of a name someone else holds is ClaimTaken, a create of a name that is already this
node's (a create whose answer was lost) returns that claim."""
from __future__ import annotations

import zlib
from typing import Optional

import pytest

from plumber_agent.fleet.aggregate import aggregate
from plumber_agent.models.observed import ObservedHost, ObservedLink
from plumber_agent.models.parse import template_from_object
from plumber_agent.models.spec import Template
from plumber_agent.pools.claims import Claim, ClaimTaken
from plumber_agent.models.pool import pool_id
from plumber_agent.pools.pool import claim_name
from plumber_agent.pools.resolve import MAX_TRIES, PoolResolver

NODE = "node-a"
NODE_UID = "uid-node-a"
LABELS = {"role": "storage"}
CIDR = "192.168.50.0/24"
RANGE = [f"192.168.50.{n}" for n in range(10, 15)]  # rangeStart .10 .. rangeEnd .14: 5 addresses
OLDER, NEWER = "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"


class MemoryClaims:
    """Claims by name, answering like KubeClaims over an API server. `raced`: addresses another
    node claims just before this node's create reaches the server (the create then loses);
    `unlisted`: names that exist but list() does not show yet (the watch lags a lost answer)."""

    def __init__(self, claims: tuple[Claim, ...] = ()) -> None:
        self.objects: dict[str, Claim] = {}
        self.version = 0
        self.created: list[str] = []  # addresses whose create reached the store
        self.deleted: list[str] = []
        self.raced: set[str] = set()
        self.unlisted: set[str] = set()
        self.forgotten = 0
        for claim in claims:
            self._store(claim)

    def _store(self, claim: Claim) -> Claim:
        self.version += 1
        stored = Claim(**{**claim.__dict__, "resource_version": str(self.version)})
        self.objects[stored.name] = stored
        return stored

    def list(self) -> list[Claim]:
        return [c for name, c in self.objects.items() if name not in self.unlisted]

    def create(self, claim: Claim) -> Claim:
        self.created.append(claim.address)
        if claim.address in self.raced:
            self._store(other_claim(claim.address, node="node-racer"))
        existing = self.objects.get(claim.name)
        if existing is not None:
            if (existing.node, existing.node_uid) != (claim.node, claim.node_uid):
                raise ClaimTaken(f"{claim.address} is claimed by {existing.node}")
            return existing
        return self._store(claim)

    def delete(self, claim: Claim) -> None:
        current = self.objects.get(claim.name)
        if current is not None and claim.resource_version \
                and current.resource_version != claim.resource_version:
            raise RuntimeError("409: the ResourceVersion in the precondition does not match")
        self.objects.pop(claim.name, None)
        self.deleted.append(claim.address)

    def forget_seen(self) -> None:
        self.forgotten += 1

    def addresses_of(self, node: str) -> list[str]:
        return sorted(c.address for c in self.objects.values() if c.node == node)


def other_claim(address: str, *, node: str = "node-b", node_uid: Optional[str] = None,
                pool: str = "0123456789abcdef", template: str = "other") -> Claim:
    return Claim(name=claim_name(address), address=address, prefix_length=24, node=node,
                 node_uid=node_uid if node_uid is not None else f"uid-{node}",
                 template=template, interface="eno2", pool=CIDR, pool_id=pool)


def template(name: str = "storage", *, uid: str = "uid-storage", created: str = OLDER,
             selector: Optional[dict] = None, interfaces: Optional[list] = None,
             start: str = RANGE[0], end: str = RANGE[-1], exclude: tuple = (),
             static: tuple = (), routes: Optional[list] = None) -> Template:
    if interfaces is None:
        pool = {"cidr": CIDR, "rangeStart": start, "rangeEnd": end}
        if exclude:
            pool["exclude"] = list(exclude)
        ipv4 = {"pool": pool, **({"address": list(static)} if static else {})}
        interfaces = [{"name": "eno2", "ipv4": ipv4}]
    made = template_from_object({
        "metadata": {"name": name, "uid": uid, "creationTimestamp": created, "generation": 1},
        "spec": {"nodeSelector": LABELS if selector is None else selector,
                 "interfaceConfig": interfaces, **({"routes": {"ipv4": routes}} if routes else {})}})
    assert made.problems == [] and made.spec is not None, made.problems
    return made


def resolver(claims: MemoryClaims, *, node: str = NODE, node_uid: str = NODE_UID,
             ready: bool = True, unready: frozenset = frozenset()) -> PoolResolver:
    """`ready=False`: no pool's claims are listed yet; `unready`: these pools' are not."""
    return PoolResolver(claims=claims, node=node, node_uid=lambda: node_uid,
                        ready=lambda pool_id: ready and pool_id not in unready)


def user_of(addresses: tuple = (), gateways: tuple = ()) -> Template:
    """A template selecting other nodes that puts `addresses` on eno3 (static) and routes
    through `gateways`: both in use on some host by the spec's own word."""
    return template("elsewhere", uid="uid-elsewhere", selector={"role": "compute"}, interfaces=[
        {"name": "eno3", "ipv4": {"address": [f"{a}/24" for a in addresses]}}], routes=[
        {"dst": f"10.{60 + i}.0.0/16", "gw": gw} for i, gw in enumerate(gateways)])


def ipv4_of(result, name: str = "storage", interface: str = "eno2"):
    tmpl = next(t for t in result.templates if t.name == name)
    iface = next(i for i in tmpl.spec.interface_config if i.name == interface)
    return iface.ipv4


def first_try(node: str = NODE, usable: list[str] = RANGE) -> int:
    """Where `node` starts in `usable`, computed here from the design's rule (crc32 of the
    node name modulo the pool size), not with the code under test."""
    return zlib.crc32(node.encode()) % len(usable)


def host(**addresses: list[str]) -> ObservedHost:
    """An observed host whose links hold these IPv4 CIDRs: host(eno2=["192.168.50.11/24"])."""
    return ObservedHost(links={name: ObservedLink(ifname=name, index=i + 2, ipv4=list(cidrs))
                               for i, (name, cidrs) in enumerate(addresses.items())})


# ----------------------------------------------------------------------------------------------
# Choosing and keeping an address


def test_first_free_address_from_the_node_offset_is_claimed_before_use():
    claims = MemoryClaims()
    tmpl = template()
    result = resolver(claims).resolve([tmpl], LABELS, claim=True)
    expected = RANGE[first_try()]
    assert ipv4_of(result).address == [f"{expected}/24"]
    assert ipv4_of(result).pool is None  # the rest of the agent sees a plain address list
    (claim,) = claims.objects.values()
    assert (claim.name, claim.address, claim.prefix_length, claim.node, claim.node_uid,
            claim.template, claim.interface, claim.pool) == (
        f"ipv4-{expected}", expected, 24, NODE, NODE_UID, "storage", "eno2", CIDR)
    assert claim.pool_id == pool_id("uid-storage", "eno2", "ipv4", CIDR)
    assert result.held == [claim]
    assert result.failures == {} and result.conflicts == {} and result.exhausted == set()


def test_offset_skips_claimed_addresses_and_wraps_around():
    """Nodes starting together try different addresses; a claimed one is passed over, and the
    search wraps from the range's end to its start."""
    start = first_try()
    blocked = [RANGE[(start + i) % len(RANGE)] for i in range(len(RANGE) - 1)]
    claims = MemoryClaims(tuple(other_claim(a) for a in blocked))
    result = resolver(claims).resolve([template()], LABELS, claim=True)
    (free,) = set(RANGE) - set(blocked)
    assert ipv4_of(result).address == [f"{free}/24"]
    assert claims.created == [free]


def test_own_claim_is_kept_across_passes():
    claims = MemoryClaims()
    tmpl = template()
    first = resolver(claims).resolve([tmpl], LABELS, claim=True)
    again = resolver(claims).resolve([tmpl], LABELS, claim=True)
    assert ipv4_of(again).address == ipv4_of(first).address
    assert len(claims.created) == 1  # no second create
    assert [c.name for c in again.held] == [c.name for c in first.held]


def test_own_claim_away_from_the_offset_is_kept_not_re_chosen():
    """An existing claim (e.g. from before an agent restart) wins over the offset's choice."""
    mine = RANGE[(first_try() + 2) % len(RANGE)]
    claims = MemoryClaims((other_claim(mine, node=NODE, node_uid=NODE_UID,
                                       pool=pool_id("uid-storage", "eno2", "ipv4", CIDR),
                                       template="storage"),))
    result = resolver(claims).resolve([template()], LABELS, claim=True)
    assert ipv4_of(result).address == [f"{mine}/24"]
    assert claims.created == []
    assert [c.address for c in result.held] == [mine]


def test_range_edit_keeping_the_address_inside_keeps_it():
    claims = MemoryClaims()
    first = resolver(claims).resolve([template()], LABELS, claim=True)
    address = first.held[0].address
    last = int(address.rsplit(".", 1)[1])
    edited = template(start=f"192.168.50.{last}", end="192.168.50.250")
    result = resolver(claims).resolve([edited], LABELS, claim=True)
    assert ipv4_of(result).address == [f"{address}/24"]
    assert claims.created == [address]


@pytest.mark.parametrize("edit", [
    {"start": "192.168.50.100", "end": "192.168.50.104"},      # the range moved away
    {"exclude": ("OWN",)},                                     # the address is now excluded
])
def test_address_leaving_the_pool_gets_a_new_claim_and_the_old_is_released_once_off_host(edit):
    claims = MemoryClaims()
    old = resolver(claims).resolve([template()], LABELS, claim=True).held[0].address
    if "exclude" in edit:
        edit = {"exclude": (old,)}
    edited = template(**edit)
    agent = resolver(claims)
    result = agent.resolve([edited], LABELS, claim=True)
    (new,) = [c.address for c in result.held]
    assert new != old and new not in edit.get("exclude", ())
    assert int(edited.spec.interface_config[0].ipv4.pool.range_start.rsplit(".", 1)[1]) \
        <= int(new.rsplit(".", 1)[1]) \
        <= int(edited.spec.interface_config[0].ipv4.pool.range_end.rsplit(".", 1)[1])
    assert ipv4_of(result).address == [f"{new}/24"]
    assert claims.addresses_of(NODE) == sorted([old, new])

    # the old address is still on the host (its removal has not happened, or failed): kept
    agent.release_unused(result, host(eno2=[f"{old}/24", f"{new}/24"]))
    assert claims.deleted == []
    assert claims.addresses_of(NODE) == sorted([old, new])
    # gone from the host: released; the claim in use stays even though not yet on the host
    agent.release_unused(result, host(eno2=[], eno3=["10.0.0.5/8"]))
    assert claims.deleted == [old]
    assert claims.addresses_of(NODE) == [new]
    assert claims.forgotten == 2


def test_release_keeps_a_claim_whose_address_is_on_any_link_and_never_others_claims():
    claims = MemoryClaims((other_claim("192.168.50.50", node=NODE, node_uid=NODE_UID),
                           other_claim("192.168.50.51", node=NODE, node_uid="uid-old-node"),
                           other_claim("192.168.50.52", node="node-b")))
    agent = resolver(claims)
    result = agent.resolve([template()], LABELS, claim=True)
    agent.release_unused(result, host(eno9=["192.168.50.50/24"]))
    assert claims.deleted == []
    agent.release_unused(result, host())
    assert claims.deleted == ["192.168.50.50"]  # not the re-created node's, not node-b's
    assert {c.address for c in claims.list()} == {"192.168.50.51", "192.168.50.52",
                                                  result.held[0].address}


def test_claims_of_a_re_created_node_are_not_its_own():
    """Same node name, another Node uid: the old claim is not kept, and its address stays
    taken (the garbage collector, not this node, deletes it)."""
    pid = pool_id("uid-storage", "eno2", "ipv4", CIDR)
    offset_address = RANGE[first_try()]
    claims = MemoryClaims((other_claim(offset_address, node=NODE, node_uid="uid-old-node",
                                       pool=pid, template="storage"),))
    result = resolver(claims).resolve([template()], LABELS, claim=True)
    (held,) = result.held
    assert held.address != offset_address
    assert held.node_uid == NODE_UID
    assert ipv4_of(result).address == [f"{held.address}/24"]
    assert claims.objects[claim_name(offset_address)].node_uid == "uid-old-node"


def test_claimed_avoided_and_the_templates_own_addresses_are_never_chosen():
    """Every address but one is claimed (any pool), the API server's, a static address of
    another template (on other nodes) or a gateway another template routes through: only the
    last one can be chosen, whatever the node's offset. Nothing about other hosts is read."""
    free = RANGE[(first_try() + 3) % len(RANGE)]
    claimed, api_server, static, gateway = [a for a in RANGE if a != free]
    claims = MemoryClaims((other_claim(claimed, pool="another-pool"),))
    result = resolver(claims).resolve(
        [template(), user_of(addresses=(static,), gateways=(gateway,))], LABELS, claim=True,
        avoid=frozenset({api_server, "10.1.1.1"}))
    assert ipv4_of(result).address == [f"{free}/24"]
    assert claims.created == [free]


def test_exclude_keeps_addresses_used_outside_the_agent_out():
    """A router or a host the agent does not run on: the pool's `exclude` says so; the
    excluded addresses (two as addresses, two as /32 networks) are never tried, the free one is."""
    free = RANGE[(first_try() + 4) % len(RANGE)]
    others = [a for a in RANGE if a != free]
    claims = MemoryClaims()
    result = resolver(claims).resolve([template(exclude=(others[0], others[1]) + tuple(
        f"{a}/32" for a in others[2:]))], LABELS, claim=True)
    assert ipv4_of(result).address == [f"{free}/24"]
    assert claims.created == [free]


def test_lost_create_answer_is_recognised_as_own():
    """The claim exists (a create whose answer was lost) but the list does not show it yet:
    the create's 409 reads it back as this node's, and the address is used."""
    expected = RANGE[first_try()]
    pid = pool_id("uid-storage", "eno2", "ipv4", CIDR)
    claims = MemoryClaims((other_claim(expected, node=NODE, node_uid=NODE_UID, pool=pid,
                                       template="storage"),))
    claims.unlisted.add(claim_name(expected))
    result = resolver(claims).resolve([template()], LABELS, claim=True)
    assert ipv4_of(result).address == [f"{expected}/24"]
    assert [c.address for c in result.held] == [expected]
    assert result.failures == {}


# ----------------------------------------------------------------------------------------------
# Losing races, exhaustion


def test_claim_taken_tries_the_next_address():
    start = first_try()
    raced = RANGE[start]
    claims = MemoryClaims()
    claims.raced.add(raced)
    result = resolver(claims).resolve([template()], LABELS, claim=True)
    following = RANGE[(start + 1) % len(RANGE)]
    assert claims.created == [raced, following]
    assert ipv4_of(result).address == [f"{following}/24"]
    assert claims.objects[claim_name(raced)].node == "node-racer"
    assert result.failures == {}


def test_max_tries_bounds_a_pass_and_says_it_retries():
    claims = MemoryClaims()
    claims.raced.update(f"192.168.50.{n}" for n in range(1, 255))
    tmpl = template(start="192.168.50.1", end="192.168.50.254")
    result = resolver(claims).resolve([tmpl], LABELS, claim=True)
    assert len(claims.created) == MAX_TRIES
    assert len(set(claims.created)) == MAX_TRIES  # never the same address twice
    assert ipv4_of(result) is None
    (message,) = result.failures["storage"]
    assert "retrying" in message and f"{MAX_TRIES} addresses" in message
    assert result.exhausted == set() and result.held == []


def test_exhausted_pool_leaves_the_family_out_and_says_so():
    claims = MemoryClaims(tuple(other_claim(a) for a in RANGE))
    result = resolver(claims).resolve([template(static=("10.9.0.1/24",))], LABELS, claim=True)
    assert ipv4_of(result) is None  # left as it is on the host, static addresses included
    (message,) = result.failures["storage"]
    assert message.startswith("pool 192.168.50.0/24 (192.168.50.10-192.168.50.14)")
    assert "is exhausted" in message and "5" in message
    assert result.exhausted == {"storage"}
    assert claims.created == [] and result.held == []


def test_exhausted_by_avoided_addresses_alone():
    claims = MemoryClaims()
    result = resolver(claims).resolve(
        [template(), user_of(addresses=(RANGE[0],), gateways=(RANGE[1],))], LABELS, claim=True,
        avoid=frozenset(RANGE[2:]))
    assert ipv4_of(result) is None
    assert result.exhausted == {"storage"}
    assert claims.created == []


# ----------------------------------------------------------------------------------------------
# The rewritten spec


def test_static_addresses_and_the_pool_address_together():
    claims = MemoryClaims()
    result = resolver(claims).resolve([template(static=("10.9.0.1/24",))], LABELS, claim=True)
    (held,) = result.held
    assert ipv4_of(result).address == ["10.9.0.1/24", f"{held.address}/24"]


def test_ipv6_pool_address_has_the_cidr_prefix_and_claim_name():
    tmpl = template(interfaces=[{"name": "eno2", "ipv6": {
        "address": ["fd00:9::1/64"], "pool": {"cidr": "fd00:50::/112",
                                               "rangeStart": "fd00:50::a",
                                               "rangeEnd": "fd00:50::a"}}}])
    claims = MemoryClaims()
    result = resolver(claims).resolve([tmpl], LABELS, claim=True)
    iface = result.templates[0].spec.interface_config[0]
    assert iface.ipv6.address == ["fd00:9::1/64", "fd00:50::a/112"]
    (claim,) = claims.objects.values()
    assert (claim.name, claim.prefix_length) == ("ipv6-fd00-50-0-0-0-0-0-a", 112)


def test_preview_writes_nothing_and_shows_the_address_it_would_claim():
    claims = MemoryClaims()
    result = resolver(claims).resolve([template()], LABELS, claim=False)
    assert ipv4_of(result).address == [f"{RANGE[first_try()]}/24"]
    assert claims.created == [] and claims.objects == {}
    assert result.held == []


def test_preview_shows_the_own_claim():
    claims = MemoryClaims()
    agent = resolver(claims)
    held = agent.resolve([template()], LABELS, claim=True).held[0]
    preview = agent.resolve([template()], LABELS, claim=False)
    assert ipv4_of(preview).address == [f"{held.address}/24"]
    assert len(claims.created) == 1


def test_template_not_selecting_the_node_is_untouched():
    claims = MemoryClaims()
    other = template("elsewhere", uid="uid-elsewhere", selector={"role": "compute"})
    result = resolver(claims).resolve([other], LABELS, claim=True)
    assert result.templates == [other] and result.templates[0] is other
    assert claims.created == [] and result.failures == {} and result.held == []


def test_not_ready_waits_and_claims_nothing():
    claims = MemoryClaims()
    plain = template("plain", uid="uid-plain", interfaces=[
        {"name": "eno3", "ipv4": {"address": ["10.7.0.1/24"]}}])
    result = resolver(claims, ready=False).resolve([template(), plain], LABELS, claim=True)
    assert ipv4_of(result) is None
    (message,) = result.failures["storage"]
    assert "waiting for the list of address claims" in message
    assert "plain" not in result.failures
    assert ipv4_of(result, "plain", "eno3").address == ["10.7.0.1/24"]
    assert claims.created == [] and result.held == []


def test_a_pool_whose_claims_are_not_listed_waits_alone():
    """Readiness is per pool: a pool whose watch has not listed yet claims nothing while
    another pool of the same pass, whose claims are listed, gets its address."""
    claims = MemoryClaims()
    newer = template("second", uid="uid-second", created=NEWER, interfaces=[
        {"name": "eno4", "ipv4": {"pool": {"cidr": "192.168.60.0/24"}}}])
    waiting = pool_id("uid-second", "eno4", "ipv4", "192.168.60.0/24")
    result = resolver(claims, unready=frozenset({waiting})).resolve(
        [template(), newer], LABELS, claim=True)
    assert ipv4_of(result, "second", "eno4") is None
    assert "waiting for the list of address claims" in result.failures["second"][0]
    assert "storage" not in result.failures
    assert [c.address for c in result.held] == claims.created == [RANGE[first_try()]]


# ----------------------------------------------------------------------------------------------
# Two templates on one node


def _on(interface: str, start: str, end: str) -> list:
    return [{"name": interface, "ipv4": {"pool": {"cidr": CIDR, "rangeStart": start,
                                                  "rangeEnd": end}}}]


@pytest.mark.parametrize("older_name, newer_name, older_ts, newer_ts", [
    ("zeta", "alpha", OLDER, NEWER),       # by creationTimestamp
    ("alpha", "beta", OLDER, OLDER),       # same time: by name
])
def test_overlapping_pools_the_newer_template_conflicts(older_name, newer_name, older_ts,
                                                         newer_ts):
    older = template(older_name, uid="uid-old", created=older_ts,
                     interfaces=_on("eno2", "192.168.50.10", "192.168.50.20"))
    newer = template(newer_name, uid="uid-new", created=newer_ts,
                     interfaces=_on("eno3", "192.168.50.20", "192.168.50.30"))
    claims = MemoryClaims()
    result = resolver(claims).resolve([newer, older], LABELS, claim=True)
    assert [t.name for t in result.templates] == [newer_name, older_name]  # order kept
    assert set(result.conflicts) == {newer_name}
    message = result.conflicts[newer_name]
    assert f"template {older_name}" in message and "overlaps" in message
    assert "192.168.50.20-192.168.50.30" in message and "192.168.50.10-192.168.50.20" in message
    assert ipv4_of(result, newer_name, "eno3") is None
    (held,) = result.held
    assert held.template == older_name
    assert ipv4_of(result, older_name, "eno2").address == [f"{held.address}/24"]
    assert [c.template for c in claims.objects.values()] == [older_name]


def test_non_overlapping_pools_of_two_templates_both_resolve():
    first = template("first", uid="uid-1", created=OLDER,
                     interfaces=_on("eno2", "192.168.50.10", "192.168.50.19"))
    second = template("second", uid="uid-2", created=NEWER,
                      interfaces=_on("eno3", "192.168.50.20", "192.168.50.29"))
    claims = MemoryClaims()
    result = resolver(claims).resolve([first, second], LABELS, claim=True)
    assert result.conflicts == {} and result.failures == {}
    a = ipv4_of(result, "first", "eno2").address
    b = ipv4_of(result, "second", "eno3").address
    assert len(a) == 1 and len(b) == 1 and a != b
    assert sorted(c.template for c in claims.objects.values()) == ["first", "second"]


def test_a_conflicting_template_selecting_another_node_does_not_conflict():
    older = template("older", uid="uid-old", created=OLDER, selector={"role": "compute"},
                     interfaces=_on("eno2", "192.168.50.10", "192.168.50.20"))
    newer = template("newer", uid="uid-new", created=NEWER,
                     interfaces=_on("eno3", "192.168.50.10", "192.168.50.20"))
    result = resolver(MemoryClaims()).resolve([older, newer], LABELS, claim=True)
    assert result.conflicts == {}
    assert len(ipv4_of(result, "newer", "eno3").address) == 1
    assert result.templates[0] is older


def test_two_pools_of_one_template_on_one_range_get_distinct_addresses():
    tmpl = template(interfaces=_on("eno2", RANGE[0], RANGE[-1]) + _on("eno3", RANGE[0],
                                                                      RANGE[-1]))
    claims = MemoryClaims()
    result = resolver(claims).resolve([tmpl], LABELS, claim=True)
    eno2 = ipv4_of(result, "storage", "eno2")
    eno3 = ipv4_of(result, "storage", "eno3")
    addresses = [x.address[0] for x in (eno2, eno3) if x is not None]
    # either both got their own address, or one was refused: never one address twice
    assert len(set(addresses)) == len(addresses)
    assert len(claims.objects) == len(addresses)


# ----------------------------------------------------------------------------------------------
# status.pools


def test_aggregate_reports_each_pool_size_and_allocated():
    tmpl = template(interfaces=[
        {"name": "eno2", "ipv4": {"pool": {"cidr": CIDR, "rangeStart": RANGE[0],
                                           "rangeEnd": RANGE[-1],
                                           "exclude": ["192.168.50.12"]}}},
        {"name": "eno3", "ipv6": {"pool": {"cidr": "fd00:50::/125"}}}])
    four = pool_id("uid-storage", "eno2", "ipv4", CIDR)
    six = pool_id("uid-storage", "eno3", "ipv6", "fd00:50::/125")
    other = pool_id("uid-someone-else", "eno2", "ipv4", CIDR)  # same CIDR, another template
    result = aggregate(tmpl, nodes=[], hostnetworks={}, slots=[], previous=None,
                       now="2024-03-01T00:00:00Z", claimed={four: 3, other: 9})
    assert result.status["pools"] == [
        {"interface": "eno2", "family": "ipv4", "cidr": CIDR, "size": 4, "allocated": 3},
        {"interface": "eno3", "family": "ipv6", "cidr": "fd00:50::/125", "size": 7,
         "allocated": 0}]
    assert six not in {four, other}


def test_aggregate_without_pools_has_no_pools_key():
    plain = template("plain", interfaces=[{"name": "eno3", "ipv4": {"address": ["10.7.0.1/24"]}}])
    result = aggregate(plain, nodes=[], hostnetworks={}, slots=[], previous=None,
                       now="2024-03-01T00:00:00Z", claimed={"x": 1})
    assert "pools" not in result.status


class LostAnswerClaims(MemoryClaims):
    """The create is committed, then the connection drops before the answer (the API server
    restarted): the caller sees an error, the store has the claim."""

    def create(self, claim: Claim) -> Claim:
        self._store(claim)
        raise ConnectionError("Response ended prematurely")


def test_a_claim_whose_answer_was_lost_is_not_released_and_is_found_next_pass():
    claims = LostAnswerClaims()
    pools = resolver(claims)
    first = pools.resolve([template()], LABELS, claim=True)
    assert "cannot claim" in first.failures["storage"][0] and ipv4_of(first) is None
    [committed] = claims.objects.values()
    assert committed.name in first.uncertain
    pools.release_unused(first, host(eno2=[]))  # maybe ours: never released by this pass
    assert claims.deleted == [] and list(claims.objects) == [committed.name]
    second = pools.resolve([template()], LABELS, claim=True)  # the watch now shows it: ours
    assert ipv4_of(second).address == [f"{committed.address}/24"]
    assert [c.name for c in second.held] == [committed.name] and not second.failures
