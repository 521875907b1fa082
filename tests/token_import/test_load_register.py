"""Bulk load (all or none) and registration by serial plus code, on SQLite and
PostgreSQL."""

from __future__ import annotations

import secrets

import pytest

from authd.config.model import OtpConfig
from authd.core import otp
from authd.core.errors import AlreadyExists, NotFound
from authd.core.model import Token, TokenType, User
from authd.storage.sql import SqlStore
from authd.token_import.load import load_tokens
from authd.token_import.register import REFUSED, Registration, RegistrationRefused
from tests.fixtures.clock import EPOCH

SEED = secrets.token_bytes(20)


def hw(serial: str, kind: TokenType = TokenType.TOTP, **kw: object) -> Token:
    return Token(serial=serial, type=kind, seed=SEED, created_at=EPOCH, **kw)  # type: ignore[arg-type]


def test_load_is_all_or_none(store: SqlStore) -> None:
    """A file whose serials are partly taken writes nothing and names the taken ones;
    a clean file lands whole, unassigned, seeds readable."""
    assert load_tokens(store, [hw(f"S{i}") for i in range(3)]) == 3
    with pytest.raises(AlreadyExists, match="1 serial.*S2"):
        load_tokens(store, [hw("N1"), hw("S2"), hw("N2")])
    assert [t.serial for t in store.list_tokens()] == ["S0", "S1", "S2"]
    assert all(t.user is None and t.seed == SEED for t in store.list_tokens())


def test_register_by_serial_totp_uses_the_code(store: SqlStore) -> None:
    """The right code claims the token for the user and is used up: the same code
    cannot be replayed at login (last_step) nor claim the token again."""
    store.add_user(User("alice", created_at=EPOCH))
    store.add_user(User("mallory", created_at=EPOCH))
    load_tokens(store, [hw("BOX1")])
    reg = Registration(store, OtpConfig())
    code = otp.totp(SEED, EPOCH)
    claimed = reg.register_by_serial("alice", "BOX1", code, EPOCH)
    assert claimed.user == "alice" and claimed.last_step == otp.time_step(EPOCH, 30)
    assert otp.match_totp(claimed, code, EPOCH, 30) is None  # used
    with pytest.raises(RegistrationRefused):
        reg.register_by_serial("mallory", "BOX1", otp.totp(SEED, EPOCH + 30), EPOCH + 30)


def test_register_refusals_read_the_same(store: SqlStore) -> None:
    """Unknown serial, wrong code and a taken token give one and the same message."""
    store.add_user(User("alice", created_at=EPOCH))
    load_tokens(store, [hw("BOX1"), hw("BOX2", TokenType.HOTP)])
    reg = Registration(store, OtpConfig())
    messages = set()
    for serial, code in (("NOPE", otp.totp(SEED, EPOCH)), ("BOX1", "000000")):
        with pytest.raises(RegistrationRefused) as e:
            reg.register_by_serial("alice", serial, code, EPOCH)
        messages.add(str(e.value))
    assert messages == {REFUSED}


def test_register_by_serial_hotp_moves_the_counter(store: SqlStore) -> None:
    """HOTP: a code within look-ahead claims, the counter moves past it."""
    store.add_user(User("bob", created_at=EPOCH))
    load_tokens(store, [hw("H1", TokenType.HOTP)])
    reg = Registration(store, OtpConfig())
    claimed = reg.register_by_serial("bob", "H1", otp.hotp(SEED, 3), EPOCH)
    assert claimed.user == "bob" and claimed.counter == 4


def test_register_for_unknown_user_is_not_found(store: SqlStore) -> None:
    """The user must exist in the store (the portal records them first)."""
    load_tokens(store, [hw("BOX1")])
    with pytest.raises(NotFound):
        Registration(store, OtpConfig()).register_by_serial(
            "ghost", "BOX1", otp.totp(SEED, EPOCH), EPOCH
        )
    assert store.get_token("BOX1").user is None  # type: ignore[union-attr]
