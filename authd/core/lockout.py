"""When a user is locked, and what one more second-factor failure does.

This module is the rule; the store applies it atomically in one SQL statement (STYLE
pattern 5: no read-modify-write in Python). `after_failure` is the reference the SQL must
agree with, and the store's tests compare the two. `is_locked` lives in core/model.py.

The statement the store runs (SET expressions all read the *old* row; `:deadline` is
`lock_deadline(now, auto_unlock_after)`, `:max` is `max_attempts`)::

    UPDATE users SET
      failures = CASE WHEN locked_until IS NOT NULL AND locked_until <= :now
                      THEN 1 ELSE failures + 1 END,
      locked_until = CASE
        WHEN locked_until IS NOT NULL AND locked_until > :now THEN locked_until
        WHEN (CASE WHEN locked_until IS NOT NULL AND locked_until <= :now
                   THEN 1 ELSE failures + 1 END) >= :max THEN :deadline
        ELSE NULL END
    WHERE name = :name
    RETURNING failures, locked_until

`math.inf` ("until an operator unlocks") is stored as IEEE infinity: PostgreSQL double
precision takes 'Infinity', SQLite REAL takes 9e999.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from authd.core.errors import InvalidInput

__all__ = [
    "LockUpdate",
    "after_failure",
    "after_success",
    "after_unlock",
    "lock_deadline",
    "lock_expired",
    "should_lock",
]


class LockUpdate(NamedTuple):
    """The user's (failures, locked_until) after an event; None: not locked."""

    failures: int
    locked_until: float | None


def lock_deadline(now: float, auto_unlock_after: float | None) -> float:
    """When a lock taken at `now` ends; math.inf when only an operator may unlock."""
    if auto_unlock_after is None:
        return math.inf
    if auto_unlock_after <= 0 or math.isnan(auto_unlock_after):
        # Fail closed: a zero or negative duration would be a lock that never holds.
        raise InvalidInput("auto_unlock_after must be positive or None")
    return now + auto_unlock_after


def should_lock(failures: int, max_attempts: int) -> bool:
    """`failures` counts consecutive failures *including* the one just recorded; the
    `max_attempts`-th failure locks (max_attempts 5: the 5th failure locks)."""
    if max_attempts < 1:
        raise InvalidInput("max_attempts must be at least 1")
    return failures >= max_attempts


def lock_expired(locked_until: float | None, now: float) -> bool:
    """A lock that has run out (the complement of model.is_locked for a set deadline):
    its failure count no longer counts, so the next failure starts again at 1."""
    return locked_until is not None and locked_until <= now


def after_failure(
    failures: int,
    locked_until: float | None,
    now: float,
    max_attempts: int,
    auto_unlock_after: float | None,
) -> LockUpdate:
    """One more second-factor failure.

    - A lock that has expired is forgotten: counting restarts at 1.
    - While locked, the count grows but the deadline does not move (attempts during a
      lock are not evaluated, and must not let anyone extend someone else's lock).
    - Otherwise the `max_attempts`-th consecutive failure locks until `lock_deadline`.
    """
    expired = lock_expired(locked_until, now)
    count = 1 if expired else failures + 1
    if locked_until is not None and not expired:
        return LockUpdate(count, locked_until)
    if should_lock(count, max_attempts):
        return LockUpdate(count, lock_deadline(now, auto_unlock_after))
    return LockUpdate(count, None)


def after_success() -> LockUpdate:
    """A success ends the run of failures (it cannot happen while locked: the engine
    refuses locked users before looking at any factor, and the write that accepts a
    code checks the lock again in the same transaction)."""
    return LockUpdate(0, None)


def after_unlock() -> LockUpdate:
    """An operator unlock clears the lock and the count, so the user gets full attempts."""
    return LockUpdate(0, None)
