"""HTTP front-end benchmark: POST /api/v1/otp/check and POST /api/v1/validate.

Runs the real daemon (`python -m authd serve`) on a fresh SQLite store seeded with
distinct users, each holding an HOTP token; a keep-alive asyncio load generator with a
bounded number of connections sends each user's *next* code exactly once (every request
should accept: a reject or error is counted and reported). Each connection owns its own
users, so a user never has two requests in flight (codes stay in counter order).

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
    latencies: list[float] = field(default_factory=list)
    accepts: int = 0
    other: int = 0
    errors: int = 0


async def connection(
    port: int,
    key: str,
    path: str,
    users: list[str],
    counters: dict[str, int],
    seed: bytes,
    deadline: float,
    result: Result,
    measure_from: float,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    i = 0
    try:
        while time.perf_counter() < deadline:
            user = users[i % len(users)]
            i += 1
            code = hotp(seed, counters[user])
            counters[user] += 1
            doc = {"user": user, "otp": code}
            if path.endswith("validate"):
                doc["password"] = PASSWORD
            body = json.dumps(doc).encode()
            started = time.perf_counter()
            writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
            raw_head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in raw_head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            payload = await reader.readexactly(length)
            done = time.perf_counter()
            # Throughput counts replies completed inside the window, whenever they were
            # sent: with deep queues (argon2 on /validate) latency exceeds the window.
            if not measure_from <= done <= deadline:
                continue
            result.latencies.append(done - started)
            if not raw_head.startswith(b"HTTP/1.1 200"):
                result.errors += 1
            elif b'"accept"' in payload:
                result.accepts += 1
            else:
                result.other += 1
    finally:
        writer.close()


async def load(
    port: int,
    key: str,
    path: str,
    conns: int,
    users_per_conn: int,
    counters: dict[str, int],
    seed: bytes,
    seconds: float,
    warmup: float,
) -> Result:
    result = Result()
    now = time.perf_counter()
    measure_from = now + warmup
    deadline = measure_from + seconds
    names = sorted(counters)
    tasks = [
        connection(
            port,
            key,
            path,
            names[c * users_per_conn : (c + 1) * users_per_conn],
            counters,
            seed,
            deadline,
            result,
            measure_from,
        )
        for c in range(conns)
    ]
    await asyncio.gather(*tasks)
    return result


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


def wait_listeners(port: int, count: int, proc: subprocess.Popen[bytes],
                   timeout: float = 30) -> None:
    """Until `count` sockets listen on `port` (the daemon's workers bind after it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"authd exited with {proc.returncode}")
        out = subprocess.run(["ss", "-Htln", f"sport = :{port}"], capture_output=True,
                             text=True).stdout
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
    ap.add_argument("--serve-fake-engine", metavar="CONFIG", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_fake_engine:
        serve_fake_engine(args.serve_fake_engine)
        return
    key = secrets.token_urlsafe(24)
    rows = []
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
                for endpoint in args.endpoints.split(","):
                    path = f"/api/v1/{endpoint}"
                    r = asyncio.run(
                        load(
                            port,
                            key,
                            path,
                            args.connections,
                            args.users_per_conn,
                            counters,
                            seed,
                            args.seconds,
                            args.warmup,
                        )
                    )
                    n = len(r.latencies)
                    label = f"{layout} core{'s' if layout != '1' else ''}"
                    if n_procs > 1:
                        label += f", {n_procs} processes"
                    if args.fake_engine:
                        label += ", no-op engine"
                    rows.append(
                        (
                            endpoint,
                            label,
                            args.connections,
                            n,
                            r.accepts,
                            r.other + r.errors,
                            n / args.seconds,
                            pct(r.latencies, 50),
                            pct(r.latencies, 99),
                        )
                    )
                    print(
                        f"{rows[-1][0]:>10} {rows[-1][1]:>22}: {rows[-1][6]:8.1f} req/s "
                        f"p50 {rows[-1][7]:7.2f} ms  p99 {rows[-1][8]:7.2f} ms  "
                        f"({n} requests, {r.accepts} accepted)",
                        flush=True,
                    )
            finally:
                for proc, _ in procs:
                    proc.send_signal(signal.SIGTERM)
                for proc, _ in procs:
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                os.sched_setaffinity(0, {0, 1})
    print()
    print(
        "| endpoint | layout | connections | requests | accepted | not accepted | req/s "
        "| p50 ms | p99 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| `{row[0]}` | {row[1]} | {row[2]} | {row[3]} | {row[4]} | {row[5]} | "
            f"{row[6]:.0f} | {row[7]:.1f} | {row[8]:.1f} |"
        )


if __name__ == "__main__":
    main()
