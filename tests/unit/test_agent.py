"""The agent's thread supervisor: a thread that dies makes the process exit non-zero; a stop
request (SIGTERM) drains every thread and exits 0."""
import threading

from plumber_agent.agent import Supervisor


def test_a_crashed_thread_makes_the_agent_exit_non_zero():
    sup = Supervisor()
    sup.spawn("steady", lambda stop: stop.wait())

    def crash(stop):
        raise RuntimeError("boom")

    sup.spawn("crasher", crash)
    assert sup.wait() == 1
    assert sup.stop.is_set()  # the others were told to stop
    assert not any(t.is_alive() for t in sup.threads)


def test_a_thread_returning_early_is_a_failure_too():
    sup = Supervisor()
    sup.spawn("quitter", lambda stop: None)
    assert sup.wait() == 1


def test_stop_drains_and_exits_zero():
    sup = Supervisor()
    drained = threading.Event()

    def worker(stop):
        stop.wait()
        drained.set()

    sup.spawn("worker", worker)
    assert sup.alive()
    threading.Timer(0.1, sup.stop.set).start()  # what the SIGTERM handler does
    assert sup.wait() == 0
    assert drained.is_set()
