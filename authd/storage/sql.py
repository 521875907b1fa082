"""`SqlStore`: the `Store` Protocol on SQLite (embedded, WAL) and PostgreSQL (shared by
several nodes), with SQLAlchemy Core.

Every method is blocking and thread-safe (one engine, a bounded connection pool) and
returns plain dataclasses. The exact operations (failures, TOTP steps, HOTP counters,
backup codes, challenge states) are single conditional statements, so they stay exact
across threads, processes and nodes without any lock in RAM. SQLite write transactions
start with BEGIN IMMEDIATE: concurrent writers queue on the busy timeout instead of
failing with "database is locked" on lock upgrade.

What every decision does (`get_user_tokens_codes`, `commit_decision`; also
`get_user_with_tokens`, `backup_codes_left`) skips SQLAlchemy's per-statement cost and
runs the same statements on raw DB-API connections (`storage/hot_path.py`): one read and
one write transaction per decision (on PostgreSQL the write phase is one statement).
"""

from __future__ import annotations

import functools
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from psycopg.conninfo import make_conninfo
from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Select,
    and_,
    any_,
    bindparam,
    case,
    column,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from authd.auth.interfaces import (
    AttemptRecord,
    AuditFilter,
    BatchingStore,
    Challenge,
    DecisionCommit,
    DecisionWrite,
    LockState,
    UseBackupCode,
    UseHotpCounter,
    UserOverview,
    UseTotpStep,
)
from authd.config.model import (
    DEFAULT_CACHE_MIB,
    DEFAULT_MMAP_MIB,
    DEFAULT_POOL_SIZE,
    DEFAULT_STORE_TIMEOUT,
    SQLITE_MIN_POOL,
    SQLITE_POOL_PROBLEM,
)
from authd.core import otp
from authd.core.errors import AlreadyExists, InvalidInput, NotFound, StoreUnavailable
from authd.core.model import (
    Algorithm,
    AuditEvent,
    LastSeen,
    Token,
    TokenStatus,
    TokenType,
    User,
)
from authd.crypto import Keyring
from authd.portability.merge import ImportPlan
from authd.portability.records import BackupCode, Records, UserRecord, token_columns
from authd.statedir import make_private_dirs
from authd.storage import audit_chain as chain
from authd.storage import migrations
from authd.storage import name_pattern as names
from authd.storage.hot_path import PgHotPath, Run, SqliteHotPath
from authd.storage.pg_bounded import BoundedConnection, BudgetedQueuePool, budget, patience
from authd.storage.schema import (
    LOCKED_FOREVER,
    audit,
    audit_bucket,
    backup_codes,
    challenges,
    portal_sessions,
    tokens,
    users,
)

# Serialises schema upgrades of nodes starting at once on one PostgreSQL ("authd" in ASCII).
_PG_MIGRATION_LOCK = 0x61757468_64
# Schema upgrades at start-up (and the lock serialising them across nodes) may take
# longer than a request may wait.
_MIGRATION_SECONDS = 600.0
# The longest wait of one statement of an operator's bulk import (PostgreSQL).
_BULK_SECONDS = 3600.0
# Serials per IN (...) list: below SQLite's default limit of 32766 bound parameters.
_IN_CHUNK = 10_000

_U = users.c
_R = TypeVar("_R")
# Rows sealed per transaction when the chain catches up at start.
_CHAIN_BATCH = 1000
_T = tokens.c
_ACTIVE = TokenStatus.ACTIVE.value
_REVOKED = TokenStatus.REVOKED.value
# The profile fields a user record carries (what `user set` may change).
_PROFILE = ("email", "phone", "first_name", "last_name")

# Column positions, so one joined row decodes into a user and a token without labels.
_UCOLS = tuple(users.c)
_TCOLS = tuple(tokens.c)
_UI = {c.name: i for i, c in enumerate(_UCOLS)}
_TI = {c.name: i for i, c in enumerate(_TCOLS)}
# Row decoding: the columns each record is built from, in the record's field order,
# fetched with one itemgetter per offset in the row (0, or after the users columns of
# a join) instead of a dict lookup per column (~1 µs a decision).
_TOKEN_COLUMNS = (
    "serial", "type", "seed_enc", "user", "algorithm", "digits", "period", "counter",
    "last_step", "drift", "status", "description", "created_at",
)  # fmt: skip
_USER_COLUMNS = (
    "name", "source", "password_hash", "pin_hash", "disabled", "failures", "locked_until",
    "email", "phone", "first_name", "last_name", "groups", "last_attempt_at",
    "last_attempt_source", "last_attempt_client", "last_success_at", "last_success_source",
    "last_success_client", "created_at",
)  # fmt: skip


@functools.cache
def _token_fields(offset: int) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    return itemgetter(*(offset + _TI[c] for c in _TOKEN_COLUMNS))


@functools.cache
def _user_fields(offset: int) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    return itemgetter(*(offset + _UI[c] for c in _USER_COLUMNS))


# Enum members by stored value: a dict lookup instead of an Enum call (~1 µs each, three
# per token on every decision). A value not in the dict still goes through the Enum.
_TOKEN_TYPES = {m.value: m for m in TokenType}
_ALGORITHMS = {m.value: m for m in Algorithm}
_TOKEN_STATUSES = {m.value: m for m in TokenStatus}

# ------------------------------------------------------------------ prebuilt statements
# Built once: SQLAlchemy's compiled cache then makes each call a dict lookup + execute.
_GET_USER = select(*_UCOLS).where(_U.name == bindparam("p_name"))
_GET_USER_WITH_TOKENS = (
    select(*_UCOLS, *_TCOLS)
    .select_from(users.outerjoin(tokens, _T.user == _U.name))
    .where(_U.name == bindparam("p_name"))
    .order_by(_T.serial)
)
# ... and the user's backup codes left, as one more column (what a decision reads).
_USER_TOKENS_CODES = select(
    *_UCOLS,
    *_TCOLS,
    select(func.count())
    .select_from(backup_codes)
    .where(backup_codes.c.user == _U.name)
    .scalar_subquery(),
).select_from(users.outerjoin(tokens, _T.user == _U.name))
_GET_USER_TOKENS_CODES = _USER_TOKENS_CODES.where(_U.name == bindparam("p_name")).order_by(
    _T.serial
)
# The same for a batch of users named by a JSON list (SQLite's json_each): one statement
# instead of one per decision (measured: ~4.6 against ~9 µs a user).
_GET_MANY_USERS_TOKENS_CODES = _USER_TOKENS_CODES.where(
    _U.name.in_(select(column("value")).select_from(func.json_each(bindparam("p_names"))))
).order_by(_T.serial)
# PostgreSQL: the names as one array parameter (psycopg sends a list as an array).
_GET_MANY_USERS_TOKENS_CODES_PG = _USER_TOKENS_CODES.where(
    _U.name == any_(bindparam("p_names"))
).order_by(_T.serial)
_GET_TOKEN = select(*_TCOLS).where(_T.serial == bindparam("p_serial"))
_LIST_TOKENS_OF = select(*_TCOLS).where(_T.user == bindparam("p_user")).order_by(_T.serial)
_LIST_TOKENS_ALL = select(*_TCOLS).order_by(_T.serial)


def _record_failure_stmt() -> Any:
    """RETURNING failures, locked_until after one atomic update (see `record_failure`)."""
    now: Any = bindparam("p_now")
    lu = _U.locked_until
    locked = and_(lu.is_not(None), lu > now)
    expired = and_(lu.is_not(None), lu <= now)
    new_failures = case((expired, literal(1)), else_=_U.failures + 1)
    return (
        update(users)
        .where(_U.name == bindparam("p_name"))
        .values(
            failures=new_failures,
            locked_until=case(
                (locked, lu),  # already locked: count, but never extend the deadline
                (new_failures >= bindparam("p_max"), bindparam("p_deadline")),
                else_=null(),
            ),
        )
        .returning(_U.failures, _U.locked_until)
    )


_RECORD_FAILURE = _record_failure_stmt()
# Whether the user is locked at p_now, read with the row locked for the rest of the
# write transaction (PostgreSQL FOR NO KEY UPDATE: what the failure count's UPDATE takes
# anyway, and no wait for foreign-key checks; SQLite: BEGIN IMMEDIATE already excludes
# every other writer, and its compiler leaves the clause out), so a parallel guess
# cannot lock the user between this check and the single use or failure count.
_LOCKED_NOW = (
    select(and_(_U.locked_until.is_not(None), _U.locked_until > bindparam("p_now")))
    .where(_U.name == bindparam("p_name"))
    .with_for_update(key_share=True)
)
_RECORD_ATTEMPT = (
    update(users)
    .where(_U.name == bindparam("p_name"))
    .values(
        last_attempt_at=bindparam("p_at"),
        last_attempt_source=bindparam("p_source"),
        last_attempt_client=bindparam("p_client"),
    )
)
# A success is an attempt that also moves last_success and clears the failure count.
_RECORD_SUCCESS = _RECORD_ATTEMPT.values(
    last_success_at=bindparam("p_at"),
    last_success_source=bindparam("p_source"),
    last_success_client=bindparam("p_client"),
    failures=0,
    # core.lockout.after_success: (0, None). An expired deadline is cleared; a lock
    # still running stays (fail closed, should another node have locked meanwhile).
    locked_until=case((_U.locked_until <= bindparam("p_at"), null()), else_=_U.locked_until),
)
# RFC 6238 §5.2: one step is accepted once; a step at or before the last one is a replay.
_ACCEPT_TOTP = (
    update(tokens)
    .where(
        _T.serial == bindparam("p_serial"), _T.last_step < bindparam("p_step"), _T.status == _ACTIVE
    )
    .values(last_step=bindparam("p_step"), drift=bindparam("p_drift"))
)
# RFC 4226 §7.2: the counter moves past the accepted value; an older value never matches.
_ACCEPT_HOTP = (
    update(tokens)
    .where(
        _T.serial == bindparam("p_serial"),
        _T.counter <= bindparam("p_counter"),
        _T.status == _ACTIVE,
    )
    .values(counter=bindparam("p_counter") + 1)
)
_COUNT_CODES = (
    select(func.count()).select_from(backup_codes).where(backup_codes.c.user == bindparam("p_user"))
)
_CONSUME_CODE = delete(backup_codes).where(
    backup_codes.c.user == bindparam("p_user"), backup_codes.c.hash == bindparam("p_hash")
)
_TAKE_CHALLENGE = (
    delete(challenges)
    .where(
        challenges.c.state_hash == bindparam("p_hash"), challenges.c.expires_at > bindparam("p_now")
    )
    .returning(challenges.c.user, challenges.c.client, challenges.c.expires_at, challenges.c.data)
)
# The oldest `p_batch` audit rows before `p_before`, found by the `at` index.
_PRUNE_AUDIT = delete(audit).where(
    audit.c.id.in_(
        select(audit.c.id)
        .where(audit.c.at < bindparam("p_before"))
        .order_by(audit.c.at)
        .limit(bindparam("p_batch"))
    )
)
_PURGE_CHALLENGES = delete(challenges).where(challenges.c.expires_at <= bindparam("p_now"))
# PostgreSQL: skip rows another purge holds, so two purges never wait on (or deadlock
# with) each other; whatever one skips, a later purge removes.
_PURGE_CHALLENGES_PG = delete(challenges).where(
    challenges.c.state_hash.in_(
        select(challenges.c.state_hash)
        .where(challenges.c.expires_at <= bindparam("p_now"))
        .limit(500)
        .with_for_update(skip_locked=True)
    )
)
_PUT_CHALLENGE = insert(challenges).values(
    state_hash=bindparam("p_hash"),
    user=bindparam("p_user"),
    client=bindparam("p_client"),
    expires_at=bindparam("p_expires"),
    data=bindparam("p_data"),
)
_APPEND_AUDIT = insert(audit).values(
    at=bindparam("p_at"),
    actor=bindparam("p_actor"),
    action=bindparam("p_action"),
    result=bindparam("p_result"),
    user=bindparam("p_user"),
    client=bindparam("p_client"),
    source=bindparam("p_source"),
    reason=bindparam("p_reason"),
    detail=bindparam("p_detail"),
    user_bucket=bindparam("p_user_bucket"),
)


def _audit_params(event: AuditEvent) -> dict[str, Any]:
    return {
        "p_user_bucket": audit_bucket(event.user),
        "p_at": event.at,
        "p_actor": event.actor,
        "p_action": event.action,
        "p_result": event.result,
        "p_user": event.user,
        "p_client": event.client,
        "p_source": event.source,
        "p_reason": event.reason,
        "p_detail": event.detail,
    }


def _audit_page(
    conn: Connection, stmt: Select[Any], user: str | None, *, newest_first: bool, limit: int
) -> list[Row[Any]]:
    """Up to `limit` audit rows that `stmt` selects, by id, for `user` if given. A user's
    rows are two index ranges, each read in id order up to the limit: their bucket's
    (schema.AUDIT_USER_BUCKETS) and, while the retention has not pruned them all, the
    rows written before buckets existed. The two are merged here."""
    order = audit.c.id.desc() if newest_first else audit.c.id
    if user is None:
        return list(conn.execute(stmt.order_by(order).limit(limit)).all())
    named = stmt.where(audit.c.user == user)
    ranges = (
        named.where(audit.c.user_bucket == audit_bucket(user)),
        named.where(audit.c.user_bucket.is_(None)),
    )
    rows = [r for part in ranges for r in conn.execute(part.order_by(order).limit(limit))]
    rows.sort(key=lambda r: int(r.id), reverse=newest_first)
    return rows[:limit]


class _Endings:
    """Writes of decisions' endings that no later statement of the batch reads: the
    last-attempt/success updates and the audit rows, sent as one executemany each
    (~2 µs a decision less than a statement each). Flushed before a second decision for
    the same user, so a user's writes still apply in decision order."""

    __slots__ = ("attempts", "audits", "successes", "users")

    def __init__(self) -> None:
        self.users: set[str] = set()
        self.successes: list[dict[str, Any]] = []
        self.attempts: list[dict[str, Any]] = []
        self.audits: list[dict[str, Any]] = []

    def add(self, w: DecisionWrite, record: AttemptRecord) -> None:
        """The ending `record` of `w`: its last-attempt update and audit row."""
        if w.user is not None:
            self.users.add(w.user)
            seen = {"p_name": w.user, "p_at": w.now, "p_source": w.source, "p_client": w.client}
            (self.successes if record.success else self.attempts).append(seen)
        self.audits.append(_audit_params(record.audit))

    def flush(self, run: Run) -> None:
        run.many(_RECORD_SUCCESS, self.successes)
        run.many(_RECORD_ATTEMPT, self.attempts)
        run.many(_APPEND_AUDIT, self.audits)
        self.users, self.successes, self.attempts, self.audits = set(), [], [], []


def _apply_decisions(run: Run, writes: Sequence[DecisionWrite]) -> list[DecisionCommit]:
    """The statements of `Store.commit_decision` for each write, in order, inside the
    caller's transaction (`run` executes one prebuilt statement or many). Same single
    conditional statements as the one-call methods: exact without any lock in RAM."""
    endings = _Endings()
    out: list[DecisionCommit] = []
    for w in writes:
        if w.user is not None and w.user in endings.users:
            endings.flush(run)
        if w.locked is not None and w.user is not None:
            row = run(_LOCKED_NOW, {"p_name": w.user, "p_now": w.now}).fetchone()
            if row is not None and row[0]:
                endings.add(w, w.locked)
                out.append(DecisionCommit(False, None, locked=True))
                continue
        won = True
        use = w.use
        if isinstance(use, UseTotpStep):
            params = {"p_serial": use.serial, "p_step": use.step, "p_drift": use.drift}
            won = run(_ACCEPT_TOTP, params).rowcount == 1
        elif isinstance(use, UseHotpCounter):
            params = {"p_serial": use.serial, "p_counter": use.counter}
            won = run(_ACCEPT_HOTP, params).rowcount == 1
        elif isinstance(use, UseBackupCode):
            won = run(_CONSUME_CODE, {"p_user": use.user, "p_hash": use.code_hash}).rowcount > 0
        record: AttemptRecord | None = w.won if won else w.lost
        if record is None:
            raise ValueError("DecisionWrite.lost is required when a single use can be lost")
        if won and w.challenge is not None:
            key, ch = w.challenge
            run(
                _PUT_CHALLENGE,
                {
                    "p_hash": key,
                    "p_user": ch.user,
                    "p_client": ch.client,
                    "p_expires": ch.expires_at,
                    "p_data": ch.data,
                },
            )
        lock: LockState | None = None
        if w.user is not None and record.count_failure:
            deadline = LOCKED_FOREVER if w.lock_seconds is None else w.now + w.lock_seconds
            row = run(
                _RECORD_FAILURE,
                {
                    "p_name": w.user,
                    "p_now": w.now,
                    "p_max": w.max_attempts,
                    "p_deadline": deadline,
                },
            ).fetchone()
            lock = (
                LockState(failures=0, locked_until=None)
                if row is None
                else LockState(failures=row[0], locked_until=_from_db_deadline(row[1]))
            )
        endings.add(w, record)
        out.append(DecisionCommit(won, lock))
    endings.flush(run)
    return out


# PostgreSQL: a decision's write phase as ONE statement (one round trip, atomic on its
# own in autocommit). Data-modifying CTEs: past the lock gate, the user row is locked
# and checked first (_PG_GATE); the single use runs while it is open (its RETURNING rows
# say whether it was won) and each ending's writes are conditioned on both; the endings
# (won, lost, locked) exclude each other, so the user row is updated once. Same
# conditions and arithmetic as _LOCKED_NOW / _ACCEPT_TOTP / _ACCEPT_HOTP / _CONSUME_CODE
# / _RECORD_FAILURE / _RECORD_ATTEMPT / _RECORD_SUCCESS (tests run both paths against
# the same promises).
_PG_USE = {
    UseTotpStep: (
        "UPDATE tokens SET last_step = CAST(%(u_step)s AS BIGINT), drift = CAST(%(u_drift)s AS "
        "INTEGER) WHERE serial = %(u_key)s AND last_step < CAST(%(u_step)s AS BIGINT) "
        "AND status = 'active'"
    ),
    UseHotpCounter: (
        "UPDATE tokens SET counter = CAST(%(u_counter)s AS BIGINT) + 1 WHERE serial = "
        "%(u_key)s AND counter <= CAST(%(u_counter)s AS BIGINT) "
        "AND status = 'active'"
    ),
    UseBackupCode: 'DELETE FROM backup_codes WHERE "user" = %(u_key)s AND hash = %(u_hash)s',
}
_PG_NOW = "CAST(%(now)s AS DOUBLE PRECISION)"
_PG_ATTEMPT = (
    f"last_attempt_at = {_PG_NOW}, last_attempt_source = %(source)s, "
    "last_attempt_client = %(client)s"
)
_PG_SUCCESS = (
    f"{_PG_ATTEMPT}, last_success_at = {_PG_NOW}, last_success_source = %(source)s, "
    "last_success_client = %(client)s, failures = 0, "
    f"locked_until = CASE WHEN locked_until <= {_PG_NOW} THEN NULL ELSE locked_until END"
)
_PG_NEW_FAILURES = (
    f"CASE WHEN locked_until IS NOT NULL AND locked_until <= {_PG_NOW} THEN 1 ELSE failures + 1 END"
)
_PG_FAILURE = (
    f"{_PG_ATTEMPT}, failures = {_PG_NEW_FAILURES}, locked_until = CASE "
    f"WHEN locked_until IS NOT NULL AND locked_until > {_PG_NOW} THEN locked_until "
    f"WHEN {_PG_NEW_FAILURES} >= CAST(%(max)s AS INTEGER) "
    "THEN CAST(%(deadline)s AS DOUBLE PRECISION) ELSE NULL END"
)
# As _LOCKED_NOW: the user row locked first (FOR NO KEY UPDATE waits for a parallel
# decision's write and reads the row as that one left it), so the single use and the
# failure count below act only while the user is not locked.
_PG_GATE = (
    f"gate AS (SELECT locked_until IS NOT NULL AND locked_until > {_PG_NOW} AS locked "  # noqa: S608
    "FROM users WHERE name = %(name)s FOR NO KEY UPDATE)"
)
_PG_OPEN = "NOT EXISTS (SELECT 1 FROM gate WHERE locked)"
assert _ACTIVE == "active"  # spelled out in _PG_USE
# The audit columns a decision writes, in _audit_params' names: `at` first and
# `user_bucket` last (cast to their types; the text columns between them).
_PG_AUDIT_COLS = (
    "at", "actor", "action", "result", "user", "client", "source", "reason", "detail",
    "user_bucket",
)  # fmt: skip


def _pg_decision(w: DecisionWrite) -> tuple[str, dict[str, Any]] | None:
    """The write phase as one PostgreSQL statement and its parameters, or None for a
    shape it does not cover (then the statements run one by one in a transaction)."""
    records = [("won", w.won)] + ([("lost", w.lost)] if w.use is not None and w.lost else [])
    gated = w.locked is not None and w.user is not None
    if gated and w.locked is not None:
        records.append(("locked", w.locked))
    if w.use is not None and w.lost is None:
        return None  # refused by _apply_decisions with its error
    if any(r.count_failure and r.success for _, r in records):
        return None  # not an ending the engine writes; keep the step-by-step meaning
    params: dict[str, Any] = {
        "now": w.now,
        "source": w.source,
        "client": w.client,
        "name": w.user,
        "max": w.max_attempts,
        "deadline": LOCKED_FOREVER if w.lock_seconds is None else w.now + w.lock_seconds,
    }
    use = w.use
    if isinstance(use, UseTotpStep):
        params.update(u_key=use.serial, u_step=use.step, u_drift=use.drift)
    elif isinstance(use, UseHotpCounter):
        params.update(u_key=use.serial, u_counter=use.counter)
    elif isinstance(use, UseBackupCode):
        params.update(u_key=use.user, u_hash=use.code_hash)
    for name, record in records:
        event = _audit_params(record.audit)
        for col in _PG_AUDIT_COLS:
            params[f"{name}_{col}"] = event[f"p_{col}"]
    if w.challenge is not None:
        key, ch = w.challenge
        params.update(c_key=key, c_user=ch.user, c_client=ch.client, c_exp=ch.expires_at)
        params["c_data"] = ch.data
    shape = tuple((name, r.count_failure, r.success) for name, r in records)
    use_sql = None if use is None else _PG_USE[type(use)]
    sql = _pg_decision_sql(use_sql, gated, w.user is not None, shape, w.challenge is not None)
    return sql, params


@functools.lru_cache(maxsize=256)
def _pg_decision_sql(
    use: str | None,
    gated: bool,
    has_user: bool,
    records: tuple[tuple[str, bool, bool], ...],
    challenge: bool,
) -> str:
    """`_pg_decision`'s statement for one shape of write phase (its single use's
    statement from _PG_USE, lock gate, endings (name, counts a failure, success),
    challenge): built once per shape."""
    ctes: list[str] = [_PG_GATE] if gated else []
    is_open = _PG_OPEN if gated else "TRUE"
    won_cond, lost_cond = is_open, "FALSE"
    if use is not None:
        ctes.append(f"used AS ({use} AND {is_open} RETURNING 1)")
        won_cond = f"{is_open} AND EXISTS (SELECT 1 FROM used)"  # noqa: S608
        lost_cond = f"{is_open} AND NOT EXISTS (SELECT 1 FROM used)"  # noqa: S608
    conds = {"won": won_cond, "lost": lost_cond, "locked": f"NOT {is_open}"}
    user_ctes: list[str] = []
    for name, count_failure, success in records:
        cond = conds[name]
        if has_user:
            sets = _PG_FAILURE if count_failure else (_PG_SUCCESS if success else _PG_ATTEMPT)
            # Only constants of this module are spliced in; every value is a parameter.
            ctes.append(
                f"{name}_user AS (UPDATE users SET {sets} WHERE name = %(name)s AND {cond} "  # noqa: S608
                "RETURNING failures, locked_until)"
            )
            user_ctes.append(f"{name}_user")
        ctes.append(
            f"{name}_audit AS (INSERT INTO audit ("
            + ", ".join(f'"{c}"' for c in _PG_AUDIT_COLS)
            + ") SELECT CAST(%("
            + name
            + "_at)s AS DOUBLE PRECISION), "
            + ", ".join(f"CAST(%({name}_{c})s AS TEXT)" for c in _PG_AUDIT_COLS[1:-1])
            + f", CAST(%({name}_user_bucket)s AS SMALLINT) WHERE {cond})"
        )
    if challenge:
        ctes.append(
            'challenge AS (INSERT INTO challenges (state_hash, "user", client, expires_at, data) '
            "SELECT %(c_key)s, %(c_user)s, %(c_client)s, CAST(%(c_exp)s AS DOUBLE PRECISION), "
            f"%(c_data)s WHERE {won_cond})"
        )
    # The user row after the ending that applied (the endings exclude each other, so at
    # most one CTE returned a row). A counted failure on a vanished row reads (NULL,
    # NULL): the caller answers (0, None), as record_failure does.
    lock_cols = "NULL::INTEGER, NULL::DOUBLE PRECISION"
    if user_ctes:
        lock_cols = ", ".join(
            "COALESCE(" + ", ".join(f"(SELECT {col} FROM {cte})" for cte in user_ctes) + ")"  # noqa: S608
            for col in ("failures", "locked_until")
        )
    return f"WITH {', '.join(ctes)} SELECT {won_cond}, {lock_cols}, NOT {is_open}"


def _pg_commit(w: DecisionWrite, row: Sequence[Any]) -> DecisionCommit:
    """The result of `_pg_decision(w)`'s statement, from its one row."""
    if row[3]:  # locked when the write came: only w.locked was written
        return DecisionCommit(False, None, locked=True)
    counted = (w.won if row[0] else w.lost or w.won).count_failure
    lock = None
    if counted and w.user is not None:
        lock = LockState(
            failures=0 if row[1] is None else row[1], locked_until=_from_db_deadline(row[2])
        )
    return DecisionCommit(bool(row[0]), lock)


def _from_db_deadline(value: float | None) -> float | None:
    if value is None:
        return None
    return math.inf if value >= LOCKED_FOREVER else float(value)


def _to_db_deadline(value: float | None) -> float | None:
    if value is None:
        return None
    return LOCKED_FOREVER if value >= LOCKED_FOREVER else float(value)


def _last_seen(at: float | None, source: str | None, client: str | None) -> LastSeen | None:
    if at is None:
        return None
    return LastSeen(at=at, source=source or "", client=client or "")


@functools.lru_cache(maxsize=1024)
def _groups(text: str) -> tuple[str, ...]:
    """A users.groups JSON list as a tuple; few distinct lists exist, so each decision's
    user row mostly skips the JSON parse."""
    return tuple(json.loads(text))


def _user_from(r: Sequence[Any], o: int = 0) -> User:
    """Decode a users row (columns in table order, starting at offset `o`)."""
    (
        name,
        source,
        password_hash,
        pin_hash,
        disabled,
        failures,
        locked_until,
        email,
        phone,
        first_name,
        last_name,
        groups,
        attempt_at,
        attempt_source,
        attempt_client,
        success_at,
        success_source,
        success_client,
        created_at,
    ) = _user_fields(o)(r)
    return User(
        name,
        source,
        password_hash,
        pin_hash,
        bool(disabled),
        failures,
        _from_db_deadline(locked_until),
        email,
        phone,
        first_name,
        last_name,
        _groups(groups),
        _last_seen(attempt_at, attempt_source, attempt_client),
        _last_seen(success_at, success_source, success_client),
        created_at,
    )


def _user_values(user: User) -> dict[str, Any]:
    la, ls = user.last_attempt, user.last_success
    return {
        "name": user.name,
        "source": user.source,
        "password_hash": user.password_hash,
        "pin_hash": user.pin_hash,
        "disabled": user.disabled,
        "failures": user.failures,
        "locked_until": _to_db_deadline(user.locked_until),
        "email": user.email,
        "phone": user.phone,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "groups": json.dumps(list(user.groups)),
        "last_attempt_at": la.at if la else None,
        "last_attempt_source": la.source if la else None,
        "last_attempt_client": la.client if la else None,
        "last_success_at": ls.at if ls else None,
        "last_success_source": ls.source if ls else None,
        "last_success_client": ls.client if ls else None,
        "created_at": user.created_at,
    }


def _audit_from(r: Row[Any]) -> AuditEvent:
    return AuditEvent(
        at=r.at,
        actor=r.actor,
        action=r.action,
        result=r.result,
        user=r.user,
        client=r.client,
        source=r.source,
        reason=r.reason,
        detail=r.detail,
        id=r.id,
    )


def _sqlite_path(database: str | None) -> str:
    if not database or database == ":memory:" or database.startswith("file:"):
        raise InvalidInput(
            "store.url: SQLite needs a file path (sqlite:///PATH); "
            "an in-memory database would not be shared between threads"
        )
    return os.path.abspath(database)


def _prepare_sqlite_file(path: str) -> None:
    """Directories 0700 when we create them; the database file 0600 (SQLite gives its
    -wal and -shm files the same mode)."""
    try:
        make_private_dirs(os.path.dirname(path))
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
    except OSError as e:
        raise StoreUnavailable(f"{path}: cannot create the database file: {e.strerror}") from None


def _switch_to_wal(cur: Any, timeout: float) -> None:
    """Nodes opening a new file at once race to switch it to WAL; SQLite answers the
    loser "database is locked" at once (the busy handler is not used for this), so
    retry within the busy timeout. WAL is persistent: later opens only read the mode."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def sqlite_pragmas(cache_mib: int, mmap_mib: int = 0) -> tuple[str, ...]:
    """Per-connection settings of every SQLite connection (pool and hot path): SQLite
    sizes its page cache per connection (a negative cache_size is in KiB); pages read
    through the memory map come from the OS page cache that every connection and
    process shares, without a read() and a copy each."""
    return (f"PRAGMA cache_size={-cache_mib * 1024}", f"PRAGMA mmap_size={mmap_mib << 20}")


def _sqlite_on_connect(
    timeout: float, pragmas: tuple[str, ...], dbapi_conn: Any, _record: Any
) -> None:
    # Take transaction control away from the sqlite3 module: we send BEGIN ourselves.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        _switch_to_wal(cur, timeout)
        cur.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across app crashes
        cur.execute("PRAGMA foreign_keys=ON")
        for pragma in pragmas:
            cur.execute(pragma)
    finally:
        cur.close()


def _pg_connect(timeout: float, _dialect: Any, _record: Any, _args: Any, params: Any) -> Any:
    """SQLAlchemy's connections are bounded like the hot path's (storage/pg_bounded.py)."""
    libpq = dict(params)
    context = libpq.pop("context", None)  # psycopg adapters, not a libpq parameter
    return BoundedConnection.open(
        make_conninfo("", **libpq), timeout, autocommit=False, context=context
    )


def _raise_unavailable(e: DBAPIError | PoolTimeout) -> NoReturn:
    """Integrity errors are the caller's to interpret (AlreadyExists, NotFound); any
    other database failure means the store cannot answer: fail closed. The message
    names only the error class (the engine hides parameters from the cause, too)."""
    if isinstance(e, IntegrityError):
        raise e
    kind = type(e.orig).__name__ if isinstance(e, DBAPIError) else "pool exhausted"
    raise StoreUnavailable(f"database error: {kind}") from e


class SqlStore:
    """The SQL implementation of `authd.auth.interfaces.Store`. Build with `open`."""

    def __init__(
        self,
        engine: Engine,
        keyring: Keyring,
        timeout: float = DEFAULT_STORE_TIMEOUT,
        audit_chain: bool = False,
        cache_mib: int = DEFAULT_CACHE_MIB,
        mmap_mib: int = DEFAULT_MMAP_MIB,
    ) -> None:
        self._engine = engine
        self._keyring = keyring
        # `audit.hash_chain`: every audit-writing transaction seals its rows (audit_chain.py).
        self._chain_key = chain.chain_key(keyring.hash_key) if audit_chain else None
        # Per thread: rows read ahead for the decisions of a batch (`decision_reads`).
        self._prefetched = threading.local()
        self._dialect = engine.dialect.name
        self._sqlite = self._dialect == "sqlite"
        self._insert = pg_insert if self._dialect == "postgresql" else sqlite_insert
        # PostgreSQL reads skip BEGIN/ROLLBACK round trips: each read is one statement.
        self._reader = (
            engine if self._sqlite else engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        # The decision hot path bypasses SQLAlchemy (see storage/hot_path.py).
        self._hot: SqliteHotPath | PgHotPath = (
            SqliteHotPath(engine, str(engine.url.database), timeout)
            if self._sqlite
            else PgHotPath(engine, timeout)
        )

    @classmethod
    def open(
        cls,
        url: str,
        keyring: Keyring,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        timeout: float = DEFAULT_STORE_TIMEOUT,
        steps: Sequence[migrations.Step] = migrations.STEPS,
        audit_chain: bool = False,
        cache_mib: int = DEFAULT_CACHE_MIB,
        mmap_mib: int = DEFAULT_MMAP_MIB,
    ) -> SqlStore:
        """Connect, create or upgrade the schema, return a ready store.

        url: `sqlite:///PATH` or `postgresql://...` (psycopg 3). pool_size
        (store.pool_size): every connection the store opens, the decision hot path's
        included (SQLite: at least 2, its writer keeps one); a thread never holds two,
        so more threads than connections queue, never deadlock. timeout (store.timeout):
        the longest any one wait for the database takes (a connection from the pool, a
        connect, a statement, a lock; SQLite's busy timeout). cache_mib (store.cache_size):
        SQLite's page cache per connection, in MiB; mmap_mib (store.mmap_size): how
        much of the file SQLite reads through a memory map (0: none). `steps` is for tests of
        the migration machinery; production always uses the default.
        """
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise InvalidInput("store.url: not a database URL") from None  # may hold a password
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            if pool_size < SQLITE_MIN_POOL:
                raise InvalidInput(f"store.pool_size: {SQLITE_POOL_PROBLEM}")
            path = _sqlite_path(parsed.database)
            _prepare_sqlite_file(path)
            engine = create_engine(
                parsed.set(drivername="sqlite+pysqlite", database=path),
                poolclass=BudgetedQueuePool,
                pool_size=pool_size,
                max_overflow=0,
                pool_timeout=timeout,
                hide_parameters=True,
                connect_args={"check_same_thread": False, "timeout": timeout},
            )
            # A pool event, not an engine one: engine events slow down every execute.
            event.listen(
                engine,
                "connect",
                functools.partial(
                    _sqlite_on_connect, timeout, sqlite_pragmas(cache_mib, mmap_mib)
                ),
            )
        elif backend in ("postgresql", "postgres"):
            engine = create_engine(
                parsed.set(drivername="postgresql+psycopg"),
                poolclass=BudgetedQueuePool,
                pool_size=pool_size,
                max_overflow=0,
                pool_timeout=timeout,
                pool_recycle=3600,
                hide_parameters=True,  # parameters hold hashes and ciphertexts
            )
            event.listen(engine, "do_connect", functools.partial(_pg_connect, timeout))
        else:
            raise InvalidInput(
                f"store.url: unsupported database {backend!r} "
                "(use sqlite:///PATH or postgresql://...)"
            )
        store = cls(engine, keyring, timeout, audit_chain, cache_mib, mmap_mib)
        try:
            with patience(_MIGRATION_SECONDS), store._write() as conn:
                if store._dialect == "postgresql":
                    conn.execute(text("SET LOCAL statement_timeout = 0"))
                    conn.execute(text("SET LOCAL lock_timeout = 0"))
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK}
                    )
                migrations.upgrade(conn, time.time(), steps)
            store._start_chain()
        except BaseException:
            engine.dispose()
            raise
        return store

    def _start_chain(self) -> None:
        """With the chain on: start it, or seal what was written while it was off, in
        batches (each its own transaction) so that no decision waits for all of it."""
        key = self._chain_key
        if key is None:
            return
        while True:
            with self._write() as conn:
                if chain.start_or_catch_up(chain.ConnRun(conn), key, _CHAIN_BATCH) < _CHAIN_BATCH:
                    return

    def _chained(self, run: Run, body: Callable[[], _R]) -> _R:
        """`body` (which writes audit rows through `run`) with its rows sealed in the same
        transaction; the head is locked first (PostgreSQL: ids in chain order)."""
        key = self._chain_key
        if key is None:
            return body()
        head = chain.lock_head(run)
        before = chain.newest_id(run)
        result = body()
        chain.seal(run, key, head, after=before)
        return result

    def __repr__(self) -> str:
        return f"SqlStore({self._engine.url.render_as_string(hide_password=True)!r})"

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite), committed on exit."""
        try:
            with self._engine.begin() as conn:
                if self._sqlite:
                    # Take the write lock up front so concurrent writers queue on the busy
                    # timeout instead of deadlocking on a read->write lock upgrade. Sent on
                    # the driver connection: the sqlite3 module is in manual mode (see
                    # _sqlite_on_connect), and this skips SQLAlchemy's per-statement cost.
                    try:
                        conn.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
                    except sqlite3.Error as e:  # not through SQLAlchemy: not wrapped by it
                        raise StoreUnavailable(f"database error: {type(e).__name__}") from e
                yield conn
        except (DBAPIError, PoolTimeout) as e:
            _raise_unavailable(e)

    def transaction(self) -> AbstractContextManager[Connection]:
        """A write transaction for records kept beside the store's own (portal
        sessions): the write lock taken first on SQLite, errors as StoreUnavailable."""
        return self._write()

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            # Reads are single statements in autocommit: WAL gives each a consistent
            # snapshot without taking any lock a writer would wait for.
            with self._reader.connect() as conn:
                yield conn
        except (DBAPIError, PoolTimeout) as e:
            _raise_unavailable(e)

    def _token_from(self, r: Sequence[Any], o: int = 0) -> Token:
        (
            serial,
            kind,
            seed_enc,
            user,
            algorithm,
            digits,
            period,
            counter,
            last_step,
            drift,
            status,
            description,
            created_at,
        ) = _token_fields(o)(r)
        return Token(
            serial,
            _TOKEN_TYPES.get(kind) or TokenType(kind),
            self._keyring.decrypt(seed_enc, serial.encode()),
            user,
            _ALGORITHMS.get(algorithm) or Algorithm(algorithm),
            digits,
            period,
            counter,
            last_step,
            drift,
            _TOKEN_STATUSES.get(status) or TokenStatus(status),
            description,
            created_at,
        )

    # ------------------------------------------------------------------ users
    def get_user(self, name: str) -> User | None:
        with self._read() as conn:
            row = conn.execute(_GET_USER, {"p_name": name}).first()
        return None if row is None else _user_from(row)

    def get_user_with_tokens(self, name: str) -> tuple[User | None, list[Token]]:
        """The user and all their tokens (any status) in one round trip; (None, []) when
        the user does not exist. The hot path of every decision."""
        rows = self._hot.read(_GET_USER_WITH_TOKENS, {"p_name": name})
        if not rows:
            return None, []
        off = len(_UCOLS)
        toks = [self._token_from(r, off) for r in rows if r[off + _TI["serial"]] is not None]
        return _user_from(rows[0]), toks

    def get_user_tokens_codes(self, name: str) -> tuple[User | None, list[Token], int]:
        """get_user_with_tokens and backup_codes_left in one statement: what every
        decision reads (one snapshot, one round trip)."""
        prefetched: dict[str, list[Any]] | None = getattr(self._prefetched, "rows", None)
        rows = prefetched.get(name) if prefetched is not None else None
        if rows is None:
            rows = self._hot.read(_GET_USER_TOKENS_CODES, {"p_name": name})
        if not rows:
            return None, [], 0
        off = len(_UCOLS)
        toks = [self._token_from(r, off) for r in rows if r[off + _TI["serial"]] is not None]
        return _user_from(rows[0]), toks, int(rows[0][off + len(_TCOLS)])

    def add_user(self, user: User) -> None:
        """Raises AlreadyExists when the name is taken (names are case-sensitive)."""
        try:
            with self._write() as conn:
                conn.execute(insert(users).values(**_user_values(user)))
        except IntegrityError:
            raise AlreadyExists(f"user {user.name!r} already exists") from None

    def ensure_user(
        self,
        name: str,
        source: str,
        now: float,
        profile: Mapping[str, str] | None = None,
        groups: Sequence[str] = (),
    ) -> User:
        """The user, created on first sight. An existing row is returned unchanged; two
        nodes creating the same user at once both get the one row (ON CONFLICT)."""
        found = self.get_user(name)  # the common case needs no write lock
        if found is not None:
            return found
        profile = profile or {}
        values = {
            "name": name,
            "source": source,
            "created_at": now,
            "groups": json.dumps(list(groups)),
            **{
                k: str(profile[k])
                for k in ("email", "phone", "first_name", "last_name")
                if profile.get(k)
            },
        }
        stmt = self._insert(users).values(**values).on_conflict_do_nothing(index_elements=[_U.name])
        with self._write() as conn:
            conn.execute(stmt)
            row = conn.execute(_GET_USER, {"p_name": name}).first()
        if row is None:  # pragma: no cover - the row was just inserted or already there
            raise StoreUnavailable("user row vanished during ensure_user")
        return _user_from(row)

    def list_users(
        self, pattern: str | None = None, limit: int | None = None
    ) -> list[UserOverview]:
        """Users whose name matches `pattern` (`*` wildcard, case-sensitive on both
        backends), in byte order, each with its active-token count and `registered`: any
        token (whatever its status), backup codes or a PIN. One query."""
        active = (
            select(func.count())
            .select_from(tokens)
            .where(_T.user == _U.name, _T.status == _ACTIVE)
            .scalar_subquery()
        )
        registered = or_(
            _U.pin_hash.is_not(None),
            exists().where(_T.user == _U.name),
            exists().where(backup_codes.c.user == _U.name),
        )
        stmt = select(*_UCOLS, active.label("active_tokens"), registered.label("registered"))
        # Byte order on both backends (PostgreSQL would otherwise sort by the db locale),
        # served by an index: SQLite's primary key, PostgreSQL's migrations.PG_NAME_BYTES_INDEX.
        name = _U.name if self._sqlite else _U.name.collate("C")
        if pattern is not None and pattern != "*":
            stmt = stmt.where(*self._name_matches(name, pattern))
        stmt = stmt.order_by(name)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        n = len(_UCOLS)
        return [
            UserOverview(user=_user_from(r), active_tokens=int(r[n]), registered=bool(r[n + 1]))
            for r in rows
        ]

    def _name_matches(self, name: Any, pattern: str) -> list[Any]:
        """Conditions for names matching `pattern`: an index range on the literal prefix
        (never a scan of every user when the pattern starts with one), then the exact
        match within it."""
        if "*" not in pattern:
            return [name == pattern]
        if self._sqlite:
            conds = [name.op("GLOB")(names.glob_escape(pattern))]  # LIKE ignores case
        else:
            conds = [name.like(names.like_escape(pattern), escape="\\")]
        bounds = names.prefix_bounds(pattern)
        if bounds is not None:
            low, high = bounds
            conds.append(name >= low)
            if high is not None:
                conds.append(name < high)
        return conds

    def _update_user(self, name: str, **values: Any) -> bool:
        with self._write() as conn:
            return conn.execute(update(users).where(_U.name == name).values(**values)).rowcount == 1

    def set_password_hash(self, name: str, password_hash: str | None) -> bool:
        return self._update_user(name, password_hash=password_hash)

    def set_disabled(self, name: str, disabled: bool) -> bool:
        return self._update_user(name, disabled=disabled)

    def set_pin_hash(self, name: str, pin_hash: str | None) -> bool:
        return self._update_user(name, pin_hash=pin_hash)

    def unlock_user(self, name: str) -> bool:
        return self._update_user(name, failures=0, locked_until=None)

    def reset_user(self, name: str) -> bool:
        """Drop the OTP registration (tokens, backup codes, PIN) in one transaction.
        Lock state is left alone: `unlock_user` is its own decision. The user row first,
        as a decision's write phase takes it (PostgreSQL: one lock order, no deadlock)."""
        with self._write() as conn:
            found = (
                conn.execute(update(users).where(_U.name == name).values(pin_hash=None)).rowcount
                == 1
            )
            conn.execute(delete(tokens).where(_T.user == name))
            conn.execute(delete(backup_codes).where(backup_codes.c.user == name))
            return found

    def set_profile(
        self, name: str, profile: Mapping[str, str], groups: Sequence[str] | None = None
    ) -> bool:
        """Overwrite the given profile fields (and the groups unless None)."""
        values: dict[str, Any] = {k: str(v) for k, v in profile.items() if k in _PROFILE}
        if groups is not None:
            values["groups"] = json.dumps(list(groups))
        if not values:
            return self.get_user(name) is not None
        return self._update_user(name, **values)

    def rename_user(self, name: str, new_name: str) -> bool:
        """One transaction: the row, its tokens, backup codes, challenges and portal
        sessions move to `new_name` (the new row is written first, so the foreign keys
        hold at every statement); the audit trail keeps the old name (it is history).
        False for an unknown user; AlreadyExists when `new_name` is taken."""
        try:
            with self._write() as conn:
                row = conn.execute(select(users).where(_U.name == name)).mappings().first()
                if row is None:
                    return False
                conn.execute(insert(users).values({**row, "name": new_name}))
                conn.execute(update(tokens).where(_T.user == name).values(user=new_name))
                for table in (backup_codes, challenges, portal_sessions):
                    conn.execute(
                        update(table).where(table.c.user == name).values(user=new_name)
                    )
                conn.execute(delete(users).where(_U.name == name))
                return True
        except IntegrityError:
            raise AlreadyExists(f"user {new_name!r} already exists") from None

    def delete_user(self, name: str) -> bool:
        """One transaction: the user's tokens are revoked and unassigned (a serial stays
        taken, so a lost hardware token cannot come back under another user), their
        backup codes and pending challenges deleted, then the row with its PIN."""
        with self._write() as conn:
            conn.execute(
                update(tokens).where(_T.user == name).values(status=_REVOKED, user=None)
            )
            conn.execute(delete(backup_codes).where(backup_codes.c.user == name))
            conn.execute(delete(challenges).where(challenges.c.user == name))
            return conn.execute(delete(users).where(_U.name == name)).rowcount == 1

    def record_failure(
        self, name: str, now: float, max_attempts: int, lock_seconds: float | None
    ) -> LockState:
        """Count one failure in ONE statement and lock when the count reaches
        `max_attempts` (`lock_seconds` None: until an operator unlocks).

        - while locked, the counter still moves but the deadline is never extended
          (a locked-out attacker cannot keep the real user out forever);
        - after a timed lock has expired, counting restarts at 1 and the stale
          deadline is cleared (auto-unlock grants a fresh set of attempts);
        - an unknown user has nothing to count: LockState(0, None).
        """
        deadline = LOCKED_FOREVER if lock_seconds is None else now + lock_seconds
        with self._write() as conn:
            row = conn.execute(
                _RECORD_FAILURE,
                {"p_name": name, "p_now": now, "p_max": max_attempts, "p_deadline": deadline},
            ).first()
        if row is None:
            return LockState(failures=0, locked_until=None)
        return LockState(failures=row[0], locked_until=_from_db_deadline(row[1]))

    def record_attempt(
        self, name: str, now: float, source: str, client: str, success: bool
    ) -> None:
        """Remember the last attempt (and success). Success zeroes the failure count and
        clears an expired lock, but never a running one: a locked user should not reach
        success, and if a race with another node gets here anyway, the lock holds."""
        params = {"p_name": name, "p_at": now, "p_source": source, "p_client": client}
        with self._write() as conn:
            conn.execute(_RECORD_SUCCESS if success else _RECORD_ATTEMPT, params)

    # ------------------------------------------------------------------ tokens
    def add_token(self, token: Token) -> None:
        """Store a token, its seed encrypted and bound to its serial. Raises
        AlreadyExists for a taken serial, NotFound when the user does not exist."""
        values = self._token_values(token)
        try:
            with self._write() as conn:
                conn.execute(insert(tokens).values(**values))
        except IntegrityError:
            with self._read() as conn:
                taken = conn.execute(select(_T.serial).where(_T.serial == token.serial)).first()
            if taken is not None:
                raise AlreadyExists(f"token {token.serial!r} already exists") from None
            raise NotFound(f"user {token.user!r} does not exist") from None

    def get_token(self, serial: str) -> Token | None:
        with self._read() as conn:
            row = conn.execute(_GET_TOKEN, {"p_serial": serial}).first()
        return None if row is None else self._token_from(row)

    def list_tokens(self, user: str | None = None) -> list[Token]:
        """The user's tokens (every status), or every token when `user` is None."""
        with self._read() as conn:
            if user is None:
                rows = conn.execute(_LIST_TOKENS_ALL).all()
            else:
                rows = conn.execute(_LIST_TOKENS_OF, {"p_user": user}).all()
        return [self._token_from(r) for r in rows]

    def _update_token(self, serial: str, **values: Any) -> bool:
        with self._write() as conn:
            return (
                conn.execute(update(tokens).where(_T.serial == serial).values(**values)).rowcount
                == 1
            )

    def set_token_status(self, serial: str, status: TokenStatus) -> bool:
        return self._update_token(serial, status=TokenStatus(status).value)

    def assign_token(self, serial: str, user: str | None) -> bool:
        """Give the token to `user` (None: unassign). NotFound when the user does not exist."""
        try:
            return self._update_token(serial, user=user)
        except IntegrityError:
            raise NotFound(f"user {user!r} does not exist") from None

    def _token_values(self, token: Token) -> dict[str, Any]:
        seed_enc = self._keyring.encrypt(token.seed, token.serial.encode())
        return {**token_columns(token), "seed_enc": seed_enc}

    def _taken_serials(self, conn: Connection, serials: Sequence[str]) -> list[str]:
        taken: list[str] = []
        for i in range(0, len(serials), _IN_CHUNK):
            chunk = serials[i : i + _IN_CHUNK]
            taken += conn.execute(select(_T.serial).where(_T.serial.in_(chunk))).scalars()
        return sorted(taken)

    def add_tokens(self, new: Sequence[Token]) -> None:
        """Bulk insert (one executemany, one transaction): all or none. Raises
        AlreadyExists naming every serial already in the store, NotFound for a user
        that does not exist."""
        rows = [self._token_values(t) for t in new]
        try:
            with self._write() as conn:
                taken = self._taken_serials(conn, [t.serial for t in new])
                if taken:
                    shown = ", ".join(taken[:20]) + (" ..." if len(taken) > 20 else "")
                    raise AlreadyExists(f"{len(taken)} serial(s) already in the store: {shown}")
                conn.execute(insert(tokens), rows)
        except IntegrityError:
            raise AlreadyExists("a serial was taken meanwhile, or a user does not exist") from None

    def claim_token(
        self, serial: str, user: str, *, step: int | None, drift: int, counter: int | None
    ) -> bool:
        """Compare-and-set: an active, unassigned token becomes `user`'s and the code
        that proved possession is used (TOTP `step`, or HOTP `counter`) in ONE
        statement, so exactly one claimant wins and the code cannot be replayed."""
        cond = [_T.serial == serial, _T.user.is_(None), _T.status == _ACTIVE]
        if step is not None:
            cond.append(_T.last_step < step)
            values: dict[str, Any] = {"user": user, "last_step": step, "drift": drift}
        elif counter is not None:
            cond.append(_T.counter <= counter)
            values = {"user": user, "counter": counter + 1}
        else:
            raise InvalidInput("claim_token needs a TOTP step or an HOTP counter")
        try:
            with self._write() as conn:
                return conn.execute(update(tokens).where(*cond).values(**values)).rowcount == 1
        except IntegrityError:
            raise NotFound(f"user {user!r} does not exist") from None

    def accept_totp_step(self, serial: str, step: int, drift: int) -> bool:
        """Compare-and-set: True for exactly one caller per (token, step) and only for a
        step later than every step accepted before, on an active token."""
        with self._write() as conn:
            return (
                conn.execute(
                    _ACCEPT_TOTP, {"p_serial": serial, "p_step": step, "p_drift": drift}
                ).rowcount
                == 1
            )

    def accept_hotp_counter(self, serial: str, counter: int) -> bool:
        """Compare-and-set: the counter becomes `counter + 1` if it was <= `counter`."""
        with self._write() as conn:
            return (
                conn.execute(_ACCEPT_HOTP, {"p_serial": serial, "p_counter": counter}).rowcount == 1
            )

    def resync_token(
        self,
        serial: str,
        *,
        counter: int | None = None,
        last_step: int | None = None,
        drift: int | None = None,
    ) -> bool:
        """Operator re-alignment, a forward-only compare-and-set: False when the token is
        missing or a login or another resync got past the first resync code meanwhile
        (`otp.resync_write`); then nothing is written."""
        guard = otp.resync_write(counter, last_step)
        column = _T.counter if guard.field == "counter" else _T.last_step
        values = {guard.field: guard.value}
        if drift is not None:
            values["drift"] = drift
        with self._write() as conn:
            cas = update(tokens).where(_T.serial == serial, column < guard.before)
            return conn.execute(cas.values(**values)).rowcount == 1

    # ------------------------------------------------------------------ backup codes
    def replace_backup_codes(self, user: str, code_hashes: Sequence[str], now: float) -> None:
        """The new set replaces the old one atomically (older codes stop working)."""
        try:
            with self._write() as conn:
                conn.execute(delete(backup_codes).where(backup_codes.c.user == user))
                if code_hashes:
                    conn.execute(
                        insert(backup_codes),
                        [{"user": user, "hash": h, "created_at": now} for h in code_hashes],
                    )
        except IntegrityError:
            raise NotFound(f"user {user!r} does not exist") from None

    def consume_backup_code(self, user: str, code_hash: str) -> bool:
        """Single use: the DELETE succeeds for exactly one caller."""
        with self._write() as conn:
            return conn.execute(_CONSUME_CODE, {"p_user": user, "p_hash": code_hash}).rowcount > 0

    def backup_codes_left(self, user: str) -> int:
        return int(self._hot.read(_COUNT_CODES, {"p_user": user})[0][0])

    # ------------------------------------------------------------------ challenges
    def put_challenge(self, state_hash: str, challenge: Challenge) -> None:
        with self._write() as conn:
            conn.execute(
                insert(challenges).values(
                    state_hash=state_hash,
                    user=challenge.user,
                    client=challenge.client,
                    expires_at=challenge.expires_at,
                    data=challenge.data,
                )
            )

    def take_challenge(self, state_hash: str, now: float) -> Challenge | None:
        """Single use: DELETE ... RETURNING gives the state to one caller, and only before
        it expires. Expired states are purged here, so the table stays small."""
        with self._write() as conn:
            row = conn.execute(_TAKE_CHALLENGE, {"p_hash": state_hash, "p_now": now}).first()
            conn.execute(
                _PURGE_CHALLENGES if self._sqlite else _PURGE_CHALLENGES_PG, {"p_now": now}
            )
        if row is None:
            return None
        return Challenge(user=row[0], client=row[1], expires_at=row[2], data=row[3])

    # ------------------------------------------------------------------ decisions
    def commit_decision(self, write: DecisionWrite) -> DecisionCommit:
        """A decision's write phase in ONE transaction (BEGIN IMMEDIATE on SQLite): the
        single use (compare-and-set / conditional DELETE) decides which ending's attempt
        record, failure count and audit row are written; all commit together or not at
        all, before the caller sees the result."""
        if isinstance(self._hot, PgHotPath) and self._chain_key is None:
            # (With the chain on, the statements run one by one: the head lock first.)
            one = _pg_decision(write)
            if one is not None:
                return _pg_commit(write, self._hot.execute_one(*one))
        return self._hot.write(
            lambda run: self._chained(run, lambda: _apply_decisions(run, (write,))[0])
        )

    def decision_reads(self, names: Sequence[str] = ()) -> AbstractContextManager[None]:
        """A context in which this thread's `get_user_tokens_codes` calls for `names`
        (the users about to be decided) are answered from one statement that read all
        of them at once (one snapshot), taking no write lock. No transaction and no
        connection is held through the block, on either backend: every write is a
        compare-and-set, so a row changed since is caught by the write, never trusted
        from the read; and a thread inside it that needs a connection (a local user's
        password check) holds no other one meanwhile (see storage/hot_path.py)."""
        return self._read_ahead(names)

    @contextmanager
    def _read_ahead(self, names: Sequence[str]) -> Iterator[None]:
        hot = self._hot
        if names:
            rows = (
                hot.read(_GET_MANY_USERS_TOKENS_CODES, {"p_names": json.dumps(list(names))})
                if isinstance(hot, SqliteHotPath)
                else hot.read(_GET_MANY_USERS_TOKENS_CODES_PG, {"p_names": list(names)})
            )
            by_user: dict[str, list[Any]] = {name: [] for name in names}  # [] = no such user
            for row in rows:
                found = by_user.get(row[_UI["name"]])
                if found is not None:
                    found.append(row)
            self._prefetched.rows = by_user
        try:
            yield
        finally:
            self._prefetched.rows = None

    def commit_decisions(self, writes: Sequence[DecisionWrite]) -> list[DecisionCommit]:
        """Several decisions' write phases in ONE transaction, with the results of each
        (as `commit_decision`), in the order of `writes`, returned only after COMMIT;
        any error rolls back all of them and raises (StoreUnavailable for a database
        error). They are applied sorted by user name (a stable sort: one user's writes
        keep their order): row locks are taken in one order on every node, so two
        batches of overlapping users wait for each other instead of deadlocking.
        PostgreSQL: each write phase is its one-statement form, all sent in one
        pipeline (two round trips a batch: statements, then COMMIT)."""
        order = sorted(range(len(writes)), key=lambda i: writes[i].user or "")
        ordered = [writes[i] for i in order]
        results = self._commit_in_order(ordered)
        by_position = dict(zip(order, results, strict=True))
        return [by_position[i] for i in range(len(writes))]

    def _commit_in_order(self, writes: Sequence[DecisionWrite]) -> list[DecisionCommit]:
        hot = self._hot
        if isinstance(hot, SqliteHotPath):
            return hot.write_all(
                [lambda run: self._chained(run, lambda: _apply_decisions(run, writes))]
            )[0]
        if self._chain_key is None:
            statements = [_pg_decision(w) for w in writes]
            if all(s is not None for s in statements):
                rows = hot.execute_all([s for s in statements if s is not None])
                return [_pg_commit(w, row) for w, row in zip(writes, rows, strict=True)]
        return hot.write(lambda run: self._chained(run, lambda: _apply_decisions(run, writes)))

    # ------------------------------------------------------------------ audit
    def append_audit(self, event: AuditEvent) -> None:
        """Append-only: the store offers no way to change a row; only retention removes."""
        with self._write() as conn:
            run = chain.ConnRun(conn)
            self._chained(run, lambda: run(_APPEND_AUDIT, _audit_params(event)))

    def query_audit(
        self,
        user: str | None = None,
        since: float | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[AuditEvent]:
        """Newest first. Page on with `before_id` = the smallest id of the last page."""
        stmt = select(audit)
        if since is not None:
            stmt = stmt.where(audit.c.at >= since)
        if before_id is not None:
            stmt = stmt.where(audit.c.id < before_id)
        with self._read() as conn:
            rows = _audit_page(conn, stmt, user, newest_first=True, limit=limit)
        return [_audit_from(r) for r in rows]

    # ------------------------------------------------------------------ export, import
    def _records(self, conn: Connection) -> Records:
        codes: dict[str, list[BackupCode]] = {}
        for user, code_hash, at in conn.execute(
            select(backup_codes.c.user, backup_codes.c.hash, backup_codes.c.created_at)
        ):
            codes.setdefault(user, []).append(BackupCode(code_hash, at))
        users_ = [
            UserRecord(_user_from(r), tuple(codes.get(r[0], ())))
            for r in conn.execute(select(*_UCOLS).order_by(_U.name))
        ]
        return Records(users_, [self._token_from(r) for r in conn.execute(_LIST_TOKENS_ALL)])

    def export_records(self) -> Records:
        """Every user (with lock state, PIN and backup-code hashes) and every token, as
        of one snapshot (one read transaction)."""
        with self._engine.connect() as conn:
            if self._sqlite:
                conn.connection.driver_connection.execute("BEGIN")  # type: ignore[union-attr]
            else:
                conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            try:
                return self._records(conn)
            finally:
                conn.rollback()  # read only: ends the snapshot

    def import_records(self, decide: Callable[[Records], ImportPlan]) -> ImportPlan:
        """ONE write transaction: read what the store holds, let `decide` plan the
        import from it (or raise, which writes nothing), then write the plan. Its
        statements may take as long as the import's size needs (a million users take
        a minute), not store.timeout: an operator's bulk write, not a request."""
        with patience(_BULK_SECONDS), self._write() as conn:
            if self._dialect == "postgresql":
                # The server's own limits too (pg_bounded.server_options), as migrations do.
                conn.execute(text("SET LOCAL statement_timeout = 0"))
                conn.execute(text("SET LOCAL lock_timeout = 0"))
                conn.execute(text("LOCK TABLE users, tokens, backup_codes IN EXCLUSIVE MODE"))
            plan = decide(self._records(conn))
            self._apply_plan(conn, plan)
        return plan

    def _apply_plan(self, conn: Connection, plan: ImportPlan) -> None:
        for i in range(0, len(plan.delete_serials), _IN_CHUNK):
            chunk = plan.delete_serials[i : i + _IN_CHUNK]
            conn.execute(delete(tokens).where(_T.serial.in_(chunk)))
        if plan.users:
            self._upsert(conn, users, [_user_values(r.user) for r in plan.users])
        if plan.backup:
            conn.execute(
                delete(backup_codes).where(backup_codes.c.user == bindparam("p_user")),
                [{"p_user": name} for name in plan.backup],
            )
            rows = [
                {"user": name, "hash": c.hash, "created_at": c.created_at}
                for name, codes in plan.backup.items()
                for c in codes
            ]
            if rows:
                conn.execute(insert(backup_codes), rows)
        if plan.tokens:
            self._upsert(conn, tokens, [self._token_values(t) for t in plan.tokens])

    def _upsert(self, conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
        """INSERT ... ON CONFLICT (primary key) DO UPDATE every other column: compiled
        once and handed to the driver's executemany, without SQLAlchemy's per-row
        parameter processing (most of the cost of a bulk import of a million users)."""
        ins = self._insert(table)
        key = [c for c in table.primary_key.columns]
        stmt = ins.on_conflict_do_update(
            index_elements=key,
            set_={c.name: ins.excluded[c.name] for c in table.columns if c not in key},
        )
        names = [c.name for c in table.columns]
        compiled = stmt.compile(dialect=conn.dialect, column_keys=names)
        if compiled.positiontup is not None:  # SQLite: ? placeholders, in this order
            get = itemgetter(*compiled.positiontup)
            conn.exec_driver_sql(str(compiled), [get(r) for r in rows])
        else:  # PostgreSQL: %(name)s placeholders, named as the columns
            conn.exec_driver_sql(str(compiled), rows)

    def export_audit(
        self, where: AuditFilter, after_id: int = 0, limit: int = 1000
    ) -> list[AuditEvent]:
        """Oldest first by id, from `after_id` on: an index range per page, never a
        scan from the start however far the export has come."""
        a = audit.c
        stmt = select(audit).where(a.id > after_id)
        for col, value in (
            (a.action, where.action),
            (a.result, where.result),
            (a.client, where.client),
        ):
            if value is not None:
                stmt = stmt.where(col == value)
        if where.since is not None:
            stmt = stmt.where(a.at >= where.since)
        if where.until is not None:
            stmt = stmt.where(a.at < where.until)
        with self._read() as conn:
            rows = _audit_page(conn, stmt, where.user, newest_first=False, limit=limit)
        return [_audit_from(r) for r in rows]

    def prune_audit(self, before: float, batch: int) -> int:
        """Delete up to `batch` of the oldest rows with `at < before`, found by the `at`
        index, in one short write transaction (the caller loops; deciders wait for one
        batch at most, never for the whole prune). It is written by the decisions'
        writer (storage/hot_path.py), which empties the SQLite WAL between its
        transactions: a prune of a large backlog, batch after batch, would otherwise
        grow it without bound while readers hold snapshots."""
        if self._chain_key is not None:  # a prefix of the chain, leaving an anchor
            return self._hot.write(lambda run: chain.prune_sealed(run, before, batch))
        params = {"p_before": before, "p_batch": batch}
        return self._hot.write(lambda run: int(run(_PRUNE_AUDIT, params).rowcount))

    def verify_audit(self) -> chain.Verdict:
        """Check the audit hash chain in one read snapshot (no write lock is taken:
        decisions go on meanwhile; rows sealed after the snapshot wait for next time)."""
        key = chain.chain_key(self._keyring.hash_key)
        try:
            if self._sqlite:
                with self._engine.begin() as conn:
                    conn.connection.driver_connection.execute("BEGIN")  # type: ignore[union-attr]
                    return chain.verify(chain.ConnRun(conn), key)
            snapshot = self._engine.execution_options(isolation_level="REPEATABLE READ")
            with snapshot.begin() as conn:
                return chain.verify(chain.ConnRun(conn), key)
        except (DBAPIError, PoolTimeout) as e:
            _raise_unavailable(e)

    # ------------------------------------------------------------------ keys, health
    def rotate_key(self) -> int:
        """New current data key (written to the key file first), then every seed is
        re-encrypted under it in one transaction. Until that commits, rows under the
        old key stay readable because each blob names its key. Returns rows rewritten."""
        new_id = self._keyring.rotate()
        prefix = f"v1:{new_id}:"
        sel = select(_T.serial, _T.seed_enc)
        if self._dialect == "postgresql":
            sel = sel.with_for_update()
        with self._write() as conn:
            rows = conn.execute(sel).all()
            changes = [
                {
                    "p_serial": serial,
                    "p_seed": self._keyring.encrypt(
                        self._keyring.decrypt(blob, serial.encode()), serial.encode()
                    ),
                }
                for serial, blob in rows
                if not blob.startswith(prefix)
            ]
            if changes:
                conn.execute(
                    update(tokens)
                    .where(_T.serial == bindparam("p_serial"))
                    .values(seed_enc=bindparam("p_seed")),
                    changes,
                )
        return len(changes)

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        with self._read() as conn:
            conn.execute(text("SELECT 1")).scalar_one()

    def decision_scope(self) -> AbstractContextManager[None]:
        """Nothing: each wait is bounded by store.timeout (or `time_budget`) on its own."""
        return nullcontext()

    def time_budget(self, seconds: float) -> AbstractContextManager[None]:
        """Within the block, this thread's waits for PostgreSQL together take at most
        `seconds`, and no write commits past it (a request's share of store.timeout
        left after its queueing). SQLite waits are bounded by store.timeout alone."""
        return budget(seconds)

    @property
    def wal_status(self) -> Callable[[], tuple[int, int, float]] | None:
        """SQLite: the WAL's state for /metrics (`Metrics.watch_wal`); PostgreSQL: None."""
        return self._hot.wal_status if isinstance(self._hot, SqliteHotPath) else None

    def close(self) -> None:
        self._hot.close()
        self._engine.dispose()


if TYPE_CHECKING:
    # mypy proves SqlStore implements the Store Protocol exactly (names and signatures).
    def _implements_store(s: SqlStore) -> BatchingStore:
        return s
