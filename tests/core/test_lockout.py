"""The lockout rule, and proof that the SQL statement documented for the store agrees with it."""

from __future__ import annotations

import ast
import math
import re
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authd.core.errors import InvalidInput
from authd.core.lockout import (
    LockUpdate,
    after_failure,
    after_success,
    after_unlock,
    lock_deadline,
    lock_expired,
    should_lock,
)
from authd.core.model import User, is_locked

NOW = 1_767_225_600.0
SOURCE = Path(__file__).resolve().parents[2] / "authd" / "core" / "lockout.py"


def test_lock_deadline() -> None:
    """A lock ends auto_unlock_after seconds from now, or never (math.inf) for None."""
    assert lock_deadline(NOW, 600.0) == NOW + 600.0
    assert lock_deadline(NOW, None) == math.inf


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_lock_deadline_refuses_non_positive(bad: float) -> None:
    """Fail closed: a lock that ends before it starts is a config bug, not 'no lock'."""
    with pytest.raises(InvalidInput):
        lock_deadline(NOW, bad)


def test_should_lock_counts_the_failure_just_recorded() -> None:
    """With max_attempts 5 the 5th consecutive failure locks, the 4th does not."""
    assert not should_lock(4, 5)
    assert should_lock(5, 5)
    assert should_lock(6, 5)
    assert should_lock(1, 1)
    with pytest.raises(InvalidInput):
        should_lock(1, 0)


def test_five_failures_lock_then_auto_unlock_restarts_count() -> None:
    """Walk a user through 5 failures (locked for 600 s), a failure during the lock (deadline
    unchanged), and a failure after expiry (counting restarts at 1, unlocked)."""
    state = LockUpdate(0, None)
    for i in range(1, 5):
        state = after_failure(*state, NOW + i, 5, 600.0)
        assert state == LockUpdate(i, None)
    state = after_failure(*state, NOW + 5, 5, 600.0)
    assert state == LockUpdate(5, NOW + 605)
    user = User(name="u", failures=state.failures, locked_until=state.locked_until)
    assert is_locked(user, NOW + 604.9) and not is_locked(user, NOW + 605)
    during = after_failure(*state, NOW + 100, 5, 600.0)
    assert during == LockUpdate(6, NOW + 605)
    assert after_failure(*during, NOW + 605, 5, 600.0) == LockUpdate(1, None)


def test_never_unlock_stays_locked_until_operator() -> None:
    """auto_unlock_after None locks for good; only an unlock (or success) clears it."""
    state = after_failure(2, None, NOW, 3, None)
    assert state == LockUpdate(3, math.inf)
    assert not lock_expired(state.locked_until, NOW + 1e12)
    assert after_failure(*state, NOW + 1e12, 3, None) == LockUpdate(4, math.inf)
    assert after_unlock() == LockUpdate(0, None)
    assert after_success() == LockUpdate(0, None)


@given(
    events=st.lists(st.floats(min_value=0, max_value=5000, allow_nan=False), max_size=30),
    max_attempts=st.integers(1, 8),
    auto=st.one_of(st.none(), st.floats(min_value=1, max_value=1000)),
)
def test_prop_lock_rule_invariants(
    events: list[float], max_attempts: int, auto: float | None
) -> None:
    """Over any sequence of failures at increasing times: a lock is only ever set by the
    max_attempts-th failure since the last expiry, a live lock's deadline never moves, and
    an unlocked user never has max_attempts or more failures counted."""
    state = LockUpdate(0, None)
    now = NOW
    for gap in events:
        now += gap
        was_locked = state.locked_until is not None and not lock_expired(state.locked_until, now)
        new = after_failure(*state, now, max_attempts, auto)
        if was_locked:
            assert new.locked_until == state.locked_until
        elif new.locked_until is not None:
            assert new.failures == max_attempts
            assert new.locked_until == lock_deadline(now, auto)
        else:
            assert new.failures < max_attempts
        state = new


def _documented_sql() -> str:
    """The UPDATE from core/lockout.py's docstring, turned into SQLite syntax."""
    # From the source: a module compiled by mypyc (setup.py) keeps no __doc__.
    doc = ast.get_docstring(ast.parse(Path(SOURCE).read_text())) or ""
    match = re.search(r"(UPDATE users SET.*?RETURNING failures, locked_until)", doc, re.S)
    assert match, "lockout docstring lost its reference SQL"
    return match.group(1)


@given(
    failures=st.integers(0, 10),
    locked_until=st.one_of(
        st.none(), st.just(math.inf), st.floats(min_value=NOW - 1000, max_value=NOW + 1000)
    ),
    max_attempts=st.integers(1, 8),
    auto=st.one_of(st.none(), st.floats(min_value=1, max_value=1000)),
)
def test_prop_documented_sql_agrees_with_rule(
    failures: int, locked_until: float | None, max_attempts: int, auto: float | None
) -> None:
    """The single statement the store is told to run gives exactly after_failure's result
    (on SQLite, infinity included), so the rule and the SQL cannot drift apart."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute(
            "CREATE TABLE users (name TEXT PRIMARY KEY, failures INTEGER, locked_until REAL)"
        )
        db.execute("INSERT INTO users VALUES ('u', ?, ?)", (failures, locked_until))
        row = db.execute(
            _documented_sql(),
            {"now": NOW, "max": max_attempts, "deadline": lock_deadline(NOW, auto), "name": "u"},
        ).fetchone()
    finally:
        db.close()
    assert LockUpdate(*row) == after_failure(failures, locked_until, NOW, max_attempts, auto)
