"""Seeds are never stored in clear, files are private, and key rotation re-encrypts."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa

from authd.core.errors import KeyFileError
from authd.core.model import Token, TokenType, User
from authd.crypto import Keyring
from authd.storage.sql import SqlStore

SEED = b"\x8f\x01seed-that-must-not-leak\xfe\x10"


def _raw_seed_blobs(store_url: str) -> dict[str, str]:
    """seed_enc as the database holds it, read behind the store's back."""
    url = store_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT serial, seed_enc FROM tokens")).all())
    finally:
        engine.dispose()


def _all_db_bytes(store_url: str, tmp_path: Path) -> bytes:
    """Everything the database holds: SQLite file + WAL, or every row of every table."""
    if store_url.startswith("sqlite"):
        db = Path(store_url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in db.parent.iterdir() if p.is_file())
    url = store_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    out = []
    try:
        with engine.connect() as conn:
            for table in ("users", "tokens", "backup_codes", "challenges", "audit"):
                query = f"SELECT t::text FROM {table} t"  # noqa: S608 (fixed table names)
                rows = conn.execute(sa.text(query)).scalars()
                out.extend(r.encode() for r in rows)
    finally:
        engine.dispose()
    return b"\n".join(out)


def test_seed_is_not_stored_in_clear(store: SqlStore, store_url: str, tmp_path: Path) -> None:
    """Neither the seed nor its base32, hex or base64 forms appear in the database."""
    store.add_user(User(name="alice"))
    store.add_token(Token(serial="T1", type=TokenType.TOTP, seed=SEED, user="alice"))
    assert store.get_token("T1").seed == SEED  # type: ignore[union-attr]
    blob = _all_db_bytes(store_url, tmp_path)
    assert b"T1" in blob  # we are looking at the right data
    forms = [
        SEED,
        base64.b32encode(SEED),
        base64.b32encode(SEED).rstrip(b"="),
        SEED.hex().encode(),
        SEED.hex().upper().encode(),
        base64.b64encode(SEED),
    ]
    for form in forms:
        assert form not in blob
        assert form.lower() not in blob


def test_sqlite_file_and_dir_modes(keyring: Keyring, tmp_path: Path) -> None:
    """The database directory is created 0700 and the db (and its WAL) files are 0600."""
    db = tmp_path / "var" / "lib" / "authd" / "authd.db"
    store = SqlStore.open(f"sqlite:///{db}", keyring)
    try:
        store.add_user(User(name="alice"))
        assert stat.S_IMODE(os.stat(db.parent).st_mode) == 0o700
        files = [p for p in db.parent.iterdir()]
        assert db in files
        for p in files:
            assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p.name
    finally:
        store.close()


def test_an_existing_lax_db_file_is_made_private(keyring: Keyring, tmp_path: Path) -> None:
    """A db file someone left 0644 is tightened to 0600 on open."""
    db = tmp_path / "authd.db"
    db.touch(mode=0o644)
    os.chmod(db, 0o644)
    SqlStore.open(f"sqlite:///{db}", keyring).close()
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600


def test_rotate_key_old_records_readable_then_reencrypted(
    store: SqlStore, store_url: str, keyring: Keyring
) -> None:
    """After the key file rotates, rows under the old key still read; rotate_key then
    rewrites every seed under the new key id."""
    store.add_user(User(name="alice"))
    serials = [f"T{i}" for i in range(5)]
    for s in serials:
        store.add_token(Token(serial=s, type=TokenType.HOTP, seed=SEED + s.encode(), user="alice"))
    old_id = keyring.current_key_id
    assert {b.split(":")[1] for b in _raw_seed_blobs(store_url).values()} == {old_id}

    assert store.rotate_key() == 5
    new_id = keyring.current_key_id
    assert new_id != old_id
    raw = _raw_seed_blobs(store_url)
    assert {b.split(":")[1] for b in raw.values()} == {new_id}
    for s in serials:
        assert store.get_token(s).seed == SEED + s.encode()  # type: ignore[union-attr]

    # A key rotated in the file but not yet applied to rows: old blobs stay readable.
    keyring.rotate()
    store.add_token(Token(serial="NEW", type=TokenType.TOTP, seed=SEED, user="alice"))
    assert {t.serial: t.seed for t in store.list_tokens("alice")}["T0"] == SEED + b"T0"
    assert store.rotate_key() == 6  # both the new-key row and the older ones move on


def test_a_seed_swapped_between_rows_is_refused(store: SqlStore, store_url: str) -> None:
    """The serial is the AES-GCM associated data: copying one row's blob to another
    row makes that token unreadable instead of silently taking the other seed."""
    store.add_user(User(name="alice"))
    store.add_token(Token(serial="A", type=TokenType.TOTP, seed=b"seed-a", user="alice"))
    store.add_token(Token(serial="B", type=TokenType.TOTP, seed=b"seed-b", user="alice"))
    url = store_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE tokens SET seed_enc = (SELECT seed_enc FROM tokens WHERE serial='A') "
                    "WHERE serial='B'"
                )
            )
    finally:
        engine.dispose()
    assert store.get_token("A").seed == b"seed-a"  # type: ignore[union-attr]
    with pytest.raises(KeyFileError) as info:
        store.get_token("B")
    assert "seed-a" not in str(info.value)
