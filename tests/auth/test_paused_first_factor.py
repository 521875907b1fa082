"""Chain decisions paused before their first factor (`Engine.decide_many` with
`pause_first_factor`, as ThreadedEngine runs them on SQLite): the same answers as one by
one, each first factor checked exactly once and outside any batch, and the writes of
checked decisions sharing transactions."""

from __future__ import annotations

from typing import Any

from twisted.python.threadpool import ThreadPool

from authd.auth.engine import DecisionStats, Engine, FirstFactorDue
from authd.auth.interfaces import AuthRequest, Decision, Outcome, Reason
from authd.auth.threaded import ThreadedEngine
from authd.core.errors import StoreUnavailable
from authd.metrics import Metrics
from tests.auth.conftest import NOW, PASSWORD, World
from tests.fakes import FakeDirectoryUser, FakeReactor, WrappedStore

DEADLINE = 5.0
Result = tuple[Decision, DecisionStats] | BaseException


def decide_paused(engine: Engine, reqs: list[AuthRequest]) -> tuple[list[Result], int]:
    """What ThreadedEngine does, in one thread: decide with pausing, check every paused
    first factor, hand them back; the results in request order, and how many paused."""
    first = engine.decide_many([(r, NOW) for r in reqs], pause_first_factor=True)
    dues = [r for r in first if isinstance(r, FirstFactorDue)]
    for due in dues:
        due.check()
    finished = iter(engine.decide_many(dues))
    results: list[Result] = []
    for r in first:
        final = next(finished) if isinstance(r, FirstFactorDue) else r
        assert not isinstance(final, FirstFactorDue)  # a checked one is never paused again
        results.append(final)
    return results, len(dues)


def outcomes(results: list[Result]) -> list[tuple[Outcome, Reason] | str]:
    return [
        type(r).__name__ if isinstance(r, BaseException) else (r[0].outcome, r[0].reason)
        for r in results
    ]


def test_paused_decisions_answer_as_one_by_one(world: World) -> None:
    """Password+code, a wrong password (its code stays unused), a store-only request of
    the same user, a first-sight directory user without a token and an unknown user: the
    answers of sequential decisions, one first-factor check each, one audit row each. A
    store that does not batch (fake, PostgreSQL) pauses nothing."""
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
    assert outcomes(results) == [
        (Outcome.ACCEPT, Reason.OK),
        (Outcome.REJECT, Reason.BAD_PASSWORD),
        (Outcome.ACCEPT, Reason.OK),
        (Outcome.REJECT, Reason.NO_TOKEN),
        (Outcome.REJECT, Reason.UNKNOWN_USER),
    ]
    assert paused == (4 if engine.batches_decisions else 0)
    assert w.binds == 4
    assert len(w.store.query_audit(limit=100)) == len(reqs)


def test_a_paused_decision_holds_no_write_and_checks_nothing(sqlite_world: World) -> None:
    """Until its first factor is checked, a paused decision has bound nothing and
    written nothing: its code can still be used, and no audit row exists."""
    w = sqlite_world
    alice = w.user("alice")
    tok = w.token(alice)
    engine = w.engine()
    [due] = engine.decide_many([(w.request(PASSWORD + w.code(tok)), NOW)], pause_first_factor=True)
    assert isinstance(due, FirstFactorDue) and not due.checked
    assert w.binds == 0 and w.store.query_audit(limit=10) == []
    due.check()
    assert due.checked and w.binds == 1
    [(decision, _)] = engine.decide_many([due])  # type: ignore[misc]
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


def test_challenge_answers_are_not_paused(sqlite_world: World) -> None:
    """A reply to Access-Challenge checks no first factor (it passed before): it is
    decided alone, in the store turn, and accepted."""
    w = sqlite_world
    alice = w.user("alice")
    tok = w.token(alice)
    engine = w.engine()
    challenged = w.decide(PASSWORD, mode="challenge")
    assert challenged.outcome is Outcome.CHALLENGE and challenged.state is not None
    reply = w.request(w.code(tok), state=challenged.state, mode="challenge")
    [result] = engine.decide_many([(reply, NOW)], pause_first_factor=True)
    assert not isinstance(result, (FirstFactorDue, BaseException))
    assert result[0].outcome is Outcome.ACCEPT
    assert w.binds == 1  # the challenge's own first factor only


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
        threaded = ThreadedEngine(engine, reactor, pool, Metrics(), store_threads=1)
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
