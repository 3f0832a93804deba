"""The HostNetwork status sink over real HTTP (issue 6, B2): element-wise JSON patches guarded
by the resourceVersion, the merge patch when that guard fails, and the same published status
either way."""
from __future__ import annotations

import copy
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from plumber_agent.cluster import KubeStatusSink
from plumber_agent.fleet.results import RESULTS_ANNOTATION, encode_summary
from plumber_agent.reporter import json_patch_ops
from tests.fakeapi import HOSTNETWORKS, NODES
from tests.fakeapi.server import json_patch

NODE = "n1"


def big_status(interfaces: int = 300) -> dict:
    return {"interfaceStatus": [{"pfName": f"eth{i}", "mtu": 1500, "ipv4": {"address": [
        f"10.0.{i // 250}.{i % 250 + 1}/24"]}} for i in range(interfaces)],
        "routes": {"ipv4": [{"dst": f"10.1.{i}.0/24", "dev": "eth1"} for i in range(200)]},
        "summary": {"interfaces": interfaces}}


class Publisher:
    """What the reporter does with a sink: ensure once, then write each changed status."""

    def __init__(self, sink: KubeStatusSink):
        self.sink = sink
        self.published = sink.ensure()

    def publish(self, status: dict) -> None:
        self.sink.write(status)
        self.published = status


def server_status(fake_api) -> dict:
    return (fake_api.get(HOSTNETWORKS, NODE) or {}).get("status")


def status_writes(fake_api) -> list:
    return [r for r in fake_api.requests(method="PATCH") if r.path.endswith("/status")]


def test_one_changed_element_is_sent_as_a_small_json_patch(fake_api, kube):
    fake_api.put_object(NODES, {"metadata": {"name": NODE}})
    pub = Publisher(KubeStatusSink(kube, NODE))
    first = big_status()
    pub.publish(first)
    assert server_status(fake_api) == first
    changed = copy.deepcopy(first)
    changed["interfaceStatus"][17]["mtu"] = 9000
    changed["interfaceStatus"].insert(5, {"pfName": "eth4.100", "mtu": 1500})  # a new VLAN
    del changed["routes"]["ipv4"][3]
    pub.publish(changed)
    assert server_status(fake_api) == changed
    first_write, second_write = status_writes(fake_api)  # one request per write
    assert first_write.content_type == "application/merge-patch+json"  # nothing known yet
    assert second_write.content_type == "application/json-patch+json"
    assert second_write.body_bytes * 5 < len(json.dumps(changed["interfaceStatus"]))


def test_a_status_changed_by_someone_else_is_not_patched_blindly(fake_api, kube):
    """The JSON patch's paths are right only for the version it was computed against; after
    another writer the guard fails and the merge patch (whole lists) is sent instead."""
    fake_api.put_object(NODES, {"metadata": {"name": NODE}})
    pub = Publisher(KubeStatusSink(kube, NODE))
    pub.publish(big_status())
    other = fake_api.get(HOSTNETWORKS, NODE)
    other["status"]["interfaceStatus"].insert(0, {"pfName": "intruder"})
    fake_api.put_object(HOSTNETWORKS, other)
    changed = big_status()
    changed["interfaceStatus"][17]["mtu"] = 9000
    pub.publish(changed)
    assert server_status(fake_api)["interfaceStatus"] == changed["interfaceStatus"]
    refused, merged = status_writes(fake_api)[-2:]
    assert refused.content_type == "application/json-patch+json" and refused.status == 422
    assert merged.content_type == "application/merge-patch+json" and merged.status == 200
    # ... of the difference from what this sink published: the unchanged routes are not resent
    assert merged.body_bytes < len(json.dumps(changed)) - len(json.dumps(changed["routes"])) // 2
    assert server_status(fake_api)["interfaceStatus"][17]["mtu"] == 9000
    pub.publish(big_status())  # and the next change is small again
    assert status_writes(fake_api)[-1].content_type == "application/json-patch+json"
    assert server_status(fake_api) == big_status()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text("ab/~", max_size=3),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text("ab/~", max_size=3),
                                                                inner, max_size=4),
    max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(old=st.dictionaries(st.text("xy/~", max_size=2), json_values, max_size=4),
       new=st.dictionaries(st.text("xy/~", max_size=2), json_values, max_size=4))
def test_json_patch_ops_turn_old_into_new(old, new):
    document = {"metadata": {"resourceVersion": "1"}, "status": old}
    patched = json_patch(document, json_patch_ops(old, new, "/status"))
    assert patched["status"] == new
    assert json_patch_ops(new, new, "/status") == []


# -- the template-results annotation (fleet/results.py) ------------------------------------------
def summary_patches(fake_api) -> list:
    return [r for r in fake_api.requests(method="PATCH")
            if r.path.endswith(f"/{HOSTNETWORKS}/{NODE}")]


def annotation(fake_api):
    meta = (fake_api.get(HOSTNETWORKS, NODE) or {}).get("metadata") or {}
    return (meta.get("annotations") or {}).get(RESULTS_ANNOTATION)


def test_the_summary_is_patched_only_when_a_result_changes(fake_api, kube):
    """A result change patches the annotation once; interface churn never does, and the status
    JSON patch after an annotation patch still applies (its guard follows the new version)."""
    fake_api.put_object(NODES, {"metadata": {"name": NODE}})
    pub = Publisher(KubeStatusSink(kube, NODE))
    applying = {**big_status(), "templates": [{"name": "mtu", "state": "Waiting",
                                               "observedGeneration": 2}]}
    pub.publish(applying)
    assert annotation(fake_api) == encode_summary(applying["templates"])
    churned = copy.deepcopy(applying)
    for i in range(5):  # pods come and go
        churned["interfaceStatus"].append({"pfName": f"cali{i}", "mtu": 1450})
        pub.publish(copy.deepcopy(churned))
    assert len(summary_patches(fake_api)) == 1
    applied = {**copy.deepcopy(churned), "templates": [{"name": "mtu", "state": "Applied",
                                                        "observedGeneration": 2}]}
    pub.publish(applied)
    assert annotation(fake_api) == encode_summary(applied["templates"])
    assert len(summary_patches(fake_api)) == 2
    churned = copy.deepcopy(applied)
    churned["interfaceStatus"].pop()
    pub.publish(churned)
    assert server_status(fake_api) == churned
    assert status_writes(fake_api)[-1].content_type == "application/json-patch+json"
    assert len(summary_patches(fake_api)) == 2


def test_an_object_published_before_summaries_gets_one_at_start(fake_api, kube):
    templates = [{"name": "mtu", "state": "Applied", "observedGeneration": 1}]
    fake_api.skip_schema_validation(HOSTNETWORKS, NODE)
    fake_api.put_object(HOSTNETWORKS, {"apiVersion": "plumber.k8s.pf9.io/v1",
                                       "kind": "HostNetwork", "metadata": {"name": NODE},
                                       "spec": {}, "status": {"templates": templates}})
    sink = KubeStatusSink(kube, NODE)
    assert sink.ensure() == {"templates": templates}
    assert annotation(fake_api) == encode_summary(templates)
    KubeStatusSink(kube, NODE).ensure()  # a restart with the summary in place: no write
    assert len(summary_patches(fake_api)) == 1
def test_a_status_write_after_a_429_waits_the_retry_after_on_the_clock(fake_api, kube):
    """Over real HTTP: the API server sheds the status PATCH with 429 + Retry-After: 4. The
    reporter's next attempt waits on the injected clock until 4 s have passed, and not one
    request goes out before that."""
    import threading

    from plumber_agent.clock import FakeClock
    from plumber_agent.ops import Metrics
    from plumber_agent.reporter import Reporter
    from tests.helpers.wait import wait_for

    fake_api.put_object(NODES, {"metadata": {"name": NODE}})
    fake_api.fail_next(1, 429, retry_after=4, method="PATCH", path_contains="/status")
    clock = FakeClock()
    reporter = Reporter(sink=KubeStatusSink(kube, NODE), metrics=Metrics(), clock=clock)
    reporter.publish(big_status(3))
    stop = threading.Event()
    thread = threading.Thread(target=reporter.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: clock.waiters >= 1, what="the reporter waiting", timeout_s=10)
        assert reporter.retry_delays == [4.0]
        requests_while_waiting = len(fake_api.requests())
        clock.advance(3.9)
        threading.Event().wait(0.2)  # room for a wrongly early retry to show (never timed)
        assert clock.waiters == 1  # still waiting
        assert len(fake_api.requests()) == requests_while_waiting  # nothing sent before 4 s
        clock.advance(0.1)
        wait_for(lambda: server_status(fake_api) == big_status(3), what="the retried write",
                 timeout_s=10)
    finally:
        stop.set()
        thread.join(10)
    refused, written = [r.status for r in status_writes(fake_api)]
    assert (refused, written) == (429, 200)
