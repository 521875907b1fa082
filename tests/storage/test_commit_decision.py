"""`Store.commit_decision`: a decision's whole write phase in one transaction, exact on
both backends, under concurrency, and (SQLite) through the group-committing hot path."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authd.auth.interfaces import (
    AttemptRecord,
    Challenge,
    DecisionCommit,
    DecisionWrite,
    SingleUse,
    UseBackupCode,
    UseHotpCounter,
    UseTotpStep,
)
from authd.core.errors import StoreUnavailable
from authd.core.model import AuditEvent, Token, TokenType, User
from authd.crypto import Keyring
from authd.storage.hot_path import SqliteHotPath
from authd.storage.sql import _ACCEPT_TOTP, SqlStore

NOW = 1_767_225_600.0
R = TypeVar("R")


def _record(
    result: str, reason: str, *, user: str = "alice", failure: bool = False
) -> AttemptRecord:
    return AttemptRecord(
        success=result == "accept",
        count_failure=failure,
        audit=AuditEvent(
            at=NOW,
            actor="radius:vpn",
            action="auth",
            result=result,
            user=user,
            client="vpn",
            source="10.0.0.1",
            reason=reason,
        ),
    )


def _add_user(store: SqlStore, name: str, codes: int = 3) -> None:
    """`name` with a TOTP token T<name>, an HOTP token H<name> and `codes` backup codes."""
    store.add_user(User(name=name, created_at=NOW))
    store.add_token(Token(serial=f"T{name}", type=TokenType.TOTP, seed=b"s" * 20, user=name))
    store.add_token(Token(serial=f"H{name}", type=TokenType.HOTP, seed=b"h" * 20, user=name))
    if codes:
        store.replace_backup_codes(name, [f"c{i}" for i in range(codes)], NOW)


def _op_write(
    name: str, op: tuple[int, str, int, str, float, bool], max_attempts: int, tag: str
) -> DecisionWrite:
    """The write phase `op` describes for `name` (an `_add_user` user): (user number,
    single use, its value, the `won` ending, seconds after NOW, past the lock gate);
    ending "challenge" stores the State `tag`-`name`."""
    _, kind, value, ending, dt, gated = op
    use: SingleUse | None = {
        "totp": UseTotpStep(f"T{name}", value, 0),
        "hotp": UseHotpCounter(f"H{name}", value),
        "backup": UseBackupCode(name, f"c{value}"),
        "none": None,
    }[kind]
    challenge = None
    if ending == "challenge":
        state = f"{tag}-{name}"
        challenge = (state, Challenge(name, "vpn", NOW + dt + 60))
    result, count = ("challenge", "") if ending == "challenge" else ending.partition("+")[::2]
    return DecisionWrite(
        name,
        NOW + dt,
        "10.0.0.1",
        "vpn",
        max_attempts,
        60,
        won=_record(result, ending, user=name, failure=bool(count)),
        use=use,
        lost=_record("reject", "replay", user=name, failure=True),
        challenge=challenge,
        locked=_record("reject", "locked", user=name) if gated else None,
    )


def _write(
    use: SingleUse | None,
    *,
    user: str | None = "alice",
    challenge: tuple[str, Challenge] | None = None,
    max_attempts: int = 5,
) -> DecisionWrite:
    name = user or ""
    return DecisionWrite(
        user=user,
        now=NOW,
        source="10.0.0.1",
        client="vpn",
        max_attempts=max_attempts,
        lock_seconds=300,
        won=_record("accept", "ok", user=name),
        use=use,
        lost=_record("reject", "replay", user=name, failure=True),
        challenge=challenge,
    )


def _race(n: int, fn: Callable[[int], R]) -> list[R]:
    barrier = threading.Barrier(n)

    def go(i: int) -> R:
        barrier.wait(timeout=30)
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(go, range(n), timeout=120))


def _alice(store: SqlStore) -> None:
    store.add_user(User(name="alice", created_at=NOW))
    store.add_token(Token(serial="T", type=TokenType.TOTP, seed=b"s" * 20, user="alice"))
    store.add_token(Token(serial="H", type=TokenType.HOTP, seed=b"h" * 20, user="alice"))


def test_won_totp_step_writes_success_and_accept_audit(store: SqlStore) -> None:
    """A fresh step is won: the step is stored, the attempt is a success (failures
    zeroed), and the one audit row is the `won` record."""
    _alice(store)
    store.record_failure("alice", NOW - 10, 5, 300)
    result = store.commit_decision(_write(UseTotpStep("T", 100, 1)))
    assert result == DecisionCommit(won=True, lock=None)
    token = store.get_token("T")
    assert token is not None and (token.last_step, token.drift) == (100, 1)
    user = store.get_user("alice")
    assert user is not None and user.failures == 0
    assert user.last_success is not None and user.last_success.source == "10.0.0.1"
    (event,) = store.query_audit(user="alice")
    assert (event.result, event.reason) == ("accept", "ok")


def test_lost_step_counts_a_failure_and_writes_the_lost_record(store: SqlStore) -> None:
    """A step at or before the last one is lost: nothing of the `won` ending is written;
    the failure is counted (lock state returned) and audited as a replay."""
    _alice(store)
    assert store.commit_decision(_write(UseTotpStep("T", 100, 0))).won
    result = store.commit_decision(_write(UseTotpStep("T", 100, 0), max_attempts=1))
    assert result.won is False and result.lock is not None
    assert (result.lock.failures, result.lock.locked_until) == (1, NOW + 300)
    user = store.get_user("alice")
    assert user is not None and user.failures == 1 and user.last_attempt is not None
    assert [e.reason for e in store.query_audit(user="alice")] == ["replay", "ok"]


@pytest.mark.parametrize("kind", ["totp", "backup", "failure", "challenge"])
def test_a_write_past_the_lock_gate_rechecks_the_lock(store: SqlStore, kind: str) -> None:
    """A decision that read alice unlocked writes, but a parallel guess locked her in
    between: only the `locked` ending is written (nothing used, no failure counted, no
    challenge stored, audited as locked), whatever the decision would have written."""
    _alice(store)
    store.replace_backup_codes("alice", ["hash-1"], NOW)
    store.record_failure("alice", NOW - 1, 1, None)  # the parallel guess that locked her
    use: SingleUse | None = {
        "totp": UseTotpStep("T", 100, 0),
        "backup": UseBackupCode("alice", "hash-1"),
    }.get(kind)
    write = dataclasses.replace(
        _write(
            use,
            challenge=("s", Challenge("alice", "vpn", NOW + 60)) if kind == "challenge" else None,
        ),
        locked=_record("reject", "locked"),
    )
    if kind == "failure":
        write.won = _record("reject", "bad_otp", failure=True)
    assert store.commit_decision(write) == DecisionCommit(won=False, lock=None, locked=True)
    user = store.get_user("alice")
    assert user is not None and user.failures == 1 and user.last_attempt is not None
    token = store.get_token("T")
    assert token is not None and token.last_step == -1
    assert store.backup_codes_left("alice") == 1
    assert store.take_challenge("s", NOW) is None
    assert [e.reason for e in store.query_audit(user="alice")] == ["locked"]


def test_a_write_past_the_lock_gate_applies_while_unlocked(store: SqlStore) -> None:
    """The re-check passes for a user who is not locked, or whose lock has run out."""
    _alice(store)
    store.record_failure("alice", NOW - 400, 1, 300)  # locked until NOW - 100
    write = dataclasses.replace(
        _write(UseTotpStep("T", 100, 0)), locked=_record("reject", "locked")
    )
    assert store.commit_decision(write) == DecisionCommit(won=True, lock=None)
    assert [e.reason for e in store.query_audit(user="alice")] == ["ok"]


def test_hotp_and_backup_code_are_single_use(store: SqlStore) -> None:
    """The HOTP counter and a backup code are won once each through commit_decision."""
    _alice(store)
    store.replace_backup_codes("alice", ["hash-1"], NOW)
    assert store.commit_decision(_write(UseHotpCounter("H", 3))).won
    assert not store.commit_decision(_write(UseHotpCounter("H", 3))).won
    token = store.get_token("H")
    assert token is not None and token.counter == 4
    assert store.commit_decision(_write(UseBackupCode("alice", "hash-1"))).won
    assert not store.commit_decision(_write(UseBackupCode("alice", "hash-1"))).won
    assert store.backup_codes_left("alice") == 0


def test_challenge_is_stored_with_the_outcome(store: SqlStore) -> None:
    """A challenge ending stores its state in the same transaction; it is then taken once."""
    _alice(store)
    challenge = Challenge("alice", "vpn", NOW + 120, '{"groups": []}')
    assert store.commit_decision(_write(None, challenge=("state-hash", challenge))).won
    assert store.take_challenge("state-hash", NOW) == challenge
    assert store.take_challenge("state-hash", NOW) is None


def test_without_a_user_only_the_audit_row_is_written(store: SqlStore) -> None:
    """user None (unknown user, bad request): no user row is touched or created."""
    record = _record("reject", "unknown_user", user="mallory")
    write = DecisionWrite(None, NOW, "10.0.0.1", "vpn", 5, 300, won=record)
    assert store.commit_decision(write) == DecisionCommit(won=True, lock=None)
    assert store.get_user("mallory") is None
    assert [e.reason for e in store.query_audit(user="mallory")] == ["unknown_user"]


def test_a_lost_record_is_required_when_the_use_can_be_lost(store: SqlStore) -> None:
    """A write phase that could lose its single use but says nothing about that ending
    is refused, and nothing of it is kept (the transaction rolls back)."""
    _alice(store)
    assert store.commit_decision(_write(UseTotpStep("T", 100, 0))).won
    write = DecisionWrite(
        "alice",
        NOW,
        "10.0.0.1",
        "vpn",
        5,
        300,
        won=_record("accept", "ok"),
        use=UseTotpStep("T", 100, 0),
    )
    with pytest.raises(ValueError, match="lost"):
        store.commit_decision(write)
    assert len(store.query_audit(user="alice")) == 1


def test_twenty_threads_racing_for_one_step_have_one_winner(store: SqlStore) -> None:
    """20 concurrent write phases for the same step: exactly one wins, the 19 others
    count exactly 19 failures, and exactly 20 audit rows are written."""
    _alice(store)
    results = _race(
        20, lambda i: store.commit_decision(_write(UseTotpStep("T", 7, 0), max_attempts=1000))
    )
    assert sum(r.won for r in results) == 1
    assert sorted(r.lock.failures for r in results if r.lock is not None) == list(range(1, 20))
    user = store.get_user("alice")
    assert user is not None and user.failures == 19
    reasons = [e.reason for e in store.query_audit(user="alice", limit=100)]
    assert sorted(reasons) == ["ok"] + ["replay"] * 19


def test_many_users_in_parallel_all_win_and_are_all_audited(store: SqlStore) -> None:
    """Distinct users deciding at once (the group-commit case): every one wins its own
    step and gets its own audit row; nothing is lost or merged."""
    names = [f"u{i:02d}" for i in range(24)]
    for name in names:
        store.add_user(User(name=name, created_at=NOW))
        store.add_token(Token(serial=f"T-{name}", type=TokenType.TOTP, seed=b"s" * 20, user=name))
    results = _race(
        24,
        lambda i: store.commit_decision(
            DecisionWrite(
                names[i],
                NOW,
                "10.0.0.1",
                "vpn",
                5,
                300,
                won=_record("accept", "ok", user=names[i]),
                use=UseTotpStep(f"T-{names[i]}", 50 + i, 0),
                lost=_record("reject", "replay", user=names[i], failure=True),
            )
        ),
    )
    assert all(r.won for r in results)
    for i, name in enumerate(names):
        token = store.get_token(f"T-{name}")
        assert token is not None and token.last_step == 50 + i
        assert [e.reason for e in store.query_audit(user=name)] == ["ok"]


# ---------------------------------------------------------------- SQLite hot path
@pytest.fixture
def sqlite_store(tmp_path: Path, keyring: Keyring) -> SqlStore:
    s = SqlStore.open(f"sqlite:///{tmp_path / 'authd.db'}", keyring)
    _alice(s)
    return s


def test_one_failing_write_phase_does_not_fail_its_batch(sqlite_store: SqlStore) -> None:
    """Write phases queued together share a transaction; when one of them fails, the
    others are retried alone and succeed, and only the failing caller sees an error
    (as StoreUnavailable, naming no value)."""
    hot = sqlite_store._hot
    assert hot is not None
    outcomes: list[object] = []

    def good(step: int) -> None:
        outcomes.append(sqlite_store.commit_decision(_write(UseTotpStep("T", step, 0))).won)

    challenge = Challenge("alice", "vpn", NOW + 120)
    sqlite_store.commit_decision(_write(None, challenge=("taken", challenge)))

    def bad() -> None:  # a state hash already stored: the INSERT violates the key
        try:
            sqlite_store.commit_decision(_write(None, challenge=("taken", challenge)))
        except StoreUnavailable as e:
            outcomes.append(str(e))

    with hot._commit_lock:  # hold the writer so that all three queue into one batch
        threads = [threading.Thread(target=f) for f in (lambda: good(10), bad, lambda: good(11))]
        for t in threads:
            t.start()
        for _ in range(2000):
            if len(hot._pending) == 3:
                break
            threading.Event().wait(0.005)
        assert len(hot._pending) == 3
    for t in threads:
        t.join(timeout=30)
    assert sorted(map(str, outcomes)) == ["True", "True", "database error: IntegrityError"]
    token = sqlite_store.get_token("T")
    assert token is not None and token.last_step == 11
    sqlite_store.close()


def test_an_error_inside_the_write_phase_rolls_it_back(sqlite_store: SqlStore) -> None:
    """Nothing of a write phase that raised is committed: the step stays unused."""
    hot = sqlite_store._hot
    assert hot is not None

    def half_then_fail(run: object) -> None:
        run(_ACCEPT_TOTP, {"p_serial": "T", "p_step": 5, "p_drift": 0})  # type: ignore[operator]
        raise ValueError("boom")

    with pytest.raises(ValueError):
        hot.write(half_then_fail)
    token = sqlite_store.get_token("T")
    assert token is not None and token.last_step == -1
    assert sqlite_store.commit_decision(_write(UseTotpStep("T", 5, 0))).won
    sqlite_store.close()


def test_write_phase_waits_for_another_process_lock(sqlite_store: SqlStore, tmp_path: Path) -> None:
    """While another connection (authctl, a second worker) holds the write lock, a
    decision's write phase waits and then commits, instead of failing."""
    other = sqlite3.connect(tmp_path / "authd.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    result: list[DecisionCommit] = []
    writer = threading.Thread(
        target=lambda: result.append(sqlite_store.commit_decision(_write(UseTotpStep("T", 9, 0))))
    )
    writer.start()
    writer.join(timeout=0.3)
    assert writer.is_alive()  # queued on the lock, not failed
    other.execute("ROLLBACK")
    other.close()
    writer.join(timeout=30)
    assert [r.won for r in result] == [True]
    sqlite_store.close()


def test_closed_store_refuses_hot_path_calls(sqlite_store: SqlStore) -> None:
    """After close, the hot path fails closed with StoreUnavailable."""
    sqlite_store.close()
    with pytest.raises(StoreUnavailable):
        sqlite_store.commit_decision(_write(UseTotpStep("T", 1, 0)))
    with pytest.raises(StoreUnavailable):
        sqlite_store.get_user_with_tokens("alice")


def test_wal_is_checkpointed_in_the_background(sqlite_store: SqlStore, tmp_path: Path) -> None:
    """Decision commits never run SQLite's automatic checkpoint (it would copy and fsync
    inside a batch's COMMIT); the background checkpointer copies committed writes into
    the database file itself, and close() stops its thread."""
    sqlite_store.commit_decisions([_write(UseTotpStep("T", 9, 0))])
    hot = sqlite_store._hot
    assert isinstance(hot, SqliteHotPath) and hot._writer is not None
    assert hot._writer.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)

    # immutable=1 reads the main file alone, ignoring the WAL: the step shows there only
    # once a checkpoint copied it.
    def step_in_main_file() -> object:
        main_file = sqlite3.connect(f"file:{tmp_path / 'authd.db'}?immutable=1", uri=True)
        try:
            return main_file.execute("SELECT last_step FROM tokens WHERE serial = 'T'").fetchone()
        except sqlite3.OperationalError:  # not even the schema copied yet
            return None
        finally:
            main_file.close()

    deadline = time.monotonic() + 10
    while step_in_main_file() != (9,):
        assert time.monotonic() < deadline, "the WAL was not checkpointed"
        time.sleep(0.02)
    sqlite_store.close()
    assert not [t for t in threading.enumerate() if t.name == "authd-wal-checkpoint"]


# ---------------------------------------------------------------- PostgreSQL hot path
def test_postgres_hot_path_recovers_after_losing_its_connection(
    postgres_db_url: str, keyring: Keyring
) -> None:
    """When the server drops the hot path's connection (restart, failover, idle kill),
    the call in flight fails closed with StoreUnavailable, and the next one reconnects
    and works; the step of the failed call was not consumed."""
    import psycopg

    store = SqlStore.open(postgres_db_url, keyring)
    try:
        _alice(store)
        assert store.commit_decision(_write(UseTotpStep("T", 1, 0))).won
        dbname = postgres_db_url.rsplit("/", 1)[1]
        with psycopg.connect(postgres_db_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        with pytest.raises(StoreUnavailable) as caught:
            store.commit_decision(_write(UseTotpStep("T", 2, 0)))
        assert "authd" not in str(caught.value)  # names the error class, not the URL
        assert store.commit_decision(_write(UseTotpStep("T", 2, 0))).won
        user, toks = store.get_user_with_tokens("alice")
        assert user is not None and {t.serial: t.last_step for t in toks}["T"] == 2
    finally:
        store.close()


_ops = st.lists(
    st.tuples(
        st.sampled_from(["totp", "hotp", "backup", "none"]),
        st.integers(min_value=0, max_value=4),  # step / counter / code number
        st.sampled_from(["accept", "reject", "reject+count"]),  # the `won` ending
        st.floats(min_value=0, max_value=400),  # seconds after NOW
        st.booleans(),  # past the lock gate: the write checks the lock again
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_ops, max_attempts=st.integers(min_value=1, max_value=4))
def test_postgres_single_statement_matches_the_statement_sequence(
    pg_store: SqlStore, ops: list[tuple[str, int, str, float, bool]], max_attempts: int
) -> None:
    """The one-statement PostgreSQL write phase and the same write run as its separate
    statements give the same answers and leave the same state, for any sequence of
    uses, endings, times and lock re-checks (user `a` takes the single statement, user
    `b` the sequence)."""
    from authd.storage.sql import _apply_decisions

    tag = f"{next(_examples)}"
    for who in ("a", "b"):
        name = f"{who}{tag}"
        _add_user(pg_store, name)
    hot = pg_store._hot
    for kind, value, ending, dt, gated in ops:
        answers = []
        for who in ("a", "b"):
            name = f"{who}{tag}"
            write = _op_write(name, (0, kind, value, ending, dt, gated), max_attempts, tag)
            if who == "a":
                answers.append(pg_store.commit_decision(write))
            else:
                answers.append(hot.write(lambda run, w=write: _apply_decisions(run, (w,))[0]))
        assert answers[0] == answers[1]
    ua, ub = pg_store.get_user(f"a{tag}"), pg_store.get_user(f"b{tag}")
    assert ua is not None and ub is not None
    assert (ua.failures, ua.locked_until, ua.last_attempt, ua.last_success) == (
        ub.failures,
        ub.locked_until,
        ub.last_attempt,
        ub.last_success,
    )
    ta = {t.serial[0]: (t.last_step, t.counter) for t in pg_store.list_tokens(f"a{tag}")}
    tb = {t.serial[0]: (t.last_step, t.counter) for t in pg_store.list_tokens(f"b{tag}")}
    assert ta == tb
    assert pg_store.backup_codes_left(f"a{tag}") == pg_store.backup_codes_left(f"b{tag}")
    audit_a = [(e.result, e.reason) for e in pg_store.query_audit(user=f"a{tag}", limit=100)]
    audit_b = [(e.result, e.reason) for e in pg_store.query_audit(user=f"b{tag}", limit=100)]
    assert audit_a == audit_b and len(audit_a) == len(ops)


_examples = iter(range(10**9))


@pytest.fixture
def pg_store(postgres_db_url: str, keyring: Keyring) -> Iterator[SqlStore]:
    s = SqlStore.open(postgres_db_url, keyring)
    yield s
    s.close()


def test_decision_read_is_user_tokens_and_codes(store: SqlStore) -> None:
    """get_user_tokens_codes answers what get_user_with_tokens and backup_codes_left
    answer, in one read; an unknown user is (None, [], 0)."""
    assert store.get_user_tokens_codes("nobody") == (None, [], 0)
    _alice(store)
    assert store.get_user_tokens_codes("alice") == (*store.get_user_with_tokens("alice"), 0)
    store.replace_backup_codes("alice", ["h1", "h2", "h3"], NOW)
    user, toks, codes = store.get_user_tokens_codes("alice")
    assert (user, toks) == store.get_user_with_tokens("alice") and codes == 3
    assert [t.serial for t in toks] == ["H", "T"]


# ---------------------------------------------------------------- decision batches (SQLite)
def test_commit_decisions_is_one_transaction_in_order(
    sqlite_store: SqlStore, tmp_path: Path
) -> None:
    """commit_decisions applies the write phases in order, as one after the other (the
    second use of a step is a lost CAS), and another connection sees all of them at once
    when it returns."""
    other = sqlite3.connect(tmp_path / "authd.db", isolation_level=None)
    writes = [_write(UseTotpStep("T", 7, 0)), _write(UseTotpStep("T", 7, 0))]
    writes.append(_write(UseHotpCounter("H", 0)))
    results = sqlite_store.commit_decisions(writes)
    assert [r.won for r in results] == [True, False, True]
    assert results[1].lock is not None and results[1].lock.failures == 1
    assert other.execute("SELECT last_step, counter FROM tokens ORDER BY serial").fetchall() == [
        (-1, 1),
        (7, 0),
    ]
    assert other.execute("SELECT count(*) FROM audit").fetchone() == (3,)
    other.close()
    sqlite_store.close()


@pytest.mark.parametrize(
    ("uses", "failures"),
    [
        # lost (counted) then won: the success resets the count -> 0
        ([UseTotpStep("T", 7, 0), UseTotpStep("T", 7, 0), UseHotpCounter("H", 0)], 0),
        # won then lost: the failure counts after the success -> 1
        ([UseHotpCounter("H", 0), UseTotpStep("T", 7, 0), UseTotpStep("T", 7, 0)], 1),
    ],
)
def test_commit_decisions_keeps_one_users_endings_in_decision_order(
    sqlite_store: SqlStore, uses: list[SingleUse], failures: int
) -> None:
    """Endings are written together at the end of a batch (executemany), but never past a
    later decision of the same user: a success after a counted failure clears it, a
    failure after a success stays counted, as if decided one by one."""
    sqlite_store.commit_decisions([_write(use) for use in uses])
    user = sqlite_store.get_user("alice")
    assert user is not None and user.failures == failures
    assert len(sqlite_store.query_audit(user="alice")) == 3
    sqlite_store.close()


def test_commit_decisions_rolls_back_entirely_on_an_error(sqlite_store: SqlStore) -> None:
    """An error in one write phase rolls back all of them (nothing committed, so nothing
    may be answered); the next write phase works."""
    bad = dataclasses.replace(_write(UseTotpStep("T", 7, 0)), lost=None)  # loses: no record
    with pytest.raises(ValueError):
        sqlite_store.commit_decisions([_write(UseTotpStep("T", 7, 0)), bad])
    token = sqlite_store.get_token("T")
    assert token is not None and token.last_step == -1
    assert sqlite_store.query_audit(user="alice") == []
    assert sqlite_store.commit_decisions([_write(UseTotpStep("T", 7, 0))])[0].won
    sqlite_store.close()


def test_decision_reads_hold_no_write_lock_and_no_connection(
    sqlite_store: SqlStore, tmp_path: Path
) -> None:
    """Inside decision_reads another process can still write (no write lock is held, so
    processes compute side by side) and no connection is held: with a pool of two (the
    writer's and one more), the block can still read and write through the pool. The
    users named read as they were at the read-ahead; a write phase computed from that
    stale read loses its CAS (exactness is in SQL)."""
    store = SqlStore.open(f"sqlite:///{tmp_path / 'authd.db'}", sqlite_store._keyring, pool_size=2)
    store.commit_decisions([_write(UseHotpCounter("H", 0))])  # the writer: one of the two
    other = sqlite3.connect(tmp_path / "authd.db", timeout=0, isolation_level=None)
    with store.decision_reads(["alice"]):
        _, before, _ = store.get_user_tokens_codes("alice")
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE tokens SET last_step = 9 WHERE serial = 'T'")
        other.execute("COMMIT")
        _, during, _ = store.get_user_tokens_codes("alice")
        assert during == before
        assert store.get_user("alice") is not None  # a connection of the pool is free
        store.set_disabled("nobody", True)
    _, after, _ = store.get_user_tokens_codes("alice")
    assert {t.serial: t.last_step for t in after}["T"] == 9
    assert not store.commit_decisions([_write(UseTotpStep("T", 9, 0))])[0].won
    other.close()
    store.close()
    sqlite_store.close()


def test_commit_decisions_waits_for_another_process_lock(
    sqlite_store: SqlStore, tmp_path: Path
) -> None:
    """While another process holds the write lock, commit_decisions waits (short naps)
    and commits once it is released; its result only comes after that COMMIT."""
    other = sqlite3.connect(tmp_path / "authd.db", timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    result: list[bool] = []
    writer = threading.Thread(
        target=lambda: result.extend(
            r.won for r in sqlite_store.commit_decisions([_write(UseHotpCounter("H", 0))])
        )
    )
    writer.start()
    writer.join(timeout=0.2)
    assert writer.is_alive() and result == []
    other.execute("COMMIT")
    writer.join(timeout=30)
    assert result == [True]
    other.close()
    sqlite_store.close()


def test_postgres_commits_decisions_with_the_same_results_as_sqlite(
    sqlite_store: SqlStore, pg_store: SqlStore
) -> None:
    """PostgreSQL's batch (one pipelined transaction) gives the same results as SQLite's
    single transaction, for one user's writes in order; decision_reads reads ahead on
    both."""
    writes = [_write(UseTotpStep("T", 7, 0)), _write(UseTotpStep("T", 7, 0))]
    writes.append(_write(UseHotpCounter("H", 0)))
    _alice(pg_store)
    with pg_store.decision_reads():
        user, _, _ = pg_store.get_user_tokens_codes("alice")
    assert user is not None
    pg = pg_store.commit_decisions(writes)
    lite = sqlite_store.commit_decisions(writes)
    assert pg == lite and [r.won for r in pg] == [True, False, True]
    sqlite_store.close()
