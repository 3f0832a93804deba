"""Paging, the watch cache's resourceVersion=0 and Retry-After, in the fake API server and in the
agent's client, as upstream does them: etcd3 store GetList (limit/continue, remainingItemCount,
a page read at the first page's revision), storage.EncodeContinue/DecodeContinue,
cacher/delegator.go shouldDelegateList and cacher.go computeListLimit (rv=0 ignores limit),
etcd3/errors.go handleCompactedErrorForPaging, client-go tools/pager ListPager.List and the
reflector's relistResourceVersion; apierrors.NewTooManyRequests and
responsewriters.ErrorNegotiated for Retry-After. tests/fakeapi/README.md maps them."""
from __future__ import annotations

import threading

import pytest

from plumber_agent.clock import FakeClock
from plumber_agent.kube import client as client_module
from plumber_agent.kube.reflector import Reflector, ReflectorSettings
from tests.fakeapi import ADDRESSCLAIMS, HOSTNETWORKS, TEMPLATES
from tests.fakeapi.server import INCONSISTENT_CONTINUE_MSG, encode_continue
from tests.helpers.wait import wait_for
from tests.kube.scripted import WAIT_BOUND_S, Recorder
from tests.kube.test_fakeapi import Http

CR = "/apis/plumber.k8s.pf9.io/v1"
LIST = f"{CR}/hostnetworktemplates"
NAMES = ["a", "b", "c", "d", "e", "f", "g"]


@pytest.fixture
def api(fake_api):
    return Http(fake_api)


def put(fake_api, name: str, **labels) -> dict:
    return fake_api.put_object(TEMPLATES, {"metadata": {"name": name, "labels": labels}})


def names(body: dict) -> list[str]:
    return [item["metadata"]["name"] for item in body["items"]]


def pages(api, path: str) -> list[dict]:
    """Every page of a paged list, following `continue` (raw HTTP)."""
    out = []
    status, body, _ = api.call("GET", path)
    assert status == 200, body
    out.append(body)
    while body["metadata"].get("continue"):
        sep = "&" if "?" in path else "?"
        status, body, _ = api.call("GET", f"{path.split('&continue=')[0]}{sep}"
                                          f"continue={body['metadata']['continue']}")
        assert status == 200, body
        out.append(body)
    return out


# --- the server -------------------------------------------------------------------------
def test_limit_pages_in_key_order_with_remaining_item_count(fake_api, api):
    for name in reversed(NAMES):
        put(fake_api, name)
    rv = fake_api.resource_version
    got = pages(api, f"{LIST}?limit=3")
    assert [names(p) for p in got] == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    assert [p["metadata"].get("remainingItemCount") for p in got] == [4, 1, None]
    assert [p["metadata"]["resourceVersion"] for p in got] == [rv, rv, rv]
    assert "continue" not in got[-1]["metadata"]
    # An exact fit leaves no continue token: nothing is left.
    _, body, _ = api.call("GET", f"{LIST}?limit=7")
    assert names(body) == NAMES and "continue" not in body["metadata"]


def test_later_pages_are_read_at_the_first_pages_revision(fake_api, api):
    """etcd3 GetList reads page 2 at the token's revision: a change made between pages is not
    seen (the deleted object is still listed, the new one is not, the changed one is old)."""
    for name in NAMES:
        put(fake_api, name)
    status, first, _ = api.call("GET", f"{LIST}?limit=3")
    old_e = fake_api.get(TEMPLATES, "e")
    fake_api.delete_object(TEMPLATES, "d")
    put(fake_api, "e", changed="yes")
    put(fake_api, "ee")
    token = first["metadata"]["continue"]
    _, second, _ = api.call("GET", f"{LIST}?limit=10&continue={token}")
    assert names(second) == ["d", "e", "f", "g"]
    assert second["items"][1] == old_e
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    # A new list sees the present.
    _, now, _ = api.call("GET", LIST)
    assert names(now) == ["a", "b", "c", "e", "ee", "f", "g"]


def test_selectors_page_over_matches_without_a_remaining_count(fake_api, api):
    for index, name in enumerate(NAMES):
        put(fake_api, name, even=str(index % 2 == 0).lower())
    got = pages(api, f"{LIST}?limit=2&labelSelector=even%3Dtrue")
    assert [names(p) for p in got] == [["a", "c"], ["e", "g"]]
    assert all("remainingItemCount" not in p["metadata"] for p in got)


def test_resource_version_0_comes_from_the_cache_and_ignores_limit(fake_api, api):
    for name in NAMES:
        put(fake_api, name)
    _, body, _ = api.call("GET", f"{LIST}?resourceVersion=0&limit=2")
    assert names(body) == NAMES and "continue" not in body["metadata"]
    assert body["metadata"]["resourceVersion"] == fake_api.resource_version


def test_a_limit_with_a_resource_version_is_an_exact_read(fake_api, api):
    """shouldDelegateList: the legacy exact match reads etcd at that revision; below the
    compaction point that is 410 Expired. Without a limit the cache serves it (not older)."""
    put(fake_api, "a")
    old = fake_api.resource_version
    put(fake_api, "b")
    _, body, _ = api.call("GET", f"{LIST}?resourceVersion={old}&limit=5")
    assert names(body) == ["a"] and body["metadata"]["resourceVersion"] == old
    _, body, _ = api.call("GET", f"{LIST}?resourceVersion={old}")
    assert names(body) == ["a", "b"]
    fake_api.compact()
    status, body, _ = api.call("GET", f"{LIST}?resourceVersion={old}&limit=5")
    assert (status, body["reason"], body["message"]) == (
        410, "Expired", "The resourceVersion for the provided list is too old.")


def test_continue_refusals_are_upstreams(fake_api, api):
    for name in NAMES:
        put(fake_api, name)
    _, first, _ = api.call("GET", f"{LIST}?limit=3")
    token = first["metadata"]["continue"]
    status, body, _ = api.call("GET", f"{LIST}?limit=3&continue={token}&resourceVersion=5")
    assert (status, body["reason"], body["message"]) == (
        400, "BadRequest", "specifying resource version is not allowed when using continue")
    assert "details" not in body  # NewBadRequest has none
    for bad, why in [("not-base64!", "continue key is not valid"),
                     (encode_continue("b\x00", 0), "continue key is not valid: incorrect "
                      "encoded start resourceVersion (version meta.k8s.io/v1)"),
                     (encode_continue("", 5), "continue key is not valid: encoded start key "
                      "empty (version meta.k8s.io/v1)"),
                     (encode_continue("../b", 5), "continue key is not valid: ../b")]:
        status, body, _ = api.call("GET", f"{LIST}?limit=3&continue={bad}")
        assert (status, body["message"]) == (400, f"invalid continue token: {why}")


def test_a_compacted_continue_token_is_410_with_a_token_to_go_on(fake_api, api):
    """handleCompactedErrorForPaging: 410 Expired, the inconsistent-continue message and, in
    the Status' metadata, a token (rv -1) that goes on at the latest revision."""
    for name in NAMES:
        put(fake_api, name)
    _, first, _ = api.call("GET", f"{LIST}?limit=3")
    put(fake_api, "f", changed="yes")
    fake_api.compact()
    status, body, _ = api.call("GET", f"{LIST}?limit=3&continue={first['metadata']['continue']}")
    assert (status, body["reason"], body["message"]) == (410, "Expired", INCONSISTENT_CONTINUE_MSG)
    token = body["metadata"]["continue"]
    _, rest, _ = api.call("GET", f"{LIST}?limit=10&continue={token}")
    assert names(rest) == ["d", "e", "f", "g"]
    assert rest["items"][2]["metadata"]["labels"] == {"changed": "yes"}  # the latest: inconsistent
    assert rest["metadata"]["resourceVersion"] == fake_api.resource_version


def test_429_as_a_status_carries_retry_after_from_its_details(fake_api, api):
    """apierrors.NewTooManyRequests (what a storage layer answers, unlike the filters' plain
    text): JSON, details.retryAfterSeconds, and the Retry-After header ErrorNegotiated adds."""
    fake_api.fail_next(1, 429, retry_after=6, as_status=True)
    status, body, headers = api.call("GET", LIST)
    assert (status, body["reason"], body["details"]) == (429, "TooManyRequests",
                                                         {"retryAfterSeconds": 6})
    assert headers["Retry-After"] == "6"
    # The too-large-resourceVersion 504 has retryAfterSeconds 1: its header too.
    status, _, headers = api.call("GET", f"{LIST}?resourceVersion=999999")
    assert (status, headers["Retry-After"]) == (504, "1")


# --- the agent's client (tools/pager) -----------------------------------------------------
@pytest.fixture
def small_pages(monkeypatch):
    monkeypatch.setattr(client_module, "LIST_PAGE_SIZE", 3)


def list_queries(fake_api, path: str) -> list[dict]:
    return [r.query for r in fake_api.requests(method="GET", path_contains=path, watch=False)]


def test_a_one_shot_list_is_a_consistent_paged_read(fake_api, kube, small_pages):
    for name in NAMES:
        put(fake_api, name)
    rv = fake_api.resource_version
    items, list_rv = kube.list_templates()
    assert [o["metadata"]["name"] for o in items] == NAMES and list_rv == rv
    queries = list_queries(fake_api, "hostnetworktemplates")
    assert [q.get("limit") for q in queries] == ["3", "3", "3"]
    assert "resourceVersion" not in queries[0]
    assert all("resourceVersion" not in q and q["continue"] for q in queries[1:])


def test_pool_claims_and_hostnetworks_are_listed_consistently(fake_api, kube):
    """A pool allocation must see every claim of its pool: no resourceVersion (not the cache),
    paged, selected by the pool's label."""
    kube.list_address_claims("plumber.k8s.pf9.io/pool=p1")
    kube.list_hostnetworks()
    (query,) = list_queries(fake_api, ADDRESSCLAIMS)
    assert query == {"limit": str(client_module.LIST_PAGE_SIZE),
                     "labelSelector": "plumber.k8s.pf9.io/pool=p1"}
    (query,) = list_queries(fake_api, HOSTNETWORKS)
    assert query == {"limit": str(client_module.LIST_PAGE_SIZE)}


def test_the_pager_falls_back_to_a_full_list_when_its_token_expires(fake_api, kube, small_pages):
    for name in NAMES:
        put(fake_api, name)
    hold = fake_api.hold_next_answer("GET", "hostnetworktemplates")
    result = {}
    thread = threading.Thread(target=lambda: result.update(zip(("items", "rv"),
                                                                kube.list_templates())))
    thread.start()
    try:
        assert hold.wait_held(WAIT_BOUND_S)
        put(fake_api, "h")
        fake_api.compact()  # page 1's revision is compacted before page 2 is asked for
    finally:
        hold.release()
        thread.join(WAIT_BOUND_S)
    assert [o["metadata"]["name"] for o in result["items"]] == NAMES + ["h"]
    queries = list_queries(fake_api, "hostnetworktemplates")
    assert [("limit" in q, "continue" in q) for q in queries] == [
        (True, False), (True, True), (False, False)]  # page 1, the 410, the full list


def test_the_reflector_lists_from_the_cache_first_and_relists_not_older(fake_api, kube):
    """rv=0 for the first list (served by the watch cache, limit ignored); after the watch
    expired, not older than the last version seen, unpaged so the cache serves it."""
    for name in NAMES[:3]:
        put(fake_api, name)
    rec = Recorder()
    stop = threading.Event()
    reflector = Reflector("templates", kube.list_templates, kube.watch_templates, rec,
                          FakeClock(auto_advance=True),
                          settings=ReflectorSettings(watchdog_tick_s=None))
    thread = threading.Thread(target=reflector.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: fake_api.open_streams(TEMPLATES) == 1, what="the watch",
                 timeout_s=WAIT_BOUND_S)
        seen = reflector.resource_version()
        fake_api.expire_streams()
        wait_for(lambda: len(list_queries(fake_api, "hostnetworktemplates")) == 2,
                 what="the relist", timeout_s=WAIT_BOUND_S)
    finally:
        stop.set()
        fake_api.drop_streams()
        thread.join(WAIT_BOUND_S)
    first, relist = list_queries(fake_api, "hostnetworktemplates")
    assert first == {"resourceVersion": "0", "limit": str(client_module.LIST_PAGE_SIZE)}
    assert relist == {"resourceVersion": seen}
    assert list(reflector.list_resource_versions) == ["0", seen]
