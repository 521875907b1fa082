"""AdminOps on the real SqlStore, SQLite and PostgreSQL alike (the shared `store` and
`keyring` fixtures): what the fakes cannot show — wildcards in SQL, real audit ids,
real re-encryption under a new key, cascades of reset."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from authd.admin import AdminOps
from authd.config.model import (
    BackupCodesConfig,
    Config,
    LocalUsersConfig,
    OtpConfig,
    PasswordHashConfig,
)
from authd.core import backup_codes, otp
from authd.core.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from authd.core.model import Token, TokenStatus
from authd.crypto import Keyring
from authd.storage.sql import SqlStore

ACTOR = "authctl:tester"
CHEAP = Config(
    local_users=LocalUsersConfig(PasswordHashConfig(time_cost=1, memory_cost_kib=8192)),
    otp=OtpConfig(backup_codes=BackupCodesConfig(count=3)),
)


@pytest.fixture
def ops(store: SqlStore, keyring: Keyring, clock: Clock) -> AdminOps:
    return AdminOps(CHEAP, store, keyring, clock.seconds)


def test_users_wildcards_and_statuses_in_sql(ops: AdminOps, store: SqlStore, clock: Clock) -> None:
    """`*` is the only wildcard (SQL `%`/`_` are literal), matching is case-sensitive,
    and the derived statuses come out of the store's overview."""
    for name in ("a_1", "ab1", "A_2", "b%"):
        ops.add_user(ACTOR, name, password="pw-" + name)
    assert [u.user for u in ops.list_users(ACTOR, "a_*")] == ["a_1"]
    assert [u.user for u in ops.list_users(ACTOR, "b%")] == ["b%"]
    assert [u.user for u in ops.list_users(ACTOR, "a*")] == ["a_1", "ab1"]
    ops.add_token(ACTOR, "ab1", "totp")
    store.record_failure("a_1", clock.seconds(), 1, None)
    statuses = {u.user: u.status for u in ops.list_users(ACTOR)}
    assert statuses == {
        "A_2": "unregistered",
        "a_1": "locked",
        "ab1": "active",
        "b%": "unregistered",
    }
    with pytest.raises(AlreadyExists):
        ops.add_user(ACTOR, "ab1")


def test_token_enrolment_resync_and_key_rotation(
    ops: AdminOps, store: SqlStore, keyring: Keyring, clock: Clock
) -> None:
    """A generated seed survives the round trip through AES-GCM; resync stores drift;
    key rotate moves the seed under a new key id and it still decrypts."""
    ops.add_user(ACTOR, "carl")
    added = ops.add_token(ACTOR, "carl", "totp")
    seed = store.get_token(added.token.serial).seed  # type: ignore[union-attr]
    ahead = clock.seconds() + 600
    info = ops.resync_token(
        ACTOR, added.token.serial, otp.totp(seed, ahead), otp.totp(seed, ahead + 30)
    )
    assert info.drift == 21
    old_key = keyring.current_key_id
    rotated = ops.rotate_key(ACTOR)
    assert rotated.reencrypted == 1 and rotated.key_id != old_key
    assert keyring.current_key_id == rotated.key_id
    token = store.get_token(added.token.serial)
    assert token is not None and token.seed == seed and token.drift == 21


class LoginDuringRead:
    """A store where a login on another node accepts `step` right after the first
    get_token: the interleaving read -> another writer -> resync write, made certain."""

    def __init__(self, store: SqlStore, serial: str, step: int) -> None:
        self._store, self._serial, self._step = store, serial, step

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def get_token(self, serial: str) -> Token | None:
        token = self._store.get_token(serial)
        if serial == self._serial and self._step:
            assert self._store.accept_totp_step(serial, self._step, 0)
            self._step = 0
        return token


def test_resync_that_lost_to_a_login_writes_nothing(
    store: SqlStore, keyring: Keyring, clock: Clock
) -> None:
    """A slow token resynced while a login accepts a newer code: Conflict, the token
    keeps the login's step (no used code reopens), one audit error row; a retry with
    the next codes goes through."""
    ops = AdminOps(CHEAP, store, keyring, clock.seconds)
    ops.add_user(ACTOR, "erin")
    serial = ops.add_token(ACTOR, "erin", "totp").token.serial
    seed = store.get_token(serial).seed  # type: ignore[union-attr]
    now_step = otp.time_step(clock.seconds(), 30)
    slow = [otp.totp(seed, (now_step - 20 + i) * 30) for i in range(5)]
    racing = AdminOps(CHEAP, LoginDuringRead(store, serial, now_step - 18), keyring, clock.seconds)
    with pytest.raises(Conflict, match="moved on"):
        racing.resync_token(ACTOR, serial, slow[0], slow[1])
    token = store.get_token(serial)
    assert token is not None and (token.last_step, token.drift) == (now_step - 18, 0)
    info = ops.resync_token(ACTOR, serial, slow[3], slow[4])
    assert (info.drift, store.get_token(serial).last_step) == (-16, now_step - 16)  # type: ignore[union-attr]
    rows = [(e.result, e.reason) for e in ops.audit(ACTOR).events if e.action == "token.resync"]
    assert rows == [("ok", ""), ("error", "Conflict")]


class SignInRightAfterActivation:
    """A store where a sign-in with the same code lands between a confirmation's
    activation of the token and its use of the code: that interleaving, made certain."""

    def __init__(self, store: SqlStore, step: int) -> None:
        self._store, self._step = store, step

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def set_token_status(self, serial: str, status: TokenStatus) -> None:
        self._store.set_token_status(serial, status)
        if status is TokenStatus.ACTIVE:
            assert self._store.accept_totp_step(serial, self._step, 0)


def test_confirmation_whose_code_was_used_meanwhile_is_refused(
    store: SqlStore, keyring: Keyring, clock: Clock
) -> None:
    """A pending token is confirmed by a code that a racing sign-in uses first: the
    confirmation is refused (InvalidInput, as a wrong code; audited as an error), never
    reported as done on a code it did not use up."""
    ops = AdminOps(CHEAP, store, keyring, clock.seconds)
    ops.add_user(ACTOR, "fay")
    serial = ops.add_token(ACTOR, "fay", "totp", status=TokenStatus.PENDING).token.serial
    seed = store.get_token(serial).seed  # type: ignore[union-attr]
    step = otp.time_step(clock.seconds(), 30)
    racing = AdminOps(CHEAP, SignInRightAfterActivation(store, step), keyring, clock.seconds)
    with pytest.raises(InvalidInput, match="used already"):
        racing.confirm_token(ACTOR, "fay", serial, otp.totp(seed, clock.seconds()), ttl=600)
    token = store.get_token(serial)
    assert token is not None and token.last_step == step
    rows = [(e.result, e.reason) for e in ops.audit(ACTOR).events if e.action == "token.confirm"]
    assert rows == [("error", "InvalidInput")]


def test_reset_backup_codes_and_audit_paging(
    ops: AdminOps, store: SqlStore, keyring: Keyring
) -> None:
    """Backup codes replace each other; reset removes tokens, codes and PIN in the store;
    audit pages newest-first by the database's ids."""
    ops.add_user(ACTOR, "dana")
    ops.add_token(ACTOR, "dana", "hotp")
    ops.set_pin(ACTOR, "dana", "73925186")
    first = ops.generate_backup_codes(ACTOR, "dana")
    ops.generate_backup_codes(ACTOR, "dana")
    assert store.backup_codes_left("dana") == 3
    assert not store.consume_backup_code(
        "dana", backup_codes.hash_code(first.codes[0], keyring.hash_key)
    )
    ops.reset_user(ACTOR, "dana")
    shown = ops.show_user(ACTOR, "dana")
    assert (shown.status, shown.tokens, shown.has_pin, shown.backup_codes_left) == (
        "unregistered",
        (),
        False,
        0,
    )
    page = ops.audit(ACTOR, user="dana", limit=4)
    assert [e.action for e in page.events] == [
        "user.reset",
        "backup_codes.generate",
        "backup_codes.generate",
        "pin.set",
    ]
    rest = ops.audit(ACTOR, user="dana", limit=4, before_id=page.next_before_id)
    assert [e.action for e in rest.events] == ["token.add", "user.add"]
    with pytest.raises(NotFound):
        ops.reset_user(ACTOR, "nobody")
