"""The fake API server's held answer (`hold_next_answer`): the write is committed before the
client hears back, so a client killed (or a server restarted) in that window can be tested;
the knob is used once and only by the request it matches."""
from __future__ import annotations

import http.client
import threading

from tests.fakeapi import FakeApiServer
from tests.fakeapi.server import ADDRESSCLAIMS
from tests.kube.test_fakeapi import Http
from tests.kube.test_fakeapi_claims import claim
from tests.kube.test_fakeapi_upstream import CR

HOLD_WAIT_S = 10.0


def _post_in_thread(api: Http, path: str, body: dict) -> tuple[threading.Thread, dict]:
    answer: dict = {}

    def post():
        try:
            answer["status"] = api.call("POST", path, body)[0]
        except (OSError, http.client.HTTPException) as exc:
            answer["error"] = exc
    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread, answer


def test_held_create_is_committed_before_its_answer(fake_api):
    api = Http(fake_api)
    hold = fake_api.hold_next_answer("POST", "/addressclaims")
    thread, answer = _post_in_thread(api, f"{CR}/addressclaims", claim())
    assert hold.wait_held(HOLD_WAIT_S)
    # Committed and visible to everyone else while the creator still waits for its answer.
    assert fake_api.get(ADDRESSCLAIMS, "ipv4-192.168.50.10")["spec"]["node"] == "node-a"
    status, listed, _ = api.call("GET", f"{CR}/addressclaims")
    assert status == 200 and [o["metadata"]["name"] for o in listed["items"]] == ["ipv4-192.168.50.10"]
    thread.join(0.3)
    assert thread.is_alive() and answer == {}, "the answer went out before release()"
    assert hold.status == 201 and hold.path.endswith("/addressclaims")
    hold.release()
    thread.join(HOLD_WAIT_S)
    assert answer == {"status": 201}


def test_hold_is_used_once_and_only_by_its_match(fake_api):
    api = Http(fake_api)
    hold = fake_api.hold_next_answer("POST", "/addressclaims")
    # Another method or path is not held; a refused create (409) leaves the hold armed.
    assert api.call("GET", f"{CR}/addressclaims")[0] == 200
    assert api.call("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                               "metadata": {"name": "n1"}})[0] == 201
    fake_api.put_object(ADDRESSCLAIMS, claim(name="ipv4-192.168.50.11", address="192.168.50.11"))
    assert api.call("POST", f"{CR}/addressclaims",
                    claim(name="ipv4-192.168.50.11", address="192.168.50.11"))[0] == 409
    assert not hold.held.is_set()
    thread, answer = _post_in_thread(api, f"{CR}/addressclaims", claim())
    assert hold.wait_held(HOLD_WAIT_S)
    hold.release()
    thread.join(HOLD_WAIT_S)
    assert answer == {"status": 201}
    # Used up: the next matching create answers at once.
    second = claim(name="ipv4-192.168.50.12", address="192.168.50.12")
    assert api.call("POST", f"{CR}/addressclaims", second)[0] == 201


def test_server_stopped_while_holding_loses_the_answer_keeps_the_write():
    server = FakeApiServer()
    server.start()
    api = Http(server)
    hold = server.hold_next_answer("POST", "/addressclaims")
    thread, answer = _post_in_thread(api, f"{CR}/addressclaims", claim())
    try:
        assert hold.wait_held(HOLD_WAIT_S)
    finally:
        server.stop()
    thread.join(HOLD_WAIT_S)
    assert not thread.is_alive()
    assert "status" not in answer and isinstance(answer.get("error"), (OSError, http.client.HTTPException)), answer
    # The write survives a restart (take_state_of), as etcd keeps it.
    restarted = FakeApiServer()
    restarted.take_state_of(server)
    assert restarted.get(ADDRESSCLAIMS, "ipv4-192.168.50.10")["spec"]["node"] == "node-a"
