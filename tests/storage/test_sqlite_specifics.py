"""SQLite connection settings: WAL, foreign keys, readers never wait for a writer,
writers queue instead of failing."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authd.core.errors import InvalidInput, NotFound, StoreUnavailable
from authd.core.model import Token, TokenType, User
from authd.crypto import Keyring
from authd.storage.sql import SqlStore

NOW = 1_767_225_600.0


@pytest.fixture
def sqlite_store(tmp_path: Path, keyring: Keyring) -> Iterator[tuple[SqlStore, Path]]:
    """A SQLite store with user alice, and the path of its database file."""
    db = tmp_path / "authd.db"
    s = SqlStore.open(f"sqlite:///{db}", keyring)
    s.add_user(User(name="alice"))
    yield s, db
    s.close()


def test_database_is_in_wal_mode(sqlite_store: tuple[SqlStore, Path]) -> None:
    """journal_mode is persisted as WAL, so readers and one writer run side by side."""
    _, db = sqlite_store
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_foreign_keys_are_enforced(sqlite_store: tuple[SqlStore, Path]) -> None:
    """SQLite ignores FOREIGN KEY unless asked: a token for a missing user is refused."""
    store, _ = sqlite_store
    with pytest.raises(NotFound):
        store.add_token(Token(serial="T", type=TokenType.TOTP, seed=b"s", user="ghost"))


def test_reads_do_not_wait_for_a_writer(sqlite_store: tuple[SqlStore, Path]) -> None:
    """While another process holds the write lock, reads still answer at once."""
    store, db = sqlite_store
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        t0 = time.monotonic()
        assert store.get_user("alice") is not None
        assert store.list_users("*")
        assert time.monotonic() - t0 < 1.0
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_writer_queues_behind_another_instead_of_failing(
    sqlite_store: tuple[SqlStore, Path],
) -> None:
    """A write issued while another connection holds the lock waits and then succeeds
    (busy timeout + BEGIN IMMEDIATE), rather than raising "database is locked"."""
    store, db = sqlite_store
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    result: list[object] = []
    writer = threading.Thread(
        target=lambda: result.append(store.record_failure("alice", NOW, 5, 60))
    )
    writer.start()
    writer.join(timeout=0.3)
    assert writer.is_alive()  # queued on the lock, not failed
    other.execute("ROLLBACK")
    other.close()
    writer.join(timeout=30)
    assert not writer.is_alive()
    assert [getattr(r, "failures", None) for r in result] == [1]


def test_waiting_for_another_writer_is_bounded_by_store_timeout(
    tmp_path: Path, keyring: Keyring
) -> None:
    """A write lock held elsewhere for longer than store.timeout fails the write (and
    the decision's) with StoreUnavailable after about store.timeout, on SQLAlchemy's
    path and on the decision hot path alike, instead of waiting on."""
    db = tmp_path / "authd.db"
    store = SqlStore.open(f"sqlite:///{db}", keyring, timeout=0.3)
    store.add_user(User(name="alice"))
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        for write in (
            lambda: store.record_failure("alice", NOW, 5, 60),
            lambda: store.commit_decisions([]),
            lambda: store.replace_backup_codes("alice", ["h"], NOW),
        ):
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable):
                write()
            assert 0.25 < time.monotonic() - t0 < 3
    finally:
        other.execute("ROLLBACK")
        other.close()
        store.close()


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "mysql://x/y", "not a url", "/var/lib/authd.db"]
)
def test_unusable_urls_are_refused(url: str, keyring: Keyring) -> None:
    """In-memory SQLite (not shared across pool threads) and unknown backends fail early."""
    with pytest.raises(InvalidInput, match="store.url"):
        SqlStore.open(url, keyring)


def test_uncreatable_database_file_is_store_unavailable(tmp_path: Path, keyring: Keyring) -> None:
    """A database path under a regular file fails as StoreUnavailable naming the path."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(StoreUnavailable, match="not-a-dir"):
        SqlStore.open(f"sqlite:///{blocker}/authd.db", keyring)


def test_directories_created_for_the_database_are_0700(tmp_path: Path, keyring: Keyring) -> None:
    """Every directory created on the way to the database file is 0700, not only the
    last one; one that existed keeps its mode."""
    tmp_path.chmod(0o755)
    db = tmp_path / "var" / "lib" / "authd" / "authd.db"
    SqlStore.open(f"sqlite:///{db}", keyring).close()
    modes = {p.name: p.stat().st_mode & 0o777 for p in (db.parent, db.parent.parent,
                                                         db.parent.parent.parent, tmp_path)}
    assert modes == {"authd": 0o700, "lib": 0o700, "var": 0o700, tmp_path.name: 0o755}
    assert db.stat().st_mode & 0o777 == 0o600
