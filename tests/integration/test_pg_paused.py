"""A hung PostgreSQL (its processes stopped with SIGSTOP, as a frozen VM or a stuck
storage would): requests are answered reject within store.timeout, and no code sent
meanwhile is used up when the server resumes."""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from twisted.python.threadpool import ThreadPool

from authd.auth.interfaces import Decision, Outcome
from authd.batching.threaded import ThreadedEngine
from authd.crypto import Keyring
from authd.metrics import Metrics
from authd.storage.sql import SqlStore
from tests.fakes import FakeBackend
from tests.fixtures.postgres import Cluster
from tests.polling import wait_until
from tests.world import World, decisions_for

TIMEOUT = 1.0  # store.timeout
# Scheduling slack on a busy two-core CI machine: thread hand-offs, not store waits.
MARGIN = 1.0


class _LoopReactor:
    """A reactor of our own: the wall clock, and one thread that runs every call handed
    to it in order (requests in, answers out), as the real reactor thread would."""

    def __init__(self) -> None:
        self._calls: queue.Queue[tuple[Callable[..., object], tuple[object, ...]] | None] = (
            queue.Queue()
        )
        self._loop = threading.Thread(target=self._run, name="test-reactor", daemon=True)
        self._loop.start()

    def seconds(self) -> float:
        return time.time()

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:  # noqa: N802
        self._calls.put((f, args))

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            call[0](*call[1])

    def stop(self) -> None:
        self._calls.put(None)
        self._loop.join(timeout=10)


def test_a_stopped_postgresql_costs_timely_rejects_and_no_codes(
    postgres_cluster: Cluster, tmp_path: Path
) -> None:
    """With every process of the cluster stopped, six requests arriving over 1.5 s are
    each answered reject within store.timeout (+ scheduling margin). After SIGCONT, the
    code they carried has not been used (the token's last step did not move) and is
    accepted once."""
    keyring = Keyring.load_or_create(str(tmp_path / "keys.json"))
    store = SqlStore.open(postgres_cluster.url, keyring, pool_size=2, timeout=TIMEOUT)
    reactor = _LoopReactor()
    pool = ThreadPool(minthreads=1, maxthreads=4, name="auth-test")
    pool.start()
    try:
        w = World(store, keyring.hash_key, FakeBackend("dir"))
        w.user("alice")
        token = w.token("alice")
        threaded = ThreadedEngine(
            decisions_for(w.engine()), reactor, pool, Metrics(), store_timeout=TIMEOUT
        )
        answers: list[tuple[float, float, Decision]] = []

        def send(code: str) -> None:
            arrived = time.monotonic()
            req = w.request(code, first_factor="none")
            threaded.authenticate(req).addCallback(
                lambda d: answers.append((arrived, time.monotonic(), d))
            )

        def ask(code: str) -> Decision:
            n = len(answers)
            reactor.callFromThread(send, code)
            wait_until(lambda: len(answers) > n, 10, "no answer")
            return answers[n][2]

        assert ask(w.code(token, at=time.time())).outcome is Outcome.ACCEPT
        used = store.get_token(token.serial)
        assert used is not None and used.last_step is not None
        # The next step's code: within the default 30 s skew for the whole test.
        code = w.code(token, at=(used.last_step + 1) * token.period + 1)
        del answers[:]

        postgres_cluster.signal(signal.SIGSTOP)
        try:
            for _ in range(6):
                reactor.callFromThread(send, code)
                time.sleep(0.25)
            wait_until(lambda: len(answers) == 6, TIMEOUT + MARGIN + 2, "requests left unanswered")
        finally:
            postgres_cluster.signal(signal.SIGCONT)
        late = [round(done - arrived, 2) for arrived, done, _ in answers]
        assert max(late) < TIMEOUT + MARGIN, f"answered after {late} s"
        assert {d.outcome for _, _, d in answers} == {Outcome.REJECT}

        time.sleep(0.5)  # what the server still held has run by now
        wait_until(lambda: store.get_token(token.serial) is not None, 10, "server not back")
        after = store.get_token(token.serial)
        assert after is not None and after.last_step == used.last_step, "a code was used"
        assert ask(code).outcome is Outcome.ACCEPT
        assert ask(code).outcome is Outcome.REJECT  # now it is used
    finally:
        pool.stop()
        reactor.stop()
        store.close()
