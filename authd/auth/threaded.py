"""The engine as front-ends use it: one hop into the bounded `auth` thread pool per
request, metrics recorded on the way back, and any unexpected error turned into a
reject (fail closed) with its traceback logged. Front-ends never see an exception.
"""

from __future__ import annotations

from typing import Protocol, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from authd.auth.engine import GENERIC_REJECT, DecisionStats, Engine
from authd.auth.interfaces import AuthRequest, Decision, Outcome, Reason
from authd.metrics import Metrics

log = Logger()

# Metric labels come from small fixed sets (metrics.py): anything else is "other".
_FRONTENDS = frozenset({"radius", "http", "authctl"})


class ReactorLike(Protocol):
    """What this module needs of a reactor: the time, and a way back from threads."""

    def seconds(self) -> float: ...

    def callFromThread(self, f: object, *args: object) -> object: ...  # noqa: N802


def _frontend_label(frontend: str) -> str:
    return frontend if frontend in _FRONTENDS else "other"


class ThreadedEngine:
    """`authenticate(req) -> Deferred[Decision]`; the Deferred never fails."""

    def __init__(
        self, engine: Engine, reactor: ReactorLike, pool: ThreadPool, metrics: Metrics
    ) -> None:
        self._engine = engine
        self._reactor = reactor
        self._pool = pool
        self._metrics = metrics

    def authenticate(self, req: AuthRequest) -> Deferred[Decision]:
        """Decide `req` in the pool at the reactor's current time."""
        frontend = _frontend_label(req.frontend)
        in_flight = self._metrics.in_flight.labels(frontend=frontend)
        in_flight.inc()
        now = self._reactor.seconds()
        d = deferToThreadPool(
            cast(IReactorFromThreads, self._reactor),
            self._pool,
            self._engine.decide_with_stats,
            req,
            now,
        )

        def measured(result: tuple[Decision, DecisionStats]) -> Decision:
            decision, stats = result
            self._metrics.store_latency.observe(stats.store_seconds)
            if stats.locked_now:
                self._metrics.lockouts.inc()
            return decision

        def failed(failure: Failure) -> Decision:
            # AuthRequest's repr hides password, otp and state: only names are logged.
            log.failure(
                "decision failed, rejecting: frontend={frontend} client={client} user={user}",
                failure,
                frontend=req.frontend,
                client=req.client,
                user=req.user,
            )
            return Decision(Outcome.REJECT, Reason.BACKEND_DOWN, req.user, GENERIC_REJECT)

        def counted(decision: Decision) -> Decision:
            in_flight.dec()
            self._metrics.requests.labels(
                frontend=frontend, result=decision.outcome.value, reason=decision.reason.value
            ).inc()
            return decision

        return d.addCallbacks(measured, failed).addCallback(counted)

    def check_ready(self) -> Deferred[dict[str, str]]:
        """{"store": "ok" | "error: <type>", <backend name>: ...} for /readyz; runs in
        the pool because pings block. Error texts are exception type names only."""
        return deferToThreadPool(
            cast(IReactorFromThreads, self._reactor), self._pool, self._ping_all
        )

    def _ping_all(self) -> dict[str, str]:
        checks = [("store", self._engine.store.ping)]
        checks += [(backend.name, backend.ping) for backend in self._engine.backends]
        status: dict[str, str] = {}
        for name, ping in checks:
            try:
                ping()
            except Exception as e:  # any failure means "not ready"; report, don't raise
                log.warn(
                    "readiness check failed for {name}: {error}", name=name, error=type(e).__name__
                )
                status[name] = f"error: {type(e).__name__}"
            else:
                status[name] = "ok"
        return status
