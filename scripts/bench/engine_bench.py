"""Benchmark of the decision hot path shared by RADIUS and HTTP (not a test).

    scripts/bench/engine [--users N] [--threads T] [--window W] [--url URL]

N distinct users, each with one TOTP token, in a fresh store (a temp SQLite file unless
--url names a database). Every measured request is a real accept: first_factor `none`
(the gateway checked the password), the user's current code, each code used once, so
the compare-and-set on the step, the attempt record and the audit row are all in the
measured path. Three phases, each on its own third of the users:

1. `Engine.decide` in a loop on one thread: decisions/s, CPU µs per decision, p50/p99;
2. `Batched.decide_many` on one thread, `--window` requests per call (what a
   ThreadedEngine drainer does with queued store-only requests; on SQLite one
   transaction per call): decisions/s, CPU µs per decision, latency of each call;
3. `ThreadedEngine.authenticate` on a real reactor with `--threads` pool threads (at
   most `--store-threads` of them on these store-only requests) and `--window`
   requests in flight: decisions/s, CPU µs per decision (whole process), p50/p99 from
   authenticate() to the Deferred firing.

`now` is fixed (the reactor's clock is wrapped for it) so no TOTP step boundary can turn
a late request into a reject mid-run; every decision is checked and any non-accept
aborts the run (nothing of it is reported). Users come in a seeded random order
(`--order name`: name order, printed in the header).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import insert

from authd.auth.interfaces import AuthRequest, Decision, Outcome
from authd.batching.batch import Batched
from authd.batching.threaded import ThreadedEngine
from authd.config.model import Config
from authd.core.habits import SigninHabits
from authd.core.otp import totp
from authd.crypto import Keyring
from authd.decision.attempt import Pending
from authd.decision.engine import Engine
from authd.metrics import Metrics
from authd.storage.schema import tokens, users
from authd.storage.sql import SqlStore

NOW = 1_767_225_607.0  # 7 s into a TOTP step


def populate(store: SqlStore, keyring: Keyring, n: int) -> list[tuple[str, str]]:
    """n users with one TOTP token each, inserted in bulk (the bench's set-up, not its
    subject); returns (user, current code) pairs."""
    people, toks, requests = [], [], []
    for i in range(n):
        name, serial, seed = f"bu{i:06d}", f"BT{i:06d}", os.urandom(20)
        people.append({"name": name, "source": "local", "created_at": NOW})
        toks.append(
            {
                "serial": serial,
                "user": name,
                "type": "totp",
                "algorithm": "SHA1",
                "digits": 6,
                "period": 30,
                "counter": 0,
                "last_step": -1,
                "drift": 0,
                "status": "active",
                "seed_enc": keyring.encrypt(seed, serial.encode()),
                "created_at": NOW,
            }
        )
        requests.append((name, totp(seed, NOW)))
    with store._engine.begin() as conn:  # noqa: SLF001 - bench set-up only
        conn.execute(insert(users), people)
        conn.execute(insert(tokens), toks)
    return requests


def request(user: str, code: str) -> AuthRequest:
    return AuthRequest(
        user=user,
        password=code,
        frontend="radius",
        client="bench",
        source="127.0.0.1",
        first_factor="none",
    )


def pct(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def report(label: str, n: int, wall: float, cpu: float, lat: list[float]) -> None:
    lat.sort()
    print(
        f"{label:34s} {n / wall:9.0f} decisions/s  {cpu / n * 1e6:7.1f} µs CPU/decision  "
        f"p50 {pct(lat, 0.5) * 1e3:6.2f} ms  p99 {pct(lat, 0.99) * 1e3:6.2f} ms  "
        f"(mean {statistics.fmean(lat) * 1e6:.0f} µs)"
    )


def check(decision: Decision, user: str) -> None:
    if decision.outcome is not Outcome.ACCEPT:
        sys.exit(f"not an accept for {user}: {decision.reason.value}; the bench is broken")


def one_thread(engine: Engine, reqs: list[AuthRequest]) -> None:
    lat = []
    decide, clock = engine.decide, time.perf_counter
    cpu0, t0 = time.process_time(), clock()
    for req in reqs:
        start = clock()
        decision = decide(req, NOW)
        lat.append(clock() - start)
        check(decision, req.user)
    wall, cpu = clock() - t0, time.process_time() - cpu0
    report("Engine.decide, 1 thread", len(reqs), wall, cpu, lat)


def many(engine: Engine, store: SqlStore, reqs: list[AuthRequest], size: int) -> None:
    batched = Batched(engine, store)
    lat = []
    clock = time.perf_counter
    cpu0, t0 = time.process_time(), clock()
    for i in range(0, len(reqs), size):
        chunk = reqs[i : i + size]
        start = clock()
        results = batched.decide_many([(req, NOW) for req in chunk])
        lat.append(clock() - start)
        for req, result in zip(chunk, results, strict=True):
            if isinstance(result, (BaseException, Pending)):
                sys.exit(f"decision failed for {req.user}: {type(result).__name__}")
            check(result[0], req.user)
    wall, cpu = clock() - t0, time.process_time() - cpu0
    report(f"Batched.decide_many, {size} per call", len(reqs), wall, cpu, lat)


class _FixedClockReactor:
    """The real reactor for thread hand-offs, with `now` pinned (see module doc)."""

    def __init__(self, reactor: object) -> None:
        self._reactor = reactor

    def seconds(self) -> float:
        return NOW

    def callFromThread(self, f: Callable[..., object], *args: object) -> object:  # noqa: N802
        return self._reactor.callFromThread(f, *args)  # type: ignore[attr-defined]


def threaded(
    engine: Engine,
    store: SqlStore,
    reqs: list[AuthRequest],
    threads: int,
    window: int,
    store_threads: int | None,
) -> None:
    from twisted.internet import reactor
    from twisted.python.threadpool import ThreadPool

    pool = ThreadPool(minthreads=threads, maxthreads=threads, name="bench-auth")
    pool.start()
    te = ThreadedEngine(
        Batched(engine, store),
        _FixedClockReactor(reactor),
        pool,
        Metrics(),
        store_threads=store_threads,
    )
    lat: list[float] = []
    pending = iter(reqs)
    state = {"done": 0, "t0": 0.0, "cpu0": 0.0}

    def launch() -> None:
        req = next(pending, None)
        if req is None:
            return
        start = time.perf_counter()

        def finished(decision: Decision) -> None:
            lat.append(time.perf_counter() - start)
            check(decision, req.user)
            state["done"] += 1
            if state["done"] == len(reqs):
                wall = time.perf_counter() - state["t0"]
                cpu = time.process_time() - state["cpu0"]
                label = f"ThreadedEngine {threads} thr/{store_threads} store, {window} fl"
                report(label, len(reqs), wall, cpu, lat)
                reactor.stop()  # type: ignore[attr-defined]
            else:
                launch()

        te.authenticate(req).addCallback(finished)

    def begin() -> None:
        state["t0"], state["cpu0"] = time.perf_counter(), time.process_time()
        for _ in range(window):
            launch()

    reactor.callWhenRunning(begin)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    pool.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=30_000, help="distinct users (all phases)")
    ap.add_argument("--threads", type=int, default=8, help="auth pool threads (auth_threads)")
    ap.add_argument("--window", type=int, default=64, help="requests per call (2), in flight (3)")
    ap.add_argument("--url", default="", help="store URL (default: a temp SQLite file)")
    ap.add_argument(
        "--store-threads",
        type=int,
        default=None,
        help="ThreadedEngine store_threads (default: 1 on SQLite, --threads otherwise)",
    )
    ap.add_argument(
        "--no-unusual-signin",
        action="store_true",
        help="decide without the unusual sign-in check (on in the daemon by default)",
    )
    ap.add_argument("--hash-chain", action="store_true", help="audit.hash_chain: true")
    ap.add_argument("--order", choices=("random", "name"), default="random", help="user order")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random user order")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="authd-bench-engine-"))
    url = args.url or f"sqlite:///{tmp / 'authd.db'}"
    keyring = Keyring.load_or_create(str(tmp / "keys.json"))
    store = SqlStore.open(
        url, keyring, pool_size=max(4, args.threads), audit_chain=args.hash_chain
    )
    pairs = populate(store, keyring, args.users)
    habits = None if args.no_unusual_signin else SigninHabits()
    engine = Engine(Config(), store, [], keyring.hash_key, habits=habits)
    if args.order == "random":  # as gateways send them; name order shares pages
        random.Random(args.seed).shuffle(pairs)
    reqs = [request(u, c) for u, c in pairs]
    third = len(reqs) // 3
    print(
        f"store: {url.split(':')[0]}, {args.users} users in {args.order} order, "
        f"python {sys.version.split()[0]}, "
        f"unusual sign-in {'off' if habits is None else 'on'}, hash chain {args.hash_chain}"
    )
    one_thread(engine, reqs[:third])
    many(engine, store, reqs[third : 2 * third], args.window)
    store_threads = args.store_threads
    if store_threads is None:
        store_threads = 1 if url.startswith("sqlite") else args.threads
    threaded(engine, store, reqs[2 * third :], args.threads, args.window, store_threads)
    store.close()


if __name__ == "__main__":
    main()
