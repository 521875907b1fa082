"""`store.cache_size` and `store.mmap_size`: every SQLite connection of the store, the
pool's and the hot path's, gets the configured page cache and memory map (SQLite sets
both per connection)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from authd.crypto import Keyring
from authd.storage.sql import SqlStore


def test_every_connection_gets_the_page_cache(tmp_path: Path, keyring: Keyring) -> None:
    """The pool's connections, which the hot path reads through too, run PRAGMA
    cache_size (KiB) and mmap_size (bytes)."""
    store = SqlStore.open(
        f"sqlite:///{tmp_path / 'authd.db'}", keyring, cache_mib=7, mmap_mib=3
    )
    try:
        with store._engine.connect() as conn:
            assert conn.execute(text("PRAGMA cache_size")).scalar() == -7 * 1024
            assert conn.execute(text("PRAGMA mmap_size")).scalar() == 3 << 20
        hot = store._hot  # the decision hot path: raw connections from the same pool
        assert hot.read(text("PRAGMA cache_size"), {}) == [(-7 * 1024,)]
        assert hot.read(text("PRAGMA mmap_size"), {}) == [(3 << 20,)]
    finally:
        store.close()
