"""AdminOps on the real SqlStore, SQLite and PostgreSQL alike (the shared `store` and
`keyring` fixtures): what the fakes cannot show — wildcards in SQL, real audit ids,
real re-encryption under a new key, cascades of reset."""

from __future__ import annotations

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
from authd.core.errors import AlreadyExists, NotFound
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
