"""Export -> import between two sites (SQLite source, SQLite or PostgreSQL target):
users, tokens, PIN and backup-code hashes, lock and replay state arrive intact;
twice changes nothing; tampered bundles and conflicts write nothing."""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from authd.config.model import Config
from authd.core import backup_codes, otp, pin
from authd.core.errors import InvalidInput
from authd.core.model import LastSeen, Token, TokenStatus, TokenType, User
from authd.crypto import Keyring
from authd.portability.bundle import BundleError, Protector
from authd.portability.merge import OnConflict
from authd.portability.ops import ImportConflict, PortabilityOps
from authd.storage.sql import SqlStore
from tests.fixtures.clock import EPOCH

PASS = Protector(passphrase="the two sites' secret")
SEED = secrets.token_bytes(20)
CODES = backup_codes.generate_codes(2)


def ops(store: SqlStore, keyring: Keyring) -> PortabilityOps:
    return PortabilityOps(Config(), store, keyring, lambda: EPOCH)


@pytest.fixture
def source(tmp_path: Path) -> Iterator[tuple[SqlStore, Keyring]]:
    """Site A: a SQLite store with its own key file, holding alice (TOTP used up to a
    step, PIN, backup codes, locked) and an unassigned HOTP token at counter 9."""
    ring = Keyring.load_or_create(str(tmp_path / "a" / "keys.json"))
    store = SqlStore.open(f"sqlite:///{tmp_path / 'a' / 'authd.db'}", ring)
    store.add_user(User("alice", password_hash="$argon2id$x", email="a@example.org",
                        groups=("vpn",), created_at=EPOCH - 100,
                        last_success=LastSeen(EPOCH - 50, "10.0.0.1", "vpn")))  # fmt: skip
    store.set_pin_hash("alice", pin.hash_pin("73925186", ring.hash_key, "alice"))
    store.replace_backup_codes(
        "alice", [backup_codes.hash_code(c, ring.hash_key) for c in CODES],
        EPOCH - 10,
    )  # fmt: skip
    store.record_failure("alice", EPOCH, 1, None)  # locked until an operator unlocks
    store.add_token(Token("T-ALICE", TokenType.TOTP, SEED, "alice", last_step=59_000_000,
                          drift=1, created_at=EPOCH - 90))  # fmt: skip
    store.add_tokens([Token("H-BOX", TokenType.HOTP, SEED, None, counter=9, created_at=EPOCH)])
    try:
        yield store, ring
    finally:
        store.close()


def test_round_trip_into_an_empty_site_and_twice(
    source: tuple[SqlStore, Keyring], store: SqlStore, keyring: Keyring
) -> None:
    """Everything arrives (profile, lock, PIN and backup hashes under the adopted hash
    key, seeds, replay state); a second import writes nothing."""
    a_store, a_ring = source
    bundle = ops(a_store, a_ring).export_bundle("test", PASS).data
    first = ops(store, keyring).import_bundle("test", bundle, PASS, adopt_hash_key=True)
    assert first.adopted_hash_key and first.written > 0 and not first.conflicts
    assert keyring.hash_key == a_ring.hash_key
    alice = store.get_user("alice")
    assert alice is not None and alice.email == "a@example.org" and alice.groups == ("vpn",)
    assert alice.locked_until == math.inf and alice.failures == 1
    assert pin.verify_pin("73925186", alice.pin_hash or "", keyring.hash_key, "alice")
    assert store.consume_backup_code("alice", backup_codes.hash_code(CODES[0], keyring.hash_key))
    assert alice.last_success == LastSeen(EPOCH - 50, "10.0.0.1", "vpn")
    t = store.get_token("T-ALICE")
    assert t is not None and (t.seed, t.user, t.last_step, t.drift) == (
        SEED,
        "alice",
        59_000_000,
        1,
    )
    h = store.get_token("H-BOX")
    assert h is not None and (h.user, h.counter) == (None, 9)
    # Importing again: the used backup code stays used, nothing else moves.
    again = ops(store, keyring).import_bundle("test", bundle, PASS)
    assert again.written == 0 and again.unchanged > 0
    assert store.backup_codes_left("alice") == 1


def test_replay_state_never_goes_back(
    source: tuple[SqlStore, Keyring], store: SqlStore, keyring: Keyring
) -> None:
    """A code used at the target after the first import stays used when an older
    bundle is imported again (RFC 6238 §5.2)."""
    a_store, a_ring = source
    bundle = ops(a_store, a_ring).export_bundle("test", PASS).data
    ops(store, keyring).import_bundle("test", bundle, PASS, adopt_hash_key=True)
    assert store.accept_totp_step("T-ALICE", 59_000_010, 0)
    assert store.accept_hotp_counter("H-BOX", 12)
    ops(store, keyring).import_bundle("test", bundle, PASS)
    assert store.get_token("T-ALICE").last_step == 59_000_010  # type: ignore[union-attr]
    assert store.get_token("H-BOX").counter == 13  # type: ignore[union-attr]


def test_tampered_bundle_writes_nothing(
    source: tuple[SqlStore, Keyring], store: SqlStore, keyring: Keyring
) -> None:
    """A flipped byte or a cut-off file is refused and the target stays empty."""
    a_store, a_ring = source
    bundle = ops(a_store, a_ring).export_bundle("test", PASS).data
    for bad in (bundle[:-7], bundle[:-1] + bytes([bundle[-1] ^ 1])):
        with pytest.raises(BundleError):
            ops(store, keyring).import_bundle("test", bad, PASS, adopt_hash_key=True)
    assert store.list_users() == [] and store.list_tokens() == []
    assert [e.result for e in store.query_audit()] == ["error", "error"]


def test_conflict_refused_by_default_then_skip_or_replace(
    source: tuple[SqlStore, Keyring], store: SqlStore, keyring: Keyring
) -> None:
    """alice here with another token: the default refuses, listing her, and writes
    nothing; skip leaves her and imports the rest; replace gives her the bundle's."""
    a_store, a_ring = source
    bundle = ops(a_store, a_ring).export_bundle("test", PASS).data
    store.add_user(User("alice", created_at=EPOCH))
    store.add_token(Token("T-OTHER", TokenType.TOTP, b"o" * 20, "alice", created_at=EPOCH))
    target = ops(store, keyring)
    with pytest.raises(ImportConflict) as e:
        target.import_bundle("test", bundle, PASS, adopt_hash_key=True)
    assert (
        "user alice: tokens here (T-OTHER) differ from the bundle's (T-ALICE)" in e.value.conflicts
    )
    assert store.get_token("H-BOX") is None
    skipped = target.import_bundle("test", bundle, PASS, OnConflict.SKIP, adopt_hash_key=True)
    assert skipped.conflicts and store.get_token("H-BOX") is not None
    assert [t.serial for t in store.list_tokens("alice")] == ["T-OTHER"]
    target.import_bundle("test", bundle, PASS, OnConflict.REPLACE)
    assert [t.serial for t in store.list_tokens("alice")] == ["T-ALICE"]
    assert store.get_user("alice").pin_hash is not None  # type: ignore[union-attr]


def test_other_hash_key_is_refused_unless_adopted_on_a_clean_site(
    source: tuple[SqlStore, Keyring], store: SqlStore, keyring: Keyring
) -> None:
    """PIN and backup hashes only verify under their own pepper: without
    --adopt-hash-key the import refuses; a site with hashes of its own cannot adopt."""
    a_store, a_ring = source
    bundle = ops(a_store, a_ring).export_bundle("test", PASS).data
    with pytest.raises(InvalidInput, match="adopt-hash-key"):
        ops(store, keyring).import_bundle("test", bundle, PASS)
    store.add_user(User("zed", created_at=EPOCH))
    store.set_pin_hash("zed", pin.hash_pin("55501234", keyring.hash_key, "zed"))
    with pytest.raises(InvalidInput, match="already has PIN"):
        ops(store, keyring).import_bundle("test", bundle, PASS, adopt_hash_key=True)
    assert store.get_user("alice") is None and keyring.hash_key != a_ring.hash_key


def test_revoked_stays_revoked(
    source: tuple[SqlStore, Keyring], store: SqlStore, keyring: Keyring
) -> None:
    """A token revoked here is not brought back by an older bundle."""
    a_store, a_ring = source
    bundle = ops(a_store, a_ring).export_bundle("test", PASS).data
    ops(store, keyring).import_bundle("test", bundle, PASS, adopt_hash_key=True)
    store.set_token_status("T-ALICE", TokenStatus.REVOKED)
    ops(store, keyring).import_bundle("test", bundle, PASS)
    assert store.get_token("T-ALICE").status is TokenStatus.REVOKED  # type: ignore[union-attr]


def test_postgres_back_to_sqlite(
    source: tuple[SqlStore, Keyring], store: SqlStore, keyring: Keyring, tmp_path: Path
) -> None:
    """And back: what the target exports, a third site imports identically."""
    a_store, a_ring = source
    ops(store, keyring).import_bundle(
        "test", ops(a_store, a_ring).export_bundle("test", PASS).data, PASS, adopt_hash_key=True
    )
    ring_c = Keyring.load_or_create(str(tmp_path / "c" / "keys.json"))
    c = SqlStore.open(f"sqlite:///{tmp_path / 'c' / 'authd.db'}", ring_c)
    try:
        ops(c, ring_c).import_bundle(
            "test", ops(store, keyring).export_bundle("test", PASS).data, PASS, adopt_hash_key=True
        )
        got, want = c.export_records(), a_store.export_records()
        assert [r.user for r in got.users] == [r.user for r in want.users]
        assert {(t.serial, t.seed, t.counter, t.last_step) for t in got.tokens} == {
            (t.serial, t.seed, t.counter, t.last_step) for t in want.tokens
        }
    finally:
        c.close()


def test_no_secret_in_audit_or_bundle(source: tuple[SqlStore, Keyring]) -> None:
    """The bundle holds no seed or hash key in clear; the audit row holds counts only."""
    a_store, a_ring = source
    data = ops(a_store, a_ring).export_bundle("test", PASS).data
    assert SEED not in data and a_ring.hash_key not in data
    [row] = [e for e in a_store.query_audit() if e.action == "export"]
    assert row.detail == "1 users, 2 tokens" and row.result == "ok"
    assert otp.totp(SEED, EPOCH) not in row.detail
