"""`PortabilityOps.import_users` on both SQL backends: the users file lands through the
bundle import's one transaction, and a second import of it writes nothing."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import event

from authd.config.model import DEFAULT_STORE_TIMEOUT, Config
from authd.core.model import TokenType
from authd.crypto import Keyring
from authd.portability.merge import ImportPlan
from authd.portability.ops import PortabilityOps
from authd.portability.records import Records
from authd.portability.user_file import default_serial
from authd.storage.pg_bounded import time_left
from authd.storage.sql import SqlStore

NOW = 1_767_225_600.0


def test_users_file_into_the_store_and_again(store: SqlStore, keyring: Keyring) -> None:
    """Users, profile, groups and sealed seeds as the file says; idempotent."""
    seeds = [secrets.token_bytes(20) for _ in range(50)]
    text = "name,email,groups,secret,type\n" + "".join(
        f"u{i:03d},u{i}@example.org,vpn;g{i % 3},{seed.hex()},{'hotp' if i % 2 else 'totp'}\n"
        for i, seed in enumerate(seeds)
    )
    ops = PortabilityOps(Config(), store, keyring, lambda: NOW)
    first = ops.import_users("authctl:test", text.encode())
    assert (first.users, first.tokens, first.written, first.unchanged) == (50, 50, 100, 0)
    again = ops.import_users("authctl:test", text.encode())
    assert (again.written, again.unchanged) == (0, 100)
    user, tokens, _ = store.get_user_tokens_codes("u007")
    assert user is not None and user.email == "u7@example.org" and user.groups == ("vpn", "g1")
    assert [(t.serial, t.type, t.seed) for t in tokens] == [
        (default_serial("u007", "hotp"), TokenType.HOTP, seeds[7])
    ]
    assert [e.action for e in store.query_audit(limit=2)] == ["user.import", "user.import"]


def test_bulk_import_is_not_bound_by_the_request_timeout(store: SqlStore) -> None:
    """An import's statements may wait as long as a large file needs, not store.timeout,
    on the client and (PostgreSQL) the server side: a million users take a minute."""
    seen: list[float] = []

    def decide(here: Records) -> ImportPlan:
        seen.append(time_left(DEFAULT_STORE_TIMEOUT))
        return ImportPlan()

    sent: list[str] = []

    def record(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(store._engine, "before_cursor_execute", record)
    try:
        store.import_records(decide)
    finally:
        event.remove(store._engine, "before_cursor_execute", record)
    assert seen and seen[0] >= 600
    if not store._sqlite:  # the server's statement_timeout is lifted as well
        assert "SET LOCAL statement_timeout = 0" in sent
