"""Export/import with `token_storage: ldap` against a real slapd: a bundle from a SQL
site lands in directory attributes (tokens, lock state, PIN and backup hashes), twice
changes nothing, and the LDAP site exports it back identically."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from authd.auth.ldap_primary import LdapBackend
from authd.config.model import Config, OtpConfig
from authd.core import backup_codes, otp, pin
from authd.core.errors import AlreadyExists
from authd.core.model import Token, TokenType, User
from authd.crypto import Keyring
from authd.portability.bundle import Protector
from authd.portability.ops import PortabilityOps
from authd.storage.ldap_attrs import LdapTokenStore
from authd.storage.sql import SqlStore
from authd.token_import.load import load_tokens
from authd.token_import.register import Registration
from tests.fixtures.clock import EPOCH
from tests.fixtures.slapd import Slapd
from tests.integration.test_ldap_primary import make_config
from tests.integration.test_ldap_tokens import clear_tokens

pytestmark = pytest.mark.integration

PASS = Protector(passphrase="directory site secret")
SEED = secrets.token_bytes(20)
CODES = backup_codes.generate_codes(3)


def ops(store: SqlStore | LdapTokenStore, ring: Keyring) -> PortabilityOps:
    return PortabilityOps(Config(), store, ring, lambda: EPOCH)


@pytest.fixture
def sql_site(tmp_path: Path) -> Iterator[tuple[SqlStore, Keyring]]:
    """A SQL site: directory user alice (locked, PIN, backup codes, a used TOTP token),
    local user zed with an HOTP token, one unassigned token."""
    ring = Keyring.load_or_create(str(tmp_path / "a" / "keys.json"))
    store = SqlStore.open(f"sqlite:///{tmp_path / 'a' / 'authd.db'}", ring)
    store.add_user(User("alice", source="dir", created_at=EPOCH))
    store.add_user(User("zed", created_at=EPOCH))
    store.set_pin_hash("alice", pin.hash_pin("73925186", ring.hash_key, "alice"))
    store.replace_backup_codes(
        "alice", [backup_codes.hash_code(c, ring.hash_key) for c in CODES], EPOCH
    )
    store.record_failure("alice", EPOCH, 1, None)
    store.add_token(Token("T-ALICE", TokenType.TOTP, SEED, "alice", last_step=5, created_at=EPOCH))
    store.add_token(Token("H-ZED", TokenType.HOTP, SEED, "zed", counter=4, created_at=EPOCH))
    store.add_tokens([Token("BOX-1", TokenType.TOTP, SEED, None, created_at=EPOCH)])
    try:
        yield store, ring
    finally:
        store.close()


@pytest.fixture
def ldap_site(slapd: Slapd, tmp_path: Path) -> Iterator[tuple[LdapTokenStore, Keyring]]:
    clear_tokens(slapd)
    ring = Keyring.load_or_create(str(tmp_path / "b" / "keys.json"))
    sql = SqlStore.open(f"sqlite:///{tmp_path / 'b' / 'authd.db'}", ring)
    backend = LdapBackend(make_config(slapd, token_attribute=slapd.token_attribute))
    store = LdapTokenStore(sql, backend, ring)
    try:
        yield store, ring
    finally:
        store.close()
        backend.close()
        clear_tokens(slapd)


def test_sql_to_ldap_and_back(
    sql_site: tuple[SqlStore, Keyring],
    ldap_site: tuple[LdapTokenStore, Keyring],
    slapd: Slapd,
    tmp_path: Path,
) -> None:
    """alice's token and state go into her entry, zed's and the unassigned token into
    the SQL store; the second import writes nothing; exported again and imported into a
    fresh SQL site, every token, counter, step, lock and hash is the same."""
    a, a_ring = sql_site
    b, b_ring = ldap_site
    bundle = ops(a, a_ring).export_bundle("test", PASS).data
    first = ops(b, b_ring).import_bundle("test", bundle, PASS, adopt_hash_key=True)
    assert first.written > 0 and not first.conflicts
    listing = slapd.ldapsearch(slapd.user_dn("alice"), "(objectClass=*)", slapd.token_attribute)
    assert "T-ALICE|" in listing and "~state|" in listing and SEED.hex() not in listing
    alice = b.get_user("alice")
    assert alice is not None and alice.failures == 1 and alice.locked_until is not None
    assert pin.verify_pin("73925186", alice.pin_hash or "", b_ring.hash_key, "alice")
    assert b.backup_codes_left("alice") == 3
    assert {t.serial: t.user for t in b.list_tokens()} == {
        "T-ALICE": "alice", "H-ZED": "zed", "BOX-1": None,
    }  # fmt: skip
    assert ops(b, b_ring).import_bundle("test", bundle, PASS).written == 0

    ring_c = Keyring.load_or_create(str(tmp_path / "c" / "keys.json"))
    c = SqlStore.open(f"sqlite:///{tmp_path / 'c' / 'authd.db'}", ring_c)
    try:
        back = ops(b, b_ring).export_bundle("test", PASS).data
        ops(c, ring_c).import_bundle("test", back, PASS, adopt_hash_key=True)
        key = lambda t: (t.serial, t.user, t.seed, t.counter, t.last_step)  # noqa: E731
        assert sorted(map(key, c.list_tokens())) == sorted(map(key, a.list_tokens()))
        got = c.get_user("alice")
        assert got is not None and (got.failures, got.pin_hash) == (1, alice.pin_hash)
        assert c.backup_codes_left("alice") == 3
    finally:
        c.close()


def test_token_import_and_register_with_ldap_storage(
    ldap_site: tuple[LdapTokenStore, Keyring],
) -> None:
    """A token file whose serial is in the directory is refused whole; a clean one
    lands unassigned; a directory user claims one with a code."""
    store, _ = ldap_site
    store.ensure_user("alice", "dir", EPOCH)
    store.add_token(Token("IN-DIR", TokenType.TOTP, SEED, "alice", created_at=EPOCH))
    with pytest.raises(AlreadyExists, match="IN-DIR"):
        load_tokens(
            store, [Token("NEW-1", TokenType.TOTP, SEED), Token("IN-DIR", TokenType.TOTP, SEED)]
        )
    assert store.get_token("NEW-1") is None
    load_tokens(store, [Token("NEW-1", TokenType.TOTP, SEED, created_at=EPOCH)])
    claimed = Registration(store, OtpConfig()).register_by_serial(
        "alice", "NEW-1", otp.totp(SEED, EPOCH), EPOCH
    )
    assert claimed.user == "alice"
    assert {t.serial for t in store.list_tokens("alice")} == {"IN-DIR", "NEW-1"}
