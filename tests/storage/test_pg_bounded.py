"""storage/pg_bounded.py on a real PostgreSQL: every wait ends at store.timeout or the
request's budget, on a running and on a stopped server, and a write whose time ran out
is never committed."""

from __future__ import annotations

import signal
import time

import psycopg
import pytest

from authd.auth.interfaces import AttemptRecord, DecisionWrite, UseTotpStep
from authd.core.errors import StoreUnavailable
from authd.core.model import AuditEvent, Token, TokenType, User
from authd.crypto import Keyring
from authd.storage.pg_bounded import BoundedConnection, budget
from authd.storage.sql import SqlStore
from tests.fixtures.postgres import Cluster

NOW = 1_767_225_600.0


def _accept(step: int) -> DecisionWrite:
    def record(result: str, reason: str) -> AttemptRecord:
        audit = AuditEvent(NOW, "radius:vpn", "auth", result, "alice", "vpn", "10.0.0.1", reason)
        return AttemptRecord(result == "accept", result != "accept", audit)

    return DecisionWrite(
        "alice", NOW, "10.0.0.1", "vpn", 5, 300,
        record("accept", "ok"), UseTotpStep("T", step, 0), record("reject", "replay"),
    )  # fmt: skip


def test_a_spent_budget_commits_nothing_and_the_next_call_reconnects(
    postgres_db_url: str, keyring: Keyring
) -> None:
    """A decision write whose request has no store time left fails closed without
    using the code; outside that budget the store works again on a new connection."""
    store = SqlStore.open(postgres_db_url, keyring, timeout=5.0)
    try:
        store.add_user(User(name="alice", created_at=NOW))
        store.add_token(Token(serial="T", type=TokenType.TOTP, seed=b"s" * 20, user="alice"))
        assert store.commit_decision(_accept(1)).won
        with store.time_budget(0.0), pytest.raises(StoreUnavailable):
            store.commit_decision(_accept(2))
        token = store.get_token("T")
        assert token is not None and token.last_step == 1
        assert store.commit_decision(_accept(2)).won
    finally:
        store.close()


def test_only_waits_on_the_server_count_against_a_budget(postgres_db_url: str) -> None:
    """Time between statements (a directory bind, a password hash) does not use up a
    budget; time waiting for answers does."""
    with BoundedConnection.open(postgres_db_url, 5.0, autocommit=True) as conn, budget(0.5):
        assert conn.execute("SELECT 1").fetchone() == (1,)
        time.sleep(0.6)  # not a wait on the server: outside the budget
        assert conn.execute("SELECT 2").fetchone() == (2,)
        conn.execute("SELECT pg_sleep(0.3)")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT pg_sleep(0.3)")  # 0.2 s were left
        assert conn.closed


def test_the_server_gives_up_too(postgres_db_url: str) -> None:
    """A running server cancels a statement or a lock wait a little before the client
    would (statement_timeout, lock_timeout: 90% of the timeout), so the connection stays
    usable; any options the URL had are kept."""
    url = postgres_db_url + "?options=-c%20application_name%3Dauthd-test"
    with BoundedConnection.open(url, 1.5, autocommit=True) as conn:
        shown = [
            conn.execute(f"SHOW {name}").fetchone()
            for name in ("statement_timeout", "lock_timeout", "application_name")
        ]
        assert shown == [("1350ms",), ("1350ms",), ("authd-test",)]
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(10)")
        assert time.monotonic() - t0 < 5
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_waits_on_a_stopped_server_end_at_the_timeout(postgres_cluster: Cluster) -> None:
    """With the server stopped, a connect and a query each give up after the timeout,
    even below libpq's 2 s minimum connect_timeout, and the cut connection is closed."""
    conn = BoundedConnection.open(postgres_cluster.url, 0.5, autocommit=True)
    postgres_cluster.signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        assert 0.4 < time.monotonic() - t0 < 1.5
        assert conn.closed
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            BoundedConnection.open(postgres_cluster.url, 0.5, autocommit=True)
        assert 0.4 < time.monotonic() - t0 < 1.5
    finally:
        postgres_cluster.signal(signal.SIGCONT)
        conn.close()
