"""Errors grouped by who must act (after nmstate's libnmstate/error.py).

The group decides the template's status reason and the retry policy: a user's bad value is not
retried until the template changes; a host or dependency failure is retried with backoff.
"""


class PlumberError(Exception):
    """Base class. `reason` is the short word published on the HostNetwork status."""

    reason = "Failed"
    retry = True


class InvalidSpec(PlumberError):
    """The template is wrong: the user must edit it. Carries every problem found, with paths."""

    reason = "Invalid"
    retry = False

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class NotAvailable(PlumberError):
    """Something the template needs is missing on this host (a PF, a driver, OVS)."""

    reason = "NotAvailable"


class HostError(PlumberError):
    """The host refused or failed a change (a kernel errno, a timed-out sysfs write)."""

    reason = "HostError"


class HostTimeout(HostError):
    """A bounded host operation did not finish in time (a sysfs write, an OVS call, a wait)."""

    reason = "Timeout"


class Refused(PlumberError):
    """The agent refuses a change because it would hurt the node (cut it off the API server)."""

    reason = "Refused"
    retry = False


class VerificationFailed(PlumberError):
    """Changes were made but re-discovery does not show them."""

    reason = "VerificationFailed"
