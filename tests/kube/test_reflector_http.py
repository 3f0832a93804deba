"""The reflector with the real `kubernetes` client over real HTTP against the fake API server:
the same pitfalls, end to end through urllib3, chunked streams and sockets."""
from __future__ import annotations

import functools
import threading


from plumber_agent.clock import FakeClock
from plumber_agent.kube.client import KubeClient
from plumber_agent.kube.reflector import (
    NODE_KEY, Reflector, ReflectorSettings, labels_changed, node_key_of,
)
from tests.fakeapi import NODES, TEMPLATES
from tests.helpers.ports import free_port
from tests.helpers.wait import wait_for
from tests.kube.scripted import WAIT_BOUND_S, Recorder

# Real-time watchdog tick for HTTP tests; the decision still uses the FakeClock.
TEST_WATCHDOG_TICK_S = 0.01
HTTP_SETTINGS = ReflectorSettings(watchdog_tick_s=TEST_WATCHDOG_TICK_S)


def template(name, **spec):
    return {"apiVersion": "plumber.k8s.pf9.io/v1", "kind": "HostNetworkTemplate",
            "metadata": {"name": name}, "spec": spec or {"nodeSelector": {}}}


class Running:
    """A reflector on a thread, stopped and joined on exit."""

    def __init__(self, client, recorder, *, clock=None, settings=HTTP_SETTINGS, node=None):
        self.clock = clock or FakeClock(auto_advance=True)
        self.stop = threading.Event()
        if node:
            self.reflector = Reflector("node", functools.partial(client.list_node, node),
                                       functools.partial(client.watch_node, node), recorder,
                                       self.clock, settings=settings, key_fn=node_key_of,
                                       report_if=labels_changed)
        else:
            self.reflector = Reflector("templates", client.list_templates,
                                       client.watch_templates, recorder, self.clock,
                                       settings=settings)
        self.thread = threading.Thread(target=self.reflector.run, args=(self.stop,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.reflector

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive(), "reflector did not stop"


def test_stop_interrupts_a_silent_stream(fake_api, kube):
    fake_api.stall_streams(True)
    running = Running(kube, Recorder())
    with running as reflector:
        wait_for(lambda: fake_api.stalled_streams() >= 1 and reflector.watching(),
                   what="a stalled stream", timeout_s=WAIT_BOUND_S)
    assert not running.thread.is_alive()


def test_sync_add_modify_delete(fake_api, kube):
    fake_api.put_object(TEMPLATES, template("a"))
    rec = Recorder()
    with Running(kube, rec) as reflector:
        wait_for(reflector.has_synced, what="sync", timeout_s=WAIT_BOUND_S)
        wait_for(lambda: fake_api.open_streams(TEMPLATES), what="a watch", timeout_s=WAIT_BOUND_S)
        fake_api.put_object(TEMPLATES, template("b"))
        fake_api.put_object(TEMPLATES, template("a", sriovConfig=[]))
        fake_api.delete_object(TEMPLATES, "b")
        wait_for(lambda: len(rec.calls) >= 4, what="4 changes", timeout_s=WAIT_BOUND_S)
    assert [(t, k) for t, k, *_ in rec.calls] == [
        ("ADDED", "template/a"), ("ADDED", "template/b"), ("MODIFIED", "template/a"),
        ("DELETED", "template/b")]
    assert set(reflector.store()) == {"template/a"}
    assert reflector.store()["template/a"]["metadata"]["generation"] == 2


def test_410_on_rewatch_relists_and_reports_deletions(fake_api, kube):
    """docs/pitfalls.md 1+2: the stream drops, b is deleted and history compacted meanwhile; the
    re-watch gets ERROR 410; the relist reports b as DELETED."""
    for name in ("a", "b"):
        fake_api.put_object(TEMPLATES, template(name))
    rec = Recorder()
    with Running(kube, rec) as reflector:
        wait_for(lambda: fake_api.open_streams(TEMPLATES), what="a watch", timeout_s=WAIT_BOUND_S)
        fake_api.stall_streams(True)          # b's deletion is never streamed
        fake_api.delete_object(TEMPLATES, "b")
        fake_api.put_object(TEMPLATES, template("c"))
        fake_api.compact()
        fake_api.expire_streams()             # ERROR 410 on the open stream
        fake_api.stall_streams(False)
        wait_for(lambda: ("DELETED", "template/b", reflector.relists) in
                   [(t, k, reflector.relists) for t, k, *_ in rec.calls], what="b deleted", timeout_s=WAIT_BOUND_S)
    assert [(t, k) for t, k, *_ in rec.calls] == [
        ("ADDED", "template/a"), ("ADDED", "template/b"),
        ("ADDED", "template/c"), ("DELETED", "template/b")]
    assert reflector.relists == 1
    assert len(fake_api.requests(method="GET", path_contains=TEMPLATES, watch=False)) == 2


def test_dropped_stream_below_compaction_floor_gets_410_and_relists(fake_api, kube):
    """The stream drops; while the reflector backs off (time held still), a is deleted and
    history compacted; the re-watch from the old version gets 410 and the relist reports a."""
    fake_api.put_object(TEMPLATES, template("a"))
    clock = FakeClock(auto_advance=False)
    rec = Recorder()
    with Running(kube, rec, clock=clock) as reflector:
        wait_for(lambda: fake_api.open_streams(TEMPLATES), what="a watch", timeout_s=WAIT_BOUND_S)
        fake_api.drop_streams()
        assert clock.wait_for_waiters(1), "reflector is not backing off"
        fake_api.delete_object(TEMPLATES, "a")
        fake_api.compact()
        clock.advance(HTTP_SETTINGS.backoff_max_s)
        wait_for(lambda: ("DELETED", "template/a") in [(t, k) for t, k, *_ in rec.calls],
                   what="a deleted via relist", timeout_s=WAIT_BOUND_S)
    assert reflector.relists == 1
    assert [reason for _, reason in reflector.backoffs] == \
        ["ProtocolError: Response ended prematurely"]


def test_bookmarks_advance_the_resource_version(fake_api, kube):
    fake_api.put_object(TEMPLATES, template("a"))
    rec = Recorder()
    with Running(kube, rec) as reflector:
        wait_for(lambda: fake_api.open_streams(TEMPLATES), what="a watch", timeout_s=WAIT_BOUND_S)
        listed_rv = reflector.resource_version()
        fake_api.put_object(NODES, {"metadata": {"name": "other"}})  # bumps the global RV
        target = fake_api.resource_version
        wait_for(lambda: reflector.resource_version() == target, what="bookmark RV", timeout_s=WAIT_BOUND_S)
    assert listed_rv != target
    assert rec.calls == [("ADDED", "template/a", None, listed_rv)]
    assert reflector.events >= 1


def test_stalled_stream_is_detected_by_the_watchdog(fake_api, kube):
    clock = FakeClock(auto_advance=True)
    rec = Recorder()
    with Running(kube, rec, clock=clock) as reflector:
        fake_api.stall_streams(True)
        wait_for(lambda: fake_api.stalled_streams() >= 1 and reflector.watching(),
                   what="a stalled stream", timeout_s=WAIT_BOUND_S)
        clock.advance(HTTP_SETTINGS.inactivity_timeout_s + 1)
        wait_for(lambda: reflector.watchdog_kills >= 1, what="the watchdog", timeout_s=WAIT_BOUND_S)
        fake_api.stall_streams(False)
        wait_for(lambda: fake_api.open_streams(TEMPLATES) >= 1 and
                   len(fake_api.requests(path_contains=TEMPLATES, watch=True)) >= 2,
                   what="a new watch", timeout_s=WAIT_BOUND_S)
        fake_api.put_object(TEMPLATES, template("late"))
        wait_for(lambda: "template/late" in rec.keys(), what="the late template", timeout_s=WAIT_BOUND_S)
    assert reflector.relists == 0
    assert any("StreamDead" in reason for _, reason in reflector.backoffs)


def test_garbage_lines_are_survived(fake_api, kube):
    rec = Recorder()
    with Running(kube, rec) as reflector:
        wait_for(lambda: fake_api.open_streams(TEMPLATES), what="a watch", timeout_s=WAIT_BOUND_S)
        fake_api.inject_garbage()
        wait_for(lambda: reflector.garbage >= 3, what="garbage seen", timeout_s=WAIT_BOUND_S)
        fake_api.put_object(TEMPLATES, template("a"))
        wait_for(lambda: "template/a" in rec.keys(), what="the template", timeout_s=WAIT_BOUND_S)
    assert reflector.relists == 0


def test_429_retry_after_is_honoured(fake_api, kube):
    fake_api.fail_next(1, 429, retry_after=7, path_contains=TEMPLATES)
    fake_api.put_object(TEMPLATES, template("a"))
    rec = Recorder()
    with Running(kube, rec) as reflector:
        wait_for(reflector.has_synced, what="sync after 429", timeout_s=WAIT_BOUND_S)
    first_delay, reason = reflector.backoffs[0]
    assert first_delay == 7.0 and reason == "429 too many requests"
    assert rec.keys() == ["template/a"]


def test_crd_not_installed_is_waited_out(fake_api, kube):
    fake_api.set_crd_installed(TEMPLATES, False)
    rec = Recorder()
    with Running(kube, rec) as reflector:
        wait_for(lambda: len(reflector.backoffs) >= 3, what="several 404 backoffs", timeout_s=WAIT_BOUND_S)
        assert not reflector.has_synced()
        fake_api.set_crd_installed(TEMPLATES, True)
        fake_api.put_object(TEMPLATES, template("a"))
        wait_for(lambda: "template/a" in rec.keys(), what="the template", timeout_s=WAIT_BOUND_S)
    reasons = {reason for _, reason in reflector.backoffs}
    assert "404 not found (CRD not installed yet?)" in reasons
    delays = [delay for delay, _ in reflector.backoffs]
    # Full jitter: each delay is uniform below a growing cap, so two neighbours may go either
    # way; the later ones reach past the first step's cap.
    assert max(delays[1:]) > delays[0]


def test_connection_refused_backs_off(tmp_path):
    port = free_port()  # nothing listens there: connection refused
    token = tmp_path / "token"
    token.write_text("t")
    client = KubeClient.from_token_file(f"http://127.0.0.1:{port}", str(token))
    rec = Recorder()
    with Running(client, rec) as reflector:
        wait_for(lambda: len(reflector.backoffs) >= 4, what="backoffs", timeout_s=WAIT_BOUND_S)
    assert not reflector.has_synced()
    assert [d for d, _ in reflector.backoffs][:2] != [0, 0]


def test_token_rotation_through_the_reflector(fake_api, tmp_path):
    """docs/pitfalls.md 11: the server starts accepting only a new token; once the file has it, the
    reflector recovers without a restart."""
    token = tmp_path / "token"
    token.write_text(fake_api.token)
    client = KubeClient.from_token_file(fake_api.url, str(token))
    rec = Recorder()
    with Running(client, rec) as reflector:
        wait_for(lambda: fake_api.open_streams(TEMPLATES), what="a watch", timeout_s=WAIT_BOUND_S)
        fake_api.set_token("rotated")
        fake_api.drop_streams()
        wait_for(lambda: any(r.status == 401 for r in fake_api.requests()), what="a 401", timeout_s=WAIT_BOUND_S)
        token.write_text("rotated\n")
        fake_api.put_object(TEMPLATES, template("a"))
        wait_for(lambda: "template/a" in rec.keys(), what="the template after rotation", timeout_s=WAIT_BOUND_S)
    assert any(reason == "HTTP 401" for _, reason in reflector.backoffs)


def test_node_reflector_over_http_ignores_non_label_changes(fake_api, kube):
    fake_api.put_object(NODES, {"metadata": {"name": "n1", "labels": {"role": "a"}},
                                "status": {"conditions": []}})
    fake_api.put_object(NODES, {"metadata": {"name": "n2", "labels": {"role": "a"}}})
    rec = Recorder()
    with Running(kube, rec, node="n1") as reflector:
        wait_for(lambda: fake_api.open_streams(NODES), what="a watch", timeout_s=WAIT_BOUND_S)
        fake_api.put_object(NODES, {"metadata": {"name": "n1", "labels": {"role": "a"}},
                                    "status": {"conditions": [{"type": "Ready"}]}})
        fake_api.put_object(NODES, {"metadata": {"name": "n2", "labels": {"role": "b"}}})
        fake_api.put_object(NODES, {"metadata": {"name": "n1", "labels": {"role": "b"}}})
        wait_for(lambda: len(rec.calls) >= 2, what="the label change", timeout_s=WAIT_BOUND_S)
    assert [(t, k) for t, k, *_ in rec.calls] == [("ADDED", NODE_KEY), ("MODIFIED", NODE_KEY)]
    assert reflector.store()[NODE_KEY]["metadata"]["labels"] == {"role": "b"}
    watches = fake_api.requests(path_contains="/nodes", watch=True)
    assert all(r.query.get("fieldSelector") == "metadata.name=n1" for r in watches)
    assert all(r.query.get("allowWatchBookmarks") == "true" for r in watches)
