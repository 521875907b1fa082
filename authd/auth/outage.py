"""Failed decisions in the log as state changes: one line with the traceback when
decisions start failing (and for each new kind of error while they fail), one when they
succeed again; every failure is counted in `authd_decision_errors_total`. A store outage
fails every request, and a traceback each would bury the log (thousands of lines a
second) without telling an operator more than the first one does.

Called on the reactor thread only, so the state needs no lock.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.python.failure import Failure

from authd.auth.interfaces import AuthRequest
from authd.metrics import Metrics

log = Logger(namespace="authd.auth.outage")


class FailureLog:
    """Whether decisions are failing now, and what has been said about it."""

    def __init__(self, metrics: Metrics) -> None:
        self._errors = metrics.decision_errors
        self._seen: set[str] = set()  # error types logged in the current outage
        self._failed = 0

    @property
    def failing(self) -> bool:
        """True from a failed decision until the next one that succeeds."""
        return self._failed > 0

    def failed(self, req: AuthRequest, error: BaseException) -> None:
        """Count a decision that raised; log it when it starts an outage or fails in a
        new way. AuthRequest's repr hides password, otp and state: only names are logged."""
        kind = type(error).__name__
        self._errors.labels(error=kind).inc()
        self._failed += 1
        if kind in self._seen:
            return
        self._seen.add(kind)
        log.failure(
            "decisions failing, rejecting until they succeed again (further failures are "
            "counted in authd_decision_errors_total): frontend={frontend} client={client} "
            "user={user}",
            Failure(error, type(error), error.__traceback__),
            frontend=req.frontend,
            client=req.client,
            user=req.user,
        )

    def succeeded(self) -> None:
        """A decision went through: log the end of an outage, if there was one."""
        if not self._failed:
            return
        log.info("decisions succeed again after {failed} failed ({errors})",
                 failed=self._failed, errors=", ".join(sorted(self._seen)))
        self._failed = 0
        self._seen.clear()
