"""Events as kubectl shows them (issue 21 item 4): the agent records events.k8s.io/v1 Events
(kube/recorder.py, client-go tools/events' rules) and the fake API server serves and
validates them as the real one does (tests/fakeapi/events.py: ValidateEventCreate/Update,
the events/v1 <-> core/v1 conversion; printing.py: printEvent's age).

Why: the agent wrote core/v1 Events without eventTime and, from the reconciler, without
firstTimestamp/lastTimestamp: `kubectl get events` showed `<unknown>` for their age, and a
repeat was a new Event each time.
"""
from __future__ import annotations

import datetime
import json
import urllib.request

import pytest

from plumber_agent.clock import FakeClock
from plumber_agent.cluster import AGENT_CONTROLLER, KubeEvents
from plumber_agent.kube.recorder import FINISH_S, REFRESH_S, EventBroadcaster
from tests.fakeapi import EVENTS
from tests.fakeapi import events as event_api
from tests.fakeapi import printing

NODE = "node-a"
V1_PATH = "/apis/events.k8s.io/v1/namespaces/default/events"
WALL_START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc).timestamp()


def raw(fake_api, method: str, path: str, body=None, content_type="application/json"):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(fake_api.url + path, data=data, method=method, headers={
        "Authorization": f"Bearer {fake_api.token}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def recorder(kube, clock=None, *, controller=AGENT_CONTROLLER):
    broadcaster = EventBroadcaster(kube, clock or FakeClock(wall_start=WALL_START))
    return broadcaster, broadcaster.new_recorder(controller, NODE)


def hostnetwork(kube) -> dict:
    return kube.create_hostnetwork({"metadata": {"name": NODE}, "spec": {}})


def record(rec, hn, *, reason="Applied", note="all good", warning=False):
    rec.eventf(regarding={"apiVersion": hn["apiVersion"], "kind": "HostNetwork",
                          "name": NODE, "uid": hn["metadata"]["uid"]},
               reason=reason, action="Reconcile", note=note, warning=warning)


def event_writes(fake_api) -> list:
    return [r for r in fake_api.writes() if "/events" in r.path]


def test_the_agents_event_has_the_events_v1_shape(fake_api, kube):
    """Event shape against the events.k8s.io/v1 schema: what the agent sends passes
    ValidateEventCreate for events.k8s.io/v1 and reads back with every field kubectl uses."""
    hn = hostnetwork(kube)
    _, rec = recorder(kube)
    record(rec, hn)
    (write,) = event_writes(fake_api)
    assert (write.method, write.path, write.status) == ("POST", V1_PATH, 201)
    (stored,) = fake_api.list(EVENTS)  # the storage (core/v1) form
    assert event_api.create_errors(stored, event_api.EVENTS_V1) == []
    status, listed = raw(fake_api, "GET", V1_PATH)
    (event,) = listed["items"]
    assert (status, listed["apiVersion"], event["apiVersion"]) == (200, "events.k8s.io/v1",
                                                                   "events.k8s.io/v1")
    assert event["eventTime"] == "2026-01-01T00:00:00.000000Z"
    assert event["reportingController"] == "plumber.k8s.pf9.io/agent"
    assert event["reportingInstance"] == f"plumber.k8s.pf9.io/agent-{NODE}"
    assert (event["action"], event["reason"], event["type"], event["note"]) == (
        "Reconcile", "Applied", "Normal", "all good")
    assert event["regarding"] == {"apiVersion": "plumber.k8s.pf9.io/v1", "kind": "HostNetwork",
                                  "name": NODE, "uid": hn["metadata"]["uid"]}
    assert event["metadata"]["name"].startswith(f"{NODE}.")
    assert "series" not in event and "deprecatedCount" not in event
    # The same Event through core/v1 (kubectl describe reads it there), as a real server
    # converts it: the new fields under their core/v1 names, the legacy ones empty.
    _, core = raw(fake_api, "GET", f"/api/v1/namespaces/default/events/{event['metadata']['name']}")
    assert core["involvedObject"] == event["regarding"] and core["message"] == "all good"
    assert core["reportingComponent"] == "plumber.k8s.pf9.io/agent"
    assert core["eventTime"] == event["eventTime"]
    assert (core["firstTimestamp"], core["lastTimestamp"], core["source"]) == (None, None, {})


def test_the_kube_events_sink_records_on_the_hostnetwork_and_the_template(fake_api, kube):
    hn = hostnetwork(kube)
    _, rec = recorder(kube)
    events = KubeEvents(rec, NODE, template_uid=lambda name: "t-uid",
                        hostnetwork_uid=lambda: hn["metadata"]["uid"])
    events.emit(reason="Failed", message="mtu refused", warning=True, template="t1")
    regarding = sorted((e["involvedObject"]["kind"], e["involvedObject"]["uid"], e["type"])
                       for e in fake_api.list(EVENTS))
    assert regarding == [("HostNetwork", hn["metadata"]["uid"], "Warning"),
                         ("HostNetworkTemplate", "t-uid", "Warning")]


@pytest.mark.parametrize("change, field_message", [
    ({"eventTime": None}, "eventTime: Required value"),
    ({"reportingController": ""}, "reportingController: Required value"),
    ({"reportingController": "a/b/c"}, 'reportingController: Invalid value: "a/b/c": a '
     "qualified name must consist of"),
    ({"reportingController": "Bad_/x"}, 'reportingController: Invalid value: "Bad_/x": prefix '
     "part a lowercase RFC 1123 subdomain"),
    ({"reportingInstance": "i" * 129}, 'reportingInstance: Invalid value: "": can have at most '
     "128 characters"),
    ({"action": ""}, "action: Required value"),
    ({"action": "a" * 129}, 'action: Invalid value: "": can have at most 128 characters'),
    ({"reason": ""}, "reason: Required value"),
    ({"note": "n" * 1025}, 'message: Invalid value: "": can have at most 1024 characters'),
    ({"type": "Bogus"}, 'type: Invalid value: "": has invalid value: Bogus'),
    ({"deprecatedCount": 3}, 'count: Invalid value: "": needs to be unset'),
    ({"deprecatedSource": {"component": "x"}}, 'source: Invalid value: "": needs to be unset'),
    ({"deprecatedLastTimestamp": "2026-01-01T00:00:00Z"},
     'lastTimestamp: Invalid value: "": needs to be unset'),
    ({"series": {"count": 1, "lastObservedTime": "2026-01-01T00:00:00.000000Z"}},
     'series.count: Invalid value: "": should be at least 2'),
    ({"series": {"count": 2}}, "series.lastObservedTime: Required value"),
    ({"metadata": {"name": "Not_A_Name"}}, 'metadata.name: Invalid value: "Not_A_Name"'),
])
def test_the_fake_refuses_what_validate_event_create_refuses(fake_api, change, field_message):
    body = {"metadata": {"name": "e1"}, "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "plumber.k8s.pf9.io/agent", "reportingInstance": "i",
            "action": "Reconcile", "reason": "Applied", "note": "n", "type": "Normal",
            "regarding": {"kind": "HostNetwork", "name": NODE}}
    status, answer = raw(fake_api, "POST", V1_PATH, {**body, **change})
    assert (status, answer["reason"]) == (422, "Invalid"), answer
    assert answer["message"].startswith('Event.events.k8s.io "')
    assert field_message in answer["message"], answer["message"]
    assert answer["details"]["group"] == "events.k8s.io" and answer["details"]["kind"] == "Event"
    assert raw(fake_api, "POST", V1_PATH, body)[0] == 201  # the same without the change


def test_a_cluster_scoped_regarding_needs_default_or_kube_system(fake_api):
    body = {"metadata": {"name": "e1"}, "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "x.io/a", "reportingInstance": "i", "action": "A",
            "reason": "R", "type": "Normal", "regarding": {"kind": "HostNetwork", "name": NODE}}
    status, answer = raw(fake_api, "POST",
                         "/apis/events.k8s.io/v1/namespaces/plumber-system/events", body)
    assert status == 422
    assert 'involvedObject.namespace: Invalid value: "": does not match event.namespace' \
        in answer["message"]
    path = "/apis/events.k8s.io/v1/namespaces/kube-system/events"
    assert raw(fake_api, "POST", path, body)[0] == 201


def test_core_v1_keeps_only_the_legacy_rules(fake_api):
    """ValidateEventCreate: no further validation for core/v1 "for backwards compatibility"."""
    old_style = {"metadata": {"name": "e1"}, "reason": "R", "message": "m", "count": 4,
                 "involvedObject": {"kind": "HostNetwork", "name": NODE},
                 "firstTimestamp": "2026-01-01T00:00:00Z"}
    assert raw(fake_api, "POST", "/api/v1/namespaces/default/events", old_style)[0] == 201
    status, event = raw(fake_api, "GET", f"{V1_PATH}/e1")
    assert (status, event["deprecatedCount"], event["eventTime"], event["note"]) == (
        200, 4, None, "m")


def test_an_update_may_change_only_the_series(fake_api, kube):
    hn = hostnetwork(kube)
    _, rec = recorder(kube)
    record(rec, hn)
    name = fake_api.list(EVENTS)[0]["metadata"]["name"]
    smp = "application/strategic-merge-patch+json"
    status, answer = raw(fake_api, "PATCH", f"{V1_PATH}/{name}", {"note": "edited"}, smp)
    assert status == 422 and 'message: Invalid value: "edited": field is immutable' \
        in answer["message"]
    series = {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}
    status, answer = raw(fake_api, "PATCH", f"{V1_PATH}/{name}", {"series": series}, smp)
    assert (status, answer["series"]) == (200, series)


def test_repeats_become_a_series(fake_api, kube):
    """client-go tools/events recordToSink: the first is created, the second patched as a
    series of 2, the rest only counted until finishSeries writes the final count; another note
    is another Event (our key holds the note)."""
    hn = hostnetwork(kube)
    clock = FakeClock(wall_start=WALL_START)
    broadcaster, rec = recorder(kube, clock)
    record(rec, hn, reason="Failed", note="mtu refused", warning=True)
    clock.advance(30)
    record(rec, hn, reason="Failed", note="mtu refused", warning=True)
    writes = event_writes(fake_api)
    assert [(w.method, w.status, w.content_type) for w in writes] == [
        ("POST", 201, "application/json"),
        ("PATCH", 200, "application/strategic-merge-patch+json")]
    (event,) = fake_api.list(EVENTS)
    assert event["series"] == {"count": 2, "lastObservedTime": "2026-01-01T00:00:30.000000Z"}
    for _ in range(3):
        clock.advance(10)
        record(rec, hn, reason="Failed", note="mtu refused", warning=True)
    assert len(event_writes(fake_api)) == 2  # counted, not written
    broadcaster.finish_series()
    assert len(event_writes(fake_api)) == 2  # not quiet for FINISH_S yet
    clock.advance(FINISH_S + 1)
    broadcaster.finish_series()
    (event,) = fake_api.list(EVENTS)
    assert event["series"] == {"count": 5, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}
    broadcaster.finish_series()  # forgotten: nothing more to write
    assert len(event_writes(fake_api)) == 3
    record(rec, hn, reason="Failed", note="mtu refused", warning=True)  # a new one after that
    record(rec, hn, reason="Failed", note="vlan refused", warning=True)
    assert len(fake_api.list(EVENTS)) == 3


def test_an_ongoing_series_is_refreshed_and_a_deleted_event_recreated(fake_api, kube):
    hn = hostnetwork(kube)
    clock = FakeClock(wall_start=WALL_START)
    broadcaster, rec = recorder(kube, clock)
    record(rec, hn)
    fake_api.delete_object(EVENTS, fake_api.list(EVENTS)[0]["metadata"]["name"], "default")
    record(rec, hn)  # the patch finds no Event (TTL, deleted): recordEvent creates it
    (event,) = fake_api.list(EVENTS)
    assert event["series"]["count"] == 2
    clock.advance(REFRESH_S / 2)
    record(rec, hn)
    broadcaster.refresh_series()
    assert fake_api.list(EVENTS)[0]["series"]["count"] == 3


def test_kubectl_age_comes_from_event_time_or_the_series():
    """printers.go printEvent: Last Seen is lastTimestamp, else the first seen (firstTimestamp,
    else eventTime), and a series' lastObservedTime wins: an events.k8s.io/v1 Event (no
    lastTimestamp) has an age; one with no time at all shows <unknown>."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ago = lambda s: (now - datetime.timedelta(seconds=s)).strftime(  # noqa: E731
        "%Y-%m-%dT%H:%M:%S.%fZ")
    # Ages that read the same for a whole minute (HumanDuration: minutes only from 10 min on),
    # so a slow machine cannot make "5m" into "5m1s".
    new = event_api.to_core({"metadata": {"name": "e"}, "eventTime": ago(3030),
                             "regarding": {"kind": "HostNetwork", "name": NODE},
                             "reportingController": "plumber.k8s.pf9.io/agent",
                             "reportingInstance": "plumber.k8s.pf9.io/agent-node-a",
                             "reason": "Applied", "type": "Normal", "note": "ok"})
    cells = printing.event_cells(new)
    assert cells[:4] == ["50m", "Normal", "Applied", f"hostnetwork/{NODE}"]
    assert cells[5] == "plumber.k8s.pf9.io/agent, plumber.k8s.pf9.io/agent-node-a"
    assert (cells[7], cells[8]) == ("50m", 1)  # First Seen, Count (a singleton)
    repeated = {**new, "series": {"count": 7, "lastObservedTime": ago(630)}}
    assert (printing.event_cells(repeated)[0], printing.event_cells(repeated)[8]) == ("10m", 7)
    legacy = {"involvedObject": {"kind": "Node", "name": "n"}, "lastTimestamp": None}
    assert printing.event_cells(legacy)[0] == "<unknown>"


def test_kubectl_get_events_shows_the_age(fake_api, kube, tmp_path):
    """The real kubectl against the fake's Table: LAST SEEN is an age, not <unknown>."""
    import shutil
    import subprocess
    if shutil.which("kubectl") is None or shutil.which("openssl") is None:
        pytest.skip("kubectl or openssl is not installed")
    hn = hostnetwork(kube)
    _, rec = recorder(kube, FakeClock(wall_start=datetime.datetime.now(  # "10m" for a minute
        datetime.timezone.utc).timestamp() - 630))
    record(rec, hn, reason="Applied", note="all good")
    config = fake_api.kubectl_kubeconfig(tmp_path / "kubectl.kubeconfig")
    proc = subprocess.run(["kubectl", "--kubeconfig", config, "--cache-dir",
                           str(tmp_path / "cache"), "get", "events", "-n", "default"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.splitlines()[:2]
    assert header.split()[:2] == ["LAST", "SEEN"], proc.stdout
    assert row.split()[:4] == ["10m", "Normal", "Applied", f"hostnetwork/{NODE}"], proc.stdout
