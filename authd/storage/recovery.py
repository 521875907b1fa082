"""Access-recovery requests ("restore access") in the SQL store, shared by every node.

Each change of status is one compare-and-set UPDATE on the row's current status, so two
operators (or an operator and the user signing in) cannot both win.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from authd.storage.schema import portal_issues as _I

Transaction = Callable[[], AbstractContextManager[Connection]]

KINDS = ("token", "password", "mail")  # what the user lost
# The engine's audit actor of a recovery proof (`portal` front-end, `recovery` client):
# a proof is not the normal sign-in that supersedes a request.
PROOF_ACTOR = "portal:recovery"
OPEN, APPROVED, REJECTED, SUPERSEDED, USED = "open", "approved", "rejected", "superseded", "used"
STATUSES = (OPEN, APPROVED, REJECTED, SUPERSEDED, USED)


@dataclass(frozen=True)
class Issue:
    """One request, as operators see it (no secret in it)."""

    id: int
    user: str
    kind: str
    status: str
    source: str
    created_at: float
    decided_at: float | None
    decided_by: str
    grant_until: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "kind": self.kind,
            "status": self.status,
            "source": self.source,
            "created_at": self.created_at,
            "decided_at": self.decided_at,
            "decided_by": self.decided_by,
            "grant_until": self.grant_until,
        }


def _issue(row: Any) -> Issue:
    return Issue(
        id=int(row.id),
        user=row.user,
        kind=row.kind,
        status=row.status,
        source=row.source,
        created_at=float(row.created_at),
        decided_at=row.decided_at,
        decided_by=row.decided_by,
        grant_until=row.grant_until,
    )


class SqlIssues:
    """Open, list, decide and close access-recovery requests."""

    def __init__(self, transaction: Transaction) -> None:
        self._transaction = transaction

    def open(self, user: str, kind: str, source: str, now: float) -> Issue:
        """A new open request; an open one of the same user and kind is kept instead
        (a user pressing twice queues one request)."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        mine = select(_I).where(and_(_I.c.user == user, _I.c.kind == kind, _I.c.status == OPEN))
        with self._transaction() as conn:
            # The partial unique index keeps one open row: a second node's insert is
            # skipped (no error, no lost transaction) and the row there is read back.
            dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            conn.execute(
                dialect_insert(_I)
                .values(user=user, kind=kind, status=OPEN, source=source, created_at=now)
                .on_conflict_do_nothing()
            )
            row = conn.execute(mine).one()
        return _issue(row)

    def get(self, issue_id: int) -> Issue | None:
        with self._transaction() as conn:
            row = conn.execute(select(_I).where(_I.c.id == issue_id)).first()
        return None if row is None else _issue(row)

    def all(self, status: str | None = None) -> list[Issue]:
        """Oldest first: the queue in the order users asked."""
        stmt = select(_I).order_by(_I.c.id)
        if status is not None:
            stmt = stmt.where(_I.c.status == status)
        with self._transaction() as conn:
            return [_issue(r) for r in conn.execute(stmt)]

    def decide(
        self, issue_id: int, status: str, actor: str, now: float, grant_until: float | None = None
    ) -> bool:
        """Close an open request as `status`; False when it is no longer open."""
        with self._transaction() as conn:
            changed = conn.execute(
                update(_I)
                .where(and_(_I.c.id == issue_id, _I.c.status == OPEN))
                .values(status=status, decided_at=now, decided_by=actor, grant_until=grant_until)
            ).rowcount
        return bool(changed)

    def supersede(self, user: str, now: float) -> list[int]:
        """The user signed in normally: each of their open requests is closed (a request
        the real user did not make must not outlive their next sign-in)."""
        with self._transaction() as conn:
            rows = conn.execute(
                update(_I)
                .where(and_(_I.c.user == user, _I.c.status == OPEN))
                .values(status=SUPERSEDED, decided_at=now, decided_by="sign-in")
                .returning(_I.c.id)
            ).all()
        return sorted(int(r.id) for r in rows)

    def take_grant(self, user: str, now: float) -> int | None:
        """Use the user's live grant (an approved lost-token request not yet expired):
        its id, or None. A grant is taken once."""
        with self._transaction() as conn:
            live = conn.execute(
                select(_I.c.id)
                .where(
                    and_(
                        _I.c.user == user,
                        _I.c.kind == "token",
                        _I.c.status == APPROVED,
                        _I.c.grant_until > now,
                    )
                )
                .order_by(_I.c.id)
                .limit(1)
            ).first()
            if live is None:
                return None
            taken = conn.execute(
                update(_I).where(and_(_I.c.id == live.id, _I.c.status == APPROVED))
                .values(status=USED)
            ).rowcount
        return int(live.id) if taken else None
