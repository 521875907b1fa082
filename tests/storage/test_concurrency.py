"""Exactness under concurrency: counters, compare-and-set and single-use rows hold with
many threads (and processes) hitting one database, on both backends."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authd.auth.interfaces import Challenge
from authd.core.lockout import LockUpdate, after_failure, after_success, after_unlock
from authd.core.model import Token, TokenType, User
from authd.crypto import Keyring
from authd.storage.sql import SqlStore

NOW = 1_767_225_600.0
R = TypeVar("R")


def _race(n: int, fn: Callable[[int], R]) -> list[R]:
    """Run fn(0..n-1) on n threads released together by a barrier."""
    barrier = threading.Barrier(n)

    def go(i: int) -> R:
        barrier.wait(timeout=30)
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(go, range(n), timeout=120))


def test_twenty_parallel_failures_count_exactly_twenty(store: SqlStore) -> None:
    """20 threads each record one failure: the counter moves by exactly 20, every
    returned count is distinct, and the lock is set once failures reach max."""
    store.add_user(User(name="alice"))
    results = _race(20, lambda i: store.record_failure("alice", NOW, 5, 300))
    assert sorted(r.failures for r in results) == list(range(1, 21))
    for r in results:
        assert r.locked_until == (NOW + 300 if r.failures >= 5 else None)
    u = store.get_user("alice")
    assert u is not None and (u.failures, u.locked_until) == (20, NOW + 300)


def test_same_backup_code_from_two_threads_has_one_winner(store: SqlStore) -> None:
    """Two threads consuming the same code: exactly one succeeds, every time."""
    store.add_user(User(name="alice"))
    codes = [f"h{i}" for i in range(25)]
    store.replace_backup_codes("alice", codes, NOW)
    for code in codes:
        assert sorted(_race(2, lambda i, c=code: store.consume_backup_code("alice", c))) == [
            False,
            True,
        ]
    assert store.backup_codes_left("alice") == 0


def test_same_totp_step_from_two_threads_has_one_winner(store: SqlStore) -> None:
    """Two threads accepting the same step: exactly one wins (replay across threads)."""
    store.add_user(User(name="alice"))
    store.add_token(Token(serial="T", type=TokenType.TOTP, seed=b"s" * 20, user="alice"))
    for step in range(1000, 1025):
        assert sorted(_race(2, lambda i, s=step: store.accept_totp_step("T", s, 0))) == [
            False,
            True,
        ]
    assert store.get_token("T").last_step == 1024  # type: ignore[union-attr]


def test_same_hotp_counter_from_many_threads_has_one_winner(store: SqlStore) -> None:
    """Eight threads presenting the same HOTP counter: one wins, the counter moves once."""
    store.add_user(User(name="alice"))
    store.add_token(Token(serial="H", type=TokenType.HOTP, seed=b"s" * 20, user="alice"))
    assert _race(8, lambda i: store.accept_hotp_counter("H", 3)).count(True) == 1
    assert store.get_token("H").counter == 4  # type: ignore[union-attr]


def test_challenge_taken_once_across_threads(store: SqlStore) -> None:
    """Four threads answering one challenge state: one gets it, the others None."""
    ch = Challenge(user="alice", client="vpn", expires_at=NOW + 60)
    for n in range(10):
        store.put_challenge(f"s{n}", ch)
        got = _race(4, lambda i, h=f"s{n}": store.take_challenge(h, NOW))
        assert got.count(ch) == 1 and got.count(None) == 3


def test_ensure_user_race_creates_one_row(store: SqlStore) -> None:
    """Ten first sightings at once all return the same single row."""
    users = _race(10, lambda i: store.ensure_user("newbie", "ldap", NOW + i))
    assert len({u.created_at for u in users}) == 1
    assert [o.user.name for o in store.list_users("newbie")] == ["newbie"]


def test_processes_stay_exact_like_separate_nodes(
    store: SqlStore, store_url: str, keyring: Keyring
) -> None:
    """Three processes on one database (as nodes, or authd + authctl, would be): 45
    failures count 45, every backup code is won by exactly one process, and no TOTP
    step is accepted twice."""
    store.add_user(User(name="alice"))
    store.add_token(Token(serial="T", type=TokenType.TOTP, seed=b"s" * 20, user="alice"))
    codes = [f"h{i}" for i in range(30)]
    store.replace_backup_codes("alice", codes, NOW)
    script = textwrap.dedent(f"""
        import json
        from authd.crypto import Keyring
        from authd.storage.sql import SqlStore
        s = SqlStore.open({store_url!r}, Keyring.load_or_create({keyring.path!r}), pool_size=2)
        won, steps = [], []
        for i in range(30):
            if i < 15:
                s.record_failure("alice", {NOW!r}, 1000, 60)
            if s.consume_backup_code("alice", f"h{{i}}"):
                won.append(f"h{{i}}")
            if s.accept_totp_step("T", 100 + i, 0):
                steps.append(100 + i)
        s.close()
        print(json.dumps({{"won": won, "steps": steps}}))
    """)
    root = str(Path(__file__).resolve().parents[2])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outputs.append(json.loads(out))
    assert store.get_user("alice").failures == 45  # type: ignore[union-attr]
    won = [c for o in outputs for c in o["won"]]
    assert sorted(won) == sorted(codes)  # each code exactly once, none lost
    steps = [st for o in outputs for st in o["steps"]]
    assert len(steps) == len(set(steps))  # no step accepted twice
    assert store.get_token("T").last_step == max(steps) == 129  # type: ignore[union-attr]


_counter = iter(range(10**9))


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    per_thread=st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=6),
    max_attempts=st.integers(min_value=1, max_value=25),
    lock=st.one_of(st.none(), st.floats(min_value=1, max_value=3600)),
)
def test_parallel_failure_counting_is_exact(
    store: SqlStore, per_thread: list[int], max_attempts: int, lock: float | None
) -> None:
    """Any mix of threads and failure counts: total == sum, and the user is locked
    (with the deadline of the crossing failure) iff the sum reached max_attempts."""
    name = f"u{next(_counter)}"
    store.add_user(User(name=name))

    def worker(i: int) -> None:
        for _ in range(per_thread[i]):
            store.record_failure(name, NOW, max_attempts, lock)

    _race(len(per_thread), worker)
    u = store.get_user(name)
    assert u is not None
    total = sum(per_thread)
    assert u.failures == total
    if total >= max_attempts:
        assert u.locked_until == (float("inf") if lock is None else NOW + lock)
    else:
        assert u.locked_until is None


_OP = st.tuples(
    st.sampled_from(["fail", "fail", "fail", "success", "unlock"]),
    st.floats(min_value=0, max_value=120),
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(_OP, max_size=25),
    max_attempts=st.integers(min_value=1, max_value=5),
    lock=st.one_of(st.none(), st.sampled_from([5.0, 50.0])),
)
def test_lockout_matches_core_lockout_reference(
    store: SqlStore, ops: list[tuple[str, float]], max_attempts: int, lock: float | None
) -> None:
    """The one-statement SQL agrees with core/lockout.py (the rule) on any sequence of
    failures, successes (only reachable while not locked) and unlocks over moving time."""
    name = f"m{next(_counter)}"
    store.add_user(User(name=name))
    want, now = LockUpdate(0, None), NOW
    for op, dt in ops:
        now += dt
        if op == "fail":
            want = after_failure(want.failures, want.locked_until, now, max_attempts, lock)
            got = store.record_failure(name, now, max_attempts, lock)
            assert (got.failures, got.locked_until) == want
        elif op == "success":
            if want.locked_until is not None and now < want.locked_until:
                continue  # the engine refuses a locked user before any factor
            store.record_attempt(name, now, "10.0.0.1", "vpn", success=True)
            want = after_success()
        else:
            store.unlock_user(name)
            want = after_unlock()
        u = store.get_user(name)
        assert u is not None and (u.failures, u.locked_until) == want
