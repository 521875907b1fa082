"""Self-service portal sessions in the SQL store, so that every node behind a load
balancer sees the same sessions.

A session id is 32 random bytes handed to the browser once; only its SHA-256 is stored,
so a database reader cannot take a session over. Timeouts are checked against the
caller's `now` (idle: since the last request; absolute: since log-in) and an expired
row is deleted when it is found.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from sqlalchemy import Connection, and_, delete, insert, or_, update

from authd.storage.schema import portal_sessions as _S

Transaction = Callable[[], AbstractContextManager[Connection]]

STAGE_LOGIN = "login"  # the password passed; a second factor is due
STAGE_IN = "in"  # logged in


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii", "replace")).hexdigest()


@dataclass(frozen=True)
class Session:
    """One live session; `id` is what the cookie carries (never stored)."""

    id: str = field(repr=False)
    user: str
    csrf: str = field(repr=False)
    stage: str
    state: str = field(repr=False, default="")
    groups: tuple[str, ...] = ()
    created_at: float = 0.0


class SqlSessions:
    """Create, find (and touch), and end portal sessions."""

    def __init__(self, transaction: Transaction, idle: float, absolute: float) -> None:
        # SqlStore.transaction: SQLite's write lock taken first (a read that later
        # writes could not upgrade its lock once another writer committed).
        self._transaction = transaction
        self.idle = idle
        self.absolute = absolute

    def create(
        self, user: str, stage: str, now: float, state: str = "", groups: tuple[str, ...] = ()
    ) -> Session:
        """A new session with fresh random id and CSRF token."""
        session = Session(
            id=secrets.token_urlsafe(32),
            user=user,
            csrf=secrets.token_urlsafe(32),
            stage=stage,
            state=state,
            groups=groups,
            created_at=now,
        )
        with self._transaction() as conn:
            conn.execute(
                insert(_S).values(
                    id_hash=_hash(session.id),
                    user=user,
                    csrf=session.csrf,
                    stage=stage,
                    state=state,
                    groups=json.dumps(list(groups)),
                    created_at=now,
                    seen_at=now,
                )
            )
            self._delete_expired(conn, now)  # housekeeping rides on each log-in
        return session

    def find(self, session_id: str, now: float) -> Session | None:
        """The live session with this id, touched (its idle time starts again); None
        when unknown or expired (an expired one is deleted)."""
        key = _hash(session_id)
        live = and_(
            _S.c.id_hash == key,
            _S.c.seen_at >= now - self.idle,
            _S.c.created_at >= now - self.absolute,
        )
        with self._transaction() as conn:
            row = conn.execute(
                update(_S).where(live).values(seen_at=now).returning(
                    _S.c.user, _S.c.csrf, _S.c.stage, _S.c.state, _S.c.groups, _S.c.created_at
                )
            ).first()
            if row is None:
                conn.execute(delete(_S).where(_S.c.id_hash == key))  # expired, if there
                return None
        return Session(
            id=session_id,
            user=row.user,
            csrf=row.csrf,
            stage=row.stage,
            state=row.state,
            groups=tuple(json.loads(row.groups)),
            created_at=row.created_at,
        )

    def end(self, session_id: str) -> bool:
        """Delete the session (log-out, or replaced by a new id at log-in)."""
        with self._transaction() as conn:
            gone = conn.execute(delete(_S).where(_S.c.id_hash == _hash(session_id))).rowcount
        return bool(gone)

    def purge(self, now: float) -> int:
        """Delete every expired session; returns how many."""
        with self._transaction() as conn:
            return self._delete_expired(conn, now)

    def _delete_expired(self, conn: Connection, now: float) -> int:
        result = conn.execute(
            delete(_S).where(
                or_(_S.c.seen_at < now - self.idle, _S.c.created_at < now - self.absolute)
            )
        )
        return int(result.rowcount)
