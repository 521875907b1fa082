"""The SQLite write-ahead log stays bounded under continuous reads and writes, its state
shows in /metrics, and a full disk heals by itself once space returns (a small tmpfs
the test mounts)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from authd.auth.interfaces import AttemptRecord, DecisionWrite, Outcome, UseTotpStep
from authd.core.errors import StoreUnavailable
from authd.core.model import AuditEvent, Token, TokenType, User
from authd.core.otp import hotp
from authd.crypto import Keyring
from authd.metrics import Metrics
from authd.storage.hot_path import WAL_LIMIT_BYTES
from authd.storage.sql import SqlStore
from tests.fakes import FakeBackend, FakeDirectoryUser
from tests.polling import wait_until
from tests.world import PASSWORD, SEED, World, decide_all

NOW = 1_767_225_600.0


def _record(result: str, reason: str) -> AttemptRecord:
    audit = AuditEvent(NOW, "radius:vpn", "auth", result, "alice", "vpn", "10.0.0.1", reason)
    return AttemptRecord(result == "accept", result != "accept", audit)


def _accept(step: int) -> DecisionWrite:
    """Alice's TOTP step `step`: won once (accept), lost after (replay)."""
    return DecisionWrite(
        "alice", NOW, "10.0.0.1", "vpn", 5, 300,
        _record("accept", "ok"), UseTotpStep("T", step, 0), _record("reject", "replay"),
    )  # fmt: skip


def _open(db: Path, keyring: Keyring) -> SqlStore:
    store = SqlStore.open(f"sqlite:///{db}", keyring)
    if store.get_user("alice") is None:
        store.add_user(User(name="alice", created_at=NOW))
        store.add_token(Token(serial="T", type=TokenType.TOTP, seed=b"s" * 20, user="alice"))
    return store


class _Readers:
    """Two threads reading alice in overlapping read snapshots, so that at every
    moment some reader holds a snapshot (as worker processes and authctl do), each on
    a connection of its own (the store's decision reads hold none)."""

    def __init__(self, db: Path) -> None:
        self._db = db
        self._stop = threading.Event()
        self.errors = 0
        self._threads = [
            threading.Thread(target=self._run, args=(delay,), daemon=True) for delay in (0, 0.002)
        ]

    def _run(self, delay: float) -> None:
        time.sleep(delay)
        conn = sqlite3.connect(self._db, timeout=2, isolation_level=None)
        try:
            while not self._stop.is_set():
                try:
                    conn.execute("BEGIN")
                    conn.execute("SELECT * FROM tokens").fetchall()
                    time.sleep(0.004)
                    conn.execute("COMMIT")
                except sqlite3.Error:
                    self.errors += 1
                    time.sleep(0.004)
        finally:
            conn.close()

    def __enter__(self) -> _Readers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)


def _wal_size(db: Path) -> int:
    try:
        return os.path.getsize(f"{db}-wal")
    except FileNotFoundError:
        return 0


def test_wal_stays_bounded_under_continuous_reads_and_writes(
    tmp_path: Path, keyring: Keyring
) -> None:
    """Three seconds of back-to-back write transactions while readers always hold a
    snapshot: the WAL file stays within a few times its limit (before, it grew by ~50
    MB/s and never shrank: a PASSIVE checkpoint never completes under such load)."""
    db = tmp_path / "authd.db"
    store = _open(db, keyring)
    limit = store._hot._wal_limit = 1024 * 1024  # a smaller limit: reached sooner
    largest, step, written = 0, 1, 0
    try:
        with _Readers(db):
            stop = time.monotonic() + 3
            while time.monotonic() < stop and step < 2_000_000:
                store.commit_decisions([_accept(step + i) for i in range(20)])
                step += 20
                largest = max(largest, _wal_size(db))
            written = step - 1
    finally:
        store.close()
    # Enough was written that an unbounded WAL would be many times the limit (each step
    # adds ~1.5 kB to the WAL: a token, a user and an audit row, index pages).
    assert written * 1500 > 10 * limit
    assert largest < 2 * limit, f"WAL reached {largest} bytes"


def test_audit_prune_keeps_the_wal_bounded(tmp_path: Path, keyring: Keyring) -> None:
    """Pruning a large audit backlog (batch after batch, as a retention round does)
    while readers always hold a snapshot: the prune's write transactions empty the WAL
    between them like decisions' do, so it stays within a few times its limit."""
    db = tmp_path / "authd.db"
    store = _open(db, keyring)
    limit = store._hot._wal_limit = 1024 * 1024
    rows = 60_000
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            'INSERT INTO audit (at, actor, action, result, "user", client, source, reason, '
            "detail) VALUES (?, 'radius:vpn', 'auth', 'accept', ?, 'vpn', '192.0.2.7', 'ok', '')",
            ((float(i), f"u{i % 5000}") for i in range(rows)),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    largest, deleted = 0, 0
    try:
        with _Readers(db):
            while deleted < rows:
                gone = store.prune_audit(float(rows), 1000)
                assert gone > 0
                deleted += gone
                largest = max(largest, _wal_size(db))
    finally:
        store.close()
    assert largest < 2 * limit, f"WAL reached {largest} bytes"


def test_wal_state_is_exported_and_moves(tmp_path: Path, keyring: Keyring) -> None:
    """/metrics shows the WAL's size, the frames not yet checkpointed and how long they
    have waited: non-zero while a reader pins old frames, back to zero once it is gone."""
    db = tmp_path / "authd.db"
    store = _open(db, keyring)
    metrics = Metrics()
    metrics.watch_wal(store.wal_status)
    pinned = sqlite3.connect(db, isolation_level=None)  # another reader (a worker, authctl)

    def sample(name: str) -> float:
        value = metrics.registry.get_sample_value(name)
        assert value is not None, f"{name} missing"
        return value

    try:
        store.commit_decisions([_accept(1)])
        pinned.execute("BEGIN")
        pinned.execute("SELECT count(*) FROM audit").fetchall()  # holds its snapshot
        for step in range(2, 50):
            store.commit_decisions([_accept(step)])
        wait_until(lambda: sample("authd_store_wal_pending_frames") > 0, 5, "no pending frames")
        time.sleep(0.05)
        assert sample("authd_store_checkpoint_lag_seconds") > 0
        assert sample("authd_store_wal_bytes") == _wal_size(db) > 0
        text = generate_latest(metrics.registry).decode()
        assert "authd_store_wal_bytes " in text and "authd_store_checkpoint_lag_seconds " in text
        pinned.execute("COMMIT")
        store.commit_decisions([_accept(50)])  # wakes the checkpointer
        wait_until(
            lambda: sample("authd_store_wal_pending_frames") == 0
            and sample("authd_store_checkpoint_lag_seconds") == 0,
            5,
            "the WAL was not checkpointed once the reader left",
        )
    finally:
        pinned.close()
        store.close()


def test_no_wal_metrics_without_a_sqlite_store() -> None:
    """Without a SQLite store (PostgreSQL) the WAL gauges are not exported at all."""
    metrics = Metrics()
    metrics.watch_wal(None)
    assert "authd_store_wal" not in generate_latest(metrics.registry).decode()


# ---------------------------------------------------------------- a full disk
@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs mounted for this test (needs root, as the suite runs in CI)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.fail("the disk-full test mounts a tmpfs: run as root (mount from util-linux)")
    where = tmp_path / "fs"
    where.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(where)],
        check=True,
        timeout=30,
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=30)


def _fill(path: Path) -> None:
    """Write `path` until the filesystem is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:  # ENOSPC: the disk is full
        pass
    finally:
        os.close(fd)


class _Bob:
    """Bob's requests, each with his next HOTP code, decided by the engine on `store`
    (the user and token are created unless `store` has them)."""

    def __init__(self, store: SqlStore, hash_key: bytes, counter: int = 0) -> None:
        self.world = World(store, hash_key, FakeBackend("dir"))
        if store.get_user("bob") is None:
            self.world.user("bob")
            self.world.token("bob", type=TokenType.HOTP)
        else:
            self.world.directory.users["bob"] = FakeDirectoryUser(PASSWORD, ("staff",))
        self.decisions = self.world.decisions()
        self.counter = counter

    def accepted(self) -> bool:
        """One request: True when accepted; False when the store failed, so that the
        request is rejected (ThreadedEngine) and its code stays unused."""
        code = hotp(SEED, self.counter, 6)
        req = self.world.request(code, user="bob", first_factor="none")
        try:
            (result,) = decide_all(self.decisions, [(req, NOW)])
        except StoreUnavailable:  # the batch's reads failed: ThreadedEngine rejects all
            return False
        if isinstance(result, StoreUnavailable):
            return False
        assert not isinstance(result, BaseException), repr(result)
        decision = result[0]
        assert decision.outcome is Outcome.ACCEPT, decision.reason
        self.counter += 1
        return True

    def accepted_steadily(self, seconds: float) -> None:
        """Requests one after another until 200 in a row are accepted; fails if that
        takes longer than `seconds`."""
        deadline, in_a_row = time.monotonic() + seconds, 0
        while in_a_row < 200:
            assert time.monotonic() < deadline, "requests still fail after space came back"
            if self.accepted():
                in_a_row += 1
            else:
                in_a_row = 0
                time.sleep(0.01)


def test_a_full_disk_rejects_and_heals_once_space_returns(
    small_fs: Path, keyring: Keyring
) -> None:
    """While the disk is full, requests are rejected (their write fails); once space is
    freed they are accepted again by themselves, with readers running all along, and so
    they are after a restart. Before, the WAL filled the disk and kept whatever space
    came back."""
    db = small_fs / "authd.db"
    store = _open(db, keyring)
    bob = _Bob(store, keyring.hash_key)
    try:
        with _Readers(db):
            bob.accepted_steadily(10)
            _fill(small_fs / "filler")
            # The disk is full: some request must fail (room left in a page may take
            # a few more first).
            assert not all(bob.accepted() for _ in range(2000)), "accepted on a full disk"
            os.remove(small_fs / "filler")
            bob.accepted_steadily(10)
            # Requests go on for a while and the WAL does not eat the space again.
            stop = time.monotonic() + 1
            while time.monotonic() < stop:
                assert bob.accepted()
                assert _wal_size(db) < 2 * WAL_LIMIT_BYTES, "the WAL grows without bound"
        _fill(small_fs / "filler")
    finally:
        store.close()  # a restart while the disk is full
    os.remove(small_fs / "filler")
    store = _open(db, keyring)
    try:
        _Bob(store, keyring.hash_key, bob.counter).accepted_steadily(10)
    finally:
        store.close()
