"""`Engine`: the decision layer's entry. `begin()` starts a decision (its reads, and its
plan unless blocking work comes first); `decide()` makes one decision whole and commits
it alone; `record_failure()` audits a decision that could not be made. Shareable between
threads (holds no request state); tested without a reactor and without batching.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from twisted.logger import Logger

from authd.auth.interfaces import (
    AuthRequest,
    Decision,
    FirstFactorBackend,
    Outcome,
    Reason,
    SigninObserver,
    Store,
)
from authd.config.model import Config
from authd.core.errors import StoreUnavailable
from authd.core.model import AuditEvent
from authd.decision.attempt import Attempt, Pending
from authd.decision.plan import DecisionStats, Planned
from authd.decision.request import request_problem
from authd.metrics import Metrics

log = Logger(namespace="authd.decision.engine")


class Engine:
    """Decides requests. `config` may be replaced on reload (one attribute store): each
    decision reads it once."""

    def __init__(
        self,
        config: Config,
        store: Store,
        backends: Sequence[FirstFactorBackend],
        hash_key: bytes,
        metrics: Metrics | None = None,
        habits: SigninObserver | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.backends = tuple(backends)
        self.hash_key = hash_key
        self._metrics = metrics
        self.habits = habits  # unusual sign-in flags (audit.unusual_signin)

    def begin(self, req: AuthRequest, now: float) -> Planned | Pending:
        """Start deciding `req` at `now`: its reads, then its plan, or the blocking step
        it needs first. Bad input plans a BAD_REQUEST reject; store errors propagate."""
        return Attempt(self, req, now).run()

    def decide(self, req: AuthRequest, now: float) -> Decision:
        """The decision for `req` at `now`, committed alone. Bad input is a BAD_REQUEST
        reject; store and backend errors propagate (the caller maps them, failing
        closed), audited as a failed decision first."""
        return self.decide_with_stats(req, now)[0]

    def decide_with_stats(self, req: AuthRequest, now: float) -> tuple[Decision, DecisionStats]:
        """`decide`, with what the scheduler turns into metrics. The store's
        `decision_scope` bounds the whole of it (tokens in a directory: one
        request_timeout for its reads, the first factor's bind and its write together)."""
        try:
            with self.store.decision_scope():
                step = self.begin(req, now)
                if isinstance(step, Pending):
                    step.run_outside()
                    step = step.finish()
                return self.commit_alone(step)
        except Exception as e:
            self.record_failure(req, now, e)
            raise

    def commit_alone(self, planned: Planned) -> tuple[Decision, DecisionStats]:
        """Commit one decision's write by itself (one transaction) and answer it."""
        begin = time.perf_counter()
        result = self.store.commit_decision(planned.write)
        return planned.settle(result, time.perf_counter() - begin)

    def record_failure(
        self, req: AuthRequest, now: float, error: BaseException, write: bool = True
    ) -> bool:
        """Audit a decision that could not be made (a store or directory failed): a
        reject with reason `unavailable` and the error's type, never its text. When the
        audit write fails too (or `write` is False: the caller saw it fail just now), the
        record goes to the log as one structured line and is counted
        (authd_audit_write_failures_total): no decision goes unrecorded. True when the
        record reached the store."""
        valid = request_problem(req) is None
        audit = AuditEvent(  # as Attempt._record: nothing of an invalid request is kept
            now,
            f"{req.frontend}:{req.client}" if valid else "invalid",
            "auth",
            Outcome.REJECT.value,
            req.user if valid else "",
            req.client if valid else "",
            req.source if valid else "",
            Reason.UNAVAILABLE.value,
            type(error).__name__,
        )
        try:
            if not write:
                raise StoreUnavailable("audit store failed for an earlier record")
            self.store.append_audit(audit)
            return True
        except Exception as e:  # noqa: BLE001 - the audit store is down: log and count
            log.error(
                "audit record not written (audit store failed: {audit_error}): "
                "action={action} result={result} reason={reason} detail={detail} "
                "user={user} actor={actor} client={client} source={source} at={at}",
                audit_error=type(e).__name__,
                action=audit.action,
                result=audit.result,
                reason=audit.reason,
                detail=audit.detail,
                user=audit.user,
                actor=audit.actor,
                client=audit.client,
                source=audit.source,
                at=audit.at,
            )
            if self._metrics is not None:
                self._metrics.audit_failures.inc()
            return False
