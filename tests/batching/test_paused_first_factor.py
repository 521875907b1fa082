"""Decisions paused before their blocking step (`Batched.decide_many` returns them as
`Pending`, as ThreadedEngine runs them on the SQL store): the same answers as one by
one, each first factor checked exactly once and outside any batch, and the writes of
checked decisions sharing transactions."""

from __future__ import annotations

from typing import Any

from twisted.python.threadpool import ThreadPool

from authd.auth.interfaces import Decision, Outcome, Reason
from authd.batching.threaded import ThreadedEngine
from authd.core.errors import StoreUnavailable
from authd.decision.attempt import Pending
from authd.metrics import Metrics
from tests.fakes import FakeDirectoryUser, FakeReactor, WrappedStore
from tests.world import NOW, PASSWORD, World, decide_all, decide_paused, decisions_for, outcomes

DEADLINE = 5.0


def test_paused_decisions_answer_as_one_by_one(world: World) -> None:
    """Password+code, a wrong password (its code stays unused), a store-only request of
    the same user, a first-sight directory user without a token and an unknown user: the
    answers of sequential decisions, one first-factor check each, one audit row each.
    Decided one by one (the fake store) nothing pauses."""
    w = world
    alice, bob = w.user("alice"), w.user("bob")
    ta, tb = w.token(alice), w.token(bob)
    w.directory.users["carol"] = FakeDirectoryUser(PASSWORD, ("staff",))
    reqs = [
        w.request(PASSWORD + w.code(ta), user=alice),
        w.request("wrong" + w.code(tb), user=bob),
        w.request(w.code(tb), user=bob, first_factor="none"),
        w.request(PASSWORD, user="carol"),
        w.request(PASSWORD + "123456", user="nobody"),
    ]
    engine = w.engine()
    results, paused = decide_paused(engine, reqs)
    pauses = decisions_for(engine).pauses
    assert outcomes(results) == [
        (Outcome.ACCEPT, Reason.OK),
        (Outcome.REJECT, Reason.BAD_PASSWORD),
        (Outcome.ACCEPT, Reason.OK),
        (Outcome.REJECT, Reason.NO_TOKEN),
        (Outcome.REJECT, Reason.UNKNOWN_USER),
    ]
    assert paused == (4 if pauses else 0)
    assert w.binds == 4
    assert len(w.store.query_audit(limit=100)) == len(reqs)


def test_a_paused_decision_holds_no_write_and_checks_nothing(sqlite_world: World) -> None:
    """Until its first factor is checked, a paused decision has bound nothing and
    written nothing: its code can still be used, and no audit row exists."""
    w = sqlite_world
    alice = w.user("alice")
    tok = w.token(alice)
    decisions = w.decisions()
    [due] = decisions.decide_many([(w.request(PASSWORD + w.code(tok)), NOW)])
    assert isinstance(due, Pending) and not due.done
    assert w.binds == 0 and w.store.query_audit(limit=10) == []
    due.run_outside()
    assert due.done and w.binds == 1
    [(decision, _)] = decisions.decide_many([due])  # type: ignore[misc]
    assert decision.outcome is Outcome.ACCEPT
    assert len(w.store.query_audit(limit=10)) == 1


def test_rolled_back_batch_does_not_check_a_first_factor_again(sqlite_world: World) -> None:
    """When the transaction of checked decisions rolls back, each is committed alone
    from the first factor's outcome already known: one bind per request, each accepted
    once, audited once."""
    w = sqlite_world
    tokens = w.users_with_tokens(4)
    users = list(tokens)
    store = w.store
    failed: list[int] = []

    def many(writes: Any) -> Any:
        if not failed:
            failed.append(len(writes))
            raise StoreUnavailable("database error: OperationalError")
        return store.commit_decisions(writes)  # type: ignore[attr-defined]

    engine = w.engine()
    engine.store = WrappedStore(store, commit_decisions=many)  # type: ignore[assignment]
    results, paused = decide_paused(
        engine, [w.request(PASSWORD + w.code(tokens[u]), user=u) for u in users]
    )
    assert failed == [4] and paused == 4
    assert outcomes(results) == [(Outcome.ACCEPT, Reason.OK)] * 4
    assert w.binds == 4
    for u in users:
        assert len(store.query_audit(user=u)) == 1


def test_first_factor_error_is_that_requests_answer_alone(sqlite_world: World) -> None:
    """A backend that raises fails its own request (the caller rejects it), not the
    batch it is handed back in."""
    w = sqlite_world
    alice, bob = w.user("alice"), w.user("bob")
    ta, tb = w.token(alice), w.token(bob)
    w.directory.broken = RuntimeError("directory exploded")
    results, paused = decide_paused(
        w.engine(),
        [
            w.request(PASSWORD + w.code(ta), user=alice),
            w.request(w.code(tb), user=bob, first_factor="none"),
        ],
    )
    assert paused == 1
    assert outcomes(results) == ["RuntimeError", (Outcome.ACCEPT, Reason.OK)]


def test_challenge_answers_take_their_state_outside_the_batch(sqlite_world: World) -> None:
    """A reply to Access-Challenge checks no first factor (it passed before): its State
    is taken (a write of its own) outside any batch, then it is finished in one, and
    accepted once; the State cannot be answered again."""
    w = sqlite_world
    alice = w.user("alice")
    tok = w.token(alice)
    decisions = w.decisions()
    challenged = w.decide(PASSWORD, mode="challenge")
    assert challenged.outcome is Outcome.CHALLENGE and challenged.state is not None
    reply = w.request(w.code(tok), state=challenged.state, mode="challenge")
    [due] = decisions.decide_many([(reply, NOW)])
    assert isinstance(due, Pending)
    due.run_outside()
    [result] = decisions.decide_many([due])
    assert not isinstance(result, (Pending, BaseException))
    assert result[0].outcome is Outcome.ACCEPT
    assert w.binds == 1  # the challenge's own first factor only
    [(again, _)] = decide_all(decisions, [(reply, NOW)])  # type: ignore[misc]
    assert (again.outcome, again.reason) == (Outcome.REJECT, Reason.BAD_STATE)


def test_threaded_engine_batches_checked_decisions_on_sqlite(sqlite_world: World) -> None:
    """Through ThreadedEngine on SQLite: 40 password+code requests are each accepted
    once with one bind each, and their writes share transactions (fewer than 40)."""
    w = sqlite_world
    tokens = w.users_with_tokens(40)
    real = w.store
    transactions: list[int] = []
    engine = w.engine()
    engine.store = WrappedStore(  # type: ignore[assignment]
        real,
        commit_decisions=lambda writes: (
            transactions.append(len(writes)) or real.commit_decisions(writes)
        ),  # type: ignore[attr-defined]
        commit_decision=lambda write: transactions.append(1) or real.commit_decision(write),
    )
    pool = ThreadPool(minthreads=1, maxthreads=1, name="auth-test-1")
    pool.start()
    try:
        reactor = FakeReactor(NOW)
        threaded = ThreadedEngine(decisions_for(engine), reactor, pool, Metrics(), store_threads=1)
        answers: dict[str, list[Decision]] = {u: [] for u in tokens}
        for u, token in tokens.items():
            threaded.authenticate(w.request(PASSWORD + w.code(token), user=u)).addCallback(
                answers[u].append
            )
        reactor.run_until(lambda: all(answers.values()), timeout=DEADLINE)
    finally:
        pool.stop()
    assert all(a[0].outcome is Outcome.ACCEPT for a in answers.values())
    assert w.binds == 40
    assert sum(transactions) == 40 and len(transactions) < 40


def test_first_factor_error_in_a_batch_is_audited(sqlite_world: World) -> None:
    """A paused first factor that raises is answered with the error in the batch that
    finishes it, and audited as a failed decision, once."""
    w = sqlite_world
    w.user()
    token = w.token()
    w.directory.broken = RuntimeError("directory library bug")
    decisions = w.decisions()
    [due] = decisions.decide_many([(w.request(PASSWORD + w.code(token)), NOW)])
    assert isinstance(due, Pending)
    due.run_outside()
    [result] = decisions.decide_many([due])
    assert isinstance(result, RuntimeError)
    [event] = w.store.query_audit(user="alice")
    assert (event.result, event.reason, event.detail) == ("reject", "unavailable", "RuntimeError")
