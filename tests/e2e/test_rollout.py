"""Fleet rollout across ten real agents (docs/rollout.md): the limit on how many nodes change at
once, the halt on failure, the dry-run preview, and the template's status written by the elected
status writer; then the ways a fleet breaks: slot holders SIGKILLed mid-apply, the status writer
killed, the API server restarted, and a Node deleted while it holds a failed slot.

Why measured from the agents' own logs: the limit is a promise about what the hosts went through,
not about what a status says afterwards. Each agent logs `"rollout": "applying"` when it starts a
new generation under a slot and `"applied"`/`"failed"` when it is done, and the executor logs every
host action with its template; an action outside its node's interval, or more than
`maxUnavailable` intervals open at one time, is a broken limit whatever the status claims.

One 10-node cluster is shared by the module (short lease durations so expiry and takeover happen
within seconds); each test returns every node to its baseline (tests/e2e/steps.py).
"""
from __future__ import annotations

import time

import pytest

from tests.e2e.cluster import CONVERGE_TIMEOUT_S, template
from tests.e2e.rollout import (  # noqa: F401 - rollout_baseline, rollout_cluster: the fixtures
    EVERY_NODE, GENERATION_ANNOTATION, LIMIT, NODE_COUNT, SLOT_LEASE_S, SRIOV_SPEC,
    STATUS_TAKEOVER_S, assert_rollout_under_limit, assert_untouched, condition, event_on,
    failing_spec, fixed_interfaces, generation_of, hold_two_mid_apply, holder, holds_for,
    log_marks, need_sriov, plan_lines, rollout_baseline, rollout_cluster, slot_leases, slot_phase,
    states_at, status_writer, unpark, wait_all_applied, wait_halted, wait_template_status)
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]


def test_rollout_respects_max_unavailable_and_reports_available(steps):
    name = "e2e-rollout-mtu"
    obj = template(name, {"interfaceConfig": [{"name": "eno1", "mtu": 9000,
                                               "ipv4": {"address": ["10.81.0.1/24"]}}],
                          "rollout": {"maxUnavailable": LIMIT}}, node_selector=EVERY_NODE)
    marks = log_marks(steps.cluster)
    steps.apply(obj)
    wait_all_applied(steps, obj)
    generation = generation_of(steps, name)

    assert_rollout_under_limit(steps.cluster, marks, name, generation, LIMIT)
    status = wait_template_status(steps, name, phase="Available", matching=NODE_COUNT,
                                  applied=NODE_COUNT, failed=0, waiting=0, applying=0, unknown=0)
    assert status["maxUnavailable"] == LIMIT, status
    available = condition(status, "Available")
    assert available["status"] == "True", available
    assert available.get("observedGeneration") == generation, available
    assert condition(status, "Degraded")["status"] == "False", status
    assert not status.get("failingNodes"), status
    wait_for(lambda: event_on(steps, name, "RolloutComplete"), timeout_s=CONVERGE_TIMEOUT_S,
             what=f"RolloutComplete Event on {name}")
    # Every slot was released after its node applied.
    left = [lease for lease in slot_leases(steps.api, name)
            if (lease["metadata"].get("annotations") or {}).get(GENERATION_ANNOTATION) == str(generation)]
    assert not left, f"slots still held after every node applied: {left}"


def test_failure_everywhere_halts_at_the_limit_and_a_fix_rolls_out(steps):
    name = "e2e-rollout-halt"
    obj = template(name, failing_spec(), node_selector=EVERY_NODE)
    steps.apply(obj)
    generation = generation_of(steps, name)
    failed, waiting = wait_halted(steps, name, generation)

    for node in failed:
        # The kernel's answer (its extended ack), as the agent got it.
        steps.assert_state(node, name, "Failed", contains=["10.71.0.0/16", "ENETUNREACH",
                                                           "Nexthop has invalid gateway"])
    for node in waiting:
        entry = steps.assert_state(node, name, "Waiting")
        assert entry.get("plannedActionCount", 0) >= 2, entry
        assert any("10.71.0.0/16" in line for line in entry.get("plannedActions") or []), entry
        assert any("mtu" in line and "eno2" in line for line in entry.get("plannedActions") or []), entry
    assert_untouched(steps, waiting)
    for node in failed:
        assert steps.cluster.node(node).mtu("eno2") == 9000, "the part that applies stays applied"

    slots = slot_leases(steps.api, name)
    assert sorted(holder(s) for s in slots) == sorted(failed), slots
    assert {slot_phase(s) for s in slots} == {"Failed"}, slots
    for slot in slots:
        note = (slot["metadata"].get("annotations") or {}).get("plumber.k8s.pf9.io/message", "")
        assert "Nexthop has invalid gateway" in note, slot

    status = wait_template_status(steps, name, phase="Halted", matching=NODE_COUNT, applied=0,
                                  failed=LIMIT, waiting=NODE_COUNT - LIMIT)
    degraded = condition(status, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "RolloutHalted", degraded
    assert sorted(f["node"] for f in status.get("failingNodes") or []) == sorted(failed), status
    assert all(f["state"] == "Failed" and "Nexthop has invalid gateway" in f.get("message", "")
               for f in status["failingNodes"]), status
    wait_for(lambda: event_on(steps, name, "RolloutHalted"), timeout_s=CONVERGE_TIMEOUT_S,
             what=f"RolloutHalted Event on {name}")
    # Halted stays halted: still nobody else tried (the waiting hosts are untouched).
    assert_untouched(steps, waiting)

    # The fix: an address that puts the gateway on-link. A new generation: a new rollout.
    marks = log_marks(steps.cluster)
    steps.patch(name, {"spec": {"interfaceConfig": fixed_interfaces()}})
    obj["spec"]["interfaceConfig"] = fixed_interfaces()
    wait_all_applied(steps, obj)
    assert_rollout_under_limit(steps.cluster, marks, name, generation_of(steps, name), LIMIT,
                               nodes=waiting + failed)
    wait_template_status(steps, name, phase="Available", matching=NODE_COUNT,
                         applied=NODE_COUNT, failed=0, waiting=0)


def test_dry_run_previews_everywhere_then_rolls_out_under_the_limit(steps, tmp_path):
    name = "e2e-rollout-preview"
    obj = template(name, {"interfaceConfig": [{"name": "enp3s0f0", "mtu": 9000,
                                               "ipv4": {"address": ["10.90.0.1/24"]}}],
                          "rollout": {"maxUnavailable": LIMIT, "dryRun": True}},
                   node_selector=EVERY_NODE)
    steps.apply(obj)
    generation = generation_of(steps, name)
    for node in steps.nodes:
        steps.wait_state(node.name, name, "Previewed")
    status = wait_template_status(steps, name, phase="DryRun", matching=NODE_COUNT,
                                  previewed=NODE_COUNT, wouldChange=NODE_COUNT, applied=0)
    assert condition(status, "Available")["status"] == "False", status
    assert_untouched(steps, [n.name for n in steps.nodes])
    assert not slot_leases(steps.api, name), "a dry run takes no slot"

    for node in steps.nodes:
        entry = steps.assert_state(node.name, name, "Previewed")
        lines = entry.get("plannedActions") or []
        assert entry.get("plannedActionCount") == len(lines), entry
        assert any("enp3s0f0" in line and "mtu" in line and "9000" in line for line in lines), entry
        assert any("10.90.0.1/24" in line for line in lines), entry
    # Worded exactly like `plumber-agent plan` on that node (first, middle and last node).
    for node in (steps.nodes[0], steps.nodes[NODE_COUNT // 2], steps.nodes[-1]):
        entry = steps.assert_state(node.name, name, "Previewed")
        assert entry["plannedActions"] == plan_lines(node, obj, tmp_path), entry

    marks = log_marks(steps.cluster)
    steps.patch(name, {"spec": {"rollout": {"dryRun": False}}})
    obj["spec"]["rollout"]["dryRun"] = False
    wait_all_applied(steps, obj)
    new_generation = generation_of(steps, name)
    assert new_generation > generation
    assert_rollout_under_limit(steps.cluster, marks, name, new_generation, LIMIT)
    status = wait_template_status(steps, name, phase="Available", matching=NODE_COUNT,
                                  applied=NODE_COUNT, previewed=0, wouldChange=0)
    for node in steps.nodes:
        entry = steps.assert_state(node.name, name, "Applied")
        assert "plannedActions" not in entry and "plannedActionCount" not in entry, entry


def test_live_holder_stuck_mid_apply_keeps_its_slot(steps):
    """A pass longer than the slot duration (VFs slow to appear) renews the slot: nobody else
    starts while the holders are alive, however long they take."""
    need_sriov(steps)
    name = "e2e-rollout-slow"
    obj = template(name, SRIOV_SPEC, node_selector=EVERY_NODE)
    marks = log_marks(steps.cluster)
    try:
        holders = hold_two_mid_apply(steps, name)

        def holders_keep_their_slots():
            now = sorted(holder(s) for s in slot_leases(steps.api, name))
            assert now == holders, f"live slot holders {holders} lost their slots: {now}"
        holds_for(holders_keep_their_slots, SLOT_LEASE_S * 2, what="live holders keep their slots")
    finally:
        unpark(steps)
    wait_all_applied(steps, obj)
    assert_rollout_under_limit(steps.cluster, marks, name, generation_of(steps, name), LIMIT)


def test_slot_holders_killed_mid_apply_their_slots_expire(steps):
    need_sriov(steps)
    name = "e2e-rollout-killed"
    obj = template(name, SRIOV_SPEC, node_selector=EVERY_NODE)
    pci = steps.nodes[0].pf("eno1").pci_addr
    marks = log_marks(steps.cluster)
    killed_at: dict[str, float] = {}
    try:
        victims = hold_two_mid_apply(steps, name)
        for who in victims:
            steps.cluster.node(who).kill_agent()
            killed_at[who] = time.time()
    finally:
        unpark(steps)

    # Their slots expire; the other eight apply while the victims are down.
    others = [n for n in steps.nodes if n.name not in victims]
    wait_all_applied(steps, obj, others)
    assert all(not steps.cluster.node(v).agent_running() for v in victims)
    taken_over = [s for s in slot_leases(steps.api, name) if holder(s) in victims]
    assert not taken_over, f"slots of the killed holders never expired: {taken_over}"
    wait_template_status(steps, name, phase="Progressing", matching=NODE_COUNT,
                         applied=NODE_COUNT - LIMIT)

    for who in victims:
        steps.cluster.node(who).ensure_agent_running()
    wait_all_applied(steps, obj)
    for node in steps.nodes:
        assert node.num_vfs(pci) == 4
    generation = generation_of(steps, name)
    # A restarted victim may find its VFs there already (the kernel finished what it started):
    # then its plan is empty and it takes the generation without a slot. So the victims are
    # checked on their hosts (above) and the others in the logs.
    assert_rollout_under_limit(steps.cluster, marks, name, generation, LIMIT,
                               nodes=[n.name for n in others], killed_at=killed_at)
    wait_template_status(steps, name, phase="Available", matching=NODE_COUNT,
                         applied=NODE_COUNT, failed=0, waiting=0, applying=0, unknown=0)


def test_status_writer_killed_a_new_leader_writes_within_seconds(steps):
    name = "e2e-rollout-writer"
    obj = template(name, {"interfaceConfig": [{"name": "enp3s0f1", "mtu": 2000}],
                          "rollout": {"maxUnavailable": 5}}, node_selector=EVERY_NODE)
    steps.apply(obj)
    wait_all_applied(steps, obj)
    wait_template_status(steps, name, phase="Available", matching=NODE_COUNT, applied=NODE_COUNT)

    leader = wait_for(lambda: status_writer(steps.api), timeout_s=CONVERGE_TIMEOUT_S,
                      what="a status writer")
    steps.cluster.node(leader).kill_agent()
    killed = time.monotonic()
    # Only `rollout` changes: no host changes, every live node takes the generation at once;
    # the dead node's entry stays behind (unknown), and the new leader must say so.
    steps.patch(name, {"spec": {"rollout": {"maxUnavailable": 3}}})
    status = wait_template_status(steps, name, phase="Progressing", timeout_s=STATUS_TAKEOVER_S,
                                  matching=NODE_COUNT, applied=NODE_COUNT - 1, unknown=1)
    took = time.monotonic() - killed
    assert status["maxUnavailable"] == 3, status
    new_leader = status_writer(steps.api)
    assert new_leader != leader, f"the dead {leader} still holds the status writer Lease"
    print(f"status rewritten by {new_leader} {took:.1f} s after {leader} was killed")

    steps.cluster.node(leader).ensure_agent_running()
    wait_template_status(steps, name, phase="Available", timeout_s=STATUS_TAKEOVER_S,
                         matching=NODE_COUNT, applied=NODE_COUNT, unknown=0)


def test_api_server_restart_mid_rollout(steps):
    if getattr(steps.cluster, "server", None) is None:
        pytest.skip("the API server restart needs the in-repo fake API server")
    name = "e2e-rollout-apirestart"
    obj = template(name, {"interfaceConfig": [{"name": "enp3s0f1", "mtu": 1800}],
                          "rollout": {"maxUnavailable": LIMIT}}, node_selector=EVERY_NODE)
    marks = log_marks(steps.cluster)
    steps.apply(obj)
    generation = generation_of(steps, name)
    wait_for(lambda: len(states_at(steps, name, generation).get("Applied", [])) >= 1,
             timeout_s=CONVERGE_TIMEOUT_S, what=f"{name} applied on a first node")
    steps.cluster.restart_api_server()

    wait_all_applied(steps, obj)
    assert_rollout_under_limit(steps.cluster, marks, name, generation, LIMIT)
    wait_template_status(steps, name, phase="Available", matching=NODE_COUNT, applied=NODE_COUNT)
    # An edit after the restart is rolled out and reflected like any other.
    marks = log_marks(steps.cluster)
    steps.patch(name, {"spec": {"interfaceConfig": [{"name": "enp3s0f1", "mtu": 1700}]}})
    obj["spec"]["interfaceConfig"] = [{"name": "enp3s0f1", "mtu": 1700}]
    wait_all_applied(steps, obj)
    assert_rollout_under_limit(steps.cluster, marks, name, generation_of(steps, name), LIMIT)
    wait_template_status(steps, name, phase="Available", matching=NODE_COUNT, applied=NODE_COUNT)
    assert status_writer(steps.api)


def test_node_deleted_while_holding_a_failed_slot(steps):
    name = "e2e-rollout-nodegone"
    obj = template(name, failing_spec(), node_selector=EVERY_NODE)
    steps.apply(obj)
    generation = generation_of(steps, name)
    failed, waiting = wait_halted(steps, name, generation)
    gone = failed[0]
    gone_labels = steps.baseline["labels"][gone]
    steps.cluster.node(gone).kill_agent()
    steps.api.delete_node(gone)
    try:
        # The garbage collector deletes its slot (owned by its Node); a waiting node takes it
        # (and fails too: the template is still broken), so the rollout is halted again at the
        # limit, over the nine nodes left.
        wait_for(lambda: not [s for s in slot_leases(steps.api, name) if holder(s) == gone],
                 timeout_s=CONVERGE_TIMEOUT_S, what=f"the slot of deleted {gone} collected")
        remaining = [n.name for n in steps.nodes if n.name != gone]

        def halted_again():
            by_state = states_at(steps, name, generation, remaining)
            now_failed = by_state.get("Failed", [])
            if len(now_failed) != LIMIT or len(by_state.get("Waiting", [])) != len(remaining) - LIMIT:
                raise AssertionError(f"want {LIMIT} Failed among the nodes left: {by_state}")
            return now_failed
        now_failed = wait_for(halted_again, timeout_s=CONVERGE_TIMEOUT_S,
                              what=f"{name} halted again without {gone}")
        assert failed[1] in now_failed and gone not in now_failed, now_failed
        assert sorted(holder(s) for s in slot_leases(steps.api, name)) == sorted(now_failed)
        wait_template_status(steps, name, phase="Halted", matching=NODE_COUNT - 1,
                             failed=LIMIT, waiting=NODE_COUNT - 1 - LIMIT)
    finally:
        steps.api.ensure_node(gone, gone_labels)
        steps.cluster.node(gone).ensure_agent_running()


def test_a_node_selector_typo_undoes_under_the_limit(steps):
    """An edit that stops selecting every node (`kubernetes.io/oss`) is a mistake a limit must
    contain: each node undoes only under a slot, never more than LIMIT at once, while the
    others keep what they applied (docs/rollout.md, "Gated like an apply")."""
    name = "e2e-rollout-typo"
    obj = template(name, {"interfaceConfig": [{"name": "eno1", "mtu": 9000}],
                          "rollout": {"maxUnavailable": LIMIT}}, node_selector=EVERY_NODE)
    steps.apply(obj)
    wait_all_applied(steps, obj)
    marks = log_marks(steps.cluster)
    steps.patch(name, {"spec": {"nodeSelector": {"kubernetes.io/os": None,
                                                 "kubernetes.io/oss": "linux"}}})
    generation = generation_of(steps, name)
    for node in steps.nodes:
        steps.wait_baseline(node)
    # Each node logs "applied" just after its last host action: wait for the logs to end.
    wait_for(lambda: assert_rollout_under_limit(steps.cluster, marks, name, generation, LIMIT),
             timeout_s=CONVERGE_TIMEOUT_S, max_interval_s=1.0,
             what=f"every node undid {name} under the limit")
