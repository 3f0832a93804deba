"""The status writer's template status writes (fleet/writer.py) after a refused write: a 429 or
503 with Retry-After holds the next pass for what the server said and stops the pass there;
other failures back off with full jitter; a good pass resets the backoff."""
from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from plumber_agent.clock import FakeClock
from plumber_agent.fleet.writer import RETRY_INITIAL_S, StatusWriter

T0 = "2026-11-28T21:00:00Z"


def template_object(name: str) -> dict:
    return {"metadata": {"name": name, "generation": 1, "uid": f"uid-{name}",
                         "creationTimestamp": T0},
            "spec": {"interfaceConfig": [{"name": "eno1", "mtu": 9000}],
                     "rollout": {"maxUnavailable": 1}}}


class Client:
    """Answers template status writes with the next scripted error (None: success)."""

    def __init__(self, errors):
        self.errors = list(errors)
        self.patched: list[str] = []
        self.events = 0

    def patch_template_status(self, name, patch):
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error
        self.patched.append(name)

    def create_event(self, *_a, **_kw):
        self.events += 1

    def delete_lease(self, *_a, **_kw):
        raise AssertionError("no slot to collect")


def _error(code: int, retry_after: str | None) -> ApiException:
    exc = ApiException(status=code, reason="x")
    exc.headers = {"Retry-After": retry_after} if retry_after else {}
    return exc


def writer(client) -> StatusWriter:
    templates = {f"template/{n}": template_object(n) for n in ("a", "b", "c")}
    return StatusWriter(client=client, namespace="ns", identity="n1", clock=FakeClock(),
                        templates=lambda: templates, slots=list,
                        make_reflector=lambda *a: None)


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_holds_the_next_pass_and_ends_this_one(code):
    client = Client([_error(code, "9")])
    w = writer(client)
    w.sync([{"metadata": {"name": "n1", "labels": {}}}], {})
    assert w.hold_s == 9.0
    assert client.patched == []  # nothing more written once the server asked for a pause


def test_other_failures_back_off_with_jitter_and_a_good_pass_resets():
    client = Client([ApiException(status=500, reason="x")])
    w = writer(client)
    nodes = [{"metadata": {"name": "n1", "labels": {}}}]
    w.sync(nodes, {})
    assert 0.0 <= w.hold_s <= RETRY_INITIAL_S
    assert sorted(client.patched) == ["b", "c"]  # the others still written
    w.hold_s = 0.0
    w.sync(nodes, {})
    assert w.hold_s == 0.0 and "a" in client.patched[2:]  # retried; the backoff reset


def test_a_forbidden_template_status_write_is_named_and_counted(caplog):
    """apierrors: a 403 reads "permission denied: patch .../status <name>" with the
    ClusterRole to check, and is counted as template_status_write/Forbidden."""
    import logging

    from plumber_agent.apierrors import api_error_metric
    from plumber_agent.ops import Metrics
    forbidden = ApiException(status=403, reason="Forbidden")
    forbidden.body = ('{"kind": "Status", "reason": "Forbidden", "message": '
                      '"hostnetworktemplates.plumber.k8s.pf9.io \\"a\\" is forbidden: User"}')
    client, metrics = Client([forbidden]), Metrics()
    templates = {"template/a": template_object("a")}
    w = StatusWriter(client=client, namespace="ns", identity="n1", clock=FakeClock(),
                     templates=lambda: templates, slots=list, make_reflector=lambda *a: None,
                     metrics=metrics)
    with caplog.at_level(logging.WARNING, logger="plumber_agent.fleet.writer"):
        w.sync([{"metadata": {"name": "n1", "labels": {}}}], {})
    assert ("cannot write the status of template a: permission denied: patch "
            "hostnetworktemplates.plumber.k8s.pf9.io/status a (hostnetworktemplates."
            'plumber.k8s.pf9.io "a" is forbidden: User); check the ClusterRole plumber-agent'
            ) in caplog.text
    assert metrics.get(api_error_metric("template_status_write", "Forbidden")) == 1
