"""The audit trail in the SQL store (SQLite and PostgreSQL): export filters and pages,
a user's rows by their name's bucket, and the batched prune by time that
`audit.retention` runs."""

from __future__ import annotations

from sqlalchemy import update

from authd.auth.interfaces import AuditFilter
from authd.core.model import AuditEvent
from authd.storage.schema import AUDIT_USER_BUCKETS, audit, audit_bucket
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


def test_bucket_of_a_name_never_changes() -> None:
    """Rows are found in their bucket's index range: a function that moved a name to
    another bucket would hide every row written before the change."""
    assert [audit_bucket(n) for n in ("alice", "bob", "", "Ünïcode")] == [7, 0, 0, 28]
    assert {audit_bucket(f"u{i}") for i in range(1000)} == set(range(AUDIT_USER_BUCKETS))


def test_only_the_users_rows_when_another_name_shares_the_bucket(store: SqlStore) -> None:
    """`u38` hashes to alice's bucket: the name still picks the rows, newest first for
    `audit --user` and oldest first for the export, and paging loses or repeats none."""
    assert audit_bucket("u38") == audit_bucket("alice")
    for i in range(12):
        store.append_audit(_event(T0 + i, user=("alice", "u38", "bob")[i % 3]))
    newest = store.query_audit(user="alice", limit=2)
    rest = store.query_audit(user="alice", before_id=newest[-1].id, limit=10)
    assert [e.at - T0 for e in newest + rest] == [9, 6, 3, 0]
    assert {e.user for e in newest + rest} == {"alice"}
    oldest = store.export_audit(AuditFilter(user="u38"), limit=2)
    later = store.export_audit(AuditFilter(user="u38"), after_id=oldest[-1].id or 0, limit=10)
    assert [e.at - T0 for e in oldest + later] == [1, 4, 7, 10]
    assert [e.at - T0 for e in store.query_audit(user="alice", since=T0 + 5)] == [9, 6]


def test_rows_from_before_the_buckets_merge_with_newer_ones(store: SqlStore) -> None:
    """Rows written before the bucket column existed (NULL bucket) are a second index
    range: a page takes the newest (or oldest) rows of both together, in id order."""
    for i in range(6):
        store.append_audit(_event(T0 + i, user="alice"))
    with store.transaction() as conn:  # the first four as an older authd wrote them
        conn.execute(update(audit).where(audit.c.id <= 4).values(user_bucket=None))
    for i in range(6, 9):
        store.append_audit(_event(T0 + i, user="alice"))
    assert [e.at - T0 for e in store.query_audit(user="alice", limit=5)] == [8, 7, 6, 5, 4]
    page = store.query_audit(user="alice", before_id=6, limit=3)
    assert [e.at - T0 for e in page] == [4, 3, 2]
    exported = store.export_audit(AuditFilter(user="alice"), after_id=2, limit=4)
    assert [e.at - T0 for e in exported] == [2, 3, 4, 5]
