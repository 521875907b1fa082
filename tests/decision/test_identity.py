"""The user is who the directory or store says, not what was typed (CONTRACT): a name
in another case, with spaces or with a realm reaches that user's record, tokens, PIN and
lock, or no one; never a second record, never a skipped token. Here against a directory
that matches names as LDAP does (`FakeBackend(ignore_case=True)`), on every store; the
real slapd, RADIUS and HTTP are in tests/integration/test_identity_ldap.py."""

from __future__ import annotations

import pytest

from authd.auth.interfaces import Outcome, Reason
from authd.core.model import User
from authd.core.username import realm_set
from tests.fakes import FakeDirectoryUser
from tests.world import PASSWORD, World, decide_paused, outcomes

VARIANTS = ["ADBOB", "AdBob", " adbob", "adbob  "]
REALMS = realm_set(["CORP", "corp.example.com"])


def directory_world(world: World) -> World:
    """adbob in a case-insensitive directory and in the store, with a TOTP token."""
    world.directory.ignore_case = True
    world.user("adbob")
    world.token("adbob")
    return world


def store_names(world: World) -> list[str]:
    return sorted(o.user.name for o in world.store.list_users())


@pytest.mark.parametrize("typed", VARIANTS)
def test_optional_never_accepts_a_variant_without_the_code(world: World, typed: str) -> None:
    """`optional` (roll-out mode): a variant of a user who has a token still needs the
    code. The password alone is read as adbob's would be (password + code: a wrong
    password here); a right password with a wrong code is his code failure; no stray
    user."""
    w = directory_world(world)
    w.set("policy.enforcement", "optional")
    d = w.decide(PASSWORD, user=typed)
    assert (d.outcome, d.reason, d.user) == (Outcome.REJECT, Reason.BAD_PASSWORD, "adbob")
    d = w.decide(PASSWORD, user=typed, otp="000000", frontend="http")
    assert (d.outcome, d.reason, d.user) == (Outcome.REJECT, Reason.BAD_OTP, "adbob")
    assert w.decide(PASSWORD, user=typed, mode="challenge").outcome is Outcome.CHALLENGE
    assert store_names(w) == ["adbob"]
    assert w.stored_user("adbob").failures == 1


@pytest.mark.parametrize("enforcement", ["optional", "required"])
@pytest.mark.parametrize("typed", VARIANTS)
def test_a_variant_with_password_and_code_is_that_user(
    world: World, typed: str, enforcement: str
) -> None:
    """Right password + right code under a variant: accepted as adbob, the code used
    once (a replay under another spelling is refused), one bind, audited as adbob."""
    w = directory_world(world)
    w.set("policy.enforcement", enforcement)
    token = w.store.list_tokens("adbob")[0]
    d = w.decide(PASSWORD + w.code(token), user=typed)
    assert (d.outcome, d.reason, d.user) == (Outcome.ACCEPT, Reason.OK, "adbob")
    assert w.binds == 1
    again = w.decide(PASSWORD + w.code(token), user="adbob")
    assert again.reason is Reason.REPLAY
    assert store_names(w) == ["adbob"]
    assert [e.user for e in w.store.query_audit()] == ["adbob", "adbob"]


def test_a_first_login_under_a_variant_creates_the_entry_s_name(world: World) -> None:
    """A directory user seen first as `ADBOB` is recorded as adbob (the entry's name),
    and a token assigned to adbob before that first login is asked for."""
    w = world
    w.directory.ignore_case = True
    w.directory.users["adbob"] = FakeDirectoryUser(PASSWORD, ("staff",))
    w.set("policy.enforcement", "optional")
    assert w.decide(PASSWORD, user="ADBOB").reason is Reason.OK_NO_TOKEN
    assert store_names(w) == ["adbob"]
    token = w.token("adbob")
    assert w.decide(PASSWORD, user="AdBob", otp="000000").reason is Reason.BAD_OTP
    assert w.decide(PASSWORD + w.code(token), user=" ADBOB").reason is Reason.OK
    assert store_names(w) == ["adbob"]


def test_a_variant_counts_toward_and_is_stopped_by_the_user_s_lock(world: World) -> None:
    """Failures under any spelling count for adbob, and a locked adbob is locked under
    every spelling (the lock is the user's, not the string's)."""
    w = directory_world(world)
    w.set("otp.lockout.max_attempts", 3)
    token = w.store.list_tokens("adbob")[0]
    for typed in ("ADBOB", "AdBob", " adbob"):
        assert w.decide(PASSWORD + "000000", user=typed).reason is Reason.BAD_OTP
    d = w.decide(PASSWORD + w.code(token), user="ADBOB ")
    assert (d.reason, d.user) == (Reason.LOCKED, "adbob")
    assert store_names(w) == ["adbob"]


def test_a_challenge_is_bound_to_the_user_and_answered_under_the_typed_name(
    world: World,
) -> None:
    """challenge mode: the State belongs to adbob; the answer may carry the name as typed
    in the first round or adbob's own, never another user's."""
    w = directory_world(world)
    w.user("carol")
    token = w.store.list_tokens("adbob")[0]
    first = w.decide(PASSWORD, user="ADBOB", mode="challenge")
    assert (first.outcome, first.user) == (Outcome.CHALLENGE, "adbob")
    d = w.decide(w.code(token), user="ADBOB", state=first.state, mode="challenge")
    assert (d.outcome, d.user) == (Outcome.ACCEPT, "adbob")
    w.now += 30
    second = w.decide(PASSWORD, user="AdBob", mode="challenge")
    assert w.decide(w.code(token), user="carol", state=second.state).reason is Reason.BAD_STATE
    assert store_names(w) == ["adbob", "carol"]


@pytest.mark.parametrize("enforcement", ["optional", "required"])
def test_first_factor_none_maps_an_unknown_spelling_through_the_directory(
    world: World, enforcement: str
) -> None:
    """first_factor none: a name the store does not hold is looked up in the directory
    and is that entry's user: adbob's code works under `ADBOB`, nothing else does."""
    w = directory_world(world)
    w.set("policy.enforcement", enforcement)
    token = w.store.list_tokens("adbob")[0]
    assert w.decide("123456", user="ADBOB", first_factor="none").reason is Reason.BAD_OTP
    d = w.decide(w.code(token), user="AdBob", first_factor="none")
    assert (d.outcome, d.user) == (Outcome.ACCEPT, "adbob")
    assert store_names(w) == ["adbob"]


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("CORP\\adbob", Reason.BAD_OTP),
        ("corp\\ADBOB", Reason.BAD_OTP),
        ("adbob@corp.example.com", Reason.BAD_OTP),
        ("AdBob@CORP", Reason.BAD_OTP),
        ("OTHER\\adbob", Reason.UNKNOWN_USER),
        ("adbob@evil.example", Reason.UNKNOWN_USER),
    ],
)
def test_realm_forms_are_the_user_or_no_one(world: World, typed: str, reason: Reason) -> None:
    """With the client's realms, `REALM\\user` and `user@realm` are adbob (a right password
    and a wrong code: his code failure under `optional`); a foreign realm names no one,
    and neither reaches the directory with the realm nor creates a user."""
    w = directory_world(world)
    w.set("policy.enforcement", "optional")
    d = w.decide(PASSWORD, user=typed, otp="000000", realms=REALMS)
    assert d.reason is reason
    assert store_names(w) == ["adbob"]
    assert all("\\" not in u and "@" not in u for u, _ in w.directory.authenticate_calls)


def test_paused_batches_decide_variants_as_the_user(sqlite_world: World) -> None:
    """On SQLite (reads batched, first factors paused): variants read under the typed
    name in the batch are decided again as adbob once the directory named him: each
    code once, a variant without a code rejected, one bind each, no stray user."""
    w = directory_world(sqlite_world)
    w.set("policy.enforcement", "optional")
    token = w.store.list_tokens("adbob")[0]
    code = w.code(token)
    reqs = [
        w.request(PASSWORD + code, user="ADBOB"),
        w.request(PASSWORD, user="AdBob"),
        w.request(PASSWORD + code, user=" adbob"),
    ]
    results, paused = decide_paused(w.engine(), reqs)
    assert paused == 3
    assert outcomes(results) == [
        (Outcome.ACCEPT, Reason.OK),
        (Outcome.REJECT, Reason.BAD_PASSWORD),  # read as adbob's: password + code
        (Outcome.REJECT, Reason.REPLAY),
    ]
    assert w.binds == 3
    assert store_names(w) == ["adbob"]
    assert {e.user for e in w.store.query_audit()} == {"adbob"}


def test_an_exact_backend_keeps_other_spellings_out(world: World) -> None:
    """A backend with exact names (local users): `ALICE` is no one, whatever alice has."""
    w = world
    w.user("alice")
    w.token("alice")
    w.set("policy.enforcement", "optional")
    assert w.decide(PASSWORD, user="ALICE").reason is Reason.UNKNOWN_USER
    assert store_names(w) == ["alice"]


@pytest.mark.parametrize("first_factor", ["none", "chain"])
def test_a_stray_row_of_a_variant_leads_to_the_user_s_token(
    world: World, first_factor: str
) -> None:
    """A store that older versions left with a row `ADBOB` (no token) beside adbob:
    under `optional`, `ADBOB` still needs adbob's code, with or without a first factor
    here, and the code is accepted as adbob."""
    w = directory_world(world)
    w.set("policy.enforcement", "optional")
    w.store.add_user(User(name="ADBOB", source=w.directory.name))
    token = w.store.list_tokens("adbob")[0]
    password = PASSWORD if first_factor == "chain" else ""
    d = w.decide(password, user="ADBOB", otp="000000", first_factor=first_factor)
    assert (d.outcome, d.user) == (Outcome.REJECT, "adbob")
    d = w.decide(password, user="ADBOB", otp=w.code(token), first_factor=first_factor)
    assert (d.outcome, d.reason, d.user) == (Outcome.ACCEPT, Reason.OK, "adbob")
