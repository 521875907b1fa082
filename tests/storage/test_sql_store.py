"""SqlStore behaviour on both backends: users, tokens, codes, challenges, audit, lockout."""

from __future__ import annotations

import math

import pytest
import sqlalchemy as sa

from authd.auth.interfaces import Challenge, LockState, Store
from authd.core.errors import AlreadyExists, NotFound, StoreUnavailable
from authd.core.model import (
    Algorithm,
    AuditEvent,
    LastSeen,
    Token,
    TokenStatus,
    TokenType,
    User,
)
from authd.crypto import Keyring
from authd.storage.sql import SqlStore

NOW = 1_767_225_600.0
SEED = b"12345678901234567890"


def _token(serial: str, user: str | None = "alice", **kw: object) -> Token:
    return Token(
        serial=serial,
        type=kw.pop("type", TokenType.TOTP),
        seed=SEED,
        user=user,
        created_at=NOW,
        **kw,
    )  # type: ignore[arg-type]


def test_sqlstore_satisfies_the_store_protocol(store: SqlStore) -> None:
    """Every Store Protocol method exists on SqlStore (the engine codes against it)."""
    s: Store = store
    missing = [m for m in dir(Store) if not m.startswith("_") and not hasattr(s, m)]
    assert missing == []


# ------------------------------------------------------------------ users
def test_user_round_trip_keeps_every_field(store: SqlStore) -> None:
    """add_user then get_user returns an equal User, including inf lock and last seen."""
    user = User(
        name="alice",
        source="ldap",
        password_hash="$argon2id$x",
        pin_hash="p",
        disabled=True,
        failures=3,
        locked_until=math.inf,
        email="a@example.org",
        phone="+1 555",
        first_name="Alice",
        last_name="Liddell",
        groups=("vpn", "admins"),
        last_attempt=LastSeen(NOW, "10.0.0.1", "fw"),
        last_success=LastSeen(NOW - 5, "10.0.0.2", "vpn"),
        created_at=NOW - 100,
    )
    store.add_user(user)
    assert store.get_user("alice") == user
    assert store.get_user("nobody") is None


def test_names_are_unique_and_case_sensitive(store: SqlStore) -> None:
    """`Alice` and `alice` are two users; adding a name twice raises AlreadyExists."""
    store.add_user(User(name="alice"))
    store.add_user(User(name="Alice", email="big@example.org"))
    with pytest.raises(AlreadyExists):
        store.add_user(User(name="alice"))
    got = store.get_user("Alice")
    assert got is not None and got.email == "big@example.org"
    assert store.get_user("ALICE") is None


def test_ensure_user_creates_once_and_keeps_existing_rows(store: SqlStore) -> None:
    """First sight creates with profile and groups; later calls return the row unchanged."""
    u = store.ensure_user(
        "bob",
        "ldap",
        NOW,
        {"email": "b@example.org", "first_name": "Bob", "title": "ignored"},
        ["staff"],
    )
    assert (u.name, u.source, u.email, u.first_name, u.groups, u.created_at) == (
        "bob",
        "ldap",
        "b@example.org",
        "Bob",
        ("staff",),
        NOW,
    )
    again = store.ensure_user("bob", "local", NOW + 10, {"email": "other"}, ["x"])
    assert again == u


def test_setters_report_whether_the_user_exists(store: SqlStore) -> None:
    """Password, PIN, disabled and unlock change the row and return False for strangers."""
    store.add_user(User(name="alice", failures=4, locked_until=NOW + 60))
    assert store.set_password_hash("alice", "h1")
    assert store.set_pin_hash("alice", "pin-h")
    assert store.set_disabled("alice", True)
    assert store.unlock_user("alice")
    u = store.get_user("alice")
    assert u is not None
    assert (u.password_hash, u.pin_hash, u.disabled, u.failures, u.locked_until) == (
        "h1",
        "pin-h",
        True,
        0,
        None,
    )
    assert store.set_disabled("alice", False)
    assert not store.get_user("alice").disabled  # type: ignore[union-attr]
    for call in (
        lambda: store.set_password_hash("x", "h"),
        lambda: store.set_pin_hash("x", None),
        lambda: store.set_disabled("x", True),
        lambda: store.unlock_user("x"),
        lambda: store.reset_user("x"),
    ):
        assert call() is False


def test_reset_user_drops_registration_only(store: SqlStore) -> None:
    """reset removes tokens, backup codes and PIN; the user and other users' data stay."""
    store.add_user(User(name="alice", pin_hash="p", password_hash="pw"))
    store.add_user(User(name="bob"))
    store.add_token(_token("A1"))
    store.add_token(_token("B1", user="bob"))
    store.replace_backup_codes("alice", ["c1", "c2"], NOW)
    store.replace_backup_codes("bob", ["c1"], NOW)
    assert store.reset_user("alice")
    u = store.get_user("alice")
    assert u is not None and u.pin_hash is None and u.password_hash == "pw"
    assert store.list_tokens("alice") == []
    assert store.backup_codes_left("alice") == 0
    assert [t.serial for t in store.list_tokens("bob")] == ["B1"]
    assert store.backup_codes_left("bob") == 1


def test_list_users_wildcard_is_case_sensitive_and_literal(store: SqlStore) -> None:
    """`*` is the only wildcard; case matters; % _ ? [ are plain characters."""
    for name in ("alice", "Alice", "alfred", "bob", "a%b", "axb", "a_c", "abc", "a?d", "a[1]"):
        store.add_user(User(name=name))

    def names(pattern: str | None, limit: int | None = None) -> list[str]:
        return [o.user.name for o in store.list_users(pattern, limit)]

    assert names("al*") == ["alfred", "alice"]
    assert names("Al*") == ["Alice"]
    assert names("AL*") == []
    assert names("a%b") == ["a%b"]
    assert names("a_c") == ["a_c"]
    assert names("a?d") == ["a?d"]
    assert names("a[1]") == ["a[1]"]
    assert names("*c*") == ["Alice", "a_c", "abc", "alice"]  # byte order, both backends
    assert names("alice") == ["alice"]
    assert names(None) == sorted(names("*"))
    assert len(names(None)) == 10
    assert names("a*", limit=2) == ["a%b", "a?d"]


def test_list_users_counts_active_tokens_and_registration(store: SqlStore) -> None:
    """Each overview has the active-token count and whether any registration exists."""
    for name in ("active", "codes", "disabledtok", "none", "pin"):
        store.add_user(User(name=name, pin_hash="p" if name == "pin" else None))
    store.add_token(_token("T1", user="active"))
    store.add_token(_token("T2", user="active"))
    store.add_token(_token("T3", user="active", status=TokenStatus.REVOKED))
    store.add_token(_token("T4", user="disabledtok", status=TokenStatus.DISABLED))
    store.replace_backup_codes("codes", ["h"], NOW)
    got = {o.user.name: (o.active_tokens, o.registered) for o in store.list_users()}
    assert got == {
        "active": (2, True),
        "codes": (0, True),
        "disabledtok": (0, True),
        "none": (0, False),
        "pin": (0, True),
    }


# ------------------------------------------------------------------ lockout
def test_record_failure_locks_at_max_without_extending(store: SqlStore) -> None:
    """The lock starts when failures reach max; later failures count, deadline stays."""
    store.add_user(User(name="alice"))
    assert store.record_failure("alice", NOW, 3, 60) == LockState(1, None)
    assert store.record_failure("alice", NOW + 1, 3, 60) == LockState(2, None)
    assert store.record_failure("alice", NOW + 2, 3, 60) == LockState(3, NOW + 62)
    assert store.record_failure("alice", NOW + 3, 3, 60) == LockState(4, NOW + 62)
    u = store.get_user("alice")
    assert u is not None and (u.failures, u.locked_until) == (4, NOW + 62)


def test_record_failure_after_expiry_starts_a_fresh_count(store: SqlStore) -> None:
    """Once a timed lock has run out, counting restarts at 1 and the old deadline clears."""
    store.add_user(User(name="alice"))
    for i in range(2):
        store.record_failure("alice", NOW + i, 2, 10)
    assert store.record_failure("alice", NOW + 20, 2, 10) == LockState(1, None)
    assert store.record_failure("alice", NOW + 21, 2, 10) == LockState(2, NOW + 31)


def test_record_failure_never_unlocks_returns_inf(store: SqlStore) -> None:
    """lock_seconds None locks until an operator unlocks: read back as math.inf."""
    store.add_user(User(name="alice"))
    assert store.record_failure("alice", NOW, 1, None) == LockState(1, math.inf)
    assert store.record_failure("alice", NOW + 1e9, 1, None) == LockState(2, math.inf)
    assert store.get_user("alice").locked_until == math.inf  # type: ignore[union-attr]
    assert store.unlock_user("alice")
    assert store.get_user("alice").locked_until is None  # type: ignore[union-attr]


def test_record_failure_for_unknown_user_counts_nothing(store: SqlStore) -> None:
    """There is no row to count on: the answer is an unlocked zero, and no row appears."""
    assert store.record_failure("ghost", NOW, 3, 60) == LockState(0, None)
    assert store.get_user("ghost") is None


def test_record_attempt_remembers_last_seen_and_success_zeroes_failures(store: SqlStore) -> None:
    """A failed attempt updates last_attempt only; success also zeroes failures."""
    store.add_user(User(name="alice"))
    store.record_failure("alice", NOW, 5, 60)
    store.record_attempt("alice", NOW, "10.0.0.1", "vpn", success=False)
    u = store.get_user("alice")
    assert u is not None
    assert (u.last_attempt, u.last_success, u.failures) == (
        LastSeen(NOW, "10.0.0.1", "vpn"),
        None,
        1,
    )
    store.record_attempt("alice", NOW + 5, "10.0.0.2", "fw", success=True)
    u = store.get_user("alice")
    assert u is not None
    assert u.last_attempt == u.last_success == LastSeen(NOW + 5, "10.0.0.2", "fw")
    assert u.failures == 0


# ------------------------------------------------------------------ tokens
def test_token_round_trip_and_listing(store: SqlStore) -> None:
    """Tokens come back equal (seed decrypted), listed by user or all, unassigned too."""
    store.add_user(User(name="alice"))
    hotp = _token(
        "H1",
        type=TokenType.HOTP,
        algorithm=Algorithm.SHA512,
        digits=8,
        counter=7,
        description="yubikey",
    )
    totp = _token("T1", period=60, last_step=100, drift=-1)
    loose = _token("X9", user=None, algorithm=Algorithm.SHA256)
    for t in (totp, loose, hotp):
        store.add_token(t)
    assert store.get_token("H1") == hotp
    assert store.get_token("nope") is None
    assert store.list_tokens("alice") == [hotp, totp]
    assert store.list_tokens() == [hotp, totp, loose]
    assert store.list_tokens("bob") == []
    # The decision read decodes the same records from its join (tokens after users).
    assert store.get_user_tokens_codes("alice") == (store.get_user("alice"), [hotp, totp], 0)


def test_add_token_errors(store: SqlStore) -> None:
    """A taken serial is AlreadyExists; a token for an unknown user is NotFound."""
    store.add_user(User(name="alice"))
    store.add_token(_token("T1"))
    with pytest.raises(AlreadyExists):
        store.add_token(_token("T1"))
    with pytest.raises(NotFound):
        store.add_token(_token("T2", user="ghost"))
    assert store.get_token("T2") is None


def test_get_user_with_tokens_in_one_call(store: SqlStore) -> None:
    """The hot-path read gives the user and every token of theirs, or (None, [])."""
    store.add_user(User(name="alice", groups=("g",)))
    store.add_user(User(name="bob"))
    assert store.get_user_with_tokens("ghost") == (None, [])
    assert store.get_user_with_tokens("bob") == (store.get_user("bob"), [])
    a, b = _token("A"), _token("B", status=TokenStatus.DISABLED)
    store.add_token(b)
    store.add_token(a)
    user, toks = store.get_user_with_tokens("alice")
    assert user == store.get_user("alice")
    assert toks == [a, b]


def test_status_and_assignment(store: SqlStore) -> None:
    """Status changes, assign/unassign, and their answers for unknown serials/users."""
    store.add_user(User(name="alice"))
    store.add_token(_token("X", user=None))
    assert store.assign_token("X", "alice")
    assert store.get_token("X").user == "alice"  # type: ignore[union-attr]
    assert store.assign_token("X", None)
    assert store.get_token("X").user is None  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        store.assign_token("X", "ghost")
    assert not store.assign_token("nope", "alice")
    assert store.set_token_status("X", TokenStatus.REVOKED)
    assert store.get_token("X").status is TokenStatus.REVOKED  # type: ignore[union-attr]
    assert not store.set_token_status("nope", TokenStatus.ACTIVE)


def test_accept_totp_step_is_monotonic_and_active_only(store: SqlStore) -> None:
    """A step is accepted once, never an earlier one, and never on an inactive token."""
    store.add_user(User(name="alice"))
    store.add_token(_token("T"))
    assert store.accept_totp_step("T", 100, 1)
    assert not store.accept_totp_step("T", 100, 0)  # replay
    assert not store.accept_totp_step("T", 99, 0)  # older
    assert store.accept_totp_step("T", 101, -1)
    t = store.get_token("T")
    assert t is not None and (t.last_step, t.drift) == (101, -1)
    store.set_token_status("T", TokenStatus.DISABLED)
    assert not store.accept_totp_step("T", 200, 0)
    assert not store.accept_totp_step("nope", 1, 0)


def test_accept_hotp_counter_moves_past_the_accepted_value(store: SqlStore) -> None:
    """Counter c accepted -> next expected is c+1; c and anything older is refused."""
    store.add_user(User(name="alice"))
    store.add_token(_token("H", type=TokenType.HOTP, counter=5))
    assert store.accept_hotp_counter("H", 7)
    assert store.get_token("H").counter == 8  # type: ignore[union-attr]
    assert not store.accept_hotp_counter("H", 7)
    assert not store.accept_hotp_counter("H", 6)
    assert store.accept_hotp_counter("H", 8)
    store.set_token_status("H", TokenStatus.REVOKED)
    assert not store.accept_hotp_counter("H", 20)


def test_resync_write_only_moves_forward(store: SqlStore) -> None:
    """Resync is a compare-and-set: after a login (or another resync) accepted a newer
    step or counter than the resync read, it writes nothing, so no used code reopens."""
    store.add_user(User(name="alice"))
    store.add_token(_token("T", last_step=100, drift=2))
    assert store.accept_totp_step("T", 600, 0)  # a login between the resync's read and write
    assert not store.resync_token("T", last_step=501, drift=-3)
    t = store.get_token("T")
    assert t is not None and (t.last_step, t.drift) == (600, 0)
    assert not store.resync_token("T", last_step=601, drift=1)  # its first code (600) was used
    assert store.resync_token("T", last_step=700, drift=1)
    assert not store.resync_token("T", last_step=650, drift=5)  # a slower resync racing
    t = store.get_token("T")
    assert t is not None and (t.last_step, t.drift) == (700, 1)
    store.add_token(_token("H", type=TokenType.HOTP, counter=3))
    assert store.accept_hotp_counter("H", 7)  # next expected: 8
    assert not store.resync_token("H", counter=9)  # codes 7, 8: 7 was used
    assert store.get_token("H").counter == 8  # type: ignore[union-attr]
    assert store.resync_token("H", counter=10)  # codes 8, 9
    assert store.get_token("H").counter == 10  # type: ignore[union-attr]
    assert not store.resync_token("nope", counter=1)


# ------------------------------------------------------------------ backup codes
def test_backup_codes_single_use_and_replaced_as_a_set(store: SqlStore) -> None:
    """Each code works once; a new set invalidates the old one; codes are per user."""
    store.add_user(User(name="alice"))
    store.add_user(User(name="bob"))
    store.replace_backup_codes("alice", ["h1", "h2", "h3"], NOW)
    assert store.backup_codes_left("alice") == 3
    assert not store.consume_backup_code("bob", "h1")
    assert store.consume_backup_code("alice", "h1")
    assert not store.consume_backup_code("alice", "h1")
    assert store.backup_codes_left("alice") == 2
    store.replace_backup_codes("alice", ["n1"], NOW + 1)
    assert not store.consume_backup_code("alice", "h2")
    assert store.consume_backup_code("alice", "n1")
    assert store.backup_codes_left("alice") == 0
    with pytest.raises(NotFound):
        store.replace_backup_codes("ghost", ["x"], NOW)


# ------------------------------------------------------------------ challenges
def test_challenge_taken_once(store: SqlStore) -> None:
    """A challenge state answers exactly one take before it expires."""
    ch = Challenge(user="alice", client="vpn", expires_at=NOW + 120, data='{"n": 1}')
    store.put_challenge("s1", ch)
    assert store.take_challenge("s1", NOW) == ch
    assert store.take_challenge("s1", NOW) is None
    assert store.take_challenge("never-issued", NOW) is None


def test_expired_challenge_is_not_returned_and_is_purged(store: SqlStore) -> None:
    """An expired state is refused (even exactly at expiry) and swept from the table."""
    store.put_challenge("old", Challenge("alice", "vpn", NOW + 10))
    store.put_challenge("live", Challenge("bob", "vpn", NOW + 100))
    assert store.take_challenge("old", NOW + 10) is None
    assert store.take_challenge("old", NOW) is None  # purged, not merely refused
    assert store.take_challenge("live", NOW + 11) == Challenge("bob", "vpn", NOW + 100)


# ------------------------------------------------------------------ audit
def test_audit_append_and_query_paging(store: SqlStore) -> None:
    """Audit comes back newest first, filtered by user/since, paged by before_id."""
    for i in range(7):
        store.append_audit(
            AuditEvent(
                at=NOW + i,
                actor="radius:vpn",
                action="auth",
                result="reject" if i % 2 else "accept",
                user="alice" if i < 5 else "bob",
                client="vpn",
                source="10.0.0.1",
                reason="bad_otp",
                detail=f"n={i}",
            )
        )
    page1 = store.query_audit(limit=3)
    assert [e.detail for e in page1] == ["n=6", "n=5", "n=4"]
    assert all(e.id is not None for e in page1)
    page2 = store.query_audit(limit=3, before_id=page1[-1].id)
    assert [e.detail for e in page2] == ["n=3", "n=2", "n=1"]
    page3 = store.query_audit(limit=3, before_id=page2[-1].id)
    assert [e.detail for e in page3] == ["n=0"]
    assert [e.detail for e in store.query_audit(user="bob")] == ["n=6", "n=5"]
    assert [e.detail for e in store.query_audit(user="alice", since=NOW + 3)] == ["n=4", "n=3"]
    first = page3[0]
    assert (
        first.at,
        first.actor,
        first.action,
        first.result,
        first.user,
        first.client,
        first.source,
        first.reason,
    ) == (NOW, "radius:vpn", "auth", "accept", "alice", "vpn", "10.0.0.1", "bad_otp")


def test_audit_is_append_only(store: SqlStore) -> None:
    """The store exposes no method that could rewrite audit rows; the only deletion is
    retention's prune of rows older than a time."""
    names = [m for m in dir(store) if not m.startswith("_") and "audit" in m]
    assert sorted(names) == [
        "append_audit",
        "export_audit",
        "prune_audit",
        "query_audit",
        "verify_audit",
    ]


# ------------------------------------------------------------------ health
def test_ping_and_unreachable_database(store: SqlStore, keyring: Keyring, store_url: str) -> None:
    """ping passes on a live store; an unreachable database raises StoreUnavailable."""
    store.ping()
    if store_url.startswith("sqlite"):
        bad = SqlStore.open(store_url, keyring)
        bad.close()
        return
    # a port nobody listens on
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreUnavailable) as info:
        SqlStore.open(f"postgresql://authd:hunter2@127.0.0.1:{port}/x", keyring)
    assert "hunter2" not in str(info.value)


def test_database_errors_carry_no_parameters(store: SqlStore, store_url: str) -> None:
    """A failing statement becomes StoreUnavailable whose message and cause hold no
    bound parameter (a PIN hash here), because the engine hides parameters."""
    store.add_user(User(name="alice"))
    url = store_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE users RENAME COLUMN pin_hash TO gone"))
    finally:
        engine.dispose()
    with pytest.raises(StoreUnavailable) as info:
        store.set_pin_hash("alice", "PIN-HASH-SECRET")
    assert "PIN-HASH-SECRET" not in str(info.value)
    assert "PIN-HASH-SECRET" not in str(info.value.__cause__)


def test_repr_hides_the_database_password(postgres_db_url: str, keyring: Keyring) -> None:
    """repr(store) names the database but never its password."""
    url = postgres_db_url.replace("authd@", "authd:s3cret-pw@", 1)  # trust auth ignores it
    s = SqlStore.open(url, keyring)
    try:
        assert "s3cret-pw" not in repr(s)
        assert "127.0.0.1" in repr(s)
    finally:
        s.close()


def test_long_and_unicode_names_behave_alike_on_both_backends(store: SqlStore) -> None:
    """No backend-specific length limit or case folding: a 1000-char name and names
    differing only in non-ASCII case are stored and found exactly."""
    long_name = "u" * 1000
    store.ensure_user(long_name, "ldap", NOW)
    store.add_user(User(name="jörg"))
    store.add_user(User(name="JÖRG"))
    assert store.get_user(long_name) is not None
    assert [o.user.name for o in store.list_users("j*")] == ["jörg"]
    assert store.record_failure(long_name, NOW, 3, 60) == LockState(1, None)


def test_success_clears_an_expired_lock_but_never_a_running_one(store: SqlStore) -> None:
    """After expiry a success leaves (0, None) like core.lockout.after_success; a
    success racing a fresh lock from another node zeroes the count but the lock holds."""
    store.add_user(User(name="alice"))
    store.add_user(User(name="bob"))
    store.record_failure("alice", NOW, 1, 10)
    store.record_attempt("alice", NOW + 11, "10.0.0.1", "vpn", success=True)
    a = store.get_user("alice")
    assert a is not None and (a.failures, a.locked_until) == (0, None)
    store.record_failure("bob", NOW, 1, 10)
    store.record_attempt("bob", NOW + 5, "10.0.0.1", "vpn", success=True)
    b = store.get_user("bob")
    assert b is not None and (b.failures, b.locked_until) == (0, NOW + 10)


def test_rename_user_moves_tokens_and_codes_and_refuses_a_taken_name(store: SqlStore) -> None:
    """One transaction moves the row and what hangs on it; a taken name changes nothing."""
    store.add_user(User(name="alice", email="a@example.org", created_at=NOW))
    store.add_user(User(name="bob", created_at=NOW))
    store.add_token(_token("T1"))
    store.replace_backup_codes("alice", ["h1", "h2"], NOW)
    with pytest.raises(AlreadyExists):
        store.rename_user("alice", "bob")
    assert [t.user for t in store.list_tokens()] == ["alice"]
    assert store.rename_user("alice", "alicia") is True
    assert store.get_user("alice") is None
    assert store.get_user("alicia").email == "a@example.org"  # type: ignore[union-attr]
    assert [t.user for t in store.list_tokens()] == ["alicia"]
    assert store.backup_codes_left("alicia") == 2
    assert store.rename_user("ghost", "spirit") is False
