"""authd's LDAP first factor vs raw ldap3 binds, against one private slapd, same run.

Variants (each runs `--threads` worker threads for `--seconds`):
  raw-bind        ldap3, one persistent connection per thread, a simple bind per auth
                  (printable-ASCII passwords as bytes, skipping ldap3's SASLprep, as
                  authd does): the best a Python client can do, the baseline.
  raw-connect     ldap3, connect + bind + unbind per auth (what a naive client does).
  authd           LdapBackend.authenticate, default config (user DN, groups and
                  profile cached for groups.cache_ttl: one bind per auth).
  authd-nocache   LdapBackend.authenticate with cache_ttl 0: search, nested group walk,
                  then bind, every time.
  engine-db       the whole decision, Engine.decide: LDAP first factor, password+TOTP
                  (a fresh step each time), token and state in SQLite (token_storage db).
  engine-pool     engine-db as `authd serve` runs it: each request goes from the reactor
                  (run in its own thread) to ThreadedEngine, is decided in its bounded
                  pool of `--threads`, and answered back on the reactor, while `--threads`
                  client threads wait for their answers. The operator's figure.
  engine-ldap     the same as engine-db with token_storage ldap: the token record is read from and
                  compare-and-set in the user's entry.
Variants run in interleaved rounds; the median round is kept.
Prints ops/s, p50/p99 latency and authd's share of the raw bind rate (target >= 70%).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import itertools
import json
import os
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import ldap3
from twisted.python.threadpool import ThreadPool

from authd.auth.interfaces import AuthRequest, Decision, Outcome, Store
from authd.auth.ldap_bind import password_octets
from authd.auth.ldap_primary import LdapBackend
from authd.batching.batch import Batched
from authd.batching.threaded import ThreadedEngine
from authd.config.model import (
    Config,
    GroupSearch,
    LdapServer,
    PrimaryBackend,
    PrimaryConfig,
    Secret,
    StoreConfig,
    UserSearch,
)
from authd.core.model import Token, TokenType
from authd.crypto import Keyring
from authd.decision.engine import Engine
from authd.metrics import Metrics
from authd.storage.ldap_attrs import LdapTokenStore
from authd.storage.sql import SqlStore
from tests.fixtures.slapd import PASSWORDS, Slapd, start_slapd

USERS = ("alice", "bob", "carol", "dave")


def run_threads(
    name: str, threads: int, seconds: float, make_worker: Callable[[], Callable[[str, str], bool]]
) -> dict[str, float]:
    """Run workers for `seconds`; each call authenticates one user; all must succeed."""
    stop = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(threads)]
    failures = [0] * threads

    def loop(i: int) -> None:
        work = make_worker()
        n = i
        while time.monotonic() < stop:
            user = USERS[n % len(USERS)]
            started = time.perf_counter()
            ok = work(user, PASSWORDS[user])
            latencies[i].append(time.perf_counter() - started)
            failures[i] += not ok
            n += 1

    ts = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.monotonic() - t0
    flat = sorted(x for lat in latencies for x in lat)
    if sum(failures):
        raise SystemExit(
            f"{name}: {sum(failures)} of {len(flat)} authentications failed: benchmark invalid"
        )
    return {
        "ops_per_s": len(flat) / elapsed,
        "p50_ms": 1000 * statistics.median(flat),
        "p99_ms": 1000 * flat[int(0.99 * (len(flat) - 1))],
        "count": len(flat),
    }


def raw_bind(slapd: Slapd) -> Callable[[], Callable[[str, str], bool]]:
    def make() -> Callable[[str, str], bool]:
        conn = ldap3.Connection(
            ldap3.Server(slapd.url, get_info=ldap3.NONE),
            authentication=ldap3.SIMPLE,
            raise_exceptions=False,
        )
        conn.open(read_server_info=False)

        def work(user: str, password: str) -> bool:
            conn.user, conn.password = slapd.user_dn(user), password_octets(password)
            return bool(conn.bind(read_server_info=False))

        return work

    return make


def raw_connect(slapd: Slapd) -> Callable[[], Callable[[str, str], bool]]:
    def make() -> Callable[[str, str], bool]:
        server = ldap3.Server(slapd.url, get_info=ldap3.NONE)

        def work(user: str, password: str) -> bool:
            conn = ldap3.Connection(server, slapd.user_dn(user), password, raise_exceptions=False)
            try:
                return bool(conn.bind(read_server_info=False))
            finally:
                conn.unbind()

        return work

    return make


def authd(backend: LdapBackend) -> Callable[[], Callable[[str, str], bool]]:
    def make() -> Callable[[str, str], bool]:
        return lambda user, password: backend.authenticate(user, password).ok

    return make


def totp(seed: bytes, now: float) -> str:
    mac = hmac.new(seed, struct.pack(">Q", int(now // 30)), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    return str((int.from_bytes(mac[off : off + 4], "big") & 0x7FFFFFFF) % 1_000_000).zfill(6)


def _requests(store: Store, tag: str) -> Callable[[], tuple[AuthRequest, float]]:
    """One worker's request source: it owns one TOTP token (a user may hold several) and
    moves its own `now` one step per request, so every code is fresh and none a replay."""
    i = next(_WORKERS)
    user = USERS[i % len(USERS)]
    seed = os.urandom(20)
    store.ensure_user(user, "bench", time.time(), {}, ())  # SQL tokens need the user
    store.add_token(Token(serial=f"BENCH-{tag}-{i}", type=TokenType.TOTP, seed=seed, user=user))
    now = [time.time()]

    def next_request() -> tuple[AuthRequest, float]:
        now[0] += 30
        typed = PASSWORDS[user] + totp(seed, now[0])
        req = AuthRequest(
            user=user, password=typed, frontend="radius", client="bench", source="127.0.0.1"
        )
        return req, now[0]

    return next_request


_WORKERS = itertools.count()


def engine_variant(engine: Engine, store: Store) -> Callable[[], Callable[[str, str], bool]]:
    """Engine.decide called directly by each client thread."""

    def make() -> Callable[[str, str], bool]:
        next_request = _requests(store, f"direct-{id(engine)}")
        return lambda _user, _password: engine.decide(*next_request()).outcome is Outcome.ACCEPT

    return make


class _ReactorAt:
    """The running reactor, except that `seconds()` is the `now` of the request being
    handed over (set on the reactor thread just before): the workers' fresh TOTP steps
    lie in the future."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.now = 0.0

    def seconds(self) -> float:
        return self.now

    def callFromThread(self, f: object, *args: object) -> object:  # noqa: N802
        return self._reactor.callFromThread(f, *args)


def pool_variant(
    engine: Engine, store: Store, threaded: ThreadedEngine, at: _ReactorAt
) -> Callable[[], Callable[[str, str], bool]]:
    """The daemon's path: reactor -> ThreadedEngine's pool -> reactor."""

    def make() -> Callable[[str, str], bool]:
        next_request = _requests(store, f"pool-{id(engine)}")

        def work(_user: str, _password: str) -> bool:
            done = threading.Event()
            answer: list[Decision] = []

            def ask(req: AuthRequest, now: float) -> None:  # on the reactor thread
                at.now = now
                threaded.authenticate(req).addCallback(answer.append).addBoth(lambda _: done.set())

            at._reactor.callFromThread(ask, *next_request())
            return done.wait(10) and bool(answer) and answer[0].outcome is Outcome.ACCEPT

        return work

    return make


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=5.0, help="per variant")
    ap.add_argument("--threads", type=int, default=8, help="like auth_threads")
    ap.add_argument(
        "--pool-size",
        type=int,
        default=PrimaryBackend().pool_size,
        help="authd pool_size (default: the config default)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds, median kept")
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="authd-bench-ldap-") as tmp:
        slapd = start_slapd(Path(tmp), log_stats=False)
        try:
            cfg = PrimaryBackend(
                type="ldap",
                name="bench",
                servers=(LdapServer(slapd.url),),
                bind_dn=slapd.service_dn,
                bind_password=Secret(slapd.service_password),
                user_search=UserSearch(base=slapd.people),
                groups=GroupSearch(base=slapd.groups, nested=True),
                pool_size=args.pool_size,
            )
            cached = LdapBackend(cfg)
            uncached = LdapBackend(replace(cfg, groups=replace(cfg.groups, cache_ttl=0)))
            keyring = Keyring.load_or_create(str(Path(tmp) / "keys.json"))
            engines = {}
            for storage in ("db", "ldap"):
                sql = SqlStore.open(
                    f"sqlite:///{Path(tmp) / f'{storage}.db'}", keyring, pool_size=args.threads
                )
                backend_cfg = replace(cfg, token_attribute=slapd.token_attribute)
                backend = LdapBackend(backend_cfg)
                store: Store = sql if storage == "db" else LdapTokenStore(sql, backend, keyring)
                config = Config(
                    primary=PrimaryConfig(backends=(backend_cfg,)),
                    store=StoreConfig(token_storage=storage),
                    auth_threads=args.threads,
                )
                engine = Engine(config, store, [backend], keyring.hash_key)
                engines[storage] = (engine, store, backend)
            # The reactor runs in its own thread here (in the daemon, the main thread);
            # ThreadedEngine is built as app.py builds it for SQLite.
            from twisted.internet import reactor as installed

            reactor: Any = installed

            reactor_thread = threading.Thread(
                target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
            )
            reactor_thread.start()
            pool = ThreadPool(minthreads=1, maxthreads=args.threads, name="authd-auth")
            pool.start()
            at = _ReactorAt(reactor)
            threaded = ThreadedEngine(
                Batched(*engines["db"][:2]), at, pool, Metrics(), store_threads=1
            )
            variants = {
                "raw-bind": raw_bind(slapd),
                "raw-connect": raw_connect(slapd),
                "authd": authd(cached),
                "authd-nocache": authd(uncached),
                "engine-db": engine_variant(*engines["db"][:2]),
                "engine-pool": pool_variant(*engines["db"][:2], threaded, at),
                "engine-ldap": engine_variant(*engines["ldap"][:2]),
            }
            for name, make in variants.items():
                run_threads(name, args.threads, min(1.0, args.seconds), make)  # warm-up
            # Rounds interleave the variants so that noise from other load on the machine
            # hits all of them alike; the round with the median rate is reported.
            rounds: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, make in variants.items():
                    rounds[name].append(run_threads(name, args.threads, args.seconds, make))
            results = {
                name: sorted(rs, key=lambda r: r["ops_per_s"])[len(rs) // 2]
                for name, rs in rounds.items()
            }
            reactor.callFromThread(reactor.stop)
            reactor_thread.join(10)
            pool.stop()
            cached.close()
            uncached.close()
            for _, store, backend in engines.values():
                store.close()
                backend.close()
        finally:
            slapd.stop()

    base = results["raw-bind"]["ops_per_s"]
    for r in results.values():
        r["share_of_raw_bind"] = r["ops_per_s"] / base
    if args.json:
        json.dump(
            {"threads": args.threads, "seconds": args.seconds, "results": results},
            sys.stdout,
            indent=2,
        )
        print()
    else:
        print(
            f"slapd (mdb, loopback), {args.threads} threads, pool_size {args.pool_size}, "
            f"median of {args.rounds} rounds of {args.seconds:.0f}s per variant"
        )
        print(f"{'variant':<15}{'ops/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'vs raw-bind':>13}")
        for name, r in results.items():
            print(
                f"{name:<15}{r['ops_per_s']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}"
                f"{100 * r['share_of_raw_bind']:>12.0f}%"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
