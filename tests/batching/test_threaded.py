"""auth/threaded.py: one hop into a real ThreadPool, metrics on the way back, fail closed.

The reactor is a hand-written fake (tests.fakes.FakeReactor): worker threads hand results
back through callFromThread and the test drains them with a short deadline, no sleeping.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.threadpool import ThreadPool

from authd.auth.interfaces import Decision, Outcome, Reason
from authd.auth.outage import QUIET_SECONDS
from authd.batching.threaded import ThreadedEngine
from authd.core.errors import StoreUnavailable
from authd.core.model import TokenType
from authd.metrics import Metrics
from tests.fakes import FakeBackend, FakeDirectoryUser, FakeReactor, WrappedStore
from tests.world import NOW, PASSWORD, World, decide_all, decisions_for

DEADLINE = 5.0


def run(
    reactor: FakeReactor, threaded: ThreadedEngine, world: World, typed: str, **kw: Any
) -> Decision:
    results: list[Decision] = []
    threaded.authenticate(world.request(typed, **kw)).addCallback(results.append)
    reactor.run_until(lambda: bool(results), timeout=DEADLINE)
    return results[0]


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def _write_lock_free(path: str) -> bool:
    """True when another connection could take SQLite's write lock right now."""
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        probe.close()

def test_authenticate_runs_in_pool_and_counts(fake_world: World, pool: ThreadPool) -> None:
    """A decision made in the pool at the reactor's time arrives through the Deferred;
    requests, store latency and in-flight metrics are recorded."""
    w = fake_world
    w.user()
    tok = w.token()
    reactor, metrics = FakeReactor(NOW), Metrics()
    threaded = ThreadedEngine(decisions_for(w.engine()), reactor, pool, metrics)
    results: list[Decision] = []
    threaded.authenticate(w.request(PASSWORD + w.code(tok))).addCallback(results.append)
    # Counted on the reactor until its answer is delivered (the fake reactor runs no
    # delivery before run_until).
    assert sample(metrics, "authd_requests_in_flight", {"frontend": "radius"}) == 1
    reactor.run_until(lambda: bool(results), timeout=DEADLINE)
    d = results[0]
    assert (d.outcome, d.reason) == (Outcome.ACCEPT, Reason.OK)
    labels = {"frontend": "radius", "result": "accept", "reason": "ok"}
    assert sample(metrics, "authd_requests_total", labels) == 1
    assert sample(metrics, "authd_store_duration_seconds_count") == 1
    assert sample(metrics, "authd_requests_in_flight", {"frontend": "radius"}) == 0


def test_lockout_metric(fake_world: World, pool: ThreadPool) -> None:
    """The failure that locks a user bumps authd_lockouts_total once."""
    w = fake_world
    w.set("otp.lockout.max_attempts", 2)
    w.user()
    w.token()
    reactor, metrics = FakeReactor(NOW), Metrics()
    threaded = ThreadedEngine(decisions_for(w.engine()), reactor, pool, metrics)
    for _ in range(3):
        run(reactor, threaded, w, PASSWORD + "000000")
    assert sample(metrics, "authd_lockouts_total") == 1


def test_unexpected_error_becomes_logged_reject(fake_world: World, pool: ThreadPool) -> None:
    """A store failure is an UNAVAILABLE reject with a logged traceback that names no
    secret; the Deferred never fails."""
    w = fake_world
    w.user()
    w.store.down = True  # type: ignore[attr-defined]
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        reactor, metrics = FakeReactor(NOW), Metrics()
        threaded = ThreadedEngine(decisions_for(w.engine()), reactor, pool, metrics)
        d = run(reactor, threaded, w, PASSWORD + "424242")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert (d.outcome, d.reason, d.message) == (
        Outcome.REJECT,
        Reason.UNAVAILABLE,
        "Authentication failed",
    )
    failures = [e for e in events if "log_failure" in e]
    assert len(failures) == 1
    text = repr(failures[0]) + failures[0]["log_failure"].getTraceback()
    assert "StoreUnavailable" in text
    assert PASSWORD not in text and "424242" not in text
    labels = {"frontend": "radius", "result": "reject", "reason": "unavailable"}
    assert sample(metrics, "authd_requests_total", labels) == 1


def test_store_outage_is_logged_once_and_counted(fake_world: World, pool: ThreadPool) -> None:
    """A store outage logs one traceback when decisions start failing and one line when
    they succeed again; every failed request is counted, and only its lost audit record
    (not an error or traceback) is logged on its own."""
    w = fake_world
    w.user()
    tok = w.token()
    reactor, metrics = FakeReactor(NOW), Metrics()
    threaded = ThreadedEngine(decisions_for(w.engine()), reactor, pool, metrics)
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        w.store.down = True  # type: ignore[attr-defined]
        for _ in range(20):
            assert run(reactor, threaded, w, PASSWORD + "424242").reason is Reason.UNAVAILABLE
        w.store.down = False  # type: ignore[attr-defined]
        reactor.now += QUIET_SECONDS  # succeeding with no failure that long ends it
        assert run(reactor, threaded, w, PASSWORD + w.code(tok)).outcome is Outcome.ACCEPT
        assert run(reactor, threaded, w, PASSWORD + "000000").outcome is Outcome.REJECT
    finally:
        globalLogPublisher.removeObserver(events.append)
    # Each lost audit record is one structured line of its own (the record itself, kept
    # in the log); the outage's traceback is logged once.
    lost = [e for e in events if e.get("log_format", "").startswith("audit record not written")]
    assert len(lost) == 20
    loud = [e for e in events if e["log_level"] >= LogLevel.warn and e not in lost]
    assert len(loud) == 1 and "log_failure" in loud[0], [formatEvent(e) for e in loud]
    assert "StoreUnavailable" in loud[0]["log_failure"].getTraceback()
    back = [formatEvent(e) for e in events
            if e.get("log_format", "").startswith("decisions succeed again")]
    assert back == ["decisions succeed again after 20 failed (StoreUnavailable)"]
    assert sample(metrics, "authd_decision_errors_total", {"error": "StoreUnavailable"}) == 20


def test_a_flapping_outage_is_one_outage_in_the_log(fake_world: World, pool: ThreadPool) -> None:
    """Failures mixed with successes (a store that times out now and then) log one
    traceback and no end until decisions have succeeded for QUIET_SECONDS with no
    failure; then one line says so. Every failure is still counted."""
    w = fake_world
    w.user()
    tok = w.token()
    reactor, metrics = FakeReactor(NOW), Metrics()
    threaded = ThreadedEngine(decisions_for(w.engine()), reactor, pool, metrics)
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        for _ in range(10):
            w.store.down = True  # type: ignore[attr-defined]
            assert run(reactor, threaded, w, PASSWORD + "424242").reason is Reason.UNAVAILABLE
            w.store.down = False  # type: ignore[attr-defined]
            reactor.now += 1.0
            decided = run(reactor, threaded, w, PASSWORD, user="nobody")
            assert decided.reason is Reason.UNKNOWN_USER
        tracebacks = [e for e in events if "log_failure" in e]
        ended = [e for e in events if e.get("log_format", "").startswith("decisions succeed")]
        assert len(tracebacks) == 1 and ended == []
        reactor.now += QUIET_SECONDS
        code = w.code(tok, at=reactor.now)
        assert run(reactor, threaded, w, PASSWORD + code).outcome is Outcome.ACCEPT
    finally:
        globalLogPublisher.removeObserver(events.append)
    ended = [formatEvent(e) for e in events
             if e.get("log_format", "").startswith("decisions succeed")]
    assert ended == ["decisions succeed again after 10 failed (StoreUnavailable)"]
    assert sample(metrics, "authd_decision_errors_total", {"error": "StoreUnavailable"}) == 10


def test_unknown_frontend_label(fake_world: World, pool: ThreadPool) -> None:
    """Metric labels stay in a fixed set: an unexpected front-end name is `other`."""
    w = fake_world
    reactor, metrics = FakeReactor(NOW), Metrics()
    threaded = ThreadedEngine(decisions_for(w.engine()), reactor, pool, metrics)
    run(reactor, threaded, w, "pw", frontend="carrier-pigeon")
    labels = {"frontend": "other", "result": "reject", "reason": "unknown_user"}
    assert sample(metrics, "authd_requests_total", labels) == 1


class CountingReactor(FakeReactor):
    """FakeReactor that counts hand-backs from worker threads (batching is observable)."""

    def __init__(self, now: float) -> None:
        super().__init__(now)
        self.handbacks = 0

    def callFromThread(self, f: Any, *args: object) -> None:  # noqa: N802
        self.handbacks += 1
        super().callFromThread(f, *args)


def test_many_requests_each_get_their_own_decision(fake_world: World, pool: ThreadPool) -> None:
    """60 requests queued at once on a 2-thread pool: every Deferred fires exactly once
    with the decision for its own user, in-flight returns to 0, and results come back
    in fewer hand-offs than requests (batched)."""
    w = fake_world
    tokens = w.users_with_tokens(60)
    users = list(tokens)
    reactor, metrics = CountingReactor(NOW), Metrics()
    threaded = ThreadedEngine(decisions_for(w.engine()), reactor, pool, metrics)
    results: dict[str, list[Decision]] = {u: [] for u in users}
    for i, u in enumerate(users):
        # every other user answers with a wrong code: accepts and rejects interleave
        code = w.code(tokens[u]) if i % 2 == 0 else "000000"
        req = w.request(code, user=u, first_factor="none")
        threaded.authenticate(req).addCallback(results[u].append)
    reactor.run_until(lambda: all(results.values()), timeout=DEADLINE)
    for i, u in enumerate(users):
        (decision,) = results[u]
        assert decision.user == u
        assert decision.outcome is (Outcome.ACCEPT if i % 2 == 0 else Outcome.REJECT)
    assert reactor.handbacks < len(users)
    assert sample(metrics, "authd_requests_in_flight", {"frontend": "radius"}) == 0


def test_one_failing_decision_does_not_disturb_its_batch(
    fake_world: World, pool: ThreadPool
) -> None:
    """A decision that raises is a fail-closed reject for its own request only; the
    requests decided around it in the same batch keep their own outcomes."""
    w = fake_world
    users = [w.user(f"u{i}") for i in range(6)]
    tokens = {u: w.token(u) for u in users}
    real_read = w.store.get_user_tokens_codes

    def flaky(name: str) -> Any:
        if name == "u3":
            raise RuntimeError("boom")
        return real_read(name)

    # Through the store: the Engine's own methods cannot be replaced once compiled.
    engine = w.engine()
    engine.store = WrappedStore(w.store, get_user_tokens_codes=flaky)
    reactor, metrics = FakeReactor(NOW), Metrics()
    threaded = ThreadedEngine(decisions_for(engine), reactor, pool, metrics)
    results: dict[str, Decision] = {}
    for u in users:
        req = w.request(w.code(tokens[u]), user=u, first_factor="none")
        threaded.authenticate(req).addCallback(lambda d, u=u: results.__setitem__(u, d))
    reactor.run_until(lambda: len(results) == len(users), timeout=DEADLINE)
    assert results["u3"].reason is Reason.UNAVAILABLE
    assert all(results[u].outcome is Outcome.ACCEPT for u in users if u != "u3")


def test_finished_results_go_back_before_a_slow_first_factor(
    paused_or_not_world: World,
) -> None:
    """A result held back for batching is handed back before the same worker starts a
    decision (or, on SQLite, a first-factor turn) that may block on a directory: it
    never waits for that bind."""
    w = paused_or_not_world
    w.user("fast")
    tok = w.token("fast")
    w.user("slow")
    w.token("slow")
    entered, release = threading.Event(), threading.Event()
    real_authenticate = w.directory.authenticate

    def blocking(user: str, password: str) -> Any:
        if user == "slow":
            entered.set()
            release.wait(timeout=DEADLINE)
        return real_authenticate(user, password)

    w.directory.authenticate = blocking  # type: ignore[method-assign]
    single = ThreadPool(minthreads=1, maxthreads=1, name="auth-test-1")
    single.start()
    try:
        reactor = FakeReactor(NOW)
        threaded = ThreadedEngine(decisions_for(w.engine()), reactor, single, Metrics())
        fast: list[Decision] = []
        slow: list[Decision] = []
        threaded.authenticate(w.request(w.code(tok), user="fast", first_factor="none")).addCallback(
            fast.append
        )
        threaded.authenticate(w.request(PASSWORD + "000000", user="slow")).addCallback(slow.append)
        reactor.run_until(lambda: bool(fast), timeout=DEADLINE)
        assert entered.is_set() and not slow  # the bind is still running
        assert fast[0].outcome is Outcome.ACCEPT
        release.set()
        reactor.run_until(lambda: bool(slow), timeout=DEADLINE)
        assert slow[0].outcome is Outcome.REJECT
    finally:
        release.set()
        single.stop()


def test_store_threads_caps_concurrent_store_turns(fake_world: World) -> None:
    """With store_threads=1 on a 4-thread pool, 40 store-only requests are all
    decided, never two at once (CPU-bound work gains nothing from more threads)."""
    w = fake_world
    tokens = w.users_with_tokens(40)
    users = list(tokens)
    real_read = w.store.get_user_tokens_codes
    lock = threading.Lock()
    running, peak = [0], [0]

    def counted(name: str) -> Any:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            threading.Event().wait(0.001)  # long enough for others to overlap if allowed
            return real_read(name)
        finally:
            with lock:
                running[0] -= 1

    engine = w.engine()
    engine.store = WrappedStore(w.store, get_user_tokens_codes=counted)
    wide = ThreadPool(minthreads=4, maxthreads=4, name="auth-test-4")
    wide.start()
    try:
        reactor = FakeReactor(NOW)
        threaded = ThreadedEngine(decisions_for(engine), reactor, wide, Metrics(), store_threads=1)
        results: list[Decision] = []
        for u in users:
            req = w.request(w.code(tokens[u]), user=u, first_factor="none")
            threaded.authenticate(req).addCallback(results.append)
        reactor.run_until(lambda: len(results) == len(users), timeout=DEADLINE)
    finally:
        wide.stop()
    assert all(d.outcome is Outcome.ACCEPT for d in results)
    assert peak[0] == 1


def test_store_only_request_does_not_wait_behind_a_directory_bind(
    paused_or_not_world: World,
) -> None:
    """A store-only request arriving while a first-factor request waits on the directory
    gets its own thread (store_threads limits store turns, not the pool), whether the
    first factor is checked inside a whole decision or in a turn of its own (SQLite)."""
    w = paused_or_not_world
    w.user("slow")
    w.token("slow")
    w.user("fast")
    tok = w.token("fast")
    entered, release = threading.Event(), threading.Event()
    real_authenticate = w.directory.authenticate

    def blocking(user: str, password: str) -> Any:
        entered.set()
        release.wait(timeout=DEADLINE)
        return real_authenticate(user, password)

    w.directory.authenticate = blocking  # type: ignore[method-assign]
    two = ThreadPool(minthreads=2, maxthreads=2, name="auth-test-2")
    two.start()
    try:
        reactor = FakeReactor(NOW)
        decisions = decisions_for(w.engine())
        threaded = ThreadedEngine(decisions, reactor, two, Metrics(), store_threads=1)
        slow: list[Decision] = []
        fast: list[Decision] = []
        threaded.authenticate(w.request(PASSWORD + "000000", user="slow")).addCallback(slow.append)
        assert entered.wait(timeout=DEADLINE)
        req = w.request(w.code(tok), user="fast", first_factor="none")
        threaded.authenticate(req).addCallback(fast.append)
        reactor.run_until(lambda: bool(fast), timeout=DEADLINE)
        assert fast[0].outcome is Outcome.ACCEPT and not slow
        release.set()
        reactor.run_until(lambda: bool(slow), timeout=DEADLINE)
    finally:
        release.set()
        two.stop()


# ---------------------------------------------------------------- Batched.decide_many
def _db_path(world: World) -> str | None:
    """The SQLite file behind a real store (None for the fake and PostgreSQL)."""
    engine = getattr(world.store, "_engine", None)
    if engine is None or engine.dialect.name != "sqlite":
        return None
    return str(engine.url.database)


def test_decide_many_matches_deciding_one_by_one(world: World) -> None:
    """A batch decides exactly as sequential decisions would: the second use of one code
    is a replay, a wrong code and a malformed request are rejects, a user only the
    directory knows is looked up (outside the batch's transaction), a first-factor
    request is checked outside it too; every decision is audited once."""
    w = world
    alice, bob = w.user("alice"), w.user("bob")
    ta, tb = w.token(alice), w.token(bob)
    w.directory.users["carol"] = FakeDirectoryUser(PASSWORD, ("staff",))
    path = _db_path(w)
    real_lookup = w.directory.lookup
    lock_free: list[bool] = []

    def lookup(user: str) -> Any:
        if path is not None:  # SQLite: the write lock must not be held during a lookup
            lock_free.append(_write_lock_free(path))
        return real_lookup(user)

    w.directory.lookup = lookup  # type: ignore[method-assign]
    none: dict[str, Any] = {"first_factor": "none"}
    reqs = [
        w.request(w.code(ta), user=alice, **none),
        w.request(w.code(ta), user=alice, **none),  # same code again: replay
        w.request("000000", user=bob, **none),
        w.request(w.code(tb), user="bad\x00name", **none),
        w.request("123456", user="carol", **none),  # directory only: lookup
        w.request(w.code(tb), user=bob, **none),
        w.request(PASSWORD + "999999", user=bob),  # first factor: outside the batch
    ]
    results = decide_all(w.decisions(), [(r, NOW) for r in reqs])
    got = [(r[0].outcome, r[0].reason) for r in results if not isinstance(r, BaseException)]
    assert got == [
        (Outcome.ACCEPT, Reason.OK),
        (Outcome.REJECT, Reason.REPLAY),
        (Outcome.REJECT, Reason.BAD_OTP),
        (Outcome.REJECT, Reason.BAD_REQUEST),
        (Outcome.REJECT, Reason.NO_TOKEN),
        (Outcome.ACCEPT, Reason.OK),
        (Outcome.REJECT, Reason.BAD_OTP),
    ]
    assert w.directory.lookup_calls == ["carol"] and w.binds == 1
    assert lock_free in ([], [True])
    assert len(w.store.query_audit(limit=100)) == len(reqs)
    assert w.stored_user(bob).failures == 1  # the accept reset it, the last reject counted


def test_failure_inside_a_batch_rolls_it_back_and_redecides_alone(world: World) -> None:
    """When one decision's write phase keeps raising, nothing of its batch stays
    half-written (the batch's one transaction rolls back): the others are decided again
    alone and accepted exactly once (one audit row each), and only the failing request
    gets the error (audited as a failed decision)."""
    w = world
    users = [w.user(f"u{i}") for i in range(5)]
    tokens = {u: w.token(u) for u in users}
    engine = w.engine()
    real = w.store.commit_decision
    raised: list[str] = []

    def flaky(write: Any) -> Any:
        if write.user == "u3":
            raised.append("u3")
            raise StoreUnavailable("database error: OperationalError")
        return real(write)

    def flaky_many(writes: Any) -> Any:
        if any(write.user == "u3" for write in writes):
            raised.append("u3")
            raise StoreUnavailable("database error: OperationalError")
        return w.store.commit_decisions(writes)

    engine.store = WrappedStore(w.store, commit_decision=flaky, commit_decisions=flaky_many)
    reqs = [(w.request(w.code(tokens[u]), user=u, first_factor="none"), NOW) for u in users]
    decisions = decisions_for(engine)
    results = decide_all(decisions, reqs)
    # once alone; batched, once more inside the batch it rolled back
    assert raised == (["u3", "u3"] if decisions.pauses else ["u3"])
    for u, result in zip(users, results, strict=True):
        if u == "u3":
            assert isinstance(result, StoreUnavailable)
        else:
            assert not isinstance(result, BaseException)
            assert result[0].outcome is Outcome.ACCEPT
        audit = w.store.query_audit(user=u)
        assert len(audit) == 1
        if u == "u3":  # the failed decision is on record too, as one that failed
            assert (audit[0].result, audit[0].reason) == ("reject", "unavailable")
            assert audit[0].detail == "StoreUnavailable"
    # the failed request's code is still unused: a retry is accepted
    decision, _ = w.engine().decide_with_stats(reqs[3][0], NOW)
    assert decision.outcome is Outcome.ACCEPT


def _sqlite_world(tmp_path: Any) -> World:
    from authd.crypto import Keyring
    from authd.storage.sql import SqlStore

    keyring = Keyring.load_or_create(str(tmp_path / "keys.json"))
    store = SqlStore.open(f"sqlite:///{tmp_path / 'authd.db'}", keyring)
    return World(store, keyring.hash_key, FakeBackend("dir"))


def test_batch_reads_and_matches_without_the_write_lock(tmp_path: Any) -> None:
    """Phase 1 of a SQLite batch (reads, OTP matching) holds no write lock: another
    process can take SQLite's write lock during every read of the batch, so worker
    processes compute side by side; the batch still accepts every code once."""
    w = _sqlite_world(tmp_path)
    users = [w.user(f"u{i}") for i in range(4)]
    tokens = {u: w.token(u, type=TokenType.HOTP) for u in users}
    path = _db_path(w)
    assert path is not None
    real_read = w.store.get_user_tokens_codes
    lock_free: list[bool] = []

    def read(name: str) -> Any:
        lock_free.append(_write_lock_free(path))
        return real_read(name)

    engine = w.engine()
    engine.store = WrappedStore(w.store, get_user_tokens_codes=read)
    reqs = [(w.request(w.code(tokens[u]), user=u, first_factor="none"), NOW) for u in users]
    results = decide_all(decisions_for(engine), reqs)
    assert [r[0].reason for r in results if not isinstance(r, BaseException)] == [Reason.OK] * 4
    assert lock_free == [True] * 4
    for u in users:
        token = w.store.get_token(tokens[u].serial)
        assert token is not None and token.counter == 1
    w.store.close()  # type: ignore[attr-defined]


def test_code_used_by_another_process_between_read_and_write_is_a_replay(
    tmp_path: Any,
) -> None:
    """Exactness does not rest on the batch's read snapshot: when another process uses
    the same HOTP code after the batch read the token but before its write phase, the
    compare-and-set loses and the decision is a REPLAY reject (not a guess: no failure
    counted); the other users of the batch are unaffected, and nothing is accepted twice."""
    from authd.crypto import Keyring
    from authd.storage.sql import SqlStore

    w = _sqlite_world(tmp_path)
    alice, bob = w.user("alice"), w.user("bob")
    ta, tb = w.token(alice, type=TokenType.HOTP), w.token(bob, type=TokenType.HOTP)
    path = _db_path(w)
    assert path is not None
    other_node = SqlStore.open(
        f"sqlite:///{path}", Keyring.load_or_create(str(tmp_path / "keys.json"))
    )
    real_read = w.store.get_user_tokens_codes

    def read(name: str) -> Any:
        found = real_read(name)
        if name == alice:  # "another node" wins the race for alice's counter 0
            assert other_node.accept_hotp_counter(ta.serial, 0)
        return found

    engine = w.engine()
    engine.store = WrappedStore(w.store, get_user_tokens_codes=read)
    none: dict[str, Any] = {"first_factor": "none"}
    reqs = [
        (w.request(w.code(ta), user=alice, **none), NOW),
        (w.request(w.code(tb), user=bob, **none), NOW),
    ]
    results = decide_all(decisions_for(engine), reqs)
    got = [(r[0].outcome, r[0].reason) for r in results if not isinstance(r, BaseException)]
    assert got == [(Outcome.REJECT, Reason.REPLAY), (Outcome.ACCEPT, Reason.OK)]
    assert w.stored_user(alice).failures == 0 and w.stored_user(bob).failures == 0
    token = w.store.get_token(ta.serial)
    assert token is not None and token.counter == 1
    other_node.close()
    w.store.close()  # type: ignore[attr-defined]


def test_a_users_second_request_starts_a_new_batch(tmp_path: Any) -> None:
    """A user appears once per write transaction: their next request is read after the
    first one committed (so consecutive HOTP codes both pass, as one by one), while
    other users' requests keep sharing transactions."""
    w = _sqlite_world(tmp_path)
    alice, bob, carol = w.user("alice"), w.user("bob"), w.user("carol")
    ta = w.token(alice, type=TokenType.HOTP)
    tb, tc = w.token(bob, type=TokenType.HOTP), w.token(carol, type=TokenType.HOTP)
    engine = w.engine()
    transactions: list[int] = []
    real_many = w.store.commit_decisions  # type: ignore[attr-defined]

    def many(writes: Any) -> Any:
        transactions.append(len(writes))
        return real_many(writes)

    engine.store = WrappedStore(w.store, commit_decisions=many)
    none: dict[str, Any] = {"first_factor": "none"}
    reqs = [
        (w.request(w.code(ta, counter=0), user=alice, **none), NOW),
        (w.request(w.code(tb), user=bob, **none), NOW),
        (w.request(w.code(ta, counter=1), user=alice, **none), NOW),
        (w.request(w.code(tc), user=carol, **none), NOW),
    ]
    results = decide_all(decisions_for(engine), reqs)
    assert [r[0].reason for r in results if not isinstance(r, BaseException)] == [Reason.OK] * 4
    assert transactions == [2, 2]
    token = w.store.get_token(ta.serial)
    assert token is not None and token.counter == 2
    w.store.close()  # type: ignore[attr-defined]


def test_batched_attempts_are_freed_without_the_cyclic_gc(tmp_path: Any) -> None:
    """Between its two phases a batched decision holds only plain data, and once decided
    nothing of it (attempt, pending step or planned write) is left for the cyclic GC,
    whose full passes over a busy daemon's heap showed up as tens of ms of tail latency."""
    import gc

    from authd.decision.attempt import Attempt, Pending
    from authd.decision.plan import Planned

    w = _sqlite_world(tmp_path)
    users = [w.user(f"u{i}") for i in range(8)]
    tokens = {u: w.token(u, type=TokenType.HOTP) for u in users}
    reqs = [(w.request(w.code(tokens[u]), user=u, first_factor="none"), NOW) for u in users]
    reqs.append((w.request("000000", user=users[0], first_factor="none"), NOW))
    engine = w.engine()
    kinds = (Attempt, Pending, Planned)
    gc.collect()
    gc.disable()
    try:
        before = {id(o) for o in gc.get_objects() if isinstance(o, kinds)}  # other tests'
        results = decide_all(decisions_for(engine), reqs)
        left = [o for o in gc.get_objects() if isinstance(o, kinds) and id(o) not in before]
    finally:
        gc.enable()
    assert [r[0].outcome for r in results if not isinstance(r, BaseException)] == [
        Outcome.ACCEPT
    ] * 8 + [Outcome.REJECT]
    assert left == []
    w.store.close()  # type: ignore[attr-defined]


def test_threaded_engine_batches_store_only_requests_on_sqlite(tmp_path: Any) -> None:
    """Through ThreadedEngine on a real SQLite store: 80 store-only requests (each code
    sent twice) all get their own answer, each code is accepted once, fewer transactions
    than decisions are used, and every decision is audited."""
    from authd.crypto import Keyring
    from authd.storage.sql import SqlStore

    keyring = Keyring.load_or_create(str(tmp_path / "keys.json"))
    store = SqlStore.open(f"sqlite:///{tmp_path / 'authd.db'}", keyring)
    w = World(store, keyring.hash_key, FakeBackend("dir"))
    tokens = w.users_with_tokens(40)
    users = list(tokens)
    transactions: list[int] = []  # decisions written by each write transaction
    real_one, real_many = store.commit_decision, store.commit_decisions

    def one(write: Any) -> Any:
        transactions.append(1)
        return real_one(write)

    def many(writes: Any) -> Any:
        transactions.append(len(writes))
        return real_many(writes)

    engine = w.engine()
    engine.store = WrappedStore(store, commit_decision=one, commit_decisions=many)
    single = ThreadPool(minthreads=1, maxthreads=1, name="auth-test-1")
    single.start()
    try:
        reactor, metrics = FakeReactor(NOW), Metrics()
        threaded = ThreadedEngine(decisions_for(engine), reactor, single, metrics, store_threads=1)
        results: dict[str, list[Decision]] = {u: [] for u in users}
        for u in users * 2:
            req = w.request(w.code(tokens[u]), user=u, first_factor="none")
            threaded.authenticate(req).addCallback(results[u].append)
        reactor.run_until(lambda: all(len(r) == 2 for r in results.values()), timeout=DEADLINE)
    finally:
        single.stop()
    for u in users:
        assert sorted(d.reason.value for d in results[u]) == ["ok", "replay"]
        assert len(store.query_audit(user=u)) == 2
    assert sum(transactions) == 80 and len(transactions) < 80
    assert (
        sample(
            metrics,
            "authd_requests_total",
            {"frontend": "radius", "result": "accept", "reason": "ok"},
        )
        == 40
    )
    assert sample(metrics, "authd_store_duration_seconds_count") == 80
    store.close()


def test_lockout_inside_one_batch_is_as_strict_as_one_by_one(world: World) -> None:
    """Wrong codes in one batch count one by one: the failure that reaches max_attempts
    locks the user, and the right code later in the same batch is refused as LOCKED
    (decisions in a batch see each other's writes)."""
    w = world
    w.set("otp.lockout.max_attempts", 3)
    alice = w.user("alice")
    tok = w.token(alice)
    none: dict[str, Any] = {"first_factor": "none", "user": alice}
    reqs = [(w.request("000000", **none), NOW) for _ in range(3)]
    reqs.append((w.request(w.code(tok), **none), NOW))
    results = decide_all(w.decisions(), reqs)
    reasons = [r[0].reason for r in results if not isinstance(r, BaseException)]
    assert reasons == [Reason.BAD_OTP, Reason.BAD_OTP, Reason.BAD_OTP, Reason.LOCKED]
    assert [r[1].locked_now for r in results if not isinstance(r, BaseException)] == [
        False,
        False,
        True,
        False,
    ]
    assert w.stored_user(alice).failures == 3


def test_a_request_older_than_store_timeout_is_rejected_undecided(
    paused_or_not_world: World, pool: ThreadPool
) -> None:
    """While the store is stuck on one decision, the next request waits; once it has
    waited store_timeout (the injected clock says so) it is rejected without being
    decided: no store call, its code unused, nothing written. The stuck decision, begun
    in time, is finished."""
    w = paused_or_not_world
    w.user("alice")
    w.user("bob")
    alice, bob = w.token("alice"), w.token("bob")
    entered, release = threading.Event(), threading.Event()
    reads: list[str] = []
    real_read = w.store.get_user_tokens_codes

    def read(name: str) -> Any:
        reads.append(name)
        if name == "alice":
            entered.set()
            release.wait(DEADLINE)
        return real_read(name)

    engine = w.engine()
    engine.store = WrappedStore(w.store, get_user_tokens_codes=read)
    reactor = FakeReactor(NOW)
    threaded = ThreadedEngine(
        decisions_for(engine), reactor, pool, Metrics(), store_threads=1, store_timeout=2.0
    )
    results: dict[str, Decision] = {}
    for user, token in (("alice", alice), ("bob", bob)):
        req = w.request(w.code(token), user=user, first_factor="none")
        threaded.authenticate(req).addCallback(lambda d, u=user: results.setdefault(u, d))
        if user == "alice":
            assert entered.wait(DEADLINE)
    reactor.now = NOW + 2.0  # bob has waited store_timeout
    release.set()
    reactor.run_until(lambda: len(results) == 2, timeout=DEADLINE)
    assert results["alice"].outcome is Outcome.ACCEPT
    assert (results["bob"].outcome, results["bob"].reason) == (Outcome.REJECT, Reason.UNAVAILABLE)
    assert reads == ["alice"]
    stored = w.store.get_token(bob.serial)
    assert stored is not None and stored.last_step == bob.last_step
    assert w.stored_user("bob").last_attempt is None


def test_a_first_factors_time_does_not_count_against_store_timeout(
    sqlite_world: World, pool: ThreadPool
) -> None:
    """A paused decision whose first factor took longer than store_timeout (it has its
    own bound) is still finished and committed: only time waiting for the store counts."""
    w = sqlite_world
    w.user("alice")
    token = w.token("alice")
    reactor = FakeReactor(NOW)
    real_authenticate = w.directory.authenticate

    def slow_bind(user: str, password: str) -> Any:
        reactor.now += 2.5  # a slow directory, on the injected clock
        return real_authenticate(user, password)

    w.directory.authenticate = slow_bind  # type: ignore[method-assign]
    threaded = ThreadedEngine(
        decisions_for(w.engine()), reactor, pool, Metrics(), store_threads=1, store_timeout=2.0
    )
    d = run(reactor, threaded, w, PASSWORD + w.code(token))
    assert (d.outcome, d.reason) == (Outcome.ACCEPT, Reason.OK)
