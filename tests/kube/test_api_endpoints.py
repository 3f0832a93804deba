"""The endpoints the agent dials in a pod: the `kubernetes` EndpointSlice in `default`, listed
and watched through the kube layer (field selector on its name) against the fake API server
over HTTP, and turned into the ApiEndpoints whose paths the guard keeps (issue 20, item 6)."""
from __future__ import annotations

import functools
import threading

from plumber_agent.apiprobe import (KUBERNETES_SLICE_NAME, KUBERNETES_SLICE_NAMESPACE,
                                    endpoints_from_slices)
from plumber_agent.clock import FakeClock
from plumber_agent.kube.reflector import Reflector, ReflectorSettings, object_name
from plumber_agent.models.plan import ApiEndpoint
from tests.helpers.wait import wait_for
from tests.kube.scripted import WAIT_BOUND_S

ENDPOINTSLICES = "endpointslices"


def endpoint_slice(name, addresses, *, port=6443, ready=True, namespace="default"):
    """What the API server's endpoint reconciler writes (pkg/controlplane/reconcilers)."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [a], "conditions": {"ready": ready}} for a in addresses],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}


def test_the_kubernetes_slice_is_listed_by_name_only(fake_api, kube):
    fake_api.put_object(ENDPOINTSLICES, endpoint_slice("kubernetes", ["10.0.0.1", "10.0.0.2"]))
    fake_api.put_object(ENDPOINTSLICES, endpoint_slice("other", ["10.9.9.9"]))
    fake_api.put_object(ENDPOINTSLICES, endpoint_slice("kubernetes", ["10.8.8.8"],
                                                       namespace="elsewhere"))
    items, version = kube.list_endpoint_slices(KUBERNETES_SLICE_NAMESPACE, KUBERNETES_SLICE_NAME)
    assert version and [i["metadata"]["name"] for i in items] == ["kubernetes"]
    assert items[0]["metadata"]["generation"] == 1
    assert endpoints_from_slices(items) == [
        ApiEndpoint("10.0.0.1", 6443, "endpointslice"), ApiEndpoint("10.0.0.2", 6443,
                                                                    "endpointslice")]


def test_a_watched_slice_follows_the_api_servers(fake_api, kube):
    """A control-plane node added or replaced: the guard's endpoints follow the watch."""
    fake_api.put_object(ENDPOINTSLICES, endpoint_slice("kubernetes", ["10.0.0.1"]))
    reflector = Reflector(
        "api-endpoints",
        functools.partial(kube.list_endpoint_slices, KUBERNETES_SLICE_NAMESPACE,
                          KUBERNETES_SLICE_NAME),
        functools.partial(kube.watch_endpoint_slices, KUBERNETES_SLICE_NAMESPACE,
                          KUBERNETES_SLICE_NAME),
        lambda *event: None, FakeClock(auto_advance=True),
        settings=ReflectorSettings(watchdog_tick_s=0.01), key_fn=object_name)
    stop = threading.Event()
    thread = threading.Thread(target=reflector.run, args=(stop,), daemon=True)
    thread.start()
    try:
        def current():
            return [e.ip for e in endpoints_from_slices(reflector.store().values())]
        wait_for(lambda: current() == ["10.0.0.1"], timeout_s=WAIT_BOUND_S, what="first list")
        wait_for(reflector.watching, timeout_s=WAIT_BOUND_S, what="watching")
        fake_api.put_object(ENDPOINTSLICES, endpoint_slice("kubernetes", ["10.0.0.3", "10.0.0.4"]))
        wait_for(lambda: current() == ["10.0.0.3", "10.0.0.4"], timeout_s=WAIT_BOUND_S,
                 what="the watch's update")
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive()


def test_unusable_slice_entries_are_skipped():
    slices = [endpoint_slice("kubernetes", ["10.0.0.1"], ready=False),
              {"endpoints": [{"addresses": ["api.example.com", "fd00::0:1"]}],
               "ports": [{"name": "metrics", "port": 9000}, {"name": "https", "port": 443}]},
              "garbage", {"endpoints": "x"}]
    assert endpoints_from_slices(slices) == [ApiEndpoint("fd00::1", 443, "endpointslice")]
