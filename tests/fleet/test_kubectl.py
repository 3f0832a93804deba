"""What a kubectl user sees of a rollout without the plugin: the real kubectl binary against the
fake API server, which renders discovery and printer columns from manifests/crds
(docs/rollout.md, "`status` of a HostNetworkTemplate")."""
from __future__ import annotations

import re
import threading

from tests.fleet.conftest import KUBECTL_TIMEOUT_S
from tests.helpers.wait import wait_for

TEMPLATE = "edge-mtu"


def template_status(*, available: str, reason: str, message: str) -> dict:
    return {
        "observedGeneration": 1, "phase": "Progressing" if available == "False" else "Available",
        "maxUnavailable": 2,
        "nodes": {"matching": 10, "applied": 4, "failed": 1, "conflict": 0, "invalid": 0,
                  "waiting": 3, "applying": 1, "previewed": 0, "wouldChange": 0, "unknown": 1},
        "conditions": [
            {"type": "Available", "status": available, "reason": reason, "message": message,
             "lastTransitionTime": "2026-11-28T21:00:00Z", "observedGeneration": 1},
            {"type": "Progressing", "status": "True" if available == "False" else "False",
             "reason": "RollingOut" if available == "False" else "RolloutComplete",
             "message": "3 nodes wait for a rollout slot",
             "lastTransitionTime": "2026-11-28T21:00:00Z", "observedGeneration": 1},
            {"type": "Degraded", "status": "True", "reason": "NodesFailing",
             "message": "1 node failed: n-3", "lastTransitionTime": "2026-11-28T21:00:00Z",
             "observedGeneration": 1}],
        "failingNodes": [{"node": "n-3", "state": "Failed", "message": "mtu 9000 refused"}],
    }


ROLLING_OUT = template_status(available="False", reason="RollingOut",
                              message="4 of 10 nodes applied")


def put_template(fake_api, status=ROLLING_OUT) -> dict:
    return fake_api.put_object("hostnetworktemplates", {
        "metadata": {"name": TEMPLATE},
        "spec": {"nodeSelector": {"role": "edge"},
                 "interfaceConfig": [{"name": "eno1", "mtu": 9000}]},
        "status": status})


def rows_of(out: str) -> tuple[list[str], dict[str, dict]]:
    lines = out.strip("\n").splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
    headers = lines[0].split()
    rows = {}
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        rows[cells[0]] = dict(zip(headers, cells))
    return headers, rows


def test_get_hnt_shows_the_rollout_columns(fake_api, run_kubectl):
    put_template(fake_api)
    proc = run_kubectl("get", "hnt")
    assert proc.returncode == 0, proc.stderr
    headers, rows = rows_of(proc.stdout)
    assert headers == ["NAME", "MATCHING", "APPLIED", "FAILED", "STATUS", "AGE"], proc.stdout
    row = rows[TEMPLATE]
    assert (row["MATCHING"], row["APPLIED"], row["FAILED"], row["STATUS"]) == (
        "10", "4", "1", "Progressing"), proc.stdout
    assert re.fullmatch(r"\d+s", row["AGE"]), proc.stdout


def test_wait_for_available_returns_once_the_condition_is_true(fake_api, run_kubectl):
    put_template(fake_api)
    done = template_status(available="True", reason="RolloutComplete",
                           message="10 of 10 nodes applied")

    def complete_later():  # once kubectl read False and watches for the change
        wait_for(lambda: fake_api.requests(path_contains="/hostnetworktemplates", watch=True),
                 timeout_s=KUBECTL_TIMEOUT_S, what="kubectl wait's watch")
        put_template(fake_api, done)

    writer = threading.Thread(target=complete_later, daemon=True)
    writer.start()
    proc = run_kubectl("wait", "--for=condition=Available", f"hnt/{TEMPLATE}", "--timeout=20s")
    writer.join(timeout=5)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == \
        f"hostnetworktemplate.plumber.k8s.pf9.io/{TEMPLATE} condition met"
    # It saw False first and watched for the change (not a lucky first read).
    watches = fake_api.requests(path_contains="/hostnetworktemplates", watch=True)
    assert watches, fake_api.request_log
    assert {w.query.get("fieldSelector") for w in watches} == {f"metadata.name={TEMPLATE}"}


def test_wait_for_available_times_out_while_it_stays_false(fake_api, run_kubectl):
    put_template(fake_api)
    proc = run_kubectl("wait", "--for=condition=Available", f"hnt/{TEMPLATE}", "--timeout=2s")
    assert proc.returncode != 0
    assert "timed out waiting for the condition" in proc.stderr, proc.stderr


def test_describe_shows_conditions_and_events(fake_api, run_kubectl):
    template = put_template(fake_api)
    fake_api.put_object("events", {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{TEMPLATE}.rollout-degraded", "namespace": "default"},
        "involvedObject": {"apiVersion": "plumber.k8s.pf9.io/v1", "kind": "HostNetworkTemplate",
                           "name": TEMPLATE, "uid": template["metadata"]["uid"]},
        "reason": "RolloutDegraded", "type": "Warning",
        "message": "1 node failed: n-3 (mtu 9000 refused)",
        "source": {"component": "plumber-agent"}, "reportingComponent": "plumber-agent",
        "firstTimestamp": "2026-11-28T21:00:00Z", "lastTimestamp": "2026-11-28T21:00:00Z",
        "count": 1})
    # An Event about an earlier template of the same name (another uid) is not this one's.
    fake_api.put_object("events", {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{TEMPLATE}.earlier", "namespace": "default"},
        "involvedObject": {"apiVersion": "plumber.k8s.pf9.io/v1", "kind": "HostNetworkTemplate",
                           "name": TEMPLATE, "uid": "00000000-0000-0000-0000-000000000000"},
        "reason": "RolloutComplete", "type": "Normal", "message": "an earlier template",
        "source": {"component": "plumber-agent"}, "count": 1,
        "firstTimestamp": "2026-11-28T20:00:00Z", "lastTimestamp": "2026-11-28T20:00:00Z"})
    proc = run_kubectl("describe", "hnt", TEMPLATE)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"^Name:\s+edge-mtu$", out, re.M), out
    assert re.search(r"^\s+Conditions:$", out, re.M), out
    assert re.search(r"^\s+Reason:\s+RollingOut$", out, re.M), out
    assert re.search(r"^\s+Message:\s+4 of 10 nodes applied$", out, re.M), out
    assert re.search(r"^\s+Type:\s+Available$", out, re.M), out
    events = out[out.index("\nEvents:"):]
    assert re.search(r"Warning\s+RolloutDegraded\s+.*plumber-agent\s+1 node failed: n-3 "
                     r"\(mtu 9000 refused\)", events), events
    assert "RolloutComplete" not in events, events
