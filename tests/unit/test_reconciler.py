"""Reconciler: one level-triggered pass over the fake host through the real Host facade,
planner and ledger; statuses, events, idle passes and rollback on loss of the API server."""
from plumber_agent.ops import Metrics
from plumber_agent.reconciler import Reconciler
from plumber_agent.rollback import RolledBack
from tests.support.fakehost import API_SERVER_IP, ListSource, Node, make_template, seed_host


class RecordingEvents:
    def __init__(self):
        self.reasons = []
        self.messages = []

    def emit(self, *, reason, message, warning=False, template=None):
        self.reasons.append((reason, template))
        self.messages.append((reason, message))


def _reconciler(node, source, *, probe=None, rolled_back=None, deadline_s=0.0):
    published, events = [], RecordingEvents()
    rec = Reconciler(host=node.host, source=source, publish=published.append, metrics=Metrics(),
                     events=events, api_server_ip=API_SERVER_IP, api_probe=probe,
                     api_loss_deadline_s=deadline_s, rolled_back=rolled_back)
    return rec, published, events


def _states(status):
    return {t["name"]: (t["state"], t.get("message") or "") for t in status.get("templates", [])}


def test_pass_applies_reports_and_an_idle_pass_publishes_nothing(tmp_path):
    fake = seed_host()
    node = Node(fake, tmp_path)
    source = ListSource([make_template("mtu", {"interfaceConfig": [{"name": "eno1", "mtu": 9000}]})])
    rec, published, events = _reconciler(node, source)
    outcome = rec.sync()
    assert outcome.ok and outcome.actions >= 1
    assert fake.links["eno1"].mtu == 9000
    assert _states(published[-1]) == {"mtu": ("Applied", "")}
    assert ("Applied", "mtu") in events.reasons
    count = len(published)
    for _ in range(5):
        assert rec.sync().actions == 0
    assert len(published) == count  # idle passes hand nothing to the reporter
    source.items = []  # template deleted: cleanup restores the MTU found
    rec.sync()
    assert fake.links["eno1"].mtu == 1500
    assert ("CleanupDone", None) in events.reasons


CUT = {"allowApiServerDisruption": True,
       "interfaceConfig": [{"name": "bond0", "ipv4": {"address": ["145.40.65.99/31"]}}]}


def test_allowed_change_that_loses_the_api_server_is_rolled_back(tmp_path):
    """The API answered before the change and not after it: every change of the template is
    undone from the ledger, it is reported, and the same generation is not retried."""
    fake = seed_host()
    node = Node(fake, tmp_path)
    answers = iter([True])  # reachable before the change, never again
    probe = lambda: next(answers, False)  # noqa: E731
    rolled = RolledBack(str(tmp_path / "rolled-back.json"))
    source = ListSource([make_template("cut", CUT)])
    rec, published, events = _reconciler(node, source, probe=probe, rolled_back=rolled)
    rec.sync()
    assert "145.40.65.95/31" in fake.links["bond0"].ipv4  # put back
    assert "145.40.65.99/31" not in fake.links["bond0"].ipv4
    state, message = _states(published[-1])["cut"]
    assert state == "Failed" and message.startswith("rolled back: the API server did not answer")
    assert ("RolledBack", None) in events.reasons
    assert rec.metrics.get("plumber_rollbacks_total") == 1  # PrometheusRule PlumberRollback
    assert 'plumber_template_state{state="Failed",template="cut"} 1\n' in rec.metrics.render()
    # Not retried (also after a restart), until the template is edited.
    rec2, published2, _ = _reconciler(node.restart(), source, probe=lambda: True,
                                      rolled_back=RolledBack(str(tmp_path / "rolled-back.json")))
    rec2.sync()
    assert "145.40.65.95/31" in fake.links["bond0"].ipv4
    source.items = [make_template("cut", CUT, generation=2)]
    rec2.sync()
    assert fake.links["bond0"].ipv4 == ["145.40.65.99/31"]
    assert _states(published2[-1])["cut"][0] == "Applied"


def test_allowed_change_is_kept_when_the_api_server_answers(tmp_path):
    fake = seed_host()
    node = Node(fake, tmp_path)
    rec, published, _ = _reconciler(node, ListSource([make_template("cut", CUT)]),
                                    probe=lambda: True)
    rec.sync()
    assert fake.links["bond0"].ipv4 == ["145.40.65.99/31"]
    assert _states(published[-1])["cut"][0] == "Applied"


def test_nothing_is_armed_when_the_api_server_was_already_unreachable(tmp_path):
    """A node bootstrapping without an API server is never blocked or rolled back."""
    fake = seed_host()
    node = Node(fake, tmp_path)
    rec, published, _ = _reconciler(node, ListSource([make_template("cut", CUT)]),
                                    probe=lambda: False)
    rec.sync()
    assert fake.links["bond0"].ipv4 == ["145.40.65.99/31"]
    assert _states(published[-1])["cut"][0] == "Applied"


def test_refused_without_the_opt_in(tmp_path):
    fake = seed_host()
    node = Node(fake, tmp_path)
    spec = {"interfaceConfig": [{"name": "bond0", "ipv4": {"address": ["145.40.65.99/31"]}}]}
    rec, published, _ = _reconciler(node, ListSource([make_template("cut", spec)]),
                                    probe=lambda: True)
    rec.sync()
    assert "145.40.65.95/31" in fake.links["bond0"].ipv4
    state, message = _states(published[-1])["cut"]
    assert state == "Failed" and "allowApiServerDisruption" in message


def test_a_failing_cleanup_is_shown_on_the_status_until_it_succeeds(tmp_path):
    """A deleted template leaves no entry of its own: a failure to undo its changes is shown as
    a Failed `(cleanup)` entry (counted in the summary), with no event on a template object,
    and the entry goes away once the cleanup succeeds."""
    from tests.support.fakehost import host_error
    import errno
    fake = seed_host()
    node = Node(fake, tmp_path)
    source = ListSource([make_template("mtu", {"interfaceConfig": [{"name": "eno1", "mtu": 9000}]})])
    rec, published, events = _reconciler(node, source)
    assert rec.sync().ok
    source.items = []
    fake.fail("set_mtu", "eno1", host_error(errno.EBUSY, "Device or resource busy"))
    outcome = rec.sync()
    assert not outcome.ok
    state, message = _states(published[-1])["(cleanup)"]
    assert state == "Failed" and "eno1" in message and "busy" in message.lower()
    assert published[-1]["summary"]["failed"] == 1
    assert ("Failed", None) in events.reasons  # on the HostNetwork only, not on a template
    assert rec.sync().ok  # retried: the fault was one-off
    assert fake.links["eno1"].mtu == 1500
    assert "(cleanup)" not in _states(published[-1])


def test_numvfs_drift_is_a_repair_not_a_cleanup(tmp_path):
    """numVfs written to 0 behind the agent's back destroys the VFs whose driver it had bound:
    their records are only forgotten (nothing on the host to undo), so the pass reports
    DriftRepaired and no CleanupDone while the template still exists."""
    fake = seed_host()
    node = Node(fake, tmp_path)
    source = ListSource([make_template("vfs", {"sriovConfig": [
        {"pfName": "eno2", "numVfs": 2, "vfDriver": "vfio-pci"}]})])
    rec, _published, events = _reconciler(node, source)
    assert rec.sync().ok
    pf = fake.pfs["0000:01:00.1"]
    assert pf.num_vfs == 2
    fake._destroy_vfs(pf)  # someone wrote 0 to sriov_numvfs
    events.reasons.clear()
    outcome = rec.sync()
    assert outcome.ok and pf.num_vfs == 2
    assert [pf.vf_drivers.get(i) for i in range(2)] == ["vfio-pci", "vfio-pci"]
    assert ("DriftRepaired", None) in events.reasons
    assert ("CleanupDone", None) not in events.reasons


def test_drift_repaired_names_what_was_put_back(tmp_path):
    """The DriftRepaired Event says which change was put back: with only a count, every repair
    on a node had the same note, and events/v1 folds equal notes into one series, so a second,
    different repair added no Event anyone could see."""
    fake = seed_host()
    node = Node(fake, tmp_path)
    rec, _published, events = _reconciler(node, ListSource([make_template("mtu", {
        "interfaceConfig": [{"name": "eno1", "mtu": 9000}]})]))
    assert rec.sync().ok
    fake.links["eno1"].mtu = 1500  # behind the agent's back
    assert rec.sync().ok and fake.links["eno1"].mtu == 9000
    notes = [m for r, m in events.messages if r == "DriftRepaired"]
    assert len(notes) == 1 and "eno1" in notes[0] and "mtu=9000" in notes[0], notes


def test_an_idle_pass_publishes_nothing_when_a_message_is_cut(tmp_path):
    """Issue 20: build_status cut a TemplateStatus message above MAX_MESSAGE in place, so the
    statuses remembered for the idle check never equalled the next pass's and every resync
    republished."""
    from plumber_agent.status_builder import MAX_MESSAGE
    node = Node(seed_host(), tmp_path)
    # Every route names a dev this node lacks: one failure each, joined far above the cut.
    bad = {"routes": {"ipv4": [{"dst": f"10.9.{i}.0/24", "dev": "nosuch0"} for i in range(40)]}}
    rec, published, _ = _reconciler(node, ListSource([make_template("bad", bad)]))
    rec.sync()
    state, message = _states(published[-1])["bad"]
    assert state == "Failed" and len(message) == MAX_MESSAGE and message.endswith("...")
    for _ in range(3):
        rec.sync()
    assert len(published) == 1


def test_the_nodes_conditions_are_published_and_a_change_republishes(tmp_path):
    """A failing leader election (cluster.ClusterWiring.conditions) is in the HostNetwork
    status as status.conditions, and its change alone is handed to the reporter."""
    from plumber_agent.models.status import NodeCondition
    node = Node(seed_host(), tmp_path)
    conditions: list = []
    published: list = []
    rec = Reconciler(host=node.host, source=ListSource([]), publish=published.append,
                     metrics=Metrics(), conditions=lambda: list(conditions))
    rec.sync()
    assert "conditions" not in published[-1]
    conditions.append(NodeCondition(type="LeaderElectionFailing", status="True",
                                    reason="Forbidden", message="permission denied: create"))
    rec.sync()
    assert published[-1]["conditions"] == [{"type": "LeaderElectionFailing", "status": "True",
                                            "reason": "Forbidden",
                                            "message": "permission denied: create"}]
    count = len(published)
    rec.sync()
    assert len(published) == count  # unchanged: nothing handed over
    conditions.clear()
    rec.sync()
    assert "conditions" not in published[-1]
