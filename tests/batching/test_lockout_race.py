"""The lockout under parallel guessing, through ThreadedEngine on a real thread pool, on
SQLite (batched, first factors paused) and PostgreSQL (each decision whole on its thread).

Exactly `max_attempts` guesses are evaluated, every later one is a LOCKED reject, and no
code is accepted once the user is locked: the lock is checked again in the write that
uses a code or counts a failure, not trusted from the read before the first factor.
Time is the fake reactor's fixed NOW, so no lock expires during a test.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.python.threadpool import ThreadPool

from authd.auth.interfaces import (
    AuthRequest,
    Decision,
    Outcome,
    PasswordFor,
    PrimaryResult,
    Reason,
)
from authd.batching.threaded import ThreadedEngine
from authd.core.model import Token
from authd.decision.engine import Engine
from authd.metrics import Metrics
from tests.fakes import FakeBackend, FakeReactor
from tests.fixtures.pools import started_pool
from tests.world import NOW, PASSWORD, World, _open_real, decisions_for

MAX_ATTEMPTS = 3
GUESSES = 100
DEADLINE = 60.0
WRONG = "000000"
SLOW_PASSWORD = "the same password, typed by the user whose bind is slow"


@pytest.fixture(params=["sqlite", "postgresql"])
def real_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """alice with one TOTP token, max_attempts 3, locked until an operator unlocks."""
    with _open_real(request.param, request, tmp_path) as (store, hash_key):
        w = World(store, hash_key, FakeBackend("dir"))
        w.set("otp.lockout.max_attempts", MAX_ATTEMPTS)
        w.set("otp.lockout.auto_unlock_after", None)
        w.user("alice")
        yield w


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    """Eight threads: PostgreSQL decisions run side by side, as in the daemon."""
    with started_pool(8, "auth-race") as p:
        yield p


class SlowBind:
    """The directory, where the password check of the request typing SLOW_PASSWORD waits
    until the test releases it: that request read the user before the burst locked them
    and comes back to its write after every other guess was answered."""

    name = "dir"

    def __init__(self, inner: FakeBackend) -> None:
        self.inner = inner
        self.release = threading.Event()

    def authenticate(self, user: str, password: str | PasswordFor) -> PrimaryResult:
        typed = password if isinstance(password, str) else password(user)
        if typed == SLOW_PASSWORD:
            self.release.wait(DEADLINE)
            typed = PASSWORD
        return self.inner.authenticate(user, typed)

    def lookup(self, user: str) -> PrimaryResult:
        return self.inner.lookup(user)

    def ping(self) -> None:
        self.inner.ping()


def _submit(threaded: ThreadedEngine, reqs: list[AuthRequest], into: dict[int, Decision]) -> None:
    for i, req in enumerate(reqs):
        threaded.authenticate(req).addCallback(lambda d, i=i: into.__setitem__(i, d))


def _reasons_audited(w: World) -> Counter[str]:
    return Counter(e.reason for e in w.store.query_audit(user="alice", limit=10_000))


def _assert_locked_after_exactly_max(w: World, decisions: list[Decision], token: Token) -> None:
    """MAX_ATTEMPTS guesses evaluated (counter and audit), every other request a LOCKED
    reject, and the token never used."""
    reasons = Counter(d.reason for d in decisions)
    assert all(d.outcome is Outcome.REJECT for d in decisions)
    assert reasons == {Reason.BAD_OTP: MAX_ATTEMPTS, Reason.LOCKED: len(decisions) - MAX_ATTEMPTS}
    user = w.stored_user("alice")
    assert user.failures == MAX_ATTEMPTS
    assert user.locked_until is not None and user.locked_until > NOW
    audited = _reasons_audited(w)
    assert audited["bad_otp"] == MAX_ATTEMPTS
    assert audited["locked"] == len(decisions) - MAX_ATTEMPTS
    assert audited["ok"] == 0
    stored = w.store.get_token(token.serial)
    assert stored is not None and stored.last_step == token.last_step


def test_parallel_guesses_with_the_password_lock_after_exactly_max(
    real_world: World, pool: ThreadPool
) -> None:
    """password + code, inline: a request that read alice unlocked and checks its
    password slowly, then 100 parallel wrong codes; the 3rd failure locks her, the
    other 97 are LOCKED, and the slow request's right code is refused once it writes."""
    w = real_world
    token = w.token("alice")
    directory = SlowBind(w.directory)
    engine = Engine(w.config, w.store, [directory], w.hash_key)
    reactor = FakeReactor(NOW)
    threaded = ThreadedEngine(decisions_for(engine), reactor, pool, Metrics())
    slow: dict[int, Decision] = {}
    _submit(threaded, [w.request(SLOW_PASSWORD + w.code(token))], slow)
    results: dict[int, Decision] = {}
    _submit(threaded, [w.request(PASSWORD + WRONG) for _ in range(GUESSES)], results)
    try:
        reactor.run_until(lambda: len(results) == GUESSES, timeout=DEADLINE)
    finally:
        directory.release.set()
    reactor.run_until(lambda: bool(slow), timeout=DEADLINE)
    _assert_locked_after_exactly_max(w, [slow[0], *results.values()], token)
    assert slow[0].reason is Reason.LOCKED


@pytest.mark.parametrize("otp_field", [False, True], ids=["radius", "http"])
def test_parallel_guesses_without_the_password_lock_after_exactly_max(
    real_world: World, pool: ThreadPool, otp_field: bool
) -> None:
    """OTP only (first_factor none), the code in the password field (RADIUS) or the
    `otp` field (HTTP /otp/check): 100 parallel wrong codes and then the right one in
    the same burst; exactly 3 are evaluated, the rest, the right code too, are LOCKED."""
    w = real_world
    token = w.token("alice")
    reactor = FakeReactor(NOW)
    threaded = ThreadedEngine(decisions_for(w.engine()), reactor, pool, Metrics())

    def req(code: str) -> AuthRequest:
        if otp_field:
            return w.request("", otp=code, first_factor="none", frontend="http")
        return w.request(code, first_factor="none")

    results: dict[int, Decision] = {}
    _submit(threaded, [req(WRONG) for _ in range(GUESSES)] + [req(w.code(token))], results)
    reactor.run_until(lambda: len(results) == GUESSES + 1, timeout=DEADLINE)
    _assert_locked_after_exactly_max(w, list(results.values()), token)
    assert results[GUESSES].reason is Reason.LOCKED


def test_parallel_challenge_answers_lock_after_exactly_max(
    real_world: World, pool: ThreadPool
) -> None:
    """Challenge mode: 101 challenges issued to alice (right password), then their
    answers in one burst, 100 wrong codes and the right one last: exactly 3 evaluated."""
    w = real_world
    token = w.token("alice")
    reactor = FakeReactor(NOW)
    threaded = ThreadedEngine(decisions_for(w.engine()), reactor, pool, Metrics())
    states = []
    for _ in range(GUESSES + 1):
        issued = w.decide(PASSWORD, mode="challenge")
        assert issued.outcome is Outcome.CHALLENGE and issued.state is not None
        states.append(issued.state)
    answers = [w.request(WRONG, state=s, mode="challenge") for s in states[:-1]]
    answers.append(w.request(w.code(token), state=states[-1], mode="challenge"))
    results: dict[int, Decision] = {}
    _submit(threaded, answers, results)
    reactor.run_until(lambda: len(results) == GUESSES + 1, timeout=DEADLINE)
    # The challenge rows issued before the burst are audited too, as challenge_issued.
    assert _reasons_audited(w)["challenge_issued"] == GUESSES + 1
    _assert_locked_after_exactly_max(w, list(results.values()), token)
    assert results[GUESSES].reason is Reason.LOCKED


def test_a_code_sent_four_times_at_once_is_one_accept_and_no_lockout(
    real_world: World, pool: ThreadPool
) -> None:
    """One right code sent 4 times in parallel with max_attempts 3: one accept and three
    replays, audited as such; a replay is not a guess, so nothing counts toward the lock
    and the next code is accepted."""
    w = real_world
    token = w.token("alice")
    reactor = FakeReactor(NOW)
    threaded = ThreadedEngine(decisions_for(w.engine()), reactor, pool, Metrics())
    results: dict[int, Decision] = {}
    _submit(threaded, [w.request(PASSWORD + w.code(token)) for _ in range(4)], results)
    reactor.run_until(lambda: len(results) == 4, timeout=DEADLINE)
    assert Counter(d.reason for d in results.values()) == {Reason.OK: 1, Reason.REPLAY: 3}
    assert w.stored_user("alice").failures == 0
    assert _reasons_audited(w) == {"ok": 1, "replay": 3}
    later: dict[int, Decision] = {}
    reactor.now = NOW + 30
    _submit(threaded, [w.request(PASSWORD + w.code(token, at=NOW + 30))], later)
    reactor.run_until(lambda: bool(later), timeout=DEADLINE)
    assert later[0].reason is Reason.OK
