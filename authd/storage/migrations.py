"""Versioned schema: an ordered list of steps, applied in one transaction by
`SqlStore.open`, each recorded in `schema_version`.

Rules for adding a step: append `Step(N + 1, ...)` and never edit a released step.
Step 1 creates the tables as `schema.py` describes them. A later step that changes a
table changes `schema.py` too, so that old databases and fresh ones end up identical:
either it is idempotent (it checks what is there, so it leaves step 1's result of a
fresh database alone), or step 1 is pinned to a frozen copy of the version-1 tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, func, insert, inspect, select, text

from authd.core.errors import StoreUnavailable
from authd.storage import schema


@dataclass(frozen=True)
class Step:
    """One schema change. `apply` runs inside the caller's write transaction."""

    version: int
    description: str
    apply: Callable[[Connection], None]


def _v1_initial(conn: Connection) -> None:
    schema.metadata.create_all(conn)


def _v2_audit_chain(conn: Connection) -> None:
    """New tables only (no existing table changes), so `create_all` with its existence
    check serves fresh databases (step 1 made them already) and old ones alike. The chain
    starts after the rows already there: they predate it."""
    schema.metadata.create_all(conn, tables=[schema.audit_seal, schema.audit_chain])
    if conn.execute(select(schema.audit_chain.c.id)).first() is None:
        last = conn.execute(select(func.max(schema.audit.c.id))).scalar() or 0
        conn.execute(
            insert(schema.audit_chain).values(
                id=1, seq=0, hash=GENESIS, last_id=last, anchor_seq=0, anchor_hash=GENESIS
            )
        )


# The hash before the first link of an audit chain.
GENESIS = "0" * 64

def _v3_portal_sessions(conn: Connection) -> None:
    schema.portal_metadata.create_all(conn, tables=[schema.portal_sessions])


def _v4_portal_issues(conn: Connection) -> None:
    schema.portal_metadata.create_all(conn, tables=[schema.portal_issues])


# PostgreSQL only: `user list` sorts and ranges names in byte order (COLLATE "C"), which
# the primary key's index serves only in a database whose default collation is C.
# SQLite's primary key index is already in byte order (BINARY).
PG_NAME_BYTES_INDEX = "ix_users_name_bytes"


def _v5_population_indexes(conn: Connection) -> None:
    """Indexes so that no statement scans a table whose size grows with the users.
    Declared in `schema.py` too, so step 1 of a fresh database makes them already:
    checkfirst serves fresh and old databases alike."""
    for index in (*schema.challenges.indexes, *schema.portal_sessions.indexes):
        index.create(conn, checkfirst=True)
    if conn.dialect.name == "postgresql":
        conn.execute(
            text(
                f"CREATE INDEX IF NOT EXISTS {PG_NAME_BYTES_INDEX} "
                'ON users (name COLLATE "C")'
            )
        )


# The index that ordered the audit trail by (user, id), before the buckets.
_OLD_AUDIT_USER_INDEX = "ix_audit_user_id"


def _v6_audit_user_buckets(conn: Connection) -> None:
    """Audit rows by (bucket, id) instead of (user, id) (schema.AUDIT_USER_BUCKETS).
    Rows already there keep a NULL bucket and are found by the by-user index of
    unbucketed rows, which this step builds over them (one pass over the trail); the
    old index goes. Idempotent: a fresh database has the column and indexes from step 1."""
    if "user_bucket" not in {c["name"] for c in inspect(conn).get_columns("audit")}:
        conn.execute(text("ALTER TABLE audit ADD COLUMN user_bucket SMALLINT"))
    for index in schema.audit.indexes:
        index.create(conn, checkfirst=True)
    conn.execute(text(f"DROP INDEX IF EXISTS {_OLD_AUDIT_USER_INDEX}"))


STEPS: tuple[Step, ...] = (
    Step(1, "initial schema: users, tokens, backup codes, challenges, audit", _v1_initial),
    Step(2, "audit hash chain: audit_seal, audit_chain", _v2_audit_chain),
    Step(3, "self-service portal sessions", _v3_portal_sessions),
    Step(4, "self-service portal access-recovery requests", _v4_portal_issues),
    Step(5, "indexes for a large user base: challenges, portal sessions by user; "
            "PostgreSQL user names in byte order", _v5_population_indexes),
    Step(6, "audit rows by user in a few ranges (bucket, id), not at random (user, id)",
         _v6_audit_user_buckets),
)  # fmt: skip


def current_version(conn: Connection) -> int:
    """0 for an empty database."""
    if not inspect(conn).has_table(schema.schema_version.name):
        return 0
    found = conn.execute(
        select(schema.schema_version.c.version)
        .order_by(schema.schema_version.c.version.desc())
        .limit(1)
    ).scalar()
    return int(found or 0)


def upgrade(conn: Connection, now: float, steps: Sequence[Step] = STEPS) -> list[int]:
    """Apply the steps the database lacks; returns the versions applied.

    The caller holds the write lock (SQLite BEGIN IMMEDIATE, PostgreSQL advisory lock),
    so two processes starting at once apply each step exactly once. A database newer
    than this code is refused rather than guessed at (fail closed).
    """
    for i, step in enumerate(steps, start=1):
        if step.version != i:
            raise ValueError(f"migration steps must be numbered 1..N in order, got {step.version}")
    have = current_version(conn)
    latest = len(steps)
    if have > latest:
        raise StoreUnavailable(
            f"database schema version {have} is newer than this authd knows ({latest})"
        )
    applied = []
    for step in steps[have:]:
        step.apply(conn)
        conn.execute(
            insert(schema.schema_version).values(
                version=step.version, description=step.description, applied_at=now
            )
        )
        applied.append(step.version)
    return applied
