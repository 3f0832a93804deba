"""pytest plugin of the pytest run inside the full-kernel VM: timestamped progress, and a time
budget per test phase.

Why: the host kills the VM at the tier's timeout, and a run killed that way used to leave only
"qemu killed" and a row of dots. Each test's start and end (with its duration) is written
straight to the terminal, so the host's copy of the VM's output shows how far it got and where
the time went even after a kill; and a test whose setup or call outlives SCENARIO_BUDGET_S fails
with a message naming the budget (SIGALRM in pytest's main thread) instead of eating the whole
tier, so the remaining tests still run and report.

Loaded with `-p tests.fullkernel.vm_pytest_plugin` by test_fullkernel_tier.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

#: Longest single setup or call phase (the e2e cluster start is a setup, ~60 s on a quiet
#: machine; the longest scenario ~130 s). The environment variable exists for this plugin's test.
BUDGET_ENV = "PLUMBER_VM_SCENARIO_BUDGET_S"
SCENARIO_BUDGET_S = int(os.environ.get(BUDGET_ENV) or 300)


class ScenarioOverBudget(Exception):
    """A test phase ran longer than SCENARIO_BUDGET_S inside the VM."""


def _say(item: pytest.Item, text: str) -> None:
    reporter = item.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    reporter.write_line(f"[vm {time.strftime('%H:%M:%S')}] {text}")
    reporter.flush()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    started = time.monotonic()
    _say(item, f"start {item.nodeid}")
    yield
    _say(item, f"end {item.nodeid} after {time.monotonic() - started:.1f} s")


def _with_budget(item: pytest.Item, phase: str):
    def over_budget(signum, frame):
        raise ScenarioOverBudget(f"{item.nodeid}: {phase} ran over its budget of "
                                 f"{SCENARIO_BUDGET_S} s inside the full-kernel VM")

    previous = signal.signal(signal.SIGALRM, over_budget)
    signal.alarm(SCENARIO_BUDGET_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    yield from _with_budget(item, "setup")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    yield from _with_budget(item, "call")
