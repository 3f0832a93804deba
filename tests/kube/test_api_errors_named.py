"""Each API error class named as what it is (plumber_agent/apierrors.py), for the HostNetwork
status writes (KubeStatusSink + Reporter) and the template watch (Reflector), over real HTTP
against the fake API server: RBAC's 403 (`deny`), NamespaceLifecycle's 404, a real 409, an
injected 422/429/5xx, and a client timeout and refused connection at our own seam.

Why: a forbidden status write read "status write failed, retrying in 1.0s: (403)
Reason: Forbidden ..." and a forbidden template list "templates: HTTP 403".
"""
from __future__ import annotations

import logging
import socket
import threading

import pytest

from plumber_agent import GROUP
from plumber_agent.apierrors import (ApiReason, NamedApiError, Target, api_error_metric,
                                     classify, describe)
from plumber_agent.clock import FakeClock
from plumber_agent.cluster import KubeStatusSink
from plumber_agent.kube.client import KubeClient
from plumber_agent.kube.reflector import Reflector, ReflectorSettings
from plumber_agent.ops import Metrics
from plumber_agent.reporter import Reporter
from tests.fakeapi import NODES
from tests.helpers.wait import wait_for

NODE = "n1"
SA_USER = "system:serviceaccount:plumber-system:plumber-agent"


def test_a_forbidden_status_write_says_permission_denied_and_is_counted(fake_api, kube,
                                                                         caplog):
    fake_api.put_object(NODES, {"metadata": {"name": NODE}})
    fake_api.deny("patch", "hostnetworks/status", group=GROUP)
    metrics, clock = Metrics(), FakeClock()
    reporter = Reporter(sink=KubeStatusSink(kube, NODE), metrics=metrics, clock=clock)
    reporter.publish({"interfaceStatus": [{"pfName": "eth0", "mtu": 1500}]})
    stop = threading.Event()
    thread = threading.Thread(target=reporter.run, args=(stop,), daemon=True)
    with caplog.at_level(logging.WARNING, logger="plumber_agent.reporter"):
        thread.start()
        try:
            wait_for(lambda: reporter.retry_delays, what="a failed status write", timeout_s=10)
        finally:
            stop.set()
            clock.advance(3600)
            thread.join(10)
    said = [r.getMessage() for r in caplog.records if "status write failed" in r.getMessage()]
    assert said, caplog.text
    assert (f"permission denied: patch hostnetworks.{GROUP}/status {NODE} "
            f'(hostnetworks.{GROUP} "{NODE}" is forbidden: User "{SA_USER}" cannot patch '
            f'resource "hostnetworks/status" in API group "{GROUP}" at the cluster scope); '
            "check the ClusterRole plumber-agent (manifests/rbac/cluster_role.yaml): it must "
            f"grant patch on hostnetworks.{GROUP}/status") in said[0]
    assert metrics.get(api_error_metric("status_write", "Forbidden")) >= 1


def test_a_forbidden_hostnetwork_create_is_named(fake_api, kube):
    """The sink raises the client's own error (callers and the retry policy read it) and
    names it on request: the request it was making."""
    fake_api.deny("create", "hostnetworks", group=GROUP)
    sink = KubeStatusSink(kube, NODE)
    with pytest.raises(Exception) as caught:
        sink.ensure()
    assert not isinstance(caught.value, NamedApiError) and caught.value.status == 403
    named = sink.name_error(caught.value)
    assert named.failure.reason == ApiReason.FORBIDDEN and named.status == 403
    assert str(named).startswith(f"permission denied: create hostnetworks.{GROUP} {NODE}")


def test_a_forbidden_template_list_says_permission_denied(fake_api, kube):
    fake_api.deny("list", "hostnetworktemplates", group=GROUP)
    failed: list[BaseException] = []
    stop = threading.Event()
    reflector = Reflector("templates", kube.list_templates, kube.watch_templates,
                          lambda *_: None, FakeClock(auto_advance=True),
                          settings=ReflectorSettings(watchdog_tick_s=0),
                          on_backoff=lambda _d, exc: (failed.append(exc), stop.set()),
                          target=Target(f"hostnetworktemplates.{GROUP}"))
    reflector.run(stop)
    assert classify(failed[0]).reason == ApiReason.FORBIDDEN
    _, said = reflector.backoffs[0]
    assert said.startswith(f"permission denied: list/watch hostnetworktemplates.{GROUP} "
                           f'(hostnetworktemplates.{GROUP} is forbidden: User "{SA_USER}" '
                           f'cannot list resource "hostnetworktemplates" in API group "{GROUP}" '
                           "at the cluster scope); check the ClusterRole plumber-agent")


def _failure_of(call) -> BaseException:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the error is what is tested
        return exc
    raise AssertionError("the request did not fail")


@pytest.mark.parametrize("code, reason, words", [
    (422, ApiReason.INVALID, "invalid: the API server refused"),
    (429, ApiReason.THROTTLED, "throttled: the API server is limiting requests"),
    (500, ApiReason.SERVER_ERROR, "server error: the API server failed to patch"),
    (503, ApiReason.SERVER_ERROR, "server error: the API server failed to patch"),
    (401, ApiReason.UNAUTHORIZED, "unauthorized: patch"),
])
def test_each_status_code_has_one_reason(fake_api, kube, code, reason, words):
    fake_api.put_object("hostnetworks", {"apiVersion": f"{GROUP}/v1", "kind": "HostNetwork",
                                         "metadata": {"name": NODE}, "spec": {}})
    fake_api.fail_next(1, code, method="PATCH")
    exc = _failure_of(lambda: kube.patch_hostnetwork_status(NODE, {"status": {}}))
    failure = classify(exc)
    assert failure.reason == reason and failure.status == code
    target = Target(f"hostnetworks.{GROUP}/status", name=NODE)
    assert describe(failure, verb="patch", target=target).startswith(words)


def test_conflict_not_found_and_namespace_not_found(fake_api, kube):
    lease = {"metadata": {"name": "x"}, "spec": {"holderIdentity": "a"}}
    kube.create_lease("ns1", lease)
    conflict = classify(_failure_of(lambda: kube.create_lease("ns1", lease)))
    assert conflict.reason == ApiReason.CONFLICT and conflict.transient
    missing = classify(_failure_of(lambda: kube.get_node("nowhere")))
    assert missing.reason == ApiReason.NOT_FOUND and not missing.transient
    fake_api.set_namespace_missing("ns2")
    namespace = classify(_failure_of(lambda: kube.create_lease("ns2", lease)))
    assert namespace.reason == ApiReason.NAMESPACE_NOT_FOUND


class ReadTimeoutError(Exception):
    """Named like urllib3's: what the kubernetes client raises when no answer came in time."""


def test_a_timeout_and_an_unreachable_server(tmp_path):
    assert classify(ReadTimeoutError("Read timed out.")).reason == ApiReason.TIMEOUT
    with socket.socket() as sock:  # a port nothing listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = KubeClient.from_token_file(f"http://127.0.0.1:{port}", str(_token(tmp_path)))
    try:
        failure = classify(_failure_of(lambda: client.get_node(NODE)))
    finally:
        client.close()
    assert failure.reason == ApiReason.UNREACHABLE and failure.status is None
    assert describe(failure, verb="get", target=Target("nodes", name=NODE)).startswith(
        "unreachable: cannot reach the API server to get nodes n1")


def _token(tmp_path):
    path = tmp_path / "token"
    path.write_text("t")
    return path
