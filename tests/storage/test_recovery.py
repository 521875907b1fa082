"""Access-recovery requests in SQLite and PostgreSQL: one open request per user and
kind, every status change a compare-and-set, a grant taken once and only while live."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from authd.storage.recovery import SqlIssues
from authd.storage.schema import portal_issues
from authd.storage.sql import SqlStore

NOW = 1_767_225_600.0


def test_one_open_request_per_user_and_kind(store: SqlStore) -> None:
    """Asking twice keeps the first request; another kind is a request of its own."""
    issues = SqlIssues(store.transaction)
    first = issues.open("alice", "token", "192.0.2.1", NOW)
    assert issues.open("alice", "token", "192.0.2.9", NOW + 5) == first
    other = issues.open("alice", "mail", "192.0.2.1", NOW)
    assert [i.id for i in issues.all("open")] == [first.id, other.id]


def test_a_request_is_decided_once(store: SqlStore) -> None:
    """The second decision finds the request closed and changes nothing."""
    issues = SqlIssues(store.transaction)
    issue = issues.open("alice", "token", "", NOW)
    assert issues.decide(issue.id, "rejected", "authctl:a", NOW + 1)
    assert not issues.decide(issue.id, "approved", "authctl:b", NOW + 2, NOW + 100)
    got = issues.get(issue.id)
    assert got is not None and (got.status, got.decided_by, got.grant_until) == (
        "rejected", "authctl:a", None)


def test_a_sign_in_supersedes_only_open_requests(store: SqlStore) -> None:
    """Open requests of the user close; decided ones and other users' stay."""
    issues = SqlIssues(store.transaction)
    decided = issues.open("alice", "token", "", NOW)
    issues.decide(decided.id, "rejected", "authctl:a", NOW)
    open_one = issues.open("alice", "mail", "", NOW)
    bobs = issues.open("bob", "token", "", NOW)
    assert issues.supersede("alice", NOW + 1) == [open_one.id]
    assert [(i.id, i.status) for i in issues.all()] == [
        (decided.id, "rejected"), (open_one.id, "superseded"), (bobs.id, "open")]


def test_a_grant_is_taken_once_and_only_while_live(store: SqlStore) -> None:
    """Before `grant_until` the grant is taken once; after it, never."""
    issues = SqlIssues(store.transaction)
    live = issues.open("alice", "token", "", NOW)
    issues.decide(live.id, "approved", "authctl:a", NOW, grant_until=NOW + 60)
    assert issues.take_grant("alice", NOW + 59) == live.id
    assert issues.take_grant("alice", NOW + 59) is None
    late = issues.open("bob", "token", "", NOW)
    issues.decide(late.id, "approved", "authctl:a", NOW, grant_until=NOW + 60)
    assert issues.take_grant("bob", NOW + 60) is None


def test_the_database_keeps_one_open_request_per_user_and_kind(store: SqlStore) -> None:
    """A second open row (as a racing node's plain insert would make) is refused by the
    partial unique index; a closed one beside it is not."""
    issues = SqlIssues(store.transaction)
    first = issues.open("alice", "token", "", NOW)
    row = {"user": "alice", "kind": "token", "status": "open", "created_at": NOW}
    with pytest.raises(sa.exc.IntegrityError), store.transaction() as conn:
        conn.execute(sa.insert(portal_issues).values(**row))
    issues.decide(first.id, "rejected", "authctl:a", NOW)
    with store.transaction() as conn:
        conn.execute(sa.insert(portal_issues).values(**row))
    assert [i.status for i in issues.all()] == ["rejected", "open"]
