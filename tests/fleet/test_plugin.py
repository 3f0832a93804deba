"""`kubectl plumber status|plan` against the fake API server holding hand-made fleet state:
Nodes, a template at generation 2 with its status, HostNetworks whose status.templates[] entries
are in every state, and slot Leases (docs/rollout.md, "The kubectl plugin")."""
from __future__ import annotations

import io
import json
import os
import pathlib
import re
import stat
import subprocess
import sys

import pytest

from plumber_agent.fleet import plugin
from plumber_agent.fleet.slots import template_spec_hash
from plumber_agent.models.parse import template_from_object

TEMPLATE = "edge-mtu"
SLOT_NAMESPACE = "plumber-system"
LONG_MESSAGE = "ip link set dev eno1 mtu 9000 refused: " + "Operation not supported " * 20

TEMPLATE_STATUS = {
    "observedGeneration": 2, "phase": "Progressing", "maxUnavailable": 2,
    "nodes": {"matching": 7, "applied": 1, "failed": 1, "conflict": 0, "invalid": 0,
              "waiting": 1, "applying": 1, "previewed": 0, "wouldChange": 0, "unknown": 3},
    "conditions": [
        {"type": "Available", "status": "False", "reason": "RollingOut",
         "message": "1 of 7 nodes applied", "lastTransitionTime": "2026-11-28T21:00:00Z",
         "observedGeneration": 2}],
    "failingNodes": [{"node": "n-failed", "state": "Failed", "message": "mtu refused"}],
}


def node(name, **labels):
    return {"metadata": {"name": name, "labels": labels}}


def hostnetwork(name, *entries):
    return {"metadata": {"name": name}, "spec": {},
            "status": {"templates": [dict(entry) for entry in entries]}}


def entry(state, generation=2, message=None, template=TEMPLATE, **extra):
    result = {"name": template, "state": state, "observedGeneration": generation, **extra}
    if message is not None:
        result["message"] = message
    return result


def spec_hash_of(template):
    """The rollout identity the agent writes on its slot Leases: the network spec's hash."""
    return template_spec_hash(template_from_object(template))


def slot_lease(name, holder, template, *, generation, phase, message=None,
               namespace=SLOT_NAMESPACE, spec_hash=None):
    """A slot Lease as the agent writes it; `spec_hash` defaults to `template`'s own."""
    annotations = {"plumber.k8s.pf9.io/template": template["metadata"]["name"],
                   "plumber.k8s.pf9.io/template-uid": template["metadata"]["uid"],
                   "plumber.k8s.pf9.io/generation": str(generation),
                   "plumber.k8s.pf9.io/spec-hash": (spec_hash_of(template) if spec_hash is None
                                                    else spec_hash),
                   "plumber.k8s.pf9.io/phase": phase}
    if message:
        annotations["plumber.k8s.pf9.io/message"] = message
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "plumber-agent",
                                    "plumber.k8s.pf9.io/lease": "rollout-slot"},
                         "annotations": annotations},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 30}}


SPEC_V1 = {"nodeSelector": {"role": "edge"}, "interfaceConfig": [{"name": "eno1"}]}
SPEC_V2 = {**SPEC_V1, "interfaceConfig": [{"name": "eno1", "mtu": 9000}]}


def put_template(fake_api, *, status=TEMPLATE_STATUS, dry_run=None):
    """The template, edited once (its network spec: SPEC_V1 -> SPEC_V2) so it is at generation 2
    (put_object bumps it on a spec change, as the API server does)."""
    fake_api.put_object("hostnetworktemplates", {"metadata": {"name": TEMPLATE}, "spec": SPEC_V1})
    spec = dict(SPEC_V2)
    if dry_run is not None:
        spec["rollout"] = {"maxUnavailable": 2, "dryRun": dry_run}
    body = {"metadata": {"name": TEMPLATE}, "spec": spec}
    if status is not None:
        body["status"] = status
    template = fake_api.put_object("hostnetworktemplates", body)
    assert template["metadata"]["generation"] == 2
    return template


@pytest.fixture
def fleet(fake_api):
    """Seven matching nodes in seven situations, one non-matching node that still reports a
    Conflict, one that reports NotSelected, and slot Leases: current, stale and foreign."""
    template = put_template(fake_api)
    for name in ("n-applied", "n-failed", "n-applying", "n-waiting", "n-unknown", "n-stale",
                 "n-invalid"):
        fake_api.put_object("nodes", node(name, role="edge"))
    fake_api.put_object("nodes", node("n-core", role="core"))
    fake_api.put_object("nodes", node("n-relabelled", role="core"))
    fake_api.put_object("hostnetworks", hostnetwork("n-applied", entry("Applied"),
                                                    entry("Applied", 5, template="other")))
    fake_api.put_object("hostnetworks", hostnetwork("n-failed", entry("Failed", message="x")))
    # The HostNetwork still says Applied at generation 1: the Lease says it applies 2 now.
    fake_api.put_object("hostnetworks", hostnetwork("n-applying", entry("Applied", 1)))
    fake_api.put_object("hostnetworks", hostnetwork(
        "n-waiting", entry("Waiting", message="all 2 rollout slots are taken",
                           plannedActions=["set mtu 9000 on eno1"], plannedActionCount=1)))
    fake_api.put_object("hostnetworks", hostnetwork("n-stale", entry("Applied", 1)))
    fake_api.put_object("hostnetworks", hostnetwork(
        "n-invalid", entry("Invalid", message=LONG_MESSAGE)))
    fake_api.put_object("hostnetworks", hostnetwork("n-core", entry("NotSelected")))
    fake_api.put_object("hostnetworks", hostnetwork(
        "n-relabelled", entry("Conflict", message="template t0 wins mtu of eno1")))
    other = {"metadata": {"name": "other", "uid": "0000-other"}}
    for lease in (
            slot_lease("rollout-edge-mtu-0", "n-applying", template, generation=2,
                       phase="Applying"),
            slot_lease("rollout-edge-mtu-1", "n-failed", template, generation=2,
                       phase="Failed", message="ip link set dev eno1 mtu 9000: refused"),
            # A slot of generation 1 (the old network spec) is free for generation 2: it
            # makes no node Applying.
            slot_lease("rollout-edge-mtu-2", "n-waiting", template, generation=1,
                       phase="Applying", spec_hash=spec_hash_of({**template, "spec": SPEC_V1})),
            # Another template's uid, even with this spec's hash, is no slot of this rollout.
            slot_lease("rollout-other-0", "n-applied", other, generation=2,
                       phase="Applying", spec_hash=spec_hash_of(template))):
        fake_api.put_object("leases", lease)
    return template


def run(argv, monkeypatch=None, columns=140):
    """main(argv) -> (exit code, stdout)."""
    if monkeypatch is not None:
        monkeypatch.setenv("COLUMNS", str(columns))
    out = io.StringIO()
    code = plugin.main(argv, out=out)
    return code, out.getvalue()


def table(text):
    """The rows under the NODE header, cut at the header's column offsets."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("NODE"))
    header = lines[start]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    rows = []
    for line in lines[start + 1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        rows.append(dict(zip(names, cells)))
    return names, rows


def test_status_rows_states_slots_and_order(fake_api, kubeconfig, fleet, monkeypatch):
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    code, out = run(["status", TEMPLATE, "--kubeconfig", kubeconfig], monkeypatch)
    assert code == 0, out
    header = out.split("\n\n")[0]
    assert "Template:        edge-mtu" in header
    assert "Generation:      2 (status observed 2)" in header
    assert "Phase:           Progressing" in header
    assert "MaxUnavailable:  2" in header
    assert ("Nodes:           matching 7, applied 1, failed 1, conflict 0, invalid 0, waiting 1, "
            "applying 1, previewed 0, wouldChange 0, unknown 3") in header
    names, rows = table(out)
    assert names == ["NODE", "STATE", "GENERATION", "SLOT", "MESSAGE"]
    # Failing first (by name among them), then applying, waiting, unknown, applied; n-core
    # (NotSelected, not matching) has no row, n-relabelled (not matching, Conflict) has one.
    assert [(r["NODE"], r["STATE"]) for r in rows] == [
        ("n-failed", "Failed"), ("n-invalid", "Invalid"), ("n-relabelled", "Conflict"),
        ("n-applying", "Applying"), ("n-waiting", "Waiting"), ("n-unknown", "Unknown"),
        ("n-applied", "Applied"), ("n-stale", "Applied (gen 1)")]
    by_node = {r["NODE"]: r for r in rows}
    assert by_node["n-applying"]["SLOT"] == "rollout-edge-mtu-0 (Applying)"
    assert by_node["n-failed"]["SLOT"] == "rollout-edge-mtu-1 (Failed)"
    # Stale (generation 1) and foreign (other template's uid) Leases are no slot of this rollout.
    assert by_node["n-waiting"]["SLOT"] == "" and by_node["n-applied"]["SLOT"] == ""
    assert (by_node["n-unknown"]["GENERATION"], by_node["n-stale"]["GENERATION"],
            by_node["n-applied"]["GENERATION"], by_node["n-applying"]["GENERATION"]) == (
        "", "1", "2", "2")
    assert by_node["n-waiting"]["MESSAGE"] == "all 2 rollout slots are taken"
    assert by_node["n-relabelled"]["MESSAGE"] == "template t0 wins mtu of eno1"
    # A long message is cut to the terminal width (COLUMNS=140) and marked.
    invalid_line = next(line for line in out.splitlines() if line.startswith("n-invalid"))
    assert len(invalid_line) == 140 and invalid_line.endswith("...")
    assert by_node["n-invalid"]["MESSAGE"].startswith("ip link set dev eno1 mtu 9000 refused")


def test_status_json_has_full_messages_and_slots(fake_api, kubeconfig, fleet, monkeypatch):
    code, out = run(["status", TEMPLATE, "-o", "json", "--kubeconfig", kubeconfig,
                     "--namespace", SLOT_NAMESPACE])
    assert code == 0
    doc = json.loads(out)
    assert (doc["template"], doc["generation"], doc["uid"]) == (
        TEMPLATE, 2, fleet["metadata"]["uid"])
    assert doc["status"] == TEMPLATE_STATUS
    nodes = {row["node"]: row for row in doc["nodes"]}
    assert [row["node"] for row in doc["nodes"]][:3] == ["n-failed", "n-invalid", "n-relabelled"]
    assert nodes["n-invalid"]["message"] == LONG_MESSAGE
    assert nodes["n-failed"]["slot"] == {
        "name": "rollout-edge-mtu-1", "phase": "Failed",
        "message": "ip link set dev eno1 mtu 9000: refused"}
    # Applying (from the Lease) is about generation 2; the entry as published still says 1.
    assert (nodes["n-applying"]["state"], nodes["n-applying"]["generation"],
            nodes["n-applying"]["stale"]) == ("Applying", 2, False)
    assert nodes["n-applying"]["entry"] == entry("Applied", 1)
    assert nodes["n-stale"] == {"node": "n-stale", "state": "Applied", "generation": 1,
                                "stale": True, "slot": None, "message": "",
                                "entry": entry("Applied", 1)}
    assert (nodes["n-unknown"]["state"], nodes["n-unknown"]["entry"]) == ("Unknown", None)
    assert nodes["n-waiting"]["entry"]["plannedActions"] == ["set mtu 9000 on eno1"]
    assert "n-core" not in nodes


def test_status_reads_leases_in_the_namespace_given(fake_api, kubeconfig, fleet, monkeypatch):
    """Slots in another namespace are not this agent's: n-applying shows its HostNetwork."""
    monkeypatch.setenv("POD_NAMESPACE", "elsewhere")
    code, out = run(["status", TEMPLATE, "-o", "json", "--kubeconfig", kubeconfig])
    assert code == 0
    nodes = {row["node"]: row for row in json.loads(out)["nodes"]}
    assert (nodes["n-applying"]["state"], nodes["n-applying"]["slot"]) == ("Applied", None)
    assert nodes["n-applying"]["stale"] is True
    assert json.loads(out)["slotNamespace"] == "elsewhere"
    # Options before the command work too (kubectl users put flags anywhere).
    code, out = run(["--kubeconfig", kubeconfig, "-n", SLOT_NAMESPACE, "status", TEMPLATE,
                     "-o", "json"])
    assert code == 0
    nodes = {row["node"]: row for row in json.loads(out)["nodes"]}
    assert nodes["n-applying"]["slot"]["name"] == "rollout-edge-mtu-0"


def test_an_edit_of_spec_rollout_only_keeps_the_slots(fake_api, kubeconfig, fleet):
    """maxUnavailable raised (generation 3, same network spec): the Leases written at
    generation 2 are still this rollout's, so n-applying applies and n-failed keeps its slot;
    a Lease that carries no spec hash belongs to no rollout."""
    raised = fake_api.put_object("hostnetworktemplates", {
        "metadata": {"name": TEMPLATE},
        "spec": {**SPEC_V2, "rollout": {"maxUnavailable": 3}}, "status": TEMPLATE_STATUS})
    assert raised["metadata"]["generation"] == 3
    assert spec_hash_of(raised) == spec_hash_of(fleet)
    unhashed = slot_lease("rollout-edge-mtu-3", "n-unknown", raised, generation=3,
                          phase="Applying")
    del unhashed["metadata"]["annotations"]["plumber.k8s.pf9.io/spec-hash"]
    fake_api.put_object("leases", unhashed)
    code, out = run(["status", TEMPLATE, "-o", "json", "--kubeconfig", kubeconfig,
                     "--namespace", SLOT_NAMESPACE])
    assert code == 0
    nodes = {row["node"]: row for row in json.loads(out)["nodes"]}
    assert (nodes["n-applying"]["state"], nodes["n-applying"]["generation"],
            nodes["n-applying"]["slot"]) == (
        "Applying", 3, {"name": "rollout-edge-mtu-0", "phase": "Applying"})
    assert nodes["n-failed"]["slot"]["name"] == "rollout-edge-mtu-1"
    assert nodes["n-failed"]["slot"]["phase"] == "Failed"
    assert (nodes["n-unknown"]["state"], nodes["n-unknown"]["slot"]) == ("Unknown", None)
    assert (nodes["n-waiting"]["state"], nodes["n-waiting"]["slot"]) == ("Waiting", None)


def test_status_without_template_status(fake_api, kubeconfig, monkeypatch):
    put_template(fake_api, status=None)
    fake_api.put_object("nodes", node("n-1", role="edge"))
    fake_api.put_object("nodes", node("n-2", role="edge"))
    code, out = run(["status", TEMPLATE, "--kubeconfig", kubeconfig], monkeypatch)
    assert code == 0
    assert "Status:          no status yet" in out
    _, rows = table(out)
    assert [(r["NODE"], r["STATE"], r["SLOT"]) for r in rows] == [
        ("n-1", "Unknown", ""), ("n-2", "Unknown", "")]


def test_empty_selector_matches_every_node(fake_api, kubeconfig, monkeypatch):
    fake_api.put_object("hostnetworktemplates", {"metadata": {"name": "all"}, "spec": {
        "interfaceConfig": [{"name": "eno1"}]}})
    for name in ("b", "a"):
        fake_api.put_object("nodes", node(name, anything="x"))
    code, out = run(["status", "all", "--kubeconfig", kubeconfig], monkeypatch)
    assert code == 0
    assert [r["NODE"] for r in table(out)[1]] == ["a", "b"]


def test_missing_template_is_notfound_like_kubectl(fake_api, kubeconfig, capsys):
    for command in ("status", "plan"):
        code, out = run([command, "nope", "--kubeconfig", kubeconfig])
        assert (code, out) == (1, "")
        assert capsys.readouterr().err.strip() == (
            'Error from server (NotFound): hostnetworktemplates.plumber.k8s.pf9.io "nope" '
            'not found')


def test_respects_kubeconfig_env_and_context(fake_api, kubeconfig, fleet, monkeypatch, capsys):
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    code, out = run(["status", TEMPLATE, "-o", "json", "--context", "fake"])
    assert code == 0 and json.loads(out)["template"] == TEMPLATE
    code, out = run(["status", TEMPLATE, "--context", "no-such-context"])
    assert code == 1 and "no-such-context" in capsys.readouterr().err


def test_api_errors_are_worded_like_kubectl(fake_api, kubeconfig, fleet, capsys):
    fake_api.set_token("rotated")
    code, _ = run(["status", TEMPLATE, "--kubeconfig", kubeconfig])
    assert code == 1
    assert capsys.readouterr().err.startswith("Error from server (Unauthorized)")


def test_plan_prints_each_nodes_actions(fake_api, kubeconfig):
    put_template(fake_api, dry_run=True)
    actions = [f"add vlan {100 + i} on eno1" for i in range(20)] + ["... and 5 more"]
    fake_api.put_object("hostnetworks", hostnetwork(
        "n-b", entry("Previewed", plannedActions=actions, plannedActionCount=25)))
    fake_api.put_object("hostnetworks", hostnetwork(
        "n-a", entry("Previewed", plannedActions=[], plannedActionCount=0)))
    fake_api.put_object("hostnetworks", hostnetwork(
        "n-c", entry("Waiting", plannedActions=["set mtu 9000 on eno1"], plannedActionCount=1)))
    fake_api.put_object("hostnetworks", hostnetwork("n-d", entry("Applied")))
    code, out = run(["plan", TEMPLATE, "--kubeconfig", kubeconfig])
    assert code == 0
    assert out.splitlines()[0] == "# edge-mtu generation 2: 2 of 3 node(s) with a plan would change"
    blocks = out.split("\n\n")[1:]
    assert blocks[0] == "# node n-a: no host changes"
    assert blocks[1].splitlines() == ["# node n-b: Previewed, 25 planned action(s)", *actions]
    assert blocks[2] == "# node n-c: Waiting, 1 planned action(s)\nset mtu 9000 on eno1\n"
    assert "n-d" not in out


def test_plan_without_any_plan_says_so(fake_api, kubeconfig):
    put_template(fake_api)
    fake_api.put_object("hostnetworks", hostnetwork("n-a", entry("Applied")))
    code, out = run(["plan", TEMPLATE, "--kubeconfig", kubeconfig])
    assert code == 0 and out.startswith("# no node has published a plan for edge-mtu")


def test_kubectl_finds_and_runs_the_plugin(fake_api, fleet, kubectl_binary, tls_kubeconfig,
                                           tmp_path):
    """`kubectl plumber ...` through the real kubectl: it looks up `kubectl-plumber` on PATH and
    hands it the arguments after the plugin name. The shim stands in for the console script
    that `pip install` writes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "kubectl-plumber"
    shim.write_text(f"#!{sys.executable}\nimport runpy\n"
                    "runpy.run_module('plumber_agent.fleet.plugin', run_name='__main__')\n")
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    source_root = str(pathlib.Path(plugin.__file__).resolve().parents[2])
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [source_root,
                                                       os.environ.get("PYTHONPATH")])),
           "COLUMNS": "120"}
    env.pop("KUBECONFIG", None)
    listed = subprocess.run([kubectl_binary, "plugin", "list"], capture_output=True, text=True,
                            env=env, timeout=60, check=False)
    assert str(shim) in listed.stdout, listed.stdout + listed.stderr
    proc = subprocess.run([kubectl_binary, "plumber", "status", TEMPLATE, "--kubeconfig",
                           tls_kubeconfig, "--namespace", SLOT_NAMESPACE], capture_output=True,
                          text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    _, rows = table(proc.stdout)
    assert [r["NODE"] for r in rows][:4] == ["n-failed", "n-invalid", "n-relabelled",
                                             "n-applying"]
    # The plugin (not kubectl) listed the slot Leases, over kubectl's TLS kubeconfig.
    [lease_list] = fake_api.requests(path_contains=f"/namespaces/{SLOT_NAMESPACE}/leases")
    assert lease_list.query.get("labelSelector") == "plumber.k8s.pf9.io/lease=rollout-slot"
    missing = subprocess.run([kubectl_binary, "plumber", "status", "nope", "--kubeconfig",
                              tls_kubeconfig], capture_output=True, text=True, env=env,
                             timeout=60, check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == ('Error from server (NotFound): '
                                      'hostnetworktemplates.plumber.k8s.pf9.io "nope" not found')


def test_module_runs_as_a_script():
    proc = subprocess.run([sys.executable, "-m", "plumber_agent.fleet.plugin", "--help"],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0 and "usage: kubectl plumber" in proc.stdout



def summary(text):
    """The rows of `status` without a template, cut at the header's column offsets."""
    lines = text.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
    names = lines[0].split()
    return names, [dict(zip(names, [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]))
                   for line in lines[1:]]


def test_status_without_a_template_lists_every_template_with_its_counts(fake_api, kubeconfig,
                                                                         fleet, monkeypatch):
    """`kubectl plumber status` alone: one row per template (by name), its phase, generation and
    the writer's counts; a template without status yet says so instead of failing."""
    fake_api.put_object("hostnetworktemplates", {"metadata": {"name": "a-new"}, "spec": SPEC_V1})
    lagging = dict(TEMPLATE_STATUS, observedGeneration=1, phase="Available",
                   nodes={"matching": 2, "applied": 2})
    fake_api.put_object("hostnetworktemplates", {"metadata": {"name": "z-old"}, "spec": SPEC_V1})
    fake_api.put_object("hostnetworktemplates", {"metadata": {"name": "z-old"}, "spec": SPEC_V2,
                                                 "status": lagging})
    code, out = run(["status", "--kubeconfig", kubeconfig], monkeypatch)
    assert code == 0, out
    names, rows = summary(out)
    assert names == list(plugin.SUMMARY_COLUMNS)
    assert [r["NAME"] for r in rows] == ["a-new", TEMPLATE, "z-old"]
    by_name = {r["NAME"]: r for r in rows}
    assert by_name[TEMPLATE] == {
        "NAME": TEMPLATE, "PHASE": "Progressing", "GENERATION": "2", "MATCHING": "7",
        "APPLIED": "1", "FAILED": "1", "CONFLICT": "0", "INVALID": "0", "WAITING": "1",
        "APPLYING": "1", "UNKNOWN": "3"}
    assert (by_name["a-new"]["PHASE"], by_name["a-new"]["MATCHING"]) == ("<none>", "")
    assert (by_name["z-old"]["GENERATION"], by_name["z-old"]["APPLIED"]) == ("2 (status 1)", "2")

    code, out = run(["status", "-o", "json", "--kubeconfig", kubeconfig])
    assert code == 0
    doc = {t["name"]: t for t in json.loads(out)["templates"]}
    assert doc[TEMPLATE]["counts"] == TEMPLATE_STATUS["nodes"]
    assert doc["z-old"]["observedGeneration"] == 1 and doc["a-new"]["phase"] == "<none>"


def test_status_without_a_template_in_an_empty_cluster_says_so(fake_api, kubeconfig):
    code, out = run(["status", "--kubeconfig", kubeconfig])
    assert code == 0
    assert out.strip() == ("No resources found: no hostnetworktemplates.plumber.k8s.pf9.io "
                           "in the cluster.")
