"""Every statement a decision runs, and the operator queries that pick rows out of many
(`user list` patterns, audit by user, user delete and rename), is an index search on
both backends: its cost does not grow with the number of users or audit rows (audit by
user reads its name's bucket, 1/schema.AUDIT_USER_BUCKETS of the trail at most, newest
or oldest first until the page is full).

The plans are the databases' own (SQLite EXPLAIN QUERY PLAN, PostgreSQL EXPLAIN). On
PostgreSQL, sequential scans are switched off for the EXPLAIN: with small test tables
the planner would rightly prefer one, and with them off a statement still shows a
`Seq Scan` when no index can serve it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event
from sqlalchemy.sql import ClauseElement

from authd.auth.interfaces import (
    AttemptRecord,
    AuditFilter,
    Challenge,
    DecisionWrite,
    UseBackupCode,
    UseHotpCounter,
    UseTotpStep,
)
from authd.core.model import AuditEvent, Token, TokenType, User
from authd.storage import sql
from authd.storage.sql import SqlStore

NOW = 1_767_225_600.0
_utf8_dbs = itertools.count(1)


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-utf8"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The `store` fixture's databases, plus PostgreSQL with a collation other than C
    (as a database created in most locales has): there the primary key's index is not
    in byte order, and `user list` needs an index that is."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'authd.db'}"
        return
    if request.param == "postgresql":
        yield str(request.getfixturevalue("postgres_db_url"))
        return
    base, _, _ = str(request.getfixturevalue("postgres_url")).rpartition("/")
    name = f"authd_utf8_{next(_utf8_dbs)}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(
            f"CREATE DATABASE {name} TEMPLATE template0 LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"
        )
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

# SQLite: a full pass over a table (`SCAN users`) or over one of its indexes
# (`SCAN users USING INDEX ...`); json_each is the list of names a batch reads.
_SQLITE_SCAN = re.compile(r"\bSCAN (?!json_each)(\w+)")
_PG_SCAN = re.compile(r"Seq Scan on (\w+)")

# What every decision runs, with parameters of the right types.
_DECISION_STATEMENTS: dict[str, tuple[ClauseElement, dict[str, Any]]] = {
    "read user, tokens, codes": (sql._GET_USER_TOKENS_CODES, {"p_name": "u1"}),
    "read user and tokens": (sql._GET_USER_WITH_TOKENS, {"p_name": "u1"}),
    "locked now": (sql._LOCKED_NOW, {"p_name": "u1", "p_now": NOW}),
    "record failure": (
        sql._RECORD_FAILURE,
        {"p_name": "u1", "p_now": NOW, "p_max": 5, "p_deadline": NOW + 60},
    ),
    "record attempt": (
        sql._RECORD_ATTEMPT,
        {"p_name": "u1", "p_at": NOW, "p_source": "10.0.0.1", "p_client": "vpn"},
    ),
    "record success": (
        sql._RECORD_SUCCESS,
        {"p_name": "u1", "p_at": NOW, "p_source": "10.0.0.1", "p_client": "vpn"},
    ),
    "accept TOTP step": (sql._ACCEPT_TOTP, {"p_serial": "T1", "p_step": 9, "p_drift": 0}),
    "accept HOTP counter": (sql._ACCEPT_HOTP, {"p_serial": "T1", "p_counter": 9}),
    "count codes": (sql._COUNT_CODES, {"p_user": "u1"}),
    "consume code": (sql._CONSUME_CODE, {"p_user": "u1", "p_hash": "h"}),
    "take challenge": (sql._TAKE_CHALLENGE, {"p_hash": "s", "p_now": NOW}),
    "append audit": (
        sql._APPEND_AUDIT,
        {f"p_{c}": "x" for c in sql._PG_AUDIT_COLS} | {"p_at": NOW, "p_user_bucket": 3},
    ),
}


def _seed(store: SqlStore) -> None:
    for i in range(1, 41):
        store.add_user(User(name=f"u{i}", created_at=NOW))
    store.add_tokens(
        [
            Token(serial=f"T{i}", type=TokenType.TOTP, seed=b"k" * 20, user=f"u{i}",
                  created_at=NOW)
            for i in range(1, 41)
        ]
    )  # fmt: skip
    store.replace_backup_codes("u1", ["h1", "h2"], NOW)
    for i in range(200):
        store.append_audit(
            AuditEvent(at=NOW + i, actor="t", action="auth", result="reject", user=f"u{i % 40}")
        )


@contextmanager
def _explainer(store: SqlStore) -> Iterator[Callable[[str, Any], list[str]]]:
    """EXPLAIN of one driver-level statement, on its own connection."""
    engine = store._engine
    with engine.connect() as conn:
        if store._sqlite:

            def explain(statement: str, params: Any) -> list[str]:
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
                return [str(r[-1]) for r in rows]
        else:
            conn.exec_driver_sql("SET enable_seqscan = off")

            def explain(statement: str, params: Any) -> list[str]:
                rows = conn.exec_driver_sql("EXPLAIN " + statement, params).all()
                return [str(r[0]) for r in rows]

        try:
            yield explain
        finally:
            conn.rollback()


def _compiled(store: SqlStore, stmt: ClauseElement, params: dict[str, Any]) -> tuple[str, Any]:
    compiled = stmt.compile(dialect=store._engine.dialect)
    values = compiled.construct_params(params)  # with the statement's own literals
    if store._sqlite:
        return str(compiled), tuple(values[k] for k in compiled.positiontup or ())
    return str(compiled), values


def _scans(store: SqlStore, plan: list[str]) -> list[str]:
    pattern = _SQLITE_SCAN if store._sqlite else _PG_SCAN
    return [line for line in plan if pattern.search(line)]


@contextmanager
def _captured(store: SqlStore) -> Iterator[list[tuple[str, Any]]]:
    """The statements (and parameters) the store sends through its pool meanwhile."""
    seen: list[tuple[str, Any]] = []

    def before(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        if not many and statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            seen.append((statement, params))

    event.listen(store._engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(store._engine, "before_cursor_execute", before)


def test_decision_statements_search_indexes(store: SqlStore) -> None:
    """Reads and writes of a decision find their rows by index, never by a scan."""
    _seed(store)
    cases = dict(_DECISION_STATEMENTS)
    if store._sqlite:  # json_each is SQLite's: the batched read of many users
        cases["read many users"] = (sql._GET_MANY_USERS_TOKENS_CODES, {"p_names": '["u1","u2"]'})
    with _explainer(store) as explain:
        for what, (stmt, params) in cases.items():
            plan = explain(*_compiled(store, stmt, params))
            assert not _scans(store, plan), (what, plan)
            if stmt.is_select:
                assert plan, what


def _write(use: Any) -> DecisionWrite:
    def record(result: str, failure: bool) -> AttemptRecord:
        event = AuditEvent(at=NOW, actor="radius:vpn", action="auth", result=result, user="u1")
        return AttemptRecord(success=result == "accept", count_failure=failure, audit=event)

    return DecisionWrite(
        user="u1", now=NOW, source="10.0.0.1", client="vpn", max_attempts=5,
        lock_seconds=60.0, won=record("accept", False), use=use,
        lost=record("reject", True) if use is not None else None,
        challenge=("s", Challenge("u1", "vpn", NOW + 120)) if use is None else None,
        locked=record("reject", False),
    )  # fmt: skip


@pytest.mark.parametrize(
    "use",
    [UseTotpStep("T1", 9, 0), UseHotpCounter("T1", 9), UseBackupCode("u1", "h1"), None],
    ids=["totp", "hotp", "backup-code", "challenge"],
)
def test_postgresql_decision_statement_searches_indexes(
    postgres_db_url: str, keyring: Any, use: Any
) -> None:
    """PostgreSQL's one-statement write phase touches every row by index."""
    store = SqlStore.open(postgres_db_url, keyring)
    try:
        _seed(store)
        built = sql._pg_decision(_write(use))
        assert built is not None
        with _explainer(store) as explain:
            plan = explain(*built)
        assert not _scans(store, plan), plan
        assert any("Index" in line for line in plan), plan
    finally:
        store.close()


def _operator_plans(store: SqlStore, run: Callable[[], object]) -> list[list[str]]:
    with _captured(store) as seen:
        run()
    assert seen
    with _explainer(store) as explain:
        return [explain(statement, params) for statement, params in seen]


@pytest.mark.parametrize("pattern", ["u1*", "u1", "u*1", "u[1]?*"])
def test_user_list_with_a_prefix_searches_the_name_index(store: SqlStore, pattern: str) -> None:
    """`user list PREFIX*` reads a range of the name index, not every user."""
    _seed(store)
    for plan in _operator_plans(store, lambda: store.list_users(pattern, 50)):
        assert not _scans(store, plan), plan


def test_user_list_with_a_leading_wildcard_stops_at_the_limit(store: SqlStore) -> None:
    """`user list '*x'` may walk the names, but in index order and no further than
    --limit: no sort of every matching user first."""
    _seed(store)
    for plan in _operator_plans(store, lambda: store.list_users("*1", 5)):
        text = "\n".join(plan)
        assert "TEMP B-TREE" not in text and "Sort" not in text, plan
        if store._sqlite:
            assert [s for s in _scans(store, plan) if "USING" not in s] == [], plan
        else:
            assert "Limit" in plan[0], plan


def test_audit_by_user_searches_the_user_index(store: SqlStore) -> None:
    """`audit --user U` (newest first) and its export (oldest first, paged by id) read
    that user's rows as index ranges in id order, stopping at the limit: their name's
    bucket in (bucket, id, user), and the rows from before buckets by (user, id)."""
    _seed(store)
    runs = [
        lambda: store.query_audit(user="u3", limit=10),
        lambda: store.query_audit(user="u3", since=NOW, limit=10, before_id=150),
        lambda: store.export_audit(AuditFilter(user="u3"), after_id=20, limit=10),
    ]
    for run in runs:
        for plan in _operator_plans(store, run):
            assert not _scans(store, plan), plan
            assert "TEMP B-TREE" not in "\n".join(plan) and "Sort" not in plan[0], plan


def test_user_delete_and_rename_search_by_user(store: SqlStore) -> None:
    """Deleting or renaming a user finds their tokens, codes, challenges and portal
    sessions by index."""
    _seed(store)
    for run in (lambda: store.rename_user("u2", "v2"), lambda: store.delete_user("u3")):
        for plan in _operator_plans(store, run):
            assert not _scans(store, plan), plan
