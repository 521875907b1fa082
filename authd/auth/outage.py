"""Failed decisions in the log as state changes: one line with the traceback when
decisions start failing (and for each new kind of error while they fail), one when they
succeed again; every failure is counted in `authd_decision_errors_total`. A store outage
fails every request, and a traceback each would bury the log (thousands of lines a
second) without telling an operator more than the first one does. A partial outage
(some requests time out, others pass) is one outage too: it ends only once decisions
have succeeded with no failure for `QUIET_SECONDS`, so that it is not logged anew, with
its traceback, at every success in between.

Called on the reactor thread only, so the state needs no lock.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.python.failure import Failure

from authd.auth.interfaces import AuthRequest
from authd.metrics import Metrics

log = Logger(namespace="authd.auth.outage")

# How long decisions must succeed without a failure before an outage counts as over.
QUIET_SECONDS = 10.0


class FailureLog:
    """Whether decisions are failing now, and what has been said about it."""

    def __init__(self, metrics: Metrics, quiet: float = QUIET_SECONDS) -> None:
        self._errors = metrics.decision_errors
        self._quiet = quiet
        self._seen: set[str] = set()  # error types logged in the current outage
        self._failed = 0
        self._last_failure = 0.0

    @property
    def failing(self) -> bool:
        """True from a failed decision until the outage is over (see `succeeded`)."""
        return self._failed > 0

    def failed(self, req: AuthRequest, error: BaseException, now: float) -> None:
        """Count a decision that raised; log it when it starts an outage or fails in a
        new way. AuthRequest's repr hides password, otp and state: only names are logged."""
        kind = type(error).__name__
        self._errors.labels(error=kind).inc()
        self._failed += 1
        self._last_failure = now
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

    def succeeded(self, now: float) -> None:
        """A decision went through at `now`: the outage is over (logged once) when none
        failed for `quiet` seconds."""
        if not self._failed or now - self._last_failure < self._quiet:
            return
        log.info("decisions succeed again after {failed} failed ({errors})",
                 failed=self._failed, errors=", ".join(sorted(self._seen)))
        self._failed = 0
        self._seen.clear()
