"""What a decision hands to whoever commits it: its writes, and the answer each way
the write can come out stands for."""

from __future__ import annotations

from dataclasses import dataclass

from twisted.logger import Logger

from authd.auth.interfaces import Decision, DecisionCommit, DecisionWrite

log = Logger(namespace="authd.decision.plan")


@dataclass(slots=True)  # not frozen: see authd.auth.interfaces
class DecisionStats:
    """What the scheduler turns into metrics: time spent in the store, and whether this
    request's failure locked the user (metrics.lockouts)."""

    store_seconds: float = 0.0
    locked_now: bool = False


class Planned:
    """A decision made up to its write: the write phase (`DecisionWrite`, committed as
    one transaction alone or with others) and the answers it can give. Plain data only:
    the attempt behind it (user, tokens, candidates) is dropped, so that a batch keeps
    few objects alive across the allocations of the next decisions (fewer promoted to
    the old GC generations, whose full passes cost tens of ms of p99)."""

    __slots__ = ("if_locked", "if_lost", "if_won", "now", "store_seconds", "write")

    def __init__(
        self,
        write: DecisionWrite,
        if_won: Decision,
        if_lost: Decision,
        if_locked: Decision,
        now: float,
        store_seconds: float,
    ) -> None:
        self.write = write
        self.if_won = if_won
        self.if_lost = if_lost
        self.if_locked = if_locked
        self.now = now
        self.store_seconds = store_seconds  # the reads' share; commits add theirs

    def settle(
        self, result: DecisionCommit, commit_seconds: float = 0.0
    ) -> tuple[Decision, DecisionStats]:
        """The answer once the write committed with `result`: `if_won`, `if_lost` when
        the single use was lost, `if_locked` when the write found the user locked."""
        decision = self.if_won if result.won else self.if_lost
        if result.locked:
            decision = self.if_locked
        stats = DecisionStats(self.store_seconds + commit_seconds, self._locked_now(result))
        return decision, stats

    def _locked_now(self, result: DecisionCommit) -> bool:
        """Whether this write's counted failure locked the user (metrics.lockouts)."""
        lock = result.lock
        locked = lock is not None and lock.locked_until is not None and lock.locked_until > self.now
        if locked:
            assert lock is not None
            log.info("user {user} locked after {n} failures", user=self.write.user, n=lock.failures)
        return locked
