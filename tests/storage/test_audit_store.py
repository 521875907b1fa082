"""The audit trail in the SQL store (SQLite and PostgreSQL): export filters and pages,
and the batched prune by time that `audit.retention` runs."""

from __future__ import annotations

from authd.auth.interfaces import AuditFilter
from authd.core.model import AuditEvent
from authd.storage.sql import SqlStore

T0 = 1_767_225_600.0


def _event(at: float, action: str = "auth", result: str = "accept", **kw: str) -> AuditEvent:
    return AuditEvent(at=at, actor=kw.pop("actor", "radius:vpn"), action=action, result=result,
                      **kw)  # fmt: skip


def _fill(store: SqlStore) -> None:
    store.append_audit(_event(T0, user="alice", client="vpn"))
    store.append_audit(_event(T0 + 10, result="reject", user="alice", client="vpn"))
    store.append_audit(_event(T0 + 20, user="bob", client="wifi"))
    store.append_audit(_event(T0 + 30, "user.delete", "ok", user="bob", actor="authctl:root"))
    store.append_audit(_event(T0 + 40, result="reject", user="bob", client="wifi"))


def test_export_filters_combine_oldest_first(store: SqlStore) -> None:
    """Each filter narrows the export; filters combine (AND); rows come oldest first."""
    _fill(store)

    def users(**where: object) -> list[tuple[str, float]]:
        return [(e.user, e.at - T0) for e in store.export_audit(AuditFilter(**where))]  # type: ignore[arg-type]

    assert users() == [("alice", 0), ("alice", 10), ("bob", 20), ("bob", 30), ("bob", 40)]
    assert users(result="reject") == [("alice", 10), ("bob", 40)]
    assert users(client="wifi", result="reject") == [("bob", 40)]
    assert users(action="user.delete") == [("bob", 30)]
    assert users(user="alice", action="auth") == [("alice", 0), ("alice", 10)]
    assert users(since=T0 + 10, until=T0 + 30) == [("alice", 10), ("bob", 20)]


def test_export_pages_by_id(store: SqlStore) -> None:
    """A page ends at `limit`; the next starts after the last id, nothing lost or repeated."""
    _fill(store)
    first = store.export_audit(AuditFilter(), limit=2)
    rest = store.export_audit(AuditFilter(), after_id=first[-1].id or 0, limit=10)
    assert [e.at - T0 for e in first + rest] == [0, 10, 20, 30, 40]


def test_prune_deletes_only_older_rows_in_batches(store: SqlStore) -> None:
    """`prune_audit(before, batch)` deletes at most `batch` rows, oldest first, and none
    at or after `before`."""
    _fill(store)
    assert store.prune_audit(T0 + 30, batch=2) == 2
    left = [e.at - T0 for e in store.export_audit(AuditFilter())]
    assert left == [20, 30, 40]
    assert store.prune_audit(T0 + 30, batch=2) == 1
    assert store.prune_audit(T0 + 30, batch=2) == 0
    assert [e.at - T0 for e in store.export_audit(AuditFilter())] == [30, 40]
