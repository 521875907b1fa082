"""The decision layer plans and never commits: `Engine.begin` reads and returns the
write it wants with the answer each outcome of that write stands for, or the blocking
step it needs first. On the fake store, without any batching."""

from __future__ import annotations

import pytest

from authd.auth.interfaces import DecisionCommit, LockState, Outcome, Reason, UseTotpStep
from authd.decision.attempt import Pending
from authd.decision.plan import Planned
from tests.world import NOW, PASSWORD, World


def test_a_code_is_planned_not_used(fake_world: World) -> None:
    """A right code plans its step's compare-and-set and its ending's records; nothing
    is written until the caller commits, and the answer follows what the commit says."""
    w = fake_world
    w.user()
    token = w.token()
    planned = w.engine().begin(w.request(w.code(token), first_factor="none"), NOW)
    assert isinstance(planned, Planned)
    assert isinstance(planned.write.use, UseTotpStep)
    assert planned.write.use.serial == token.serial
    assert planned.write.user == "alice" and planned.write.locked is not None
    stored = w.store.get_token(token.serial)
    assert stored is not None and stored.last_step == -1  # not used by planning
    assert w.store.query_audit() == []
    won, _ = planned.settle(DecisionCommit(True))
    lost, _ = planned.settle(DecisionCommit(False))
    locked, _ = planned.settle(DecisionCommit(False, locked=True))
    assert (won.outcome, won.reason) == (Outcome.ACCEPT, Reason.OK)
    assert (lost.outcome, lost.reason) == (Outcome.REJECT, Reason.REPLAY)
    assert (locked.outcome, locked.reason) == (Outcome.REJECT, Reason.LOCKED)


def test_a_counted_failure_that_locks_is_reported(fake_world: World) -> None:
    """settle() says whether this write's counted failure locked the user (the
    lockouts metric), from the lock state the commit returned."""
    w = fake_world
    w.user()
    w.token()
    planned = w.engine().begin(w.request("000000", first_factor="none"), NOW)
    assert isinstance(planned, Planned) and planned.write.won.count_failure
    _, stats = planned.settle(DecisionCommit(True, LockState(3, NOW + 300)))
    assert stats.locked_now
    _, stats = planned.settle(DecisionCommit(True, LockState(1, None)))
    assert not stats.locked_now


def test_a_first_factor_is_a_blocking_step_run_once(fake_world: World) -> None:
    """A chain request stops before its first factor: no bind until `run_outside`, one
    bind then, and a second run is refused (a bind may count toward the directory's own
    lockout)."""
    w = fake_world
    w.user()
    token = w.token()
    step = w.engine().begin(w.request(PASSWORD + w.code(token)), NOW)
    assert isinstance(step, Pending) and w.binds == 0
    with pytest.raises(RuntimeError):
        step.finish()
    step.run_outside()
    assert w.binds == 1 and step.error is None
    with pytest.raises(RuntimeError):
        step.run_outside()
    planned = step.finish()
    assert isinstance(planned.write.use, UseTotpStep)
    assert w.binds == 1 and w.store.query_audit() == []


def test_a_blocking_step_that_fails_raises_on_finish(fake_world: World) -> None:
    """The step's error is kept, never raised by run_outside, and raised by finish, so
    the caller answers it with a reject and audits it."""
    w = fake_world
    w.user()
    token = w.token()
    w.directory.broken = RuntimeError("directory library bug")
    step = w.engine().begin(w.request(PASSWORD + w.code(token)), NOW)
    assert isinstance(step, Pending)
    step.run_outside()
    assert isinstance(step.error, RuntimeError)
    with pytest.raises(RuntimeError, match="directory library bug"):
        step.finish()


def test_a_malformed_request_is_planned_as_a_bad_request(fake_world: World) -> None:
    """Bad input is planned as a BAD_REQUEST reject whose audit keeps nothing of it."""
    w = fake_world
    planned = w.engine().begin(w.request("x", user="bad\x00name"), NOW)
    assert isinstance(planned, Planned) and planned.write.user is None
    decision, _ = planned.settle(DecisionCommit(True))
    assert (decision.outcome, decision.reason, decision.user) == (
        Outcome.REJECT,
        Reason.BAD_REQUEST,
        "",
    )
    assert planned.write.won.audit.user == "" and planned.write.won.audit.actor == "invalid"
