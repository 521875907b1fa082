"""User-name variants against a real slapd (whose `uid` matches case-insensitively and
ignores surrounding spaces, as Active Directory's sAMAccountName does): the real Engine
over the real LdapBackend and SQLite store, with tokens in the store and in the
directory entry. A variant is the entry's user (its own `uid`) or no one: never a
stray user, never a skipped token."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ldap3
import pytest

from authd.auth.interfaces import AuthRequest, Decision, Outcome, Reason, Store
from authd.auth.ldap_primary import LdapBackend
from authd.config.model import Config, PolicyConfig, PrimaryConfig, StoreConfig, UserSearch
from authd.core.model import Token, TokenType
from authd.core.otp import totp
from authd.core.username import realm_set
from authd.crypto import Keyring
from authd.decision.engine import Engine
from authd.storage.ldap_attrs import LdapTokenStore
from authd.storage.sql import SqlStore
from tests.fixtures.slapd import PASSWORDS, Slapd
from tests.integration.test_ldap_primary import make_config
from tests.integration.test_ldap_tokens import clear_tokens

pytestmark = pytest.mark.integration

NOW = 1_767_225_607.0
SEED = b"12345678901234567890"
REALMS = realm_set(["CORP", "example.org"])
VARIANTS = ["ALICE", "Alice", " alice", "alice ", "CORP\\alice", "corp\\ALICE", "alice@example.org"]


@dataclass
class Setup:
    engine: Engine
    store: Store
    sql: SqlStore

    def decide(self, user: str, password: str, at: float = NOW) -> Decision:
        req = AuthRequest(
            user=user,
            password=password,
            frontend="radius",
            client="nas",
            source="127.0.0.1",
            realms=REALMS,
        )
        return self.engine.decide(req, at)

    def user_names(self) -> list[str]:
        return sorted(o.user.name for o in self.sql.list_users())

    def audit_users(self) -> set[str]:
        return {e.user for e in self.sql.query_audit(limit=1000)}


@pytest.fixture(params=["db", "ldap"])
def setup(request: pytest.FixtureRequest, slapd: Slapd, tmp_path: Path) -> Iterator[Setup]:
    """alice with a TOTP token, in the SQL store (`db`) or in her directory entry
    (`ldap`); the policy is set per test."""
    clear_tokens(slapd)
    keyring = Keyring.load_or_create(str(tmp_path / "keys.json"))
    cfg = make_config(slapd, token_attribute=slapd.token_attribute)
    backend = LdapBackend(cfg)
    sql = SqlStore.open(f"sqlite:///{tmp_path / 'authd.db'}", keyring)
    store: Store = sql if request.param == "db" else LdapTokenStore(sql, backend, keyring)
    store.ensure_user("alice", "dir", NOW - 3600)
    store.add_token(Token(serial="ID-TOTP-1", type=TokenType.TOTP, seed=SEED, user="alice"))
    config = Config(
        primary=PrimaryConfig(backends=(cfg,)), store=StoreConfig(token_storage=request.param)
    )
    try:
        yield Setup(Engine(config, store, [backend], keyring.hash_key), store, sql)
    finally:
        store.close()
        backend.close()
        clear_tokens(slapd)


def set_policy(s: Setup, enforcement: str) -> None:
    s.engine.config = Config(
        primary=s.engine.config.primary,
        store=s.engine.config.store,
        policy=PolicyConfig(enforcement=enforcement),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("enforcement", ["optional", "required"])
@pytest.mark.parametrize("typed", VARIANTS)
def test_a_variant_is_the_entry_s_user(setup: Setup, typed: str, enforcement: str) -> None:
    """Each variant: the password alone is refused (no code skipped under `optional`),
    password + code is accepted as alice, the same code under another spelling is a
    replay; only alice is in the store and in the audit."""
    set_policy(setup, enforcement)
    code = totp(SEED, NOW, 30, 6)
    alone = setup.decide(typed, PASSWORDS["alice"])
    assert (alone.outcome, alone.user) == (Outcome.REJECT, "alice")
    accepted = setup.decide(typed, PASSWORDS["alice"] + code)
    assert (accepted.outcome, accepted.reason, accepted.user) == (
        Outcome.ACCEPT,
        Reason.OK,
        "alice",
    )
    assert setup.decide("alice", PASSWORDS["alice"] + code).reason is Reason.REPLAY
    assert setup.user_names() == ["alice"]
    assert setup.audit_users() == {"alice"}


@pytest.mark.parametrize("typed", ["OTHER\\alice", "alice@evil.example", "ALICE@Evil.Example"])
def test_a_foreign_realm_is_no_one(setup: Setup, typed: str) -> None:
    """A realm the client does not strip names no user, with the right password and
    code, under either policy."""
    for enforcement in ("optional", "required"):
        set_policy(setup, enforcement)
        d = setup.decide(typed, PASSWORDS["alice"] + totp(SEED, NOW, 30, 6))
        assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.UNKNOWN_USER)
    assert setup.user_names() == ["alice"]


def test_a_first_login_under_a_variant_records_the_entry_s_name(
    slapd: Slapd, tmp_path: Path
) -> None:
    """carol, unknown to the store, logs in first as `CAROL ` (optional, no token): she
    is recorded as carol, and the token enrolled afterwards is asked of every
    spelling."""
    keyring = Keyring.load_or_create(str(tmp_path / "keys.json"))
    cfg = make_config(slapd)
    backend = LdapBackend(cfg)
    sql = SqlStore.open(f"sqlite:///{tmp_path / 'authd.db'}", keyring)
    config = Config(
        primary=PrimaryConfig(backends=(cfg,)), policy=PolicyConfig(enforcement="optional")
    )
    s = Setup(Engine(config, sql, [backend], keyring.hash_key), sql, sql)
    try:
        first = s.decide("CAROL ", PASSWORDS["carol"])
        assert (first.reason, first.user) == (Reason.OK_NO_TOKEN, "carol")
        assert s.user_names() == ["carol"]
        sql.add_token(Token(serial="ID-TOTP-2", type=TokenType.TOTP, seed=SEED, user="carol"))
        assert s.decide("Carol", PASSWORDS["carol"]).outcome is Outcome.REJECT
        ok = s.decide("CORP\\CAROL", PASSWORDS["carol"] + totp(SEED, NOW, 30, 6))
        assert (ok.outcome, ok.user) == (Outcome.ACCEPT, "carol")
        assert s.user_names() == ["carol"]
    finally:
        sql.close()
        backend.close()


def test_an_entry_with_two_names_is_refused(slapd: Slapd, tmp_path: Path) -> None:
    """An entry whose name attribute holds two values could be two users in the store
    (two token sets, two lock counts): it authenticates under neither name."""
    conn = ldap3.Connection(
        ldap3.Server(slapd.url), slapd.admin_dn, slapd.admin_password, auto_bind=True
    )
    dn = slapd.user_dn("dave")
    conn.modify(dn, {"uid": [(ldap3.MODIFY_ADD, ["dave2"])]})
    backend = LdapBackend(make_config(slapd))
    try:
        for typed in ("dave", "dave2"):
            assert not backend.authenticate(typed, PASSWORDS["dave"]).known
            assert not backend.lookup(typed).known
    finally:
        conn.modify(dn, {"uid": [(ldap3.MODIFY_DELETE, ["dave2"])]})
        conn.unbind()
        backend.close()


def test_the_configured_name_attribute_names_the_user(slapd: Slapd) -> None:
    """A filter matching uid or mail with `name_attribute: uid`: typed as her mail
    address, in any case, alice is `alice` (lookup and bind alike)."""
    search = UserSearch(
        base=slapd.people, filter="(|(uid={user})(mail={user}))", name_attribute="uid"
    )
    backend = LdapBackend(make_config(slapd, user_search=search))
    try:
        for typed in ("alice@example.org", "ALICE@Example.ORG", "Alice"):
            assert backend.lookup(typed).name == "alice"
            found = backend.authenticate(typed, PASSWORDS["alice"])
            assert (found.ok, found.name) == (True, "alice")
    finally:
        backend.close()
