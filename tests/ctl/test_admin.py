"""AdminOps against hand-written fakes: each operator action, its audit line, its errors."""

from __future__ import annotations

import base64
import hashlib
import re
from urllib.parse import parse_qs, urlparse

import pytest
from twisted.internet.task import Clock

from authd.admin import AdminOps
from authd.auth.interfaces import AuthRequest, Decision, Outcome, Reason
from authd.config.model import BackupCodesConfig, Config, OtpConfig
from authd.core import backup_codes, otp, pin
from authd.core.errors import AlreadyExists, InvalidInput, NotFound
from authd.core.model import Algorithm, TokenStatus, TokenType
from tests.fakes import FakeBackend, FakeDirectoryUser, FakeKeyring, FakeStore

ACTOR = "authctl:tester"
SECRET_B32 = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # 160 bits


def fake_hasher(password: str) -> str:
    """Stands in for argon2id: one-way, so a leak check can still find the clear text."""
    return "sha256$" + hashlib.sha256(password.encode()).hexdigest()


class FakeEngine:
    """Records the requests it is asked to decide and answers a fixed decision."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.calls: list[tuple[AuthRequest, float]] = []

    def decide(self, req: AuthRequest, now: float) -> Decision:
        self.calls.append((req, now))
        return self.decision


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def ops(store: FakeStore, clock: Clock) -> AdminOps:
    return AdminOps(Config(), store, FakeKeyring(), clock.seconds, password_hasher=fake_hasher)


def seed_of(uri: str) -> bytes:
    secret = parse_qs(urlparse(uri).query)["secret"][0]
    return base64.b32decode(secret + "=" * (-len(secret) % 8))


def test_add_user_stores_hash_and_audits_without_password(ops: AdminOps, store: FakeStore) -> None:
    """A local user gets a hashed password and profile; the audit line names the user only."""
    detail = ops.add_user(
        ACTOR, "alice", password="s3cret-pw", email="a@example.org", groups=["vpn", "vpn"]
    )
    assert detail.user == "alice" and detail.has_password and detail.groups == ("vpn",)
    assert store.users["alice"].password_hash == fake_hasher("s3cret-pw")
    (event,) = store.audit
    assert (event.action, event.result, event.user, event.actor) == (
        "user.add",
        "ok",
        "alice",
        ACTOR,
    )
    assert "s3cret-pw" not in repr(event) and "s3cret-pw" not in repr(detail.to_json())


def test_add_user_twice_is_already_exists_and_audited_as_error(
    ops: AdminOps, store: FakeStore
) -> None:
    """A taken name raises AlreadyExists and leaves an `error` audit line."""
    ops.add_user(ACTOR, "bob")
    with pytest.raises(AlreadyExists):
        ops.add_user(ACTOR, "bob", password="other")
    assert [(e.action, e.result, e.reason) for e in store.audit] == [
        ("user.add", "ok", ""),
        ("user.add", "error", "AlreadyExists"),
    ]


@pytest.mark.parametrize("name", ["", "a b", "x*", "tab\there", "a" * 256])
def test_add_user_refuses_bad_names(ops: AdminOps, name: str) -> None:
    """Names with whitespace, control characters or the list wildcard are refused."""
    with pytest.raises(InvalidInput):
        ops.add_user(ACTOR, name)


def test_add_user_refuses_empty_password(ops: AdminOps, store: FakeStore) -> None:
    """An empty password must never authenticate, so it is never stored."""
    with pytest.raises(InvalidInput):
        ops.add_user(ACTOR, "carol", password="")
    assert "carol" not in store.users


def test_list_users_status_columns_and_wildcard(
    ops: AdminOps, store: FakeStore, clock: Clock
) -> None:
    """Each derived status appears as the contract names it; `*` filters by name."""
    for name in ("u-active", "u-locked", "u-none", "u-notoken", "u-disabled", "other"):
        ops.add_user(ACTOR, name)
    ops.add_token(ACTOR, "u-active", "totp")
    ops.add_token(ACTOR, "u-locked", "totp")
    store.record_failure("u-locked", clock.seconds(), 1, 600)
    tok = ops.add_token(ACTOR, "u-notoken", "hotp").token
    ops.revoke_token(ACTOR, tok.serial)
    ops.disable_user(ACTOR, "u-disabled")
    rows = {r.user: r for r in ops.list_users(ACTOR, "u-*")}
    assert {u: r.status for u, r in rows.items()} == {
        "u-active": "active",
        "u-locked": "locked",
        "u-none": "unregistered",
        "u-notoken": "no-token",
        "u-disabled": "disabled",
    }
    assert rows["u-active"].tokens == 1 and rows["u-notoken"].tokens == 0
    assert [r.user for r in ops.list_users(ACTOR, "U-*")] == []  # case-sensitive
    assert len(ops.list_users(ACTOR, None, limit=2)) == 2


def test_add_token_generates_serial_seed_and_working_uri(
    ops: AdminOps, store: FakeStore, clock: Clock
) -> None:
    """Without --secret a fresh seed and a TOTP<8 hex> serial are drawn; the URI's secret
    is the stored seed, so an app scanning it shows codes the server expects."""
    ops.add_user(ACTOR, "dave")
    added = ops.add_token(ACTOR, "dave", "totp", algorithm="sha256", digits=8, period=60)
    assert re.fullmatch(r"TOTP[0-9A-F]{8}", added.token.serial)
    stored = store.tokens[added.token.serial]
    assert stored.seed == seed_of(added.uri) and len(stored.seed) == 32
    assert (stored.algorithm, stored.digits, stored.period, stored.user) == (
        Algorithm.SHA256,
        8,
        60,
        "dave",
    )
    assert added.uri.startswith("otpauth://totp/authd:dave?")
    assert "period=60" in added.uri and "digits=8" in added.uri
    assert added.uri not in repr(added)
    assert added.to_json()["otpauth_uri"] == added.uri
    (event,) = [e for e in store.audit if e.action == "token.add"]
    assert event.detail == added.token.serial  # the generated serial is on record
    assert base64.b32encode(stored.seed).decode().rstrip("=") not in repr(event)


def test_add_token_with_given_secret_and_serial(ops: AdminOps, store: FakeStore) -> None:
    """An operator-supplied base32 secret (spaces, lower case) and serial are kept."""
    ops.add_user(ACTOR, "erin")
    added = ops.add_token(
        ACTOR,
        "erin",
        "HOTP",
        secret_b32=SECRET_B32.lower()[:16] + " " + SECRET_B32.lower()[16:],
        serial="HW-0001",
    )
    token = store.tokens["HW-0001"]
    assert token.type is TokenType.HOTP and token.seed == otp.parse_base32_secret(SECRET_B32)
    assert added.token.counter == 0 and added.token.period is None
    with pytest.raises(AlreadyExists):
        ops.add_token(ACTOR, "erin", "hotp", serial="HW-0001")


@pytest.mark.parametrize("secret", ["NOT*BASE32!", "JBSWY3DPEHPK3PXP"])
def test_add_token_bad_secret_never_echoed(ops: AdminOps, secret: str) -> None:
    """Invalid or short (< 128 bit) secrets are refused and the error does not repeat them."""
    ops.add_user(ACTOR, "frank")
    with pytest.raises(InvalidInput) as info:
        ops.add_token(ACTOR, "frank", "totp", secret_b32=secret)
    assert secret not in str(info.value) and secret.lower() not in str(info.value).lower()


@pytest.mark.parametrize(
    "kwargs", [{"digits": 7}, {"period": 5}, {"algorithm": "MD5"}, {"serial": "a b"}]
)
def test_add_token_refuses_bad_parameters(ops: AdminOps, kwargs: dict[str, object]) -> None:
    """Digits other than 6/8, silly periods, unknown algorithms and odd serials fail."""
    ops.add_user(ACTOR, "gina")
    with pytest.raises(InvalidInput):
        ops.add_token(ACTOR, "gina", "totp", **kwargs)  # type: ignore[arg-type]


def test_add_token_for_directory_user_records_them_first(store: FakeStore, clock: Clock) -> None:
    """A user only the directory knows is recorded (source: the backend's name, as the
    engine records it) on enrolment;
    a name nobody knows, or an unreachable directory, is NotFound (fail closed)."""
    directory = FakeBackend(
        "fake-ldap",
        {"hank": FakeDirectoryUser("hank-pw", ("staff",), {"email": "hank@example.org"})},
    )
    ops = AdminOps(Config(), store, FakeKeyring(), clock.seconds, backends=[directory])
    ops.add_token(ACTOR, "hank", "totp")
    user = store.users["hank"]
    assert (user.source, user.groups, user.email) == ("fake-ldap", ("staff",), "hank@example.org")
    with pytest.raises(NotFound):
        ops.add_token(ACTOR, "nobody", "totp")
    down = AdminOps(
        Config(),
        store,
        FakeKeyring(),
        clock.seconds,
        backends=[FakeBackend("fake-ldap", {"ivy": FakeDirectoryUser("ivy-pw")}, unreachable=True)],
    )
    with pytest.raises(NotFound):
        down.add_token(ACTOR, "ivy", "totp")
    assert "ivy" not in store.users


def test_add_token_unknown_user_without_directory(ops: AdminOps, store: FakeStore) -> None:
    """With no directory to ask, an unknown user is NotFound and nothing is stored."""
    with pytest.raises(NotFound):
        ops.add_token(ACTOR, "ghost", "totp")
    assert store.tokens == {} and store.audit[-1].result == "error"


def test_token_status_changes_and_revoke_is_final(ops: AdminOps, store: FakeStore) -> None:
    """disable/enable toggle; revoke is final; unknown serials are NotFound."""
    ops.add_user(ACTOR, "ivan")
    serial = ops.add_token(ACTOR, "ivan", "totp").token.serial
    ops.disable_token(ACTOR, serial)
    assert ops.show_token(ACTOR, serial).status == "disabled"
    ops.enable_token(ACTOR, serial)
    assert store.tokens[serial].status is TokenStatus.ACTIVE
    ops.revoke_token(ACTOR, serial)
    with pytest.raises(InvalidInput):
        ops.enable_token(ACTOR, serial)
    assert store.tokens[serial].status is TokenStatus.REVOKED
    with pytest.raises(NotFound):
        ops.disable_token(ACTOR, "NOPE")
    actions = [
        (e.action, e.result, e.user, e.detail)
        for e in store.audit
        if e.action.startswith("token.") and e.action != "token.add"
    ]
    assert actions == [
        ("token.disable", "ok", "ivan", serial),
        ("token.enable", "ok", "ivan", serial),
        ("token.revoke", "ok", "ivan", serial),
        ("token.enable", "error", "ivan", serial),
        ("token.disable", "error", "", "NOPE"),
    ]


def test_resync_totp_remembers_drift_and_burns_both_codes(
    ops: AdminOps, store: FakeStore, clock: Clock
) -> None:
    """Two consecutive codes of a clock 2 hours fast re-align the token: drift and the
    step of the second code are stored, so neither code works again."""
    ops.add_user(ACTOR, "judy")
    serial = ops.add_token(ACTOR, "judy", "totp", secret_b32=SECRET_B32).token.serial
    seed = store.tokens[serial].seed
    fast = clock.seconds() + 7200
    c1, c2 = otp.totp(seed, fast), otp.totp(seed, fast + 30)
    info = ops.resync_token(ACTOR, serial, c1, c2)
    now_step = otp.time_step(clock.seconds(), 30)
    assert info.drift == 241 and store.tokens[serial].last_step == now_step + 241
    with pytest.raises(InvalidInput):
        ops.resync_token(ACTOR, serial, c1, c2)  # already used: after last_step only


def test_resync_hotp_sets_next_counter(ops: AdminOps, store: FakeStore) -> None:
    """HOTP codes 500 and 501 set the next expected counter to 502."""
    ops.add_user(ACTOR, "kim")
    serial = ops.add_token(ACTOR, "kim", "hotp", secret_b32=SECRET_B32).token.serial
    seed = store.tokens[serial].seed
    info = ops.resync_token(ACTOR, serial, otp.hotp(seed, 500), otp.hotp(seed, 501))
    assert info.counter == 502 == store.tokens[serial].counter


def test_resync_refuses_a_code_already_used(
    ops: AdminOps, store: FakeStore, clock: Clock
) -> None:
    """RFC 6238 §5.2: a resync whose first code is the last accepted one is refused
    (nothing written, an audit error row without the codes); the two codes after it work."""
    ops.add_user(ACTOR, "jon")
    serial = ops.add_token(ACTOR, "jon", "totp", secret_b32=SECRET_B32).token.serial
    seed = store.tokens[serial].seed
    used = otp.time_step(clock.seconds(), 30) + 40  # a login accepted this step
    assert store.accept_totp_step(serial, used, 40)
    codes = [otp.totp(seed, (used + i) * 30) for i in range(3)]
    with pytest.raises(InvalidInput):
        ops.resync_token(ACTOR, serial, codes[0], codes[1])
    assert (store.tokens[serial].last_step, store.tokens[serial].drift) == (used, 40)
    info = ops.resync_token(ACTOR, serial, codes[1], codes[2])
    assert (info.drift, store.tokens[serial].last_step) == (42, used + 2)
    rows = [(e.action, e.result, e.reason) for e in store.audit if e.action == "token.resync"]
    assert rows == [("token.resync", "error", "InvalidInput"), ("token.resync", "ok", "")]
    assert not any(c in repr(store.audit) for c in codes)


@pytest.mark.parametrize("codes", [("12345", "123456"), ("123456", "123456"), ("000000", "111111")])
def test_resync_refuses_malformed_or_unmatched_codes(ops: AdminOps, codes: tuple[str, str]) -> None:
    """Wrong length, twice the same code, or codes that are not consecutive all fail."""
    ops.add_user(ACTOR, "leo")
    serial = ops.add_token(ACTOR, "leo", "totp", secret_b32=SECRET_B32).token.serial
    with pytest.raises(InvalidInput):
        ops.resync_token(ACTOR, serial, *codes)


def test_assign_and_unassign(ops: AdminOps, store: FakeStore) -> None:
    """A token moves to another user and back to nobody; unknown users are NotFound."""
    ops.add_user(ACTOR, "mia")
    ops.add_user(ACTOR, "ned")
    serial = ops.add_token(ACTOR, "mia", "hotp").token.serial
    ops.assign_token(ACTOR, serial, "ned")
    assert store.tokens[serial].user == "ned"
    ops.unassign_token(ACTOR, serial)
    assert store.tokens[serial].user is None
    assert [t.serial for t in ops.list_tokens(ACTOR, None)] == [serial]
    assert ops.list_tokens(ACTOR, "ned") == []
    with pytest.raises(NotFound):
        ops.assign_token(ACTOR, serial, "nobody")
    with pytest.raises(NotFound):
        ops.list_tokens(ACTOR, "nobody")


def test_unlock_reset_disable_enable(ops: AdminOps, store: FakeStore, clock: Clock) -> None:
    """unlock clears a lock that never expires; reset drops the OTP registration;
    unknown users are NotFound for each."""
    ops.add_user(ACTOR, "olga")
    ops.add_token(ACTOR, "olga", "totp")
    store.record_failure("olga", clock.seconds(), 1, None)
    assert ops.show_user(ACTOR, "olga").status == "locked"
    ops.unlock_user(ACTOR, "olga")
    assert ops.show_user(ACTOR, "olga").status == "active"
    ops.reset_user(ACTOR, "olga")
    shown = ops.show_user(ACTOR, "olga")
    assert (shown.status, shown.tokens) == ("unregistered", ())
    ops.disable_user(ACTOR, "olga")
    assert ops.show_user(ACTOR, "olga").disabled
    ops.enable_user(ACTOR, "olga")
    assert not ops.show_user(ACTOR, "olga").disabled
    for action in (
        ops.unlock_user,
        ops.reset_user,
        ops.disable_user,
        ops.enable_user,
        ops.show_user,
        ops.remove_pin,
    ):
        with pytest.raises(NotFound):
            action(ACTOR, "nobody")


def test_locked_forever_serialises_as_never(ops: AdminOps, store: FakeStore, clock: Clock) -> None:
    """JSON has no infinity: a lock until an operator unlocks shows as `never`."""
    ops.add_user(ACTOR, "pia")
    store.record_failure("pia", clock.seconds(), 1, None)
    assert ops.show_user(ACTOR, "pia").to_json()["locked_until"] == "never"


def test_audit_pages_newest_first(ops: AdminOps, clock: Clock) -> None:
    """Paging with next_before_id walks the whole trail without overlap."""
    for i in range(5):
        clock.advance(1)
        ops.add_user(ACTOR, f"user{i}")
    first = ops.audit(ACTOR, limit=3)
    assert [e.user for e in first.events] == ["user4", "user3", "user2"]
    second = ops.audit(ACTOR, limit=3, before_id=first.next_before_id)
    assert [e.user for e in second.events] == ["user1", "user0"]
    assert second.next_before_id is None
    assert [e.user for e in ops.audit(ACTOR, user="user1").events] == ["user1"]
    assert len(ops.audit(ACTOR, since=clock.seconds() - 1).events) == 2
    with pytest.raises(InvalidInput):
        ops.audit(ACTOR, limit=0)


def test_rotate_key_rotates_once_and_reports(clock: Clock) -> None:
    """The store rotates once (it owns the key-file-then-seeds order); the new key id and
    the count of re-encrypted seeds are returned."""
    keyring = FakeKeyring()
    store = FakeStore(keyring)
    ops = AdminOps(Config(), store, keyring, clock.seconds)
    ops.add_user(ACTOR, "quinn")
    ops.add_token(ACTOR, "quinn", "totp")
    result = ops.rotate_key(ACTOR)
    assert (result.key_id, result.reencrypted, keyring.rotated, store.rotations) == ("k1", 1, 1, 1)
    assert store.audit[-1].action == "key.rotate"


def test_test_auth_hands_the_engine_an_authctl_request(store: FakeStore, clock: Clock) -> None:
    """test_auth builds an AuthRequest from frontend `authctl` and reports the reason."""
    engine = FakeEngine(Decision(Outcome.REJECT, Reason.REPLAY, "rita", message="Denied"))
    ops = AdminOps(Config(), store, FakeKeyring(), clock.seconds, engine=engine)
    result = ops.test_auth(ACTOR, "rita", "pw", "123456")
    ((req, now),) = engine.calls
    assert req.client == "tester"  # the engine audits it as authctl:tester
    assert (req.frontend, req.user, req.password, req.otp, now) == (
        "authctl",
        "rita",
        "pw",
        "123456",
        clock.seconds(),
    )
    assert (result.outcome, result.reason, result.accepted) == ("reject", "replay", False)
    assert ops.test_auth(ACTOR, "rita", "pw", "").to_json()["result"] == "reject"
    assert engine.calls[-1][0].otp is None


def test_test_auth_without_engine_is_refused(ops: AdminOps) -> None:
    """Wiring mistakes surface as an error, never as a silent accept."""
    with pytest.raises(InvalidInput):
        ops.test_auth(ACTOR, "sam", "pw", None)


def test_set_pin_checks_policy_and_stores_keyed_hash(store: FakeStore, clock: Clock) -> None:
    """A trivial PIN is refused with the rule (not the PIN); a good one is stored as the
    keyed hash core.pin computes; remove_pin clears it. Neither audit line holds the PIN."""
    keyring = FakeKeyring()
    ops = AdminOps(Config(), store, keyring, clock.seconds)
    ops.add_user(ACTOR, "tina")
    with pytest.raises(InvalidInput) as info:
        ops.set_pin(ACTOR, "tina", "1234")
    assert "1234" not in str(info.value)
    ops.set_pin(ACTOR, "tina", "7392")
    assert store.users["tina"].pin_hash == pin.hash_pin("7392", keyring.hash_key, "tina")
    assert ops.show_user(ACTOR, "tina").status == "no-token"
    ops.remove_pin(ACTOR, "tina")
    assert store.users["tina"].pin_hash is None
    assert [(e.action, e.result) for e in store.audit[1:]] == [
        ("pin.set", "error"),
        ("pin.set", "ok"),
        ("pin.remove", "ok"),
    ]
    assert not any("7392" in repr(e) or "1234" in repr(e) for e in store.audit)


def test_generate_backup_codes_replaces_the_set(store: FakeStore, clock: Clock) -> None:
    """`otp.backup_codes.count` fresh codes; only their keyed hashes reach the store, and
    a second set replaces the first."""
    keyring = FakeKeyring()
    config = Config(otp=OtpConfig(backup_codes=BackupCodesConfig(count=4)))
    ops = AdminOps(config, store, keyring, clock.seconds)
    ops.add_user(ACTOR, "uma")
    first = ops.generate_backup_codes(ACTOR, "uma")
    assert len(first.codes) == 4 and len(set(first.codes)) == 4
    assert store.backup_codes["uma"] == [
        backup_codes.hash_code(c, keyring.hash_key) for c in first.codes
    ]
    second = ops.generate_backup_codes(ACTOR, "uma")
    assert not set(first.codes) & set(second.codes)
    assert not store.consume_backup_code(
        "uma", backup_codes.hash_code(first.codes[0], keyring.hash_key)
    )
    assert first.codes[0] not in repr(first)
    assert not any(c in repr(store.audit) for c in first.codes + second.codes)
    with pytest.raises(NotFound):
        ops.generate_backup_codes(ACTOR, "nobody")
