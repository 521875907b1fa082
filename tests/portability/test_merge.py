"""The merge rules of an import, as plain functions."""

from __future__ import annotations

import math

from authd.core.model import Token, TokenStatus, TokenType, User
from authd.portability.merge import OnConflict, merge_backup, merge_token, merge_user, plan_import
from authd.portability.records import BackupCode, Records, UserRecord


def test_backup_sets_sharing_a_code_are_one_set() -> None:
    """A code used on either side stays used, whatever the creation times say (the
    directory keeps none)."""
    a, b, c = (BackupCode(h, 100.0) for h in "abc")
    here = (BackupCode("a", 0.0), BackupCode("c", 0.0))  # b was used here
    assert {x.hash for x in merge_backup(here, (a, b, c))} == {"a", "c"}


def test_disjoint_backup_sets_newer_generation_wins() -> None:
    """A newly generated set replaces the older one, on either side."""
    old, new = (BackupCode("a", 1.0),), (BackupCode("z", 2.0),)
    assert merge_backup(old, new) == new and merge_backup(new, old) == new
    assert merge_backup((), new) == new and merge_backup(new, ()) == new


def test_token_state_only_moves_forward() -> None:
    """Counter and last step keep their maximum, drift follows the later step, a
    revocation on either side sticks."""
    here = Token("S", TokenType.TOTP, b"k" * 20, last_step=10, drift=2, counter=0)
    incoming = Token("S", TokenType.TOTP, b"k" * 20, last_step=7, drift=-1,
                     status=TokenStatus.REVOKED)  # fmt: skip
    merged = merge_token(here, incoming)
    assert (merged.last_step, merged.drift, merged.status) == (10, 2, TokenStatus.REVOKED)


def test_user_lock_is_never_lowered() -> None:
    """The bundle brings profile and PIN; failures and lock take the furthest value."""
    here = User("u", failures=3, locked_until=math.inf, email="old@x")
    incoming = User("u", failures=0, locked_until=None, email="new@x", pin_hash="h1:p")
    merged = merge_user(here, incoming)
    assert (merged.failures, merged.locked_until, merged.email, merged.pin_hash) == (
        3, math.inf, "new@x", "h1:p",
    )  # fmt: skip


def test_unassigned_token_with_other_seed_here_is_a_conflict() -> None:
    """An unassigned serial (colons allowed) held here with another seed conflicts:
    skip leaves it and still imports the rest, replace takes the bundle's."""
    here = Records(tokens=[Token("BOX:1", TokenType.TOTP, b"h" * 20)])
    incoming = Records(tokens=[Token("BOX:1", TokenType.TOTP, b"i" * 20),
                               Token("BOX:2", TokenType.TOTP, b"i" * 20)])  # fmt: skip
    skipped = plan_import(incoming, here, OnConflict.SKIP)
    assert skipped.conflicts == ["token BOX:1: another seed or parameters here"]
    assert [t.serial for t in skipped.tokens] == ["BOX:2"]
    replaced = plan_import(incoming, here, OnConflict.REPLACE)
    assert sorted(t.serial for t in replaced.tokens) == ["BOX:1", "BOX:2"]
    assert replaced.delete_serials == ["BOX:1"]


def test_user_without_tokens_on_one_side_is_no_conflict() -> None:
    """A user known here without tokens takes the bundle's; a user with tokens here
    and none in the bundle keeps them; both with different tokens is a conflict."""
    alice = UserRecord(User("alice"))
    mine = Token("A1", TokenType.TOTP, b"a" * 20, "alice")
    other = Token("B1", TokenType.TOTP, b"b" * 20, "alice")
    plan = plan_import(Records([alice], [mine]), Records([alice], []), OnConflict.REFUSE)
    assert not plan.conflicts and [t.serial for t in plan.tokens] == ["A1"]
    plan = plan_import(Records([alice], []), Records([alice], [other]), OnConflict.REFUSE)
    assert not plan.conflicts and not plan.delete_serials
    plan = plan_import(Records([alice], [mine]), Records([alice], [other]), OnConflict.REFUSE)
    assert plan.conflicts == ["user alice: tokens here (B1) differ from the bundle's (A1)"]
