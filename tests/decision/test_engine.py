"""Engine.decide, rule by rule, synchronous, at a fixed `now` (no reactor, no sleeping)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher

from authd.auth.interfaces import Challenge, Outcome, Reason
from authd.config.model import GroupPolicy
from authd.core.errors import StoreUnavailable
from authd.core.model import Token, TokenStatus, TokenType, User
from authd.decision.engine import Engine
from authd.decision.request import GENERIC_REJECT, invalid_text, state_hash
from authd.metrics import Metrics
from tests.fakes import FakeBackend, FakeDirectoryUser, FakeStore, WrappedStore
from tests.world import NOW, PASSWORD, World

# ------------------------------------------------------------------ inline


def test_inline_totp_accepts_and_records(world: World) -> None:
    """Password followed by the current TOTP code is accepted; the attempt and an audit
    event are recorded, the step is burnt, and the user's groups come back."""
    world.user()
    tok = world.token()
    d = world.decide(PASSWORD + world.code(tok))
    assert (d.outcome, d.reason) == (Outcome.ACCEPT, Reason.OK)
    assert d.groups == ("staff",)
    user = world.stored_user()
    assert user.last_success is not None and user.last_success.client == "vpn"
    assert world.store.get_token(tok.serial).last_step == int(NOW // 30)  # type: ignore[union-attr]
    events = world.store.query_audit(user="alice")
    assert [(e.action, e.result, e.reason, e.actor) for e in events] == [
        ("auth", "accept", "ok", "radius:vpn")
    ]


def test_inline_eight_digit_totp(world: World) -> None:
    """An 8-digit token splits off 8 digits, even when the password ends in digits."""
    world.user()
    world.directory.users["alice"].password = "pw123"
    tok = world.token(digits=8)
    d = world.decide("pw123" + world.code(tok))
    assert d.reason is Reason.OK


def test_inline_totp_within_skew(world: World) -> None:
    """A code from the previous step (clock drift within skew) is accepted."""
    world.user()
    tok = world.token()
    assert world.decide(PASSWORD + world.code(tok, at=NOW - 30)).reason is Reason.OK


def test_inline_hotp_advances_counter_and_refuses_replay(world: World) -> None:
    """HOTP within look-ahead is accepted and moves the counter past it; the same code
    again is a replay."""
    world.user()
    tok = world.token(type=TokenType.HOTP, counter=5)
    code = world.code(tok, counter=7)
    assert world.decide(PASSWORD + code).reason is Reason.OK
    assert world.store.get_token(tok.serial).counter == 8  # type: ignore[union-attr]
    d = world.decide(PASSWORD + code)
    assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.REPLAY)


def test_totp_replay_rejected(world: World) -> None:
    """A valid TOTP code for a step already used is refused as REPLAY (RFC 6238 §5.2)."""
    world.user()
    tok = world.token()
    code = world.code(tok)
    assert world.decide(PASSWORD + code).reason is Reason.OK
    d = world.decide(PASSWORD + code, at=NOW + 5)
    assert (d.outcome, d.reason, d.message) == (Outcome.REJECT, Reason.REPLAY, GENERIC_REJECT)


def test_replays_are_not_counted_toward_the_lockout(world: World) -> None:
    """max_attempts 1: a used code sent again (read as a replay, or losing the
    compare-and-set) is audited as a replay and locks nobody; a wrong code still locks."""
    world.set("otp.lockout.max_attempts", 1)
    world.user()
    tok = world.token()
    code = world.code(tok)
    assert world.decide(PASSWORD + code).reason is Reason.OK
    for _ in range(3):
        assert world.decide(PASSWORD + code, at=NOW + 5).reason is Reason.REPLAY
    user = world.stored_user()
    assert (user.failures, user.locked_until) == (0, None)
    assert [e.reason for e in world.store.query_audit(user="alice")][:3] == ["replay"] * 3
    assert world.decide(PASSWORD + "000000", at=NOW + 6).reason is Reason.BAD_OTP
    assert world.stored_user().failures == 1
    assert world.decide(PASSWORD + world.code(tok, at=NOW + 30), at=NOW + 30).reason is (
        Reason.LOCKED
    )


def test_wrong_code_rejected_and_counted(world: World) -> None:
    """Right password, wrong code: BAD_OTP, one failure recorded toward lockout."""
    world.user()
    tok = world.token()
    wrong = f"{(int(world.code(tok)) + 1) % 10**6:06d}"
    d = world.decide(PASSWORD + wrong)
    assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.BAD_OTP)
    assert world.stored_user().failures == 1


def test_wrong_password_with_right_code_does_not_burn_code(world: World) -> None:
    """The code is consumed only after the first factor passed: a wrong password leaves
    the step usable and does not count as a second-factor failure."""
    world.user()
    tok = world.token()
    code = world.code(tok)
    d = world.decide("wrong" + code)
    assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.BAD_PASSWORD)
    assert world.stored_user().failures == 0
    assert world.decide(PASSWORD + code).reason is Reason.OK


@pytest.mark.parametrize("position", ["before", "after"])
def test_inline_with_pin(world: World, position: str) -> None:
    """With a server-side PIN the user types password + PIN + OTP (or OTP + PIN); a
    wrong PIN with a right OTP is BAD_PIN and counts as a failure."""
    world.set("otp.pin.position", position)
    world.user()
    tok = world.token()
    pin = world.pin()
    code = world.code(tok)
    second = pin + code if position == "before" else code + pin
    assert world.decide(PASSWORD + second).reason is Reason.OK
    other = world.code(tok, at=NOW + 30)
    bad = "8264" + other if position == "before" else other + "8264"
    d = world.decide(PASSWORD + bad, at=NOW + 30)
    assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.BAD_PIN)
    assert world.stored_user().failures == 1


def test_pin_user_without_pin_typed_is_rejected(world: World) -> None:
    """A user with a PIN who types only password + OTP does not pass."""
    world.user()
    tok = world.token()
    world.pin()
    d = world.decide(PASSWORD + world.code(tok))
    assert d.outcome is Outcome.REJECT


def test_pin_of_other_length_is_found(world: World) -> None:
    """PIN lengths between min and max are all tried (here a 6-digit PIN)."""
    world.user()
    tok = world.token()
    pin = world.pin(pin="480615")
    assert world.decide(PASSWORD + pin + world.code(tok)).reason is Reason.OK


# ------------------------------------------------------------------ backup codes


def test_backup_code_inline_is_single_use(world: World) -> None:
    """password + backup code passes once; the same code again fails and counts."""
    world.user()
    world.token()
    codes = world.backup_codes()
    d = world.decide(PASSWORD + codes[0])
    assert (d.outcome, d.reason) == (Outcome.ACCEPT, Reason.OK_BACKUP_CODE)
    d = world.decide(PASSWORD + codes[0])
    assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.BAD_OTP)
    assert world.stored_user().failures == 1
    assert world.store.backup_codes_left("alice") == 2


def test_backup_code_without_token(world: World) -> None:
    """A user with backup codes but no token can still log in with one (and is not
    treated as a no-token user)."""
    world.user()
    codes = world.backup_codes()
    typed = PASSWORD + " " + codes[1].upper().replace("-", " ")
    world.directory.users["alice"].password = PASSWORD + " "
    assert world.decide(typed).reason is Reason.OK_BACKUP_CODE


def test_backup_code_as_separate_otp(world: World) -> None:
    """HTTP: a backup code in the `otp` field is used without splitting."""
    world.user()
    codes = world.backup_codes()
    d = world.decide(PASSWORD, otp=codes[2], frontend="http")
    assert d.reason is Reason.OK_BACKUP_CODE


def test_wrong_otp_not_mistaken_for_backup_code(world: World) -> None:
    """A password ending in backup-code symbols followed by a wrong OTP still counts as
    an OTP failure (no lockout bypass through the backup-code reading)."""
    world.user()
    world.directory.users["alice"].password = "xkcdpasswordmnbvcxz"
    tok = world.token()
    world.backup_codes()
    wrong = f"{(int(world.code(tok)) + 1) % 10**6:06d}".replace("0", "2").replace("1", "3")
    d = world.decide("xkcdpasswordmnbvcxz" + wrong)
    assert d.reason is Reason.BAD_OTP
    assert world.stored_user().failures == 1


# ------------------------------------------------------------------ lockout


def test_lockout_after_max_attempts_and_auto_unlock(world: World) -> None:
    """max_attempts failures lock the user (stats report it once); a valid code is then
    refused as LOCKED; after the deadline (clock moved, no sleep) it works again."""
    world.set("otp.lockout.max_attempts", 3)
    world.set("otp.lockout.auto_unlock_after", 600.0)
    world.user()
    tok = world.token()
    locks = []
    for i in range(3):
        d = world.decide(PASSWORD + "000000", at=NOW + i)
        assert d.reason is Reason.BAD_OTP
        assert world.last_stats is not None
        locks.append(world.last_stats.locked_now)
    assert locks == [False, False, True]
    d = world.decide(PASSWORD + world.code(tok, at=NOW + 3), at=NOW + 3)
    assert (d.outcome, d.reason, d.message) == (Outcome.REJECT, Reason.LOCKED, GENERIC_REJECT)
    later = NOW + 2 + 600
    assert world.decide(PASSWORD + world.code(tok, at=later), at=later).reason is Reason.OK
    assert world.stored_user().failures == 0


def test_locked_user_still_runs_first_factor_once(world: World) -> None:
    """A locked user costs the same first-factor check as anyone (timing tells nothing),
    and a valid code is not consumed while locked."""
    world.set("otp.lockout.max_attempts", 1)
    world.user()
    tok = world.token()
    world.decide(PASSWORD + "000000")
    before = world.binds
    code = world.code(tok, at=NOW + 30)
    d = world.decide(PASSWORD + code, at=NOW + 30)
    assert d.reason is Reason.LOCKED
    assert world.binds == before + 1
    assert world.store.get_token(tok.serial).last_step < int((NOW + 30) // 30)  # type: ignore[union-attr]


def test_lock_until_operator_unlocks(world: World) -> None:
    """auto_unlock_after None: still locked a year later."""
    world.set("otp.lockout.max_attempts", 1)
    world.set("otp.lockout.auto_unlock_after", None)
    world.user()
    tok = world.token()
    world.decide(PASSWORD + "000000")
    later = NOW + 365 * 86400
    assert world.decide(PASSWORD + world.code(tok, at=later), at=later).reason is Reason.LOCKED


def test_success_resets_failure_count(world: World) -> None:
    """A success zeroes the consecutive failure count."""
    world.user()
    tok = world.token()
    world.decide(PASSWORD + "000000")
    world.decide(PASSWORD + "000001")
    assert world.stored_user().failures == 2
    assert world.decide(PASSWORD + world.code(tok)).reason is Reason.OK
    assert world.stored_user().failures == 0


# ------------------------------------------------------------------ challenge


def test_challenge_round_trip(world: World) -> None:
    """challenge mode: right password -> CHALLENGE with a fresh 32-byte State and the
    configured message; answering with the code -> ACCEPT; the State is single use."""
    world.user()
    tok = world.token()
    first = world.decide(PASSWORD, mode="challenge")
    assert (first.outcome, first.reason) == (Outcome.CHALLENGE, Reason.CHALLENGE_ISSUED)
    assert first.state is not None and len(first.state) == 32
    assert first.message == world.config.radius.challenge_message
    answer = world.decide(world.code(tok), state=first.state, mode="challenge", at=NOW + 10)
    assert (answer.outcome, answer.reason, answer.groups) == (Outcome.ACCEPT, Reason.OK, ("staff",))
    again = world.decide(
        world.code(tok, at=NOW + 40), state=first.state, mode="challenge", at=NOW + 40
    )
    assert (again.outcome, again.reason) == (Outcome.REJECT, Reason.BAD_STATE)
    assert world.binds == 1


def test_challenge_states_differ(world: World) -> None:
    """Each challenge gets its own unguessable State."""
    world.user()
    world.token()
    a = world.decide(PASSWORD, mode="challenge").state
    b = world.decide(PASSWORD, mode="challenge").state
    assert a is not None and b is not None and a != b


@pytest.mark.parametrize("case", ["altered", "expired", "other-client", "other-user"])
def test_challenge_bad_state(world: World, case: str) -> None:
    """A State that was altered, expired, or is answered by another client or for another
    user is BAD_STATE, even with a valid code."""
    world.user()
    world.user("bob")
    tok = world.token()
    world.token("bob")
    first = world.decide(PASSWORD, mode="challenge")
    assert first.state is not None
    state, at, kw = first.state, NOW + 5, {}
    if case == "altered":
        state = bytes([state[0] ^ 1]) + state[1:]
    elif case == "expired":
        at = NOW + world.config.radius.challenge_ttl + 1
    elif case == "other-client":
        kw = {"client": "other-nas"}
    else:
        kw = {"user": "bob"}
    d = world.decide(world.code(tok, at=at), state=state, mode="challenge", at=at, **kw)
    assert (d.outcome, d.reason, d.message) == (Outcome.REJECT, Reason.BAD_STATE, GENERIC_REJECT)


def test_challenge_wrong_password_gives_no_state(world: World) -> None:
    """A wrong password in challenge mode is a plain reject, no State."""
    world.user()
    world.token()
    d = world.decide("nope", mode="challenge")
    assert (d.outcome, d.reason, d.state) == (Outcome.REJECT, Reason.BAD_PASSWORD, None)


def test_challenge_answer_wrong_code_counts(world: World) -> None:
    """A wrong answer to a challenge is a second-factor failure."""
    world.user()
    world.token()
    first = world.decide(PASSWORD, mode="challenge")
    d = world.decide("000000", state=first.state, mode="challenge")
    assert d.reason is Reason.BAD_OTP
    assert world.stored_user().failures == 1


def test_challenge_answer_with_pin_and_backup(world: World) -> None:
    """The challenge answer may be PIN+OTP, or a backup code."""
    world.user()
    tok = world.token()
    pin = world.pin()
    codes = world.backup_codes()
    first = world.decide(PASSWORD, mode="challenge")
    d = world.decide(pin + world.code(tok), state=first.state, mode="challenge")
    assert d.reason is Reason.OK
    second = world.decide(PASSWORD, mode="challenge", at=NOW + 1)
    d = world.decide(codes[0], state=second.state, mode="challenge", at=NOW + 2)
    assert d.reason is Reason.OK_BACKUP_CODE


def test_challenge_state_stored_by_hash(world: World) -> None:
    """The store receives sha256(State), never the State itself."""
    store = FakeStore()
    w = World(store, world.hash_key, FakeBackend("dir"))
    w.user()
    w.token()
    first = w.decide(PASSWORD, mode="challenge")
    assert first.state is not None
    assert list(store.challenges) == [state_hash(first.state)]
    ch = store.challenges[state_hash(first.state)]
    assert (ch.user, ch.client, ch.expires_at) == (
        "alice",
        "vpn",
        NOW + w.config.radius.challenge_ttl,
    )


# ------------------------------------------------------------------ auto


def test_auto_mode(world: World) -> None:
    """auto: password+code is decided inline; password alone gets a challenge; a wrong
    password (with or without a code) is rejected. One first-factor check each time."""
    world.user()
    tok = world.token()
    assert world.decide(PASSWORD + world.code(tok), mode="auto").reason is Reason.OK
    assert world.binds == 1
    d = world.decide(PASSWORD, mode="auto", at=NOW + 30)
    assert d.outcome is Outcome.CHALLENGE and d.state is not None
    assert world.binds == 2
    d = world.decide("bad" + world.code(tok, at=NOW + 60), mode="auto", at=NOW + 60)
    assert d.outcome is Outcome.REJECT
    assert world.binds == 3
    d = world.decide(PASSWORD + "000000", mode="auto", at=NOW + 60)
    assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.BAD_PASSWORD)
    assert world.binds == 4


def test_auto_mode_password_ending_in_digits(world: World) -> None:
    """auto: a password that happens to end in 6 digits still reaches the challenge."""
    world.user()
    world.directory.users["alice"].password = "summer202512"
    world.token()
    d = world.decide("summer202512", mode="auto")
    assert d.outcome is Outcome.CHALLENGE


# ------------------------------------------------------------------ first factor none


def test_first_factor_none(world: World) -> None:
    """first_factor none: the whole field is the OTP (or PIN+OTP); no password check."""
    world.user()
    tok = world.token()
    assert world.decide(world.code(tok), first_factor="none").reason is Reason.OK
    assert world.binds == 0
    pin = world.pin()
    later = NOW + 30
    d = world.decide(pin + world.code(tok, at=later), first_factor="none", at=later)
    assert d.reason is Reason.OK
    d = world.decide(PASSWORD + world.code(tok, at=later + 30), first_factor="none", at=later + 30)
    assert d.outcome is Outcome.REJECT


def test_first_factor_none_otp_field(world: World) -> None:
    """first_factor none with a separate `otp` (HTTP /otp/check) uses the otp field."""
    world.user()
    tok = world.token()
    d = world.decide("", otp=world.code(tok), first_factor="none", frontend="http")
    assert d.reason is Reason.OK


def test_first_factor_none_unknown_user(world: World) -> None:
    """first_factor none still needs a known user: unknown -> UNKNOWN_USER, generic."""
    d = world.decide("123456", user="mallory", first_factor="none")
    assert (d.outcome, d.reason, d.message) == (Outcome.REJECT, Reason.UNKNOWN_USER, GENERIC_REJECT)


def test_first_factor_none_directory_lookup(world: World) -> None:
    """first_factor none: a user only the directory knows is found by lookup() and
    recorded; with no token the policy decides."""
    world.directory.users["carol"] = FakeDirectoryUser("x", ("ops",))
    d = world.decide("123456", user="carol", first_factor="none")
    assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.NO_TOKEN)
    assert world.directory.lookup_calls == ["carol"]
    assert world.binds == 0
    assert world.stored_user("carol").source == "dir"


# ------------------------------------------------------------------ policy


def test_policy_required_rejects_without_token(world: World) -> None:
    """required + no token: NO_TOKEN after a right password, generic message when the
    portal is off, the enrolment address when it is on."""
    world.user()
    d = world.decide(PASSWORD)
    assert (d.outcome, d.reason, d.message) == (Outcome.REJECT, Reason.NO_TOKEN, GENERIC_REJECT)
    world.set("selfservice.enabled", True)
    world.set("selfservice.public_url", "https://mfa.example.org/selfservice/default/")
    d = world.decide(PASSWORD)
    assert d.reason is Reason.NO_TOKEN
    assert d.message == "Enrol a token at https://mfa.example.org/selfservice/default/"
    d = world.decide("wrong")
    assert (d.reason, d.message) == (Reason.BAD_PASSWORD, GENERIC_REJECT)


def test_policy_optional_accepts_on_first_factor(world: World) -> None:
    """optional + no token: the password alone is accepted (OK_NO_TOKEN)."""
    world.set("policy.enforcement", "optional")
    world.user()
    d = world.decide(PASSWORD)
    assert (d.outcome, d.reason, d.groups) == (Outcome.ACCEPT, Reason.OK_NO_TOKEN, ("staff",))
    assert world.decide("wrong").outcome is Outcome.REJECT


def test_policy_disabled_token_counts_as_none(world: World) -> None:
    """Only ACTIVE tokens count: a user whose token is disabled is a no-token user."""
    world.set("policy.enforcement", "optional")
    world.user()
    tok = world.token()
    world.store.set_token_status(tok.serial, TokenStatus.DISABLED)
    assert world.decide(PASSWORD).reason is Reason.OK_NO_TOKEN
    assert world.decide(PASSWORD + world.code(tok)).outcome is Outcome.REJECT


def test_policy_per_group_first_match(world: World) -> None:
    """policy.groups: the first rule matching one of the user's groups wins."""
    world.set("policy.enforcement", "required")
    world.set(
        "policy.groups",
        (
            GroupPolicy("contractors", "required"),
            GroupPolicy("staff", "optional"),
            GroupPolicy("admins", "required"),
        ),
    )
    world.user("alice", groups=("staff", "admins"))
    world.user("bob", groups=("contractors", "staff"))
    world.user("eve", groups=("guests",))
    assert world.decide(PASSWORD, user="alice").reason is Reason.OK_NO_TOKEN
    assert world.decide(PASSWORD, user="bob").reason is Reason.NO_TOKEN
    assert world.decide(PASSWORD, user="eve").reason is Reason.NO_TOKEN


# ------------------------------------------------------------------ users


def test_unknown_user_and_wrong_password_look_the_same(world: World) -> None:
    """Outside, an unknown user and a wrong password are the same reject with the same
    message and the same first-factor work."""
    world.user()
    world.token()
    a = world.decide("wrong123456")
    b = world.decide("wrong123456", user="nobody")
    assert (a.outcome, a.message, a.state, a.groups) == (b.outcome, b.message, b.state, b.groups)
    assert (a.reason, b.reason) == (Reason.BAD_PASSWORD, Reason.UNKNOWN_USER)
    assert world.binds == 2


def test_disabled_user_rejected_code_kept(world: World) -> None:
    """A disabled user is rejected (DISABLED) even with everything right; the code is
    not consumed."""
    world.user(disabled=True)
    tok = world.token()
    d = world.decide(PASSWORD + world.code(tok))
    assert (d.outcome, d.reason, d.message) == (Outcome.REJECT, Reason.DISABLED, GENERIC_REJECT)
    assert world.store.get_token(tok.serial).last_step == -1  # type: ignore[union-attr]


def test_directory_user_recorded_on_first_sight(world: World) -> None:
    """A user only the directory knows is stored with source = backend name and the
    directory's groups; with optional policy it logs in on the password."""
    world.set("policy.enforcement", "optional")
    world.directory.users["dave"] = FakeDirectoryUser(
        "pw", ("eng", "vpn"), {"email": "dave@example.org"}
    )
    d = world.decide("pw", user="dave")
    assert (d.reason, d.groups) == (Reason.OK_NO_TOKEN, ("eng", "vpn"))
    dave = world.stored_user("dave")
    assert (dave.source, dave.groups, dave.email) == ("dir", ("eng", "vpn"), "dave@example.org")


def test_empty_password_never_passes(world: World) -> None:
    """An empty password never passes the first factor (optional policy, no token)."""
    world.set("policy.enforcement", "optional")
    world.user()
    world.directory.users["alice"].password = ""
    assert world.decide("").outcome is Outcome.REJECT


def test_http_separate_otp_no_split(world: World) -> None:
    """HTTP gives password and otp apart: a password ending in digits is not split."""
    world.user()
    world.directory.users["alice"].password = "pass123456"
    tok = world.token()
    d = world.decide("pass123456", otp=world.code(tok), frontend="http", client="appliance")
    assert d.reason is Reason.OK
    assert world.directory.authenticate_calls == [("alice", "pass123456")]


# ------------------------------------------------------------------ failmode


def test_failmode_closed_backend_down(fake_world: World) -> None:
    """Every backend unreachable, failmode closed: BACKEND_DOWN, generic message."""
    w = fake_world
    w.user()
    tok = w.token()
    w.directory.unreachable = True
    d = w.decide(PASSWORD + w.code(tok))
    assert (d.outcome, d.reason, d.message) == (Outcome.REJECT, Reason.BACKEND_DOWN, GENERIC_REJECT)


def test_failmode_open_skips_first_factor_only(fake_world: World) -> None:
    """failmode open: with every backend down the first factor is skipped (and logged),
    but the second factor is still required; unknown or token-less users are refused."""
    w = fake_world
    w.set("primary.failmode", "open")
    w.set("policy.enforcement", "optional")
    w.user()
    w.user("bob")
    tok = w.token()
    w.directory.unreachable = True
    d = w.decide("whatever" + w.code(tok))
    assert (d.outcome, d.reason) == (Outcome.ACCEPT, Reason.OK)
    assert w.decide("whatever000000", at=NOW + 30).reason is Reason.BAD_OTP
    assert w.decide("whatever", user="bob").reason is Reason.BACKEND_DOWN
    assert w.decide("whatever", user="nobody").reason is Reason.BACKEND_DOWN
    events = w.store.query_audit(user="alice")
    assert any("failmode open" in e.detail for e in events)


def test_chain_skips_unreachable_and_first_known_decides() -> None:
    """Backends in order: unreachable ones are skipped, the first that knows the user
    decides (a later backend with another password is not asked)."""
    store = FakeStore()
    down = FakeBackend("down", unreachable=True)
    first = FakeBackend("ad", {"alice": FakeDirectoryUser("pw-ad", ("ad-users",))})
    second = FakeBackend("ldap", {"alice": FakeDirectoryUser("pw-ldap")})
    w = World(store, b"k" * 32, first)
    w.set("policy.enforcement", "optional")
    engine = Engine(w.config, store, [down, first, second], w.hash_key)
    d = engine.decide(w.request("pw-ad"), NOW)
    assert (d.reason, d.groups) == (Reason.OK_NO_TOKEN, ("ad-users",))
    d = engine.decide(w.request("pw-ldap"), NOW)
    assert d.reason is Reason.BAD_PASSWORD
    assert second.authenticate_calls == []
    assert len(down.authenticate_calls) == 2


# ------------------------------------------------------------------ one check, no secrets


@pytest.mark.parametrize("mode", ["inline", "challenge", "auto"])
@pytest.mark.parametrize("typed", ["pw", PASSWORD, PASSWORD + "123456", "12345678901234"])
def test_at_most_one_first_factor_check(fake_world: World, mode: str, typed: str) -> None:
    """Whatever is typed and whatever the mode, a request costs at most one first-factor
    check (one directory bind), even for a user with PIN, tokens and backup codes."""
    w = fake_world
    w.user()
    w.token()
    w.token(digits=8)
    w.pin()
    w.backup_codes()
    w.decide(typed, mode=mode)
    assert w.binds <= 1


def test_audit_and_decisions_hold_no_secrets(world: World) -> None:
    """Across accepts, rejects and challenges, no audit field and no Decision repr ever
    contains the password, PIN, code or backup code."""
    world.user()
    tok = world.token()
    pin = world.pin()
    codes = world.backup_codes()
    code = world.code(tok)
    decisions = [
        world.decide(PASSWORD + pin + code),
        world.decide(PASSWORD + pin + code),
        world.decide(PASSWORD + "0000" + "000000"),
        world.decide(PASSWORD + codes[0]),
        world.decide(PASSWORD, mode="challenge"),
        world.decide("bad-" + PASSWORD),
    ]
    secrets = [PASSWORD, pin, code, codes[0], codes[0].replace("-", ""), "bad-"]
    texts = [repr(d) for d in decisions]
    texts += [repr(e) for e in world.store.query_audit(limit=100)]
    for text in texts:
        for secret in secrets:
            assert secret not in text


def test_bad_requests(fake_world: World) -> None:
    """Overlong or control-character user names, lone surrogates and unknown modes are
    BAD_REQUEST rejects, never exceptions, and cost no first-factor check."""
    w = fake_world
    w.user()
    cases = [
        w.request(PASSWORD, user="a" * 257),
        w.request(PASSWORD, user="ali\x00ce"),
        w.request(PASSWORD, user="ali\nce"),
        w.request(PASSWORD, user=""),
        w.request("pw\ud800"),
        w.request("x" * 5000),
        w.request(PASSWORD, mode="telepathy"),
        w.request(PASSWORD, first_factor="maybe"),
    ]
    engine = w.engine()
    for req in cases:
        d = engine.decide(req, NOW)
        assert (d.outcome, d.reason, d.message) == (
            Outcome.REJECT,
            Reason.BAD_REQUEST,
            GENERIC_REJECT,
        )
    assert w.binds == 0
    assert engine.decide(w.request(PASSWORD, user="a" * 256), NOW).reason is Reason.UNKNOWN_USER


@settings(max_examples=500)
@given(st.text(st.characters(exclude_categories=()), max_size=40), st.booleans())
def test_text_check_matches_its_definition(text: str, control_ok: bool) -> None:
    """The fast ASCII path of the request check refuses exactly what its definition
    refuses: NUL always, a control character (Unicode Cc) unless allowed, and text that
    cannot be UTF-8 (a lone surrogate)."""
    try:
        text.encode("utf-8")
        encodable = True
    except UnicodeEncodeError:
        encodable = False
    has_control = any(unicodedata.category(ch) == "Cc" for ch in text)
    expected = "\x00" in text or not encodable or (has_control and not control_ok)
    assert invalid_text(text, 40, control_ok) is expected
    assert invalid_text(text + "x", len(text), control_ok) is True  # over the limit


# ------------------------------------------------------------------ store behaviour


class RacingStore(FakeStore):
    """Another node accepted the same step between our match and our compare-and-set."""

    def accept_totp_step(self, serial: str, step: int, drift: int) -> bool:
        super().accept_totp_step(serial, step, drift)
        return False


def test_lost_race_is_replay() -> None:
    """When the store's compare-and-set fails, the code was used elsewhere: REPLAY."""
    w = World(RacingStore(), b"k" * 32, FakeBackend("dir"))
    w.user()
    tok = w.token()
    assert w.decide(PASSWORD + w.code(tok)).reason is Reason.REPLAY


def test_store_errors_propagate(fake_world: World) -> None:
    """An unreachable store is not a decision: StoreUnavailable reaches the caller
    (ThreadedEngine turns it into a fail-closed reject)."""
    fake_world.store.down = True  # type: ignore[attr-defined]
    with pytest.raises(StoreUnavailable):
        fake_world.decide(PASSWORD + "123456")


def test_groups_carried_through_challenge(fake_world: World) -> None:
    """The groups the directory returned at the first step come back on the accept."""
    w = fake_world
    w.user(groups=("old",))
    w.directory.users["alice"].groups = ("new",)
    tok = w.token()
    first = w.decide(PASSWORD, mode="challenge")
    d = w.decide(w.code(tok), state=first.state)
    assert d.groups == ("new",)


def test_expired_challenge_in_store_refused(fake_world: World) -> None:
    """Even if a store returned an expired challenge, the engine checks expiry itself."""

    class LenientStore(FakeStore):
        def take_challenge(self, state_hash: str, now: float) -> Challenge | None:
            return self.challenges.pop(state_hash, None)

    w = World(LenientStore(), b"k" * 32, FakeBackend("dir"))
    w.user()
    tok = w.token()
    first = w.decide(PASSWORD, mode="challenge")
    late = NOW + w.config.radius.challenge_ttl
    d = w.decide(w.code(tok, at=late), state=first.state, at=late)
    assert d.reason is Reason.BAD_STATE


def test_store_names_are_exact_after_surrounding_spaces(world: World) -> None:
    """A name the store holds is matched exactly once surrounding spaces are gone:
    `alice ` is alice, `Alice` is nobody (a backend with exact names, like local users)."""
    world.set("policy.enforcement", "optional")
    world.user()
    d = world.decide(PASSWORD, user=" alice ")
    assert (d.reason, d.user) == (Reason.OK_NO_TOKEN, "alice")
    assert world.decide(PASSWORD, user="Alice").reason is Reason.UNKNOWN_USER
    assert world.decide(PASSWORD).reason is Reason.OK_NO_TOKEN


def test_log_lines_hold_no_secrets(fake_world: World) -> None:
    """The loud failmode-open warning and the lockout notice name the user, never the
    password or code."""
    from twisted.logger import formatEvent, globalLogPublisher

    w = fake_world
    w.set("primary.failmode", "open")
    w.set("otp.lockout.max_attempts", 1)
    w.user()
    tok = w.token()
    w.directory.unreachable = True
    events: list[dict[str, object]] = []
    observer = events.append
    globalLogPublisher.addObserver(observer)  # type: ignore[arg-type]
    try:
        code = w.code(tok)
        w.decide(PASSWORD + code)
        w.decide(PASSWORD + "987654", at=NOW + 30)
    finally:
        globalLogPublisher.removeObserver(observer)  # type: ignore[arg-type]
    texts = [formatEvent(e) + repr(e) for e in events]  # type: ignore[arg-type]
    assert any("FAILMODE OPEN" in t for t in texts)
    assert any("locked" in t for t in texts)
    for t in texts:
        assert PASSWORD not in t and code not in t and "987654" not in t


def test_drift_is_remembered(world: World) -> None:
    """A code from the previous step is accepted and the token's drift (-1) stored."""
    world.user()
    tok = world.token()
    assert world.decide(PASSWORD + world.code(tok, at=NOW - 30)).reason is Reason.OK
    assert world.store.get_token(tok.serial).drift == -1  # type: ignore[union-attr]


def test_hotp_beyond_look_ahead_rejected(world: World) -> None:
    """An HOTP code past the look-ahead window is not accepted (counter unchanged)."""
    world.set("otp.hotp.look_ahead", 3)
    world.user()
    tok = world.token(type=TokenType.HOTP)
    d = world.decide(PASSWORD + world.code(tok, counter=4))
    assert d.reason is Reason.BAD_OTP
    assert world.store.get_token(tok.serial).counter == 0  # type: ignore[union-attr]
    assert world.decide(PASSWORD + world.code(tok, counter=3)).reason is Reason.OK


def test_challenge_mode_without_token_follows_policy(world: World) -> None:
    """challenge mode, user without any second factor: no State is issued; optional
    policy accepts on the password, required rejects."""
    world.set("policy.enforcement", "optional")
    world.user()
    d = world.decide(PASSWORD, mode="challenge")
    assert (d.outcome, d.reason, d.state) == (Outcome.ACCEPT, Reason.OK_NO_TOKEN, None)
    world.set("policy.enforcement", "required")
    d = world.decide(PASSWORD, mode="challenge")
    assert (d.outcome, d.reason, d.state) == (Outcome.REJECT, Reason.NO_TOKEN, None)


class DirectoryTokenStore(FakeStore):
    """Like token_storage: ldap, tokens are found before the user's store record exists."""

    def get_user_with_tokens(self, name: str) -> tuple[User | None, list[Token]]:
        return self.users.get(name), [t for t in self.tokens.values() if t.user == name]


def test_first_sight_user_with_directory_tokens() -> None:
    """A directory user whose tokens live in the directory logs in inline on first
    sight: the split uses those tokens, the store record is created on the way."""
    w = World(DirectoryTokenStore(), b"k" * 32, FakeBackend("dir"))
    w.directory.users["erin"] = FakeDirectoryUser(PASSWORD, ("ops",))
    tok = w.token("erin")
    d = w.decide(PASSWORD + w.code(tok), user="erin")
    assert (d.reason, d.groups) == (Reason.OK, ("ops",))
    assert w.stored_user("erin").source == "dir"
    assert w.binds == 1


def test_failed_decision_is_audited_without_secrets(world: World) -> None:
    """A decision whose store read raises still leaves one audit row: a reject with
    reason `unavailable` and the error's type, never the password or the code; the error
    still reaches the caller (which fails closed)."""
    w = world
    w.user()
    token = w.token()

    def down(name: str) -> object:
        raise StoreUnavailable(f"database error for {name}")

    engine = w.engine()
    engine.store = WrappedStore(w.store, get_user_tokens_codes=down)
    code = w.code(token)
    with pytest.raises(StoreUnavailable):
        engine.decide(w.request(PASSWORD + code), NOW)
    [event] = w.store.query_audit(user="alice")
    assert (event.result, event.reason, event.detail) == (
        "reject",
        "unavailable",
        "StoreUnavailable",
    )
    assert (event.actor, event.client, event.source) == ("radius:vpn", "vpn", "192.0.2.7")
    assert code not in repr(event) and PASSWORD not in repr(event)


def test_lost_audit_record_is_logged_and_counted(fake_world: World) -> None:
    """With the audit store down as well, the failed decision's record is one structured
    log line (no secret in it) and authd_audit_write_failures_total counts it."""
    w = fake_world
    w.user()
    code = w.code(w.token())
    metrics = Metrics()
    engine = Engine(w.config, w.store, [w.directory], w.hash_key, metrics)
    w.store.down = True  # type: ignore[attr-defined]
    events: list[dict[str, object]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        with pytest.raises(StoreUnavailable):
            engine.decide(w.request(PASSWORD + code), NOW)
    finally:
        globalLogPublisher.removeObserver(events.append)
    [line] = [e for e in events if "audit_error" in e]
    assert (line["user"], line["reason"], line["result"], line["detail"]) == (
        "alice",
        "unavailable",
        "reject",
        "StoreUnavailable",
    )
    assert code not in repr(events) and PASSWORD not in repr(events)
    assert metrics.registry.get_sample_value("authd_audit_write_failures_total") == 1
