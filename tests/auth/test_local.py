"""auth/local.py: local users' argon2id passwords as a first-factor backend."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from authd.auth.interfaces import AuthRequest, Outcome, Reason
from authd.auth.local import LocalUsers, hash_password, make_password_hasher
from authd.config.model import Config, PasswordHashConfig
from authd.core.errors import InvalidInput
from authd.core.model import Token, TokenType, User
from authd.core.otp import totp
from authd.decision.engine import Engine
from tests.fakes import FakeStore
from tests.world import NOW, replace_cfg

# The config's minimum cost keeps the suite fast; production uses RFC 9106 defaults.
CHEAP = PasswordHashConfig(time_cost=1, memory_cost_kib=8192, parallelism=1)


class CountingHasher(PasswordHasher):
    """The real hasher, counting verifications (to prove unknown users cost one too)."""

    verifies = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        CountingHasher.verifies += 1
        return super().verify(hash, password)


def counting_hasher(cfg: PasswordHashConfig = CHEAP) -> CountingHasher:
    CountingHasher.verifies = 0
    return CountingHasher(
        time_cost=cfg.time_cost, memory_cost=cfg.memory_cost_kib, parallelism=cfg.parallelism
    )


@pytest.fixture
def store() -> FakeStore:
    s = FakeStore()
    hasher = make_password_hasher(CHEAP)
    s.add_user(
        User(
            "alice",
            source="local",
            groups=("staff",),
            email="a@example.org",
            password_hash=hash_password(hasher, "s3cret pass"),
        )
    )
    s.add_user(User("nopass", source="local"))
    s.add_user(User("ldapuser", source="ldap1", password_hash=hash_password(hasher, "x")))
    return s


def test_hasher_is_argon2id_with_configured_cost() -> None:
    """make_password_hasher builds argon2id with the config's cost parameters."""
    h = hash_password(make_password_hasher(CHEAP), "pw")
    assert h.startswith("$argon2id$") and "m=8192,t=1,p=1" in h


def test_hash_password_refuses_empty() -> None:
    """An empty password is never hashed (it could never be used anyway)."""
    with pytest.raises(InvalidInput):
        hash_password(make_password_hasher(CHEAP), "")


def test_authenticate(store: FakeStore) -> None:
    """Right password: known and ok with groups and profile; wrong: known, not ok."""
    backend = LocalUsers(store, make_password_hasher(CHEAP))
    ok = backend.authenticate("alice", "s3cret pass")
    assert (ok.known, ok.ok, ok.groups, ok.profile) == (
        True,
        True,
        ("staff",),
        {"email": "a@example.org"},
    )
    bad = backend.authenticate("alice", "s3cret pas")
    assert (bad.known, bad.ok, bad.unreachable) == (True, False, False)


def test_unknown_and_foreign_users_cost_one_verify(store: FakeStore) -> None:
    """Unknown users, directory users, users without a password and empty passwords are
    refused after one argon2 verification each, like a real check."""
    hasher = counting_hasher()
    backend = LocalUsers(store, hasher)
    for user, password in [("nobody", "x"), ("ldapuser", "x"), ("nopass", "x"), ("alice", "")]:
        before = CountingHasher.verifies
        result = backend.authenticate(user, password)
        assert not result.ok
        assert result.known == (user in ("nopass", "alice"))
        assert CountingHasher.verifies == before + 1


def test_lookup(store: FakeStore) -> None:
    """lookup finds local users only, never says ok."""
    backend = LocalUsers(store, make_password_hasher(CHEAP))
    assert backend.lookup("alice").known and not backend.lookup("alice").ok
    assert not backend.lookup("ldapuser").known
    assert not backend.lookup("nobody").known


def test_rehash_when_cost_changes(store: FakeStore) -> None:
    """After the configured cost changes, a successful login upgrades the stored hash."""
    stronger = PasswordHashConfig(time_cost=2, memory_cost_kib=8192, parallelism=1)
    backend = LocalUsers(store, make_password_hasher(stronger))
    assert backend.authenticate("alice", "s3cret pass").ok
    new_hash = store.users["alice"].password_hash
    assert new_hash is not None and "t=2" in new_hash
    assert backend.authenticate("alice", "s3cret pass").ok


def test_ping_uses_store(store: FakeStore) -> None:
    """The local backend is ready when the store is."""
    backend = LocalUsers(store, make_password_hasher(CHEAP))
    backend.ping()
    store.down = True
    with pytest.raises(Exception, match="down"):
        backend.ping()


def test_engine_with_local_users(store: FakeStore) -> None:
    """End to end with the real local backend: password + TOTP accepted, wrong password
    and unknown user rejected alike."""
    seed = b"12345678901234567890"
    store.add_token(Token("L1", TokenType.TOTP, seed, user="alice"))
    config = replace_cfg(Config(), "local_users.password_hash", CHEAP)
    engine = Engine(config, store, [LocalUsers(store, make_password_hasher(CHEAP))], b"k" * 32)

    def req(user: str, password: str) -> AuthRequest:
        return AuthRequest(
            user=user, password=password, frontend="radius", client="vpn", source="192.0.2.1"
        )

    code = totp(seed, NOW)
    assert engine.decide(req("alice", "s3cret pass" + code), NOW).reason is Reason.OK
    wrong = engine.decide(req("alice", "nope" + code), NOW + 30)
    unknown = engine.decide(req("zed", "nope" + code), NOW + 30)
    assert wrong.outcome is unknown.outcome is Outcome.REJECT
    assert wrong.message == unknown.message
