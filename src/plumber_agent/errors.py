"""Errors grouped by who must act (after nmstate's libnmstate/error.py).

What reads the type: the executor (host/executor.py `certainly_unchanged`) decides from it
whether a failed change certainly left the host as it was (then its write-ahead intent is
dropped); the executor's result carries the class name (`error_type`) and the message. The
status shows the message, not the type, and every failure is retried the same way (the next
pass, with the work queue's backoff), so the types carry no status word or retry flag: a bad
template value never reaches the host (validation rejects it as `Invalid` first), and a refused
change is re-planned, and refused again, on every pass until the host or the template changes.
"""


class PlumberError(Exception):
    """Base class."""


class InvalidSpec(PlumberError):
    """The template is wrong: the user must edit it. Carries every problem found, with paths."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class UsageError(PlumberError):
    """The command cannot run as asked (a missing file, a template directory that does not
    read): a user mistake, reported by the CLI as one line per problem and exit status 1, with
    no traceback and nothing changed on the host."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class NotAvailable(PlumberError):
    """Something the template needs is missing on this host (a PF, a driver, OVS)."""


class HostError(PlumberError):
    """The host refused or failed a change (a kernel errno, a timed-out sysfs write)."""


class HostTimeout(HostError):
    """A bounded host operation did not finish in time (a sysfs write, an OVS call, a wait):
    the change may still land."""


class Refused(PlumberError):
    """The agent refuses a change because it would hurt the node (cut it off the API server)."""
