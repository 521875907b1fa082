"""`token_storage: ldap` against a real slapd: token records encrypted in a multi-valued
attribute, exact compare-and-set updates, across two processes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import ldap3
import pytest

from authd.auth.interfaces import AuthRequest, LockState, Outcome
from authd.auth.ldap_primary import LdapBackend
from authd.config.model import Config, GroupSearch, PrimaryConfig, StoreConfig
from authd.core.errors import AlreadyExists, NotFound, StoreUnavailable
from authd.core.model import Token, TokenStatus, TokenType, User, UserStatus, user_status
from authd.crypto import Keyring
from authd.decision.engine import Engine
from authd.storage.ldap_attrs import LdapTokenStore, decode_record, encode_record
from authd.storage.sql import SqlStore
from tests.fixtures.slapd import PASSWORDS, USERS, Slapd
from tests.integration.test_ldap_primary import CountingDirectory, closed_port_url, make_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SEED = bytes(range(1, 21))  # the RFC 4226 test seed shape: 20 bytes


def clear_tokens(slapd: Slapd) -> None:
    """Remove every token value from every test user, as the directory admin."""
    conn = ldap3.Connection(
        ldap3.Server(slapd.url), slapd.admin_dn, slapd.admin_password, auto_bind=True
    )
    try:
        for uid, *_ in USERS:
            conn.modify(slapd.user_dn(uid), {slapd.token_attribute: [(ldap3.MODIFY_REPLACE, [])]})
    finally:
        conn.unbind()


@pytest.fixture
def ldap_store(slapd: Slapd, keyring: Keyring, tmp_path: Path) -> Iterator[LdapTokenStore]:
    """An LdapTokenStore on the session slapd over a fresh SQLite delegate."""
    clear_tokens(slapd)
    cfg = make_config(slapd, token_attribute=slapd.token_attribute)
    sql = SqlStore.open(f"sqlite:///{tmp_path / 'authd.db'}", keyring)
    backend = LdapBackend(cfg)
    s = LdapTokenStore(sql, backend, keyring)
    try:
        yield s
    finally:
        s.close()
        backend.close()
        clear_tokens(slapd)


def totp(serial: str, user: str | None = "alice", **kw: object) -> Token:
    return Token(
        serial=serial, type=TokenType.TOTP, seed=SEED, user=user, created_at=1_767_225_600.0, **kw
    )  # type: ignore[arg-type]



def run_two_nodes(script: str, args: dict[str, Any], tmp_path: Path, db_prefix: str,
                  timeout: float) -> list[Any]:
    """Run `script` as two separate processes (two authd nodes, each with its own SQLite
    file, one directory) and return each one's JSON result."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script,
             json.dumps(dict(args, db=f"sqlite:///{tmp_path / f'{db_prefix}{i}.db'}"))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )
        for i in range(2)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    return results

def test_tokens_in_the_directory_show_only_ciphertext(
    ldap_store: LdapTokenStore, slapd: Slapd
) -> None:
    """ldapsearch sees one value per token, `serial|v1:<key id>:<ciphertext>`: no seed
    (raw, hex, base32, base64) and none of the record's fields."""
    ldap_store.add_token(totp("TOTP-A1"))
    ldap_store.add_token(replace(totp("HOTP-A2"), type=TokenType.HOTP, counter=7))
    out = slapd.ldapsearch(slapd.user_dn("alice"), "(objectClass=*)", slapd.token_attribute)
    values = [
        line.split(": ", 1)[1]
        for line in out.splitlines()
        if line.startswith(slapd.token_attribute + ":")
    ]
    assert sorted(v.split("|")[0] for v in values) == ["HOTP-A2", "TOTP-A1"]
    for v in values:
        assert v.split("|", 1)[1].startswith("v1:")
    stored = "\n".join(v.split("|", 1)[1] for v in values)
    for leak in (
        SEED.hex(),
        base64.b32encode(SEED).decode().rstrip("="),
        base64.b64encode(SEED).decode(),
        "last_step",
        "counter",
        "alice",
        "totp",
    ):
        assert leak not in stored
    got = ldap_store.get_token("TOTP-A1")
    assert got == totp("TOTP-A1")
    assert {t.serial for t in ldap_store.list_tokens("alice")} == {"TOTP-A1", "HOTP-A2"}
    assert ldap_store.list_tokens("bob") == []


def test_duplicate_serials_and_unknown_users_are_refused(ldap_store: LdapTokenStore) -> None:
    """A serial is unique across directory and SQL; a user must exist in the directory."""
    ldap_store.add_token(totp("DUP-1"))
    with pytest.raises(AlreadyExists):
        ldap_store.add_token(totp("DUP-1", user="bob"))
    ldap_store.add_token(totp("FREE-1", user=None))  # unassigned: kept in SQL
    with pytest.raises(AlreadyExists):
        ldap_store.add_token(totp("FREE-1", user="bob"))
    with pytest.raises(NotFound):
        ldap_store.add_token(totp("NOBODY-1", user="mallory"))


def test_totp_steps_are_accepted_once_and_in_order(ldap_store: LdapTokenStore) -> None:
    """RFC 6238 §5.2 through the directory: each step once, never an earlier one, never
    on a disabled token; drift is remembered."""
    ldap_store.add_token(totp("STEP-1"))
    assert ldap_store.accept_totp_step("STEP-1", 100, 1)
    assert not ldap_store.accept_totp_step("STEP-1", 100, 1)
    assert not ldap_store.accept_totp_step("STEP-1", 99, 0)
    assert ldap_store.accept_totp_step("STEP-1", 101, -1)
    t = ldap_store.get_token("STEP-1")
    assert t is not None and (t.last_step, t.drift) == (101, -1)
    assert ldap_store.set_token_status("STEP-1", TokenStatus.DISABLED)
    assert not ldap_store.accept_totp_step("STEP-1", 200, 0)
    assert not ldap_store.accept_totp_step("MISSING", 200, 0)


def test_hotp_counter_moves_past_the_accepted_value(ldap_store: LdapTokenStore) -> None:
    """RFC 4226 §7.2: the counter becomes accepted+1; older values never match again."""
    ldap_store.add_token(replace(totp("CNT-1"), type=TokenType.HOTP, counter=5))
    assert ldap_store.accept_hotp_counter("CNT-1", 7)
    assert not ldap_store.accept_hotp_counter("CNT-1", 7)
    assert not ldap_store.accept_hotp_counter("CNT-1", 6)
    assert ldap_store.accept_hotp_counter("CNT-1", 8)
    t = ldap_store.get_token("CNT-1")
    assert t is not None and t.counter == 9


def test_resync_never_moves_a_token_backwards(ldap_store: LdapTokenStore) -> None:
    """The resync modify is the same compare-and-set as a login's: after a login
    accepted a newer step or counter than the resync read, or when its first code was
    used, nothing is written; a resync past every used code still goes through."""
    ldap_store.add_token(totp("RS-1", last_step=100))
    assert ldap_store.accept_totp_step("RS-1", 600, 0)  # between the resync's read and write
    assert not ldap_store.resync_token("RS-1", last_step=501, drift=-3)
    assert not ldap_store.resync_token("RS-1", last_step=601, drift=1)
    t = ldap_store.get_token("RS-1")
    assert t is not None and (t.last_step, t.drift) == (600, 0)
    assert ldap_store.resync_token("RS-1", last_step=700, drift=1)
    assert not ldap_store.resync_token("RS-1", last_step=650, drift=5)
    ldap_store.add_token(replace(totp("RS-2"), type=TokenType.HOTP, counter=5))
    assert ldap_store.accept_hotp_counter("RS-2", 7)
    assert not ldap_store.resync_token("RS-2", counter=3)
    assert not ldap_store.resync_token("RS-2", counter=9)
    assert ldap_store.resync_token("RS-2", counter=10)
    t, h = ldap_store.get_token("RS-1"), ldap_store.get_token("RS-2")
    assert t is not None and h is not None and (t.last_step, t.drift, h.counter) == (700, 1, 10)


def test_a_value_moved_to_another_serial_is_unreadable(
    ldap_store: LdapTokenStore, slapd: Slapd
) -> None:
    """The ciphertext is bound to its serial: an admin copying it under another serial
    (or into another entry) gets no token, just a logged error."""
    ldap_store.add_token(totp("BOUND-1"))
    out = slapd.ldapsearch(slapd.user_dn("alice"), "(objectClass=*)", slapd.token_attribute)
    blob = next(line.split("|", 1)[1] for line in out.splitlines() if "BOUND-1|" in line)
    slapd.ldapmodify(
        f"dn: {slapd.user_dn('bob')}\nchangetype: modify\n"
        f"add: {slapd.token_attribute}\n{slapd.token_attribute}: FORGED-1|{blob}\n"
    )
    assert ldap_store.get_token("FORGED-1") is None
    assert ldap_store.list_tokens("bob") == []


def test_assign_unassign_reset_and_rotate(
    ldap_store: LdapTokenStore, keyring: Keyring, slapd: Slapd
) -> None:
    """Tokens move between entries, to the SQL store when unassigned; reset drops a
    user's values; key rotation re-encrypts every value under the new key."""
    ldap_store.add_token(totp("MOVE-1"))
    ldap_store.add_token(totp("KEEP-1", user="carol"))
    assert ldap_store.assign_token("MOVE-1", "bob")
    assert [t.serial for t in ldap_store.list_tokens("bob")] == ["MOVE-1"]
    assert ldap_store.list_tokens("alice") == []
    assert ldap_store.assign_token("MOVE-1", None)
    moved = ldap_store.get_token("MOVE-1")
    assert moved is not None and moved.user is None
    old_key = keyring.current_key_id
    assert ldap_store.rotate_key() >= 1
    out = slapd.ldapsearch(slapd.user_dn("carol"), "(objectClass=*)", slapd.token_attribute)
    assert f"KEEP-1|v1:{keyring.current_key_id}:" in out and old_key != keyring.current_key_id
    assert ldap_store.get_token("KEEP-1") == totp("KEEP-1", user="carol")
    ldap_store.reset_user("carol")
    assert ldap_store.list_tokens("carol") == []


def test_directory_down_is_store_unavailable(
    slapd: Slapd, keyring: Keyring, tmp_path: Path
) -> None:
    """When no directory answers, token operations raise StoreUnavailable (the engine
    then fails closed) and ping says so."""
    cfg = make_config(slapd, closed_port_url(), token_attribute=slapd.token_attribute)
    backend = LdapBackend(cfg)
    sql = SqlStore.open(f"sqlite:///{tmp_path / 'down.db'}", keyring)
    s = LdapTokenStore(sql, backend, keyring)
    try:
        with pytest.raises(StoreUnavailable):
            s.accept_totp_step("ANY", 1, 0)
        with pytest.raises(StoreUnavailable):
            s.list_tokens("alice")
        with pytest.raises(StoreUnavailable):
            s.ping()
    finally:
        s.close()
        backend.close()


def test_record_round_trip_keeps_every_field(keyring: Keyring) -> None:
    """encode/decode preserve every Token field, and the repr of a Token hides the seed."""
    t = Token(
        serial="RT-1",
        type=TokenType.HOTP,
        seed=os.urandom(32),
        user="x",
        digits=8,
        period=60,
        counter=42,
        last_step=7,
        drift=-2,
        status=TokenStatus.DISABLED,
        description="desk",
        created_at=12.5,
    )
    assert decode_record(encode_record(t, keyring), keyring) == t
    assert t.seed.hex() not in repr(t)


# What both node scripts start with: an authd node (own SQLite file, shared directory)
# that waits for the common start time, so the two processes really race.
NODE_SETUP = textwrap.dedent("""
    import json, sys, time
    from authd.auth.ldap_primary import LdapBackend
    from authd.config.model import *
    from authd.crypto import Keyring
    from authd.storage.ldap_attrs import LdapTokenStore
    from authd.storage.sql import SqlStore
    a = json.loads(sys.argv[1])
    keyring = Keyring.load_or_create(a["keys"])
    cfg = PrimaryBackend(type="ldap", name="dir", servers=(LdapServer(a["url"]),),
        bind_dn=a["bind_dn"], bind_password=Secret(a["bind_pw"]),
        user_search=UserSearch(base=a["base"]), token_attribute=a["attr"])
    store = LdapTokenStore(SqlStore.open(a["db"], keyring), LdapBackend(cfg), keyring)
    while time.time() < a["start"]:
        time.sleep(0.001)
""")

NODE = NODE_SETUP + textwrap.dedent("""
    wins = [s for s in range(a["first"], a["first"] + a["n"])
            if store.accept_totp_step(a["serial"], s, 0)]
    print(json.dumps(wins))
""")


def test_two_processes_accept_each_step_once(
    ldap_store: LdapTokenStore, slapd: Slapd, keyring: Keyring, tmp_path: Path
) -> None:
    """Two authd processes on one directory race for the same TOTP steps: every step is
    accepted by exactly one of them (delete-old/add-new in one modify)."""
    ldap_store.add_token(totp("RACE-1", user="dave"))
    n = 60
    args = {
        "keys": keyring.path,
        "url": slapd.url,
        "bind_dn": slapd.service_dn,
        "bind_pw": slapd.service_password,
        "base": slapd.people,
        "attr": slapd.token_attribute,
        "serial": "RACE-1",
        "first": 1000,
        "n": n,
        "start": time.time() + 3.0,
    }
    results = run_two_nodes(NODE, args, tmp_path, "node", timeout=60)
    both = results[0] + results[1]
    assert sorted(both) == list(range(1000, 1000 + n)), results
    t = ldap_store.get_token("RACE-1")
    assert t is not None and t.last_step == 1000 + n - 1


def _code(seed: bytes, now: float) -> str:
    """RFC 6238 SHA1 six digits, written out so the test shares no code with core."""
    mac = hmac.new(seed, struct.pack(">Q", int(now // 30)), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    return str((int.from_bytes(mac[off : off + 4], "big") & 0x7FFFFFFF) % 1_000_000).zfill(6)


def test_engine_user_with_several_tokens_costs_one_bind(
    slapd: Slapd, keyring: Keyring, tmp_path: Path
) -> None:
    """The real Engine over LDAP first factor and LDAP token storage: a user with three
    tokens is accepted with one bind, groups come from the directory, and the same code
    is refused the second time (replay) still with one bind per request."""
    clear_tokens(slapd)
    cfg = make_config(
        slapd,
        token_attribute=slapd.token_attribute,
        groups=GroupSearch(base=slapd.groups, nested=True, cache_ttl=60),
    )
    directory = CountingDirectory(cfg)
    backend = LdapBackend(cfg, directory=directory)
    sql = SqlStore.open(f"sqlite:///{tmp_path / 'engine.db'}", keyring)
    store = LdapTokenStore(sql, backend, keyring)
    seeds = [os.urandom(20) for _ in range(3)]
    for i, seed in enumerate(seeds):
        store.add_token(Token(serial=f"MULTI-{i}", type=TokenType.TOTP, seed=seed, user="carol"))
    config = Config(primary=PrimaryConfig(backends=(cfg,)), store=StoreConfig(token_storage="ldap"))
    engine = Engine(config, store, [backend], keyring.hash_key)
    now = 1_767_225_600.0
    typed = PASSWORDS["carol"] + _code(seeds[2], now)
    try:
        req = AuthRequest(
            user="carol", password=typed, frontend="radius", client="nas", source="127.0.0.1"
        )
        binds = directory.binds
        decision = engine.decide(req, now)
        assert decision.outcome is Outcome.ACCEPT, decision
        assert set(decision.groups) == {"staff", "everyone"}
        assert directory.binds - binds == 1
        again = engine.decide(req, now + 1)
        assert again.outcome is Outcome.REJECT
        assert directory.binds - binds == 2
    finally:
        store.close()
        backend.close()
        clear_tokens(slapd)


# ---------------------------------------------------------------- user state
def test_lockout_state_lives_in_the_directory(ldap_store: LdapTokenStore) -> None:
    """core.lockout rules through the directory value: the 3rd failure locks, a running
    lock is never extended, an expired one restarts the count, a success clears it, and
    get_user/list_users show what the directory says."""
    ldap_store.ensure_user("bob", "dir", 0.0)
    assert ldap_store.record_failure("bob", 100.0, 3, 60.0) == LockState(1, None)
    assert ldap_store.record_failure("bob", 101.0, 3, 60.0) == LockState(2, None)
    assert ldap_store.record_failure("bob", 102.0, 3, 60.0) == LockState(3, 162.0)
    assert ldap_store.record_failure("bob", 150.0, 3, 60.0) == LockState(4, 162.0)
    user = ldap_store.get_user("bob")
    assert user is not None and (user.failures, user.locked_until) == (4, 162.0)
    (overview,) = ldap_store.list_users("bob")
    assert user_status(overview.user, overview.active_tokens, overview.registered, 150.0) == (
        UserStatus.LOCKED
    )
    ldap_store.record_attempt("bob", 155.0, "127.0.0.1", "nas", True)  # lock still runs
    assert ldap_store.get_user("bob").locked_until == 162.0  # type: ignore[union-attr]
    assert ldap_store.record_failure("bob", 170.0, 3, 60.0) == LockState(1, None)
    ldap_store.record_attempt("bob", 171.0, "127.0.0.1", "nas", True)
    assert ldap_store.get_user("bob").failures == 0  # type: ignore[union-attr]
    assert ldap_store.record_failure("bob", 200.0, 1, None) == LockState(1, math.inf)
    assert ldap_store.unlock_user("bob")
    user = ldap_store.get_user("bob")
    assert user is not None and (user.failures, user.locked_until) == (0, None)


def test_pin_and_backup_codes_live_in_the_directory(
    ldap_store: LdapTokenStore, slapd: Slapd
) -> None:
    """PIN and backup-code hashes are kept encrypted in the entry; a code is consumed
    once; reset drops tokens, PIN and codes but leaves the lock state alone."""
    ldap_store.ensure_user("carol", "dir", 0.0)
    pin_hash = "pinhash-" + "ab" * 16
    codes = [f"codehash-{i:02d}-" + "cd" * 8 for i in range(5)]
    assert ldap_store.set_pin_hash("carol", pin_hash)
    ldap_store.replace_backup_codes("carol", codes, 10.0)
    ldap_store.add_token(totp("PIN-T1", user="carol"))
    ldap_store.record_failure("carol", 10.0, 5, 60.0)
    out = slapd.ldapsearch(slapd.user_dn("carol"), "(objectClass=*)", slapd.token_attribute)
    assert "~state|v1:" in out and pin_hash not in out and codes[0] not in out
    assert ldap_store.get_user("carol").pin_hash == pin_hash  # type: ignore[union-attr]
    assert ldap_store.backup_codes_left("carol") == 5
    assert ldap_store.consume_backup_code("carol", codes[2])
    assert not ldap_store.consume_backup_code("carol", codes[2])
    assert ldap_store.backup_codes_left("carol") == 4
    (overview,) = ldap_store.list_users("carol")
    assert overview.registered and overview.active_tokens == 1
    ldap_store.reset_user("carol")
    user = ldap_store.get_user("carol")
    assert user is not None and user.pin_hash is None and user.failures == 1
    assert ldap_store.backup_codes_left("carol") == 0
    assert ldap_store.list_tokens("carol") == []


def test_local_users_keep_their_state_in_sql(ldap_store: LdapTokenStore) -> None:
    """A user the directory does not know (a local user in a mixed chain) has tokens and
    lock state in the SQL store, through the same interface."""
    ldap_store.add_user(User(name="zed", source="local"))
    ldap_store.add_token(totp("LOCAL-1", user="zed"))
    assert [t.serial for t in ldap_store.list_tokens("zed")] == ["LOCAL-1"]
    assert ldap_store.record_failure("zed", 5.0, 5, 60.0) == LockState(1, None)
    assert ldap_store.accept_totp_step("LOCAL-1", 10, 0)
    assert not ldap_store.accept_totp_step("LOCAL-1", 10, 0)


STATE_NODE = NODE_SETUP + textwrap.dedent("""
    for _ in range(a["n"]):
        store.record_failure("dave", 1000.0, 10**6, 60.0)
    won = [c for c in a["codes"] if store.consume_backup_code("dave", c)]
    print(json.dumps(won))
""")


def test_two_processes_count_failures_and_use_codes_exactly(
    ldap_store: LdapTokenStore, slapd: Slapd, keyring: Keyring, tmp_path: Path
) -> None:
    """Two processes counting failures and spending the same backup codes at once: no
    failure is lost and every code is spent exactly once."""
    codes = [f"race-code-{i}" for i in range(20)]
    ldap_store.replace_backup_codes("dave", codes, 0.0)
    n = 25
    args = {
        "keys": keyring.path,
        "url": slapd.url,
        "bind_dn": slapd.service_dn,
        "bind_pw": slapd.service_password,
        "base": slapd.people,
        "attr": slapd.token_attribute,
        "n": n,
        "codes": codes,
        "start": time.time() + 3.0,
    }
    won = [w for result in run_two_nodes(STATE_NODE, args, tmp_path, "state", timeout=90)
           for w in result]
    assert sorted(won) == sorted(codes)
    assert ldap_store.record_failure("dave", 1000.0, 10**6, 60.0).failures == 2 * n + 1
    assert ldap_store.backup_codes_left("dave") == 0


def test_delete_user_clears_directory_state_and_sql_row(
    ldap_store: LdapTokenStore, slapd: Slapd
) -> None:
    """`user delete` of a directory user: token values, PIN, backup codes and lock state
    leave the entry (the entry itself stays: it is the directory's), the SQL row goes,
    and the user reappears afresh on next sight."""
    ldap_store.ensure_user("carol", "dir", 0.0)
    ldap_store.set_pin_hash("carol", "pinhash-" + "ab" * 16)
    ldap_store.replace_backup_codes("carol", ["codehash-" + "cd" * 8], 10.0)
    ldap_store.add_token(totp("DEL-T1", user="carol"))
    ldap_store.record_failure("carol", 10.0, 5, 60.0)
    assert ldap_store.delete_user("carol")
    assert ldap_store.get_user("carol") is None
    assert ldap_store.list_tokens("carol") == []
    out = slapd.ldapsearch(slapd.user_dn("carol"), "(objectClass=*)", slapd.token_attribute)
    assert "DEL-T1" not in out
    again = ldap_store.ensure_user("carol", "dir", 20.0)
    assert (again.failures, again.pin_hash) == (0, None)
    assert ldap_store.backup_codes_left("carol") == 0
    assert not ldap_store.delete_user("nobody-here")
