"""HTTP front-end benchmark: POST /api/v1/otp/check and POST /api/v1/validate.

Runs the real daemon (`python -m authd serve`) on a fresh SQLite store seeded with
distinct users, each holding an HOTP token; a keep-alive asyncio load generator with a
bounded number of connections sends each user's *next* code exactly once, so every
request must be accepted: every answer is checked, and a run with one that is not (or
with a failed request) is discarded, announced, and never used for a median
(scripts/bench/verdict.py). Each connection owns its own users, so a user never has two
requests in flight (codes stay in counter order); users are spread over connections and
visited in a seeded random order (`--order name`: name order, labelled).

Per endpoint and layout: `--repeat` closed-loop bursts (median of the kept runs), then a
sustained open-loop run (`--sustain` seconds at `--sustain-share` of the burst median,
or `--sustain-rate`; requests due at a fixed rate whatever the answers do, latency from
the due time) with a row per `--interval` seconds and the machine's load average; the
sustained table is printed first. `--quick`: 1 burst of 5 s, 30 s sustained in 10 s rows.

Two layouts: "1 core" pins the daemon to CPU 0 and the load generator to CPU 1;
"2 cores" leaves both unpinned, sharing the two CPUs. Not part of the test suite.
`--fake-engine` serves the same HTTP stack with an engine that accepts at once (no
thread hop, no store): the ceiling of the HTTP layer itself.
`--processes N` (layout "2" only) runs `authd serve` with `http.workers: N`: the daemon
starts N-1 worker processes sharing the port through SO_REUSEPORT; the bench waits
until N sockets listen on it. With `--fake-engine` it starts N fake servers itself, each
also on a port of its own so the bench knows when every one of them is ready.

    scripts/bench/http/run [--seconds 10] [--connections 64] [--users-per-conn 16]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from authd.app import build_core  # noqa: E402
from authd.auth.local import hash_password, make_password_hasher  # noqa: E402
from authd.config.parse import load_config  # noqa: E402
from authd.core.model import Token, TokenType, User  # noqa: E402
from authd.core.otp import hotp  # noqa: E402
from scripts.bench import order as user_order  # noqa: E402
from scripts.bench import verdict  # noqa: E402
from scripts.bench.machine import table, uptime  # noqa: E402

PASSWORD = "bench password 1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    tmp: Path,
    port: int,
    key: str,
    auth_threads: int,
    *,
    workers: int = 1,
    own_port: int | None = None,
    name: str = "bench.yaml",
) -> Path:
    cfg = tmp / name
    listen = [f"127.0.0.1:{port}"] + ([f"127.0.0.1:{own_port}"] if own_port else [])
    cfg.write_text(
        f"""
store:
  url: "sqlite:///{tmp}/authd.db"
keys:
  file: "{tmp}/keys.json"
radius:
  enabled: false
http:
  listen: {json.dumps(listen)}
  workers: {workers}
  api_keys:
    - name: bench
      key_sha256: "{hashlib.sha256(key.encode()).hexdigest()}"
      scopes: [validate]
  rate_limits:
    per_source: {{rate: 1000000, burst: 1000000}}
    per_user: {{rate: 1000000, burst: 1000000}}
    failure_delay: 0s
    failure_delay_max: 0s
logging:
  level: warning
auth_threads: {auth_threads}
"""
    )
    return cfg


def seed_users(config_path: Path, n: int) -> bytes:
    """n users with one password hash (default argon2id cost) and an HOTP token each."""
    config = load_config(str(config_path))
    core = build_core(config)
    try:
        pw_hash = hash_password(make_password_hasher(config.local_users.password_hash), PASSWORD)
        seed = secrets.token_bytes(20)
        for i in range(n):
            name = f"u{i:05d}"
            core.sql.add_user(User(name=name, password_hash=pw_hash, created_at=time.time()))
            core.sql.add_token(
                Token(
                    serial=f"B{i:05d}",
                    type=TokenType.HOTP,
                    seed=seed,
                    user=name,
                    created_at=time.time(),
                )
            )
        return seed
    finally:
        core.close()


@dataclass
class Result:
    """One run (burst or sustained) of one endpoint: every answer counted, the measured
    ones (inside the window) with their latency."""

    latencies: list[float] = field(default_factory=list)
    accepts: int = 0
    other: int = 0
    errors: int = 0
    answered: int = 0  # every answer, warm-up and drain included: all are checked
    seconds: float = 0.0
    offered: float = 0.0  # sustained: req/s offered
    intervals: list[dict[str, float]] = field(default_factory=list)
    done_at: list[float] = field(default_factory=list)  # sustained: completion times
    load1: float = 0.0
    late: int = 0  # sustained: requests sent > 10 ms after their due time
    unsent: int = 0  # sustained: requests given up on, GIVE_UP s overdue

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    @property
    def problem(self) -> str:
        wrong = self.other + self.errors
        return verdict.problem(self.answered, self.answered - wrong, wrong, 0)


class Users:
    """The connection's users in turn (a fresh seeded shuffle each round unless name
    order), each with its next HOTP code."""

    def __init__(self, names: list[str], counters: dict[str, int], order: str, seed: int):
        self.names, self.counters, self.order = names, counters, order
        self.rng = random.Random(seed)
        self.queue: list[str] = []

    def next(self, seed: bytes) -> tuple[str, str]:
        if not self.queue:
            self.queue = list(self.names)
            if self.order == "random":
                self.rng.shuffle(self.queue)
        user = self.queue.pop(0)
        code = hotp(seed, self.counters[user])
        self.counters[user] += 1
        return user, code


class Client:
    """One keep-alive connection sending JSON POSTs and judging each answer."""

    def __init__(self, port: int, key: str, path: str) -> None:
        self.port, self.path = port, path
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def send(self, user: str, code: str, result: Result) -> str:
        """Send one request; count its answer in `result`: 'accept', 'other' or 'error'."""
        doc = {"user": user, "otp": code}
        if self.path.endswith("validate"):
            doc["password"] = PASSWORD
        body = json.dumps(doc).encode()
        self.writer.write(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
        raw_head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in raw_head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        payload = await self.reader.readexactly(length)
        result.answered += 1
        if not raw_head.startswith(b"HTTP/1.1 200"):
            result.errors += 1
            return "error"
        if json.loads(payload).get("result") == "accept":
            result.accepts += 1
            return "accept"
        result.other += 1
        return "other"

    def close(self) -> None:
        self.writer.close()


async def connection(
    client: Client,
    users: Users,
    seed: bytes,
    deadline: float,
    result: Result,
    measure_from: float,
) -> None:
    """Closed loop: the next request as soon as the last one is answered."""
    await client.open()
    try:
        while time.perf_counter() < deadline:
            user, code = users.next(seed)
            started = time.perf_counter()
            await client.send(user, code, result)
            done = time.perf_counter()
            # Throughput counts replies completed inside the window, whenever they were
            # sent: with deep queues (argon2 on /validate) latency exceeds the window.
            if measure_from <= done <= deadline:
                result.latencies.append(done - started)
    finally:
        client.close()


def connection_users(
    counters: dict[str, int], conns: int, per_conn: int, order: str, seed: int
) -> list[Users]:
    """Each connection's own users: consecutive names (name order) or a seeded draw."""
    names = sorted(counters)
    if order == "random":
        random.Random(seed).shuffle(names)
    return [
        Users(names[c * per_conn : (c + 1) * per_conn], counters, order, seed + c)
        for c in range(conns)
    ]


async def load(
    port: int,
    key: str,
    path: str,
    users: list[Users],
    seed: bytes,
    seconds: float,
    warmup: float,
) -> Result:
    result = Result(seconds=seconds)
    now = time.perf_counter()
    measure_from = now + warmup
    deadline = measure_from + seconds
    tasks = [
        connection(Client(port, key, path), u, seed, deadline, result, measure_from) for u in users
    ]
    await asyncio.gather(*tasks)
    result.load1 = os.getloadavg()[0]
    return result


async def sustained(
    port: int,
    key: str,
    path: str,
    users: list[Users],
    seed: bytes,
    rate: float,
    seconds: float,
    interval: float,
) -> Result:
    """Open loop: request i is due at start + i/rate and goes to connection i mod n (which
    owns the user, so a user's codes stay in order); latency counts from the due time, so
    a server that falls behind shows it (no coordinated omission)."""
    result = Result(seconds=seconds, offered=rate)
    queues: list[asyncio.Queue[float | None]] = [asyncio.Queue() for _ in users]
    clients = [Client(port, key, path) for _ in users]
    for client in clients:
        await client.open()
    loads: list[float] = []

    async def worker(i: int) -> None:
        while (due := await queues[i].get()) is not None:
            overdue = time.perf_counter() - due
            if overdue > GIVE_UP:  # keeps the run bounded; no code drawn, none skipped
                result.unsent += 1
                continue
            result.late += overdue > 0.010
            user, code = users[i].next(seed)
            await clients[i].send(user, code, result)
            done = time.perf_counter()
            result.latencies.append(done - due)
            result.done_at.append(done - start)

    start = time.perf_counter()
    workers = [asyncio.create_task(worker(i)) for i in range(len(users))]
    total = round(rate * seconds)
    next_row = interval
    for i in range(total):
        due = start + i / rate
        if due - time.perf_counter() > 0:
            await asyncio.sleep(due - time.perf_counter())
        if due - start >= next_row:
            loads.append(os.getloadavg()[0])
            next_row += interval
        queues[i % len(users)].put_nowait(due)
    for q in queues:
        q.put_nowait(None)
    await asyncio.gather(*workers)
    for client in clients:
        client.close()
    result.seconds = time.perf_counter() - start
    loads.append(os.getloadavg()[0])
    result.load1 = loads[-1]
    result.intervals = rows(result, interval, loads)
    return result


GIVE_UP = 10.0  # sustained: a request this many seconds overdue is not sent


def rows(result: Result, interval: float, loads: list[float]) -> list[dict[str, float]]:
    """Per-interval rows of a sustained run, by completion time."""
    out = []
    count = max(1, -(-result.seconds // interval))
    for k in range(int(count)):
        lat = [
            x
            for x, t in zip(result.latencies, result.done_at, strict=True)
            if k * interval <= t < (k + 1) * interval
        ]
        length = min(interval, result.seconds - k * interval)
        out.append(
            {
                "from_s": k * interval,
                "rps": len(lat) / length if length > 0 else 0.0,
                "p50_ms": pct(lat, 50),
                "p99_ms": pct(lat, 99),
                "load1": loads[min(k, len(loads) - 1)],
            }
        )
    return out


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000 if s else float("nan")


def serve_fake_engine(config_path: str) -> None:
    """The HttpService alone on a real reactor, with an engine that accepts at once."""
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.internet.defer import succeed

    from authd.auth.interfaces import AuthRequest, Decision, Outcome, Reason
    from authd.metrics import Metrics
    from authd.rest.service import HttpService

    def accept(req: AuthRequest) -> object:
        return succeed(Decision(Outcome.ACCEPT, Reason.OK, req.user))

    config = load_config(config_path)
    service = HttpService(
        config,
        accept,
        None,
        None,
        lambda: succeed({}),  # type: ignore[arg-type]
        reactor,
        Metrics(),
    )
    service.startService()
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
    reactor.run(installSignalHandlers=False)


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"authd exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("authd did not become healthy")


def wait_listeners(
    port: int, count: int, proc: subprocess.Popen[bytes], timeout: float = 30
) -> None:
    """Until `count` sockets listen on `port` (the daemon's workers bind after it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"authd exited with {proc.returncode}")
        out = subprocess.run(
            ["ss", "-Htln", f"sport = :{port}"], capture_output=True, text=True
        ).stdout
        if len(out.splitlines()) >= count:
            return
        time.sleep(0.1)
    raise SystemExit(f"authd's {count} processes did not all listen on {port}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--users-per-conn", type=int, default=16)
    ap.add_argument("--layouts", default="1,2", help="1 (pinned), 2 (both cores) or 1,2")
    ap.add_argument("--endpoints", default="otp/check,validate")
    ap.add_argument("--auth-threads", type=int, default=8, help="config auth_threads")
    ap.add_argument("--fake-engine", action="store_true", help="measure the HTTP layer alone")
    ap.add_argument("--processes", type=int, default=1, help="authd serve processes (SO_REUSEPORT)")
    ap.add_argument("--repeat", type=int, default=3, help="bursts per row; median kept")
    ap.add_argument("--order", choices=user_order.ORDERS, default="random")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random user order")
    ap.add_argument("--sustain", type=float, default=180.0, help="sustained seconds (0: none)")
    ap.add_argument("--interval", type=float, default=60.0, help="sustained: seconds per row")
    ap.add_argument("--sustain-share", type=float, default=0.7, help="of the burst median")
    ap.add_argument("--sustain-rate", type=float, default=0.0, help="offered req/s (0: share)")
    ap.add_argument("--quick", action="store_true", help="1 burst of 5 s; 30 s sustained")
    ap.add_argument("--serve-fake-engine", metavar="CONFIG", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_fake_engine:
        serve_fake_engine(args.serve_fake_engine)
        return
    if args.quick:  # where not given explicitly
        quick = {"repeat": 1, "seconds": 5.0, "warmup": 1.0, "sustain": 30.0, "interval": 10.0}
        for key, value in quick.items():
            if getattr(args, key) == ap.get_default(key):
                setattr(args, key, value)
    print(f"uptime before: {uptime()}", flush=True)
    key = secrets.token_urlsafe(24)
    rows: list[tuple[str, str, bool, list[Result]]] = []
    for layout in args.layouts.split(","):
        with tempfile.TemporaryDirectory(prefix="authd-bench-") as tmp_name:
            tmp = Path(tmp_name)
            port = free_port()
            cfg = write_config(tmp, port, key, args.auth_threads)
            n_users = args.connections * args.users_per_conn
            seed = seed_users(cfg, n_users) if not args.fake_engine else b"\0" * 20
            counters = {f"u{i:05d}": 0 for i in range(n_users)}
            server_cpus = {0} if layout == "1" else {0, 1}
            client_cpus = {1} if layout == "1" else {0, 1}
            n_procs = args.processes if layout != "1" else 1
            procs = []
            # The real daemon forks its own workers (http.workers); fake servers do not.
            starts = n_procs if args.fake_engine else 1
            for i in range(starts):
                own = free_port() if starts > 1 else None
                cfg_i = (
                    write_config(
                        tmp,
                        port,
                        key,
                        args.auth_threads,
                        workers=n_procs,
                        own_port=own,
                        name=f"bench-{i}.yaml",
                    )
                    if n_procs > 1
                    else cfg
                )
                server = (
                    [sys.executable, __file__, "--serve-fake-engine", str(cfg_i)]
                    if args.fake_engine
                    else [sys.executable, "-m", "authd", "serve", "-c", str(cfg_i)]
                )
                proc = subprocess.Popen(
                    server,
                    cwd=REPO,
                    preexec_fn=lambda cpus=server_cpus: os.sched_setaffinity(0, cpus),  # noqa: PLW0108
                    stdout=subprocess.DEVNULL,
                    stderr=open(tmp / f"authd-{i}.log", "wb"),  # noqa: SIM115
                )
                procs.append((proc, own if own is not None else port))
            if not args.fake_engine and n_procs > 1:
                wait_listeners(port, n_procs, procs[0][0])
            os.sched_setaffinity(0, client_cpus)
            try:
                for proc, ready_port in procs:
                    wait_ready(ready_port, proc)
                label = f"{layout} core{'s' if layout != '1' else ''}"
                if n_procs > 1:
                    label += f", {n_procs} processes"
                if args.fake_engine:
                    label += ", no-op engine"
                users = connection_users(
                    counters, args.connections, args.users_per_conn, args.order, args.seed
                )
                for endpoint in args.endpoints.split(","):
                    rows += measure(args, port, key, endpoint, label, users, seed)
            finally:
                for proc, _ in procs:
                    proc.send_signal(signal.SIGTERM)
                for proc, _ in procs:
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                os.sched_setaffinity(0, {0, 1})
    print_tables(args, rows)
    print(f"uptime after: {uptime()}")


def measure(
    args: argparse.Namespace,
    port: int,
    key: str,
    endpoint: str,
    label: str,
    users: list[Users],
    seed: bytes,
) -> list[tuple[str, str, bool, list[Result]]]:
    """The bursts of one endpoint, then its sustained run at a share of their median."""
    path = f"/api/v1/{endpoint}"
    bursts: list[Result] = []
    for n in range(args.repeat):
        r = asyncio.run(load(port, key, path, users, seed, args.seconds, args.warmup))
        bursts.append(r)
        print(
            f"{endpoint:>10} {label:>22}: burst {r.rps:8.1f} req/s p50 {pct(r.latencies, 50):7.2f}"
            f" ms  p99 {pct(r.latencies, 99):7.2f} ms ({r.answered} answers, {r.accepts} accepted)",
            flush=True,
        )
        if r.problem:
            verdict.shout(f"{endpoint}, {label}, burst", n + 1, r.problem)
    out = [(endpoint, label, False, bursts)]
    best = verdict.median_kept(bursts)
    if args.sustain > 0 and (best is not None or args.sustain_rate):
        rate = args.sustain_rate or (args.sustain_share * best.rps if best else 0.0)
        r = asyncio.run(sustained(port, key, path, users, seed, rate, args.sustain, args.interval))
        print(
            f"{endpoint:>10} {label:>22}: sustained {r.rps:8.1f} req/s of {rate:.0f} offered, "
            f"p50 {pct(r.latencies, 50):7.2f} ms  p99 {pct(r.latencies, 99):7.2f} ms",
            flush=True,
        )
        if r.problem:
            verdict.shout(f"{endpoint}, {label}, sustained", 1, r.problem)
        out.append((endpoint, label, True, [r]))
    return out


def print_tables(args: argparse.Namespace, rows: list[tuple[str, str, bool, list[Result]]]) -> None:
    """Sustained first (the operator's figure), its per-interval rows, then the bursts."""
    print()
    print(f"{args.connections} keep-alive connections, {user_order.label(args.order, args.seed)}")
    print(
        f"SUSTAINED: open loop for {args.sustain:.0f} s at a fixed offered rate; latency from "
        f"each request's due time; a request {GIVE_UP:.0f} s overdue is given up (unsent)"
    )
    sustained = [(f"`{e}`", label, runs[0]) for e, label, is_s, runs in rows if is_s]
    columns = ["endpoint", "layout", "offered req/s", "req/s", "p50 ms", "p99 ms", "load1"]
    cells = [
        [e, label, f"{r.offered:.0f}", f"{r.rps:.0f}", f"{pct(r.latencies, 50):.1f}"]
        + [f"{pct(r.latencies, 99):.1f}", f"{r.load1:.2f}", f"{r.late / max(1, r.answered):.1%}"]
        + [str(r.unsent), "DISCARDED" if r.problem else "ok"]
        for e, label, r in sustained
    ]
    print(table([*columns, "sent late", "unsent", "checked"], cells))
    for e, label, r in sustained:
        print(f"per {args.interval:.0f} s, {e}, {label}:")
        print(
            table(
                ["from s", "req/s", "p50 ms", "p99 ms", "load1"],
                [[f"{iv[k]:.{d}f}" for k, d in INTERVAL_CELLS] for iv in r.intervals],
            )
        )
    print(
        f"BURST: closed loop, median of the kept runs of {args.repeat} x {args.seconds:.0f} s; "
        "a run with an answer other than accept is discarded"
    )
    cells = []
    for endpoint, label, is_sustained, runs in rows:
        best = verdict.median_kept(runs)
        if is_sustained:
            continue
        if best is None:
            cells.append([f"`{endpoint}`", label, "all runs DISCARDED", "", "", ""])
        else:
            cells.append(
                [f"`{endpoint}`", label, f"{best.rps:.0f}", f"{pct(best.latencies, 50):.1f}"]
                + [f"{pct(best.latencies, 99):.1f}", f"{best.load1:.2f}"]
            )
        cells[-1].append(verdict.kept_label(runs))
    print(table(["endpoint", "layout", "req/s", "p50 ms", "p99 ms", "load1", "kept"], cells))


# Per-interval cells of a sustained run: (key, decimals).
INTERVAL_CELLS = (("from_s", 0), ("rps", 0), ("p50_ms", 1), ("p99_ms", 1), ("load1", 2))


if __name__ == "__main__":
    main()
