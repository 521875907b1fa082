"""`SqlStore.decision_reads` and `commit_decisions`: a batch of write phases in one
transaction answers and writes exactly what the same writes one by one do, on SQLite and
PostgreSQL; it is all or nothing; and on PostgreSQL, batches of overlapping users never
deadlock each other."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authd.auth.interfaces import (
    Challenge,
    DecisionCommit,
    DecisionWrite,
)
from authd.core.errors import InvalidInput, StoreUnavailable
from authd.crypto import Keyring
from authd.storage.sql import SqlStore
from tests.fixtures.postgres import Cluster
from tests.storage.test_commit_decision import NOW, _add_user, _op_write, _record

USERS = 4  # per side of the comparison
_examples = itertools.count()


# One write phase: (user number, single use, its value, the `won` ending, seconds after
# NOW, past the lock gate); ending "challenge" stores one.
_Op = tuple[int, str, int, str, float, bool]
_op = st.tuples(
    st.integers(min_value=0, max_value=USERS - 1),
    st.sampled_from(["totp", "hotp", "backup", "none"]),
    st.integers(min_value=0, max_value=3),  # step / counter / code number
    st.sampled_from(["accept", "reject", "reject+count", "challenge"]),
    st.floats(min_value=0, max_value=400),
    st.booleans(),
)
# Batches of distinct users (as the batching layer makes them), in any order.
_batches = st.lists(
    st.lists(_op, min_size=1, max_size=USERS, unique_by=lambda op: op[0]),
    min_size=1,
    max_size=6,
)


def _state(store: SqlStore, name: str) -> tuple[object, ...]:
    """Everything a decision writes for user `name`."""
    user = store.get_user(name)
    assert user is not None
    tokens = sorted((t.serial[0], t.last_step, t.drift, t.counter) for t in store.list_tokens(name))
    audit = [(e.result, e.reason, e.at) for e in reversed(store.query_audit(user=name, limit=1000))]
    return (
        user.failures,
        user.locked_until,
        user.last_attempt,
        user.last_success,
        tokens,
        store.backup_codes_left(name),
        audit,
    )


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=_batches, max_attempts=st.integers(min_value=1, max_value=3))
def test_a_batch_answers_and_writes_as_its_writes_one_by_one(
    store: SqlStore, batches: list[list[_Op]], max_attempts: int
) -> None:
    """For any sequence of batches (uses won and lost, lock gates, failures that lock,
    challenges, backup codes), `commit_decisions` gives each write the result that
    `commit_decision` gives it alone, in input order, and leaves the same users, tokens,
    backup codes, challenges and audit rows (users `b*` batched, `o*` one by one)."""
    tag = str(next(_examples))
    for who, i in itertools.product("bo", range(USERS)):
        _add_user(store, f"{who}{tag}-{i}")
    for n, batch in enumerate(batches):
        batched = store.commit_decisions(
            [_op_write(f"b{tag}-{op[0]}", op[:6], max_attempts, f"b{n}") for op in batch]
        )
        alone = [
            store.commit_decision(_op_write(f"o{tag}-{op[0]}", op[:6], max_attempts, f"o{n}"))
            for op in batch
        ]
        assert batched == alone
    for i in range(USERS):
        assert _state(store, f"b{tag}-{i}") == _state(store, f"o{tag}-{i}")
    for n, batch in enumerate(batches):
        for op in batch:
            if op[3] == "challenge":
                b = _op_write(f"b{tag}-{op[0]}", op[:6], max_attempts, f"b{n}").challenge
                o = _op_write(f"o{tag}-{op[0]}", op[:6], max_attempts, f"o{n}").challenge
                assert b is not None and o is not None
                taken_b, taken_o = store.take_challenge(b[0], NOW), store.take_challenge(o[0], NOW)
                assert (taken_b is None) == (taken_o is None)


def test_results_come_back_in_input_order(store: SqlStore) -> None:
    """Writes are applied sorted by user, but each result is at its write's position."""
    for name in ("zed", "amy", "kim"):
        _add_user(store, name, codes=0)
    store.commit_decision(_op_write("amy", (0, "totp", 5, "accept", 0, False), 5, "x"))
    writes = [
        _op_write("zed", (0, "totp", 5, "accept", 0, False), 5, "x"),
        _op_write("amy", (0, "totp", 5, "accept", 0, False), 5, "x"),  # a replay: lost
        _op_write("kim", (0, "none", 0, "reject+count", 0, False), 1, "x"),
    ]
    results = store.commit_decisions(writes)
    assert [r.won for r in results] == [True, False, True]
    assert results[1].lock is not None and results[1].lock.failures == 1
    assert results[2].lock is not None and results[2].lock.locked_until == NOW + 60


def test_a_batch_with_an_error_writes_nothing(store: SqlStore) -> None:
    """One write phase of the batch fails (its challenge state is taken): the whole batch
    rolls back, raises StoreUnavailable naming only the error class, and none of the
    other writes (a won step, a counted failure, the audit rows) is kept."""
    for name in ("amy", "bob", "cat"):
        _add_user(store, name)
    challenge = ("state", Challenge("bob", "vpn", NOW + 60))
    bob = DecisionWrite("bob", NOW, "10.0.0.1", "vpn", 5, 60, _record("challenge", "c", user="bob"))
    bob.challenge = challenge
    store.commit_decision(bob)
    writes = [
        _op_write("amy", (0, "totp", 7, "accept", 0, False), 5, "x"),
        bob,  # the same state again
        _op_write("cat", (0, "none", 0, "reject+count", 0, False), 5, "x"),
    ]
    with pytest.raises(StoreUnavailable, match="^database error: [A-Za-z]+$"):
        store.commit_decisions(writes)
    token = store.get_token("Tamy")
    assert token is not None and token.last_step == -1
    assert store.query_audit(user="amy") == []
    assert [e.reason for e in store.query_audit(user="bob")] == ["c"]
    cat = store.get_user("cat")
    assert cat is not None and cat.failures == 0 and store.query_audit(user="cat") == []
    assert store.commit_decisions(writes[:1])[0].won  # the store works on


def test_a_batch_with_the_hash_chain_on_is_sealed(store_url: str, keyring: Keyring) -> None:
    """With audit.hash_chain on, a batch (the head locked first, its statements one by
    one) answers as one by one and its audit rows are sealed: the chain verifies, every
    row counted."""
    store = SqlStore.open(store_url, keyring, pool_size=2, audit_chain=True)
    try:
        for name in ("amy", "bob"):
            _add_user(store, name)
        writes = [
            _op_write("bob", (0, "totp", 4, "accept", 0, True), 5, "x"),
            _op_write("amy", (0, "backup", 1, "accept", 0, True), 5, "x"),
        ]
        assert [r.won for r in store.commit_decisions(writes)] == [True, True]
        assert [r.won for r in store.commit_decisions(writes)] == [False, False]
        verdict = store.verify_audit()
        assert verdict.ok and verdict.checked == 4
    finally:
        store.close()


def test_decision_reads_answer_from_one_read_ahead(store: SqlStore, store_url: str) -> None:
    """Inside decision_reads(names), the users named are read once, ahead: a write made
    meanwhile by another connection is not seen until the block ends (the writes'
    compare-and-set catches it); an unknown name reads as no user."""
    _add_user(store, "amy")
    expected = store.get_user_tokens_codes("amy")
    with store.decision_reads(["amy", "ghost"]):
        _set_step_elsewhere(store_url, "Tamy", 9)
        assert store.get_user_tokens_codes("amy") == expected
        assert store.get_user_tokens_codes("ghost") == (None, [], 0)
    _, tokens, codes = store.get_user_tokens_codes("amy")
    assert {t.serial: t.last_step for t in tokens}["Tamy"] == 9 and codes == 3
    assert not store.commit_decisions(
        [_op_write("amy", (0, "totp", 9, "accept", 0, False), 5, "x")]
    )[0].won


def _set_step_elsewhere(store_url: str, serial: str, step: int) -> None:
    if store_url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute("UPDATE tokens SET last_step = ? WHERE serial = ?", (step, serial))
        finally:
            conn.close()
        return
    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute("UPDATE tokens SET last_step = %s WHERE serial = %s", (step, serial))


# ---------------------------------------------------------------- PostgreSQL: lock order
@pytest.fixture
def pg_store(postgres_db_url: str, keyring: Keyring) -> Iterator[SqlStore]:
    s = SqlStore.open(postgres_db_url, keyring, pool_size=4, timeout=5.0)
    yield s
    s.close()


def _waiting_for_locks(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return 0 if row is None else int(row[0])


def test_batches_of_overlapping_users_in_opposite_orders_do_not_deadlock(
    pg_store: SqlStore, postgres_db_url: str
) -> None:
    """Two nodes' batches name the same users in opposite orders ([a, m, b] and
    [b, m, a]) while a third session holds `m`: taken in input order, each batch would
    hold one end and wait for the other's (a deadlock, one batch lost). Applied in user
    order, the second waits for the first and both commit, every write won."""
    for name in ("a", "b", "m"):
        _add_user(pg_store, name, codes=0)

    def batch(names: str) -> list[DecisionCommit]:
        return pg_store.commit_decisions(
            [_op_write(n, (0, "none", 0, "accept", 0, True), 5, "x") for n in names]
        )

    with psycopg.connect(postgres_db_url) as blocker:
        blocker.execute("SELECT 1 FROM users WHERE name = 'm' FOR UPDATE")
        with ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(batch, "amb")
            second = pool.submit(batch, "bma")
            deadline = time.monotonic() + 10
            while _waiting_for_locks(postgres_db_url) < 2:
                assert time.monotonic() < deadline, "the batches never reached the lock"
                time.sleep(0.02)
            blocker.rollback()
            results = first.result(timeout=30) + second.result(timeout=30)
    assert all(r.won for r in results) and len(results) == 6
    for name in ("a", "b", "m"):
        assert len(pg_store.query_audit(user=name)) == 2


def test_a_batch_commits_only_within_its_time_budget(
    pg_store: SqlStore, postgres_db_url: str
) -> None:
    """A batch whose statements answer after the request's budget is spent is rolled
    back, never committed later: StoreUnavailable (a timeout), nothing written."""
    _add_user(pg_store, "amy", codes=0)
    with psycopg.connect(postgres_db_url) as blocker:
        blocker.execute("SELECT 1 FROM users WHERE name = 'amy' FOR UPDATE")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable), pg_store.time_budget(0.3):
            pg_store.commit_decisions([_op_write("amy", (0, "totp", 3, "accept", 0, True), 5, "x")])
        assert time.monotonic() - started < 2
        blocker.rollback()
    token = pg_store.get_token("Tamy")
    assert token is not None and token.last_step == -1
    assert pg_store.query_audit(user="amy") == []


def test_threads_batching_shared_users_keep_them_exact(pg_store: SqlStore) -> None:
    """Four threads commit batches over the same six users in rotated orders, racing
    for the same TOTP steps: no batch fails (no deadlock, no lock timeout), no step of
    a user is won twice, and every user ends on the last step."""
    names = [f"u{i}" for i in range(6)]
    for name in names:
        _add_user(pg_store, name, codes=0)
    barrier = threading.Barrier(4)

    def go(seed: int) -> list[tuple[str, int, bool]]:
        order = names[seed:] + names[:seed]
        barrier.wait(timeout=30)
        won: list[tuple[str, int, bool]] = []
        for step in range(1, 6):
            writes = [_op_write(n, (0, "totp", step, "accept", 0, True), 1000, "x") for n in order]
            results = pg_store.commit_decisions(writes)
            won += [(n, step, r.won) for n, r in zip(order, results, strict=True)]
        return won

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = [o for batch in pool.map(go, range(4), timeout=120) for o in batch]
    assert len(outcomes) == 4 * 5 * 6
    winners = [(n, step) for n, step, won in outcomes if won]
    assert len(winners) == len(set(winners))  # each step of each user won at most once
    assert {t.serial: t.last_step for t in pg_store.list_tokens() if t.serial[0] == "T"} == {
        f"T{n}": 5 for n in names
    }


# ---------------------------------------------------------------- one pool
def _connections(conn: psycopg.Connection) -> int:
    """The client sessions open on the test database, besides `conn` (one session for
    all samples: a session closed a moment ago may still be listed) and autovacuum's."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'"
    ).fetchone()
    return 0 if row is None else int(row[0])


def _sqlite_handles(db: str) -> int:
    """This process's open file handles on the database file itself (one per SQLite
    connection)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == db:
                count += 1
        except OSError:  # closed meanwhile
            continue
    return count


def _busy_store(store: SqlStore, names: list[str], seconds: float) -> list[BaseException]:
    """Eight threads deciding at once for `seconds`: read-ahead blocks, batches,
    single reads and writes through SQLAlchemy; the errors they met."""
    errors: list[BaseException] = []
    stop = time.monotonic() + seconds

    def work(seed: int) -> None:
        step = 0
        while time.monotonic() < stop and step < 10_000:
            step += 1
            mine = names[seed % 4 :: 4]
            try:
                with store.decision_reads(mine):
                    for name in mine:
                        store.get_user_tokens_codes(name)
                    store.get_user(mine[0])  # a local user's password check
                store.commit_decisions(
                    [_op_write(n, (0, "none", 0, "accept", 0, True), 5, "x") for n in mine]
                )
                store.commit_decision(
                    _op_write(mine[0], (0, "none", 0, "reject", 0, False), 5, "x")
                )
            except Exception as e:  # reported below
                errors.append(e)
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


@pytest.mark.parametrize("pool_size", [2, 3])
def test_postgresql_connections_stay_within_pool_size(
    postgres_db_url: str, keyring: Keyring, pool_size: int
) -> None:
    """Eight threads deciding at once open no more PostgreSQL sessions than
    store.pool_size (the hot path's connections are the pool's), and none of them
    fails for want of one: a thread holds one connection at a time, so they queue."""
    store = SqlStore.open(postgres_db_url, keyring, pool_size=pool_size, timeout=5.0)
    names = [f"u{i}" for i in range(8)]
    try:
        for name in names:
            _add_user(store, name, codes=0)
        most = 0
        with (
            psycopg.connect(postgres_db_url, autocommit=True) as sampler,
            ThreadPoolExecutor(max_workers=1) as pool,
        ):
            busy = pool.submit(_busy_store, store, names, 2.0)
            while not busy.done():
                most = max(most, _connections(sampler))
                time.sleep(0.01)
            assert busy.result() == []
        assert 1 <= most <= pool_size
    finally:
        store.close()


def test_sqlite_connections_stay_within_pool_size(tmp_path: Path, keyring: Keyring) -> None:
    """On SQLite too: the writer, the readers and the WAL checkpointer are connections
    of the one pool, so the database file is never open more than store.pool_size
    times, with eight threads deciding at once; store.pool_size 1 is refused (the
    writer keeps one)."""
    db = str(tmp_path / "authd.db")
    with pytest.raises(InvalidInput, match="store.pool_size"):
        SqlStore.open(f"sqlite:///{db}", keyring, pool_size=1)
    store = SqlStore.open(f"sqlite:///{db}", keyring, pool_size=3)
    names = [f"u{i}" for i in range(8)]
    try:
        for name in names:
            _add_user(store, name, codes=0)
        most = 0
        with ThreadPoolExecutor(max_workers=1) as pool:
            busy = pool.submit(_busy_store, store, names, 2.0)
            while not busy.done():
                most = max(most, _sqlite_handles(db))
                time.sleep(0.005)
            assert busy.result() == []
        assert 2 <= most <= 3
    finally:
        store.close()


def test_a_batch_sent_to_a_stopped_postgresql_is_never_committed(
    postgres_cluster: Cluster, keyring: Keyring
) -> None:
    """With every process of the cluster stopped (a frozen VM), a batch fails closed
    within its time budget, and once the server resumes nothing of it was committed
    (its COMMIT was never sent; the connection was dropped); the store works on."""
    store = SqlStore.open(postgres_cluster.url, keyring, pool_size=2, timeout=1.0)
    try:
        for name in ("amy", "bob"):
            _add_user(store, name, codes=0)
        writes = [_op_write(n, (0, "totp", 3, "accept", 0, True), 5, "x") for n in ("bob", "amy")]
        postgres_cluster.signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable), store.time_budget(0.5):
                store.commit_decisions(writes)
            assert time.monotonic() - started < 1.5
        finally:
            postgres_cluster.signal(signal.SIGCONT)
        deadline = time.monotonic() + 10
        while True:  # the server back (a call may meet a connection it dropped meanwhile)
            try:
                tokens = {t.serial: t.last_step for t in store.list_tokens()}
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the server did not come back"
                time.sleep(0.1)
        assert tokens["Tamy"] == tokens["Tbob"] == -1
        assert store.query_audit() == []
        assert [r.won for r in store.commit_decisions(writes)] == [True, True]
    finally:
        store.close()
