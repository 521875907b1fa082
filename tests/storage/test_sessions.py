"""Portal sessions in the store (SQLite and PostgreSQL): timeouts on the caller's clock,
only hashes stored, and touching a session while other writers commit."""

from __future__ import annotations

import hashlib
import threading
import time

import sqlalchemy as sa

from authd.core.model import AuditEvent
from authd.crypto import Keyring
from authd.storage.sessions import STAGE_IN, SqlSessions
from authd.storage.sql import SqlStore

NOW = 1_767_225_600.0


def test_timeouts_and_end(store_url: str, keyring: Keyring) -> None:
    """Idle and absolute timeouts end a session; `end` ends it at once."""
    store = SqlStore.open(store_url, keyring)
    try:
        sessions = SqlSessions(store.transaction, idle=60, absolute=300)
        s = sessions.create("alice", STAGE_IN, NOW, groups=("staff",))
        found = sessions.find(s.id, NOW + 59)
        assert found is not None and (found.user, found.groups) == ("alice", ("staff",))
        assert sessions.find(s.id, NOW + 59 + 61) is None
        t = sessions.create("alice", STAGE_IN, NOW)
        for step in range(1, 6):
            assert sessions.find(t.id, NOW + 59 * step) is not None
        assert sessions.find(t.id, NOW + 301) is None
        u = sessions.create("alice", STAGE_IN, NOW)
        assert sessions.end(u.id) and sessions.find(u.id, NOW) is None
    finally:
        store.close()


def test_only_the_hash_of_a_session_id_is_stored(store_url: str, keyring: Keyring) -> None:
    """A database reader sees SHA-256 digests, never a usable cookie value."""
    store = SqlStore.open(store_url, keyring)
    try:
        s = SqlSessions(store.transaction, 60, 300).create("alice", STAGE_IN, NOW)
        with store.transaction() as conn:
            keys = list(conn.execute(sa.text("SELECT id_hash FROM portal_sessions")).scalars())
        assert keys == [hashlib.sha256(s.id.encode()).hexdigest()]
    finally:
        store.close()


def test_touching_sessions_while_others_write(store_url: str, keyring: Keyring) -> None:
    """Sessions found (and touched) while another thread keeps committing audit rows:
    every lookup succeeds (the touch is one statement under the store's write lock)."""
    store = SqlStore.open(store_url, keyring)
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set() and i < 2000:
            i += 1
            try:
                store.append_audit(AuditEvent(NOW, "test", "noise", "ok", user="bob"))
            except BaseException as e:  # collected and asserted below
                errors.append(e)
                return

    try:
        sessions = SqlSessions(store.transaction, idle=60, absolute=300)
        s = sessions.create("alice", STAGE_IN, NOW)
        thread = threading.Thread(target=writer)
        thread.start()
        deadline = time.monotonic() + 3
        try:
            for i in range(300):
                if time.monotonic() > deadline:
                    break
                assert sessions.find(s.id, NOW + i * 0.01) is not None
        except BaseException as e:  # collected and asserted below
            errors.append(e)
        finally:
            stop.set()
            thread.join(timeout=30)
        assert errors == []
    finally:
        store.close()


def test_expired_sessions_are_deleted_at_the_next_log_in(
    store_url: str, keyring: Keyring
) -> None:
    """Abandoned sessions do not pile up: creating one deletes the expired ones."""
    store = SqlStore.open(store_url, keyring)
    try:
        sessions = SqlSessions(store.transaction, idle=60, absolute=300)
        for _ in range(3):
            sessions.create("alice", STAGE_IN, NOW)
        sessions.create("bob", STAGE_IN, NOW + 61)
        with store.transaction() as conn:
            users = list(conn.execute(sa.text('SELECT "user" FROM portal_sessions')).scalars())
        assert users == ["bob"]
    finally:
        store.close()
