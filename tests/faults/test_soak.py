"""A bounded soak of the informer: 10^5 watch events and 10^3 reconnects through the fake API
server, measured in-process (the reflector over the real kubernetes client, as the agent runs it).

Invariant: after a warm-up, the process's traced memory in the agent's own code and its HTTP
stack, its thread count and its open file descriptors stay flat (bounded slack, no growth with
the number of events or reconnects), and the reflector's store ends equal to the server's
objects (nothing lost, nothing extra).
"""
from __future__ import annotations

import os
import threading
import tracemalloc

import pytest

from plumber_agent.clock import RealClock
from plumber_agent.kube.client import KubeClient
from plumber_agent.kube.reflector import Reflector, ReflectorSettings
from tests.fakeapi import FakeApiServer
from tests.fakeapi.server import TEMPLATES
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.fault

EVENTS = 100_000
RECONNECTS = 1_000
OBJECTS = 50
CHECKPOINTS = 5
MEMORY_SLACK_BYTES = 2 * 1024 * 1024
FD_SLACK = 6
THREAD_SLACK = 3
TRACED = ("plumber_agent", "kubernetes", "urllib3", "json")


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def traced_bytes() -> int:
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, f"*{name}*") for name in TRACED])
    return sum(stat.size for stat in snap.statistics("filename"))


def template(i: int, gen: int) -> dict:
    return {"apiVersion": "plumber.k8s.pf9.io/v1", "kind": "HostNetworkTemplate",
            "metadata": {"name": f"t{i}"},
            "spec": {"interfaceConfig": [{"name": "eth1", "mtu": 1280 + gen % 1000}]}}


def trim_history(server: FakeApiServer, keep_from_rv: int) -> None:
    """Our own test server keeps every change for replay; compact it like etcd would, so the
    measurement sees the agent's memory, not the fake server's history."""
    with server._lock:
        server.compaction_floor = keep_from_rv
        server._log = [entry for entry in server._log if entry[0] >= keep_from_rv]


def test_soak_flat_memory_threads_fds(tmp_path):
    server = FakeApiServer(bookmark_interval_s=0.5)
    server.start()
    client = KubeClient.from_kubeconfig(server.kubeconfig(tmp_path / "kubeconfig"))
    seen = {"changes": 0}

    def on_change(event_type, key, old, new):
        seen["changes"] += 1

    settings = ReflectorSettings(backoff_initial_s=0.001, backoff_max_s=0.01, short_watch_s=0.0,
                                 watchdog_tick_s=0.5)
    reflector = Reflector("soak", client.list_templates, client.watch_templates, on_change,
                          RealClock(), settings=settings)
    stop = threading.Event()
    thread = threading.Thread(target=reflector.run, args=(stop,), name="soak-reflector",
                              daemon=True)
    tracemalloc.start(5)
    try:
        for i in range(OBJECTS):
            server.put_object(TEMPLATES, template(i, 0))
        thread.start()
        wait_for(reflector.has_synced, timeout_s=30, what="first list")
        samples = []
        per_checkpoint_events = EVENTS // CHECKPOINTS
        per_checkpoint_reconnects = RECONNECTS // CHECKPOINTS
        gen = 0
        for checkpoint in range(CHECKPOINTS + 1):
            if checkpoint:
                for _ in range(per_checkpoint_events):
                    gen += 1
                    server.put_object(TEMPLATES, template(gen % OBJECTS, gen))
                for _ in range(per_checkpoint_reconnects):
                    watches = len(server.requests(watch=True))
                    wait_for(lambda: server.open_streams(TEMPLATES) >= 1, timeout_s=10, what="an open watch")
                    server.drop_streams()
                    wait_for(lambda: len(server.requests(watch=True)) > watches, timeout_s=10,
                             what="the reflector re-watching after a drop")
                target = server.resource_version
                wait_for(lambda: reflector.resource_version() == target or
                         int(reflector.resource_version() or 0) >= int(target), timeout_s=60,
                         what=f"the reflector catching up to {target}")
                trim_history(server, int(target))
                with server._lock:
                    server.request_log.clear()
            samples.append((traced_bytes(), threading.active_count(), fds()))
        warm = samples[1]
        for n, (mem, threads, nfds) in enumerate(samples[2:], start=2):
            assert mem <= warm[0] + MEMORY_SLACK_BYTES, f"memory grows: {samples}"
            assert threads <= warm[1] + THREAD_SLACK, f"threads grow: {samples}"
            assert nfds <= warm[2] + FD_SLACK, f"fds grow: {samples}"
        store = reflector.store()
        server_objects = {f"template/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
                          for o in server.list(TEMPLATES)}
        assert {k: v["metadata"]["resourceVersion"] for k, v in store.items()} == server_objects
        assert reflector.watch_restarts >= RECONNECTS
        print(f"soak samples (traced bytes, threads, fds): {samples}; "
              f"changes seen {seen['changes']}, restarts {reflector.watch_restarts}")
    finally:
        stop.set()
        server.stop()
        thread.join(timeout=10)
        tracemalloc.stop()
        client.close()
