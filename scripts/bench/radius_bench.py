"""RADIUS benchmark: authd (the real daemon, real engine and SQLite store) against
Debian's FreeRADIUS 3.2 + rlm_totp, same machine, same load generator, same cores.

Run through `scripts/bench/radius` (one command). Not part of the test suite.

`--ldap` runs workload (c) instead: authd with an LDAP first factor (password + HOTP)
against raw ldap3 binds on the same private slapd, in the same run.

Every authd request is a real accept by a distinct (user, HOTP counter) pair, so replay
protection, counter compare-and-set, attempt recording and audit are all in the measured
path. Users come in a seeded random order (`--order name` for name order, labelled).
The load generator (loadgen.c, compiled here with gcc) replays pre-encoded datagrams and
checks each answer against the one the request was built for; a run with a wrong or
missing answer is discarded, announced, and never used for a median or a ratio
(scripts/bench/verdict.py). Bursts keep a fixed number in flight; the sustained runs
offer a fixed rate for minutes (open loop) and report per-interval rows with the
machine's load. Server CPU per request comes from /proc/PID/stat (utime+stime of every
server process) around the run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from authd import hot_path_build  # noqa: E402
from authd.core.otp import hotp, totp  # noqa: E402
from authd.radius import codec  # noqa: E402
from scripts.bench import order as user_order  # noqa: E402
from scripts.bench import verdict  # noqa: E402
from scripts.bench.machine import table, uptime  # noqa: E402

SECRET = "bench-secret-0123456789abcdef"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SOCKETS = 16  # loadgen source ports: SO_REUSEPORT spreads them over workers
TOTP_STEP = 30.0
# Open-loop schedules leave no request due this close before / after a TOTP step boundary:
# rlm_totp 3.2.1 accepts the current step's code only, so a code due just before a
# boundary could arrive after it. Both servers get the same schedule.
STEP_GUARD = (0.1, 0.05)
# An open loop against a server that falls behind builds a queue: an answer counts as
# missing only after this long (a burst's limit is 3 s).
SUSTAIN_TIMEOUT_MS = 10000


@dataclass
class Result:
    name: str
    cores: str
    rps: float
    p50: float
    p99: float
    cpu_us: float
    accept: int
    sent: int
    lost: int
    peer_cpu_us: float = 0.0  # LDAP rows: slapd's CPU per request
    wrong: int = 0  # answers other than the one the request was built for
    problem: str = ""  # why the run is discarded ('' when it is kept)
    offered: float = 0.0  # sustained runs: the offered rate (req/s)
    late: int = 0  # sustained runs: requests the generator sent > 10 ms after their time
    unsent: int = 0  # sustained runs: requests given up on (the server was far behind)
    blocked: int = 0  # sustained runs: requests held back by the in-flight cap
    cpu_share: float = 0.0  # server CPU seconds per wall second (1.0: one core, all the run)
    intervals: list[dict[str, float]] = field(default_factory=list)
    load1: float = 0.0  # 1-minute load average at the end of the run


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (whole thread group)
    return total / CLK_TCK


def taskset(cores: str | None) -> list[str]:
    return ["taskset", "-c", cores] if cores else []


# (loadgen socket index, user key, datagram)
Request = tuple[int, int, bytes]


class Wire:
    """The source socket and Identifier of each request. A user always goes out from the
    same socket: with radius.workers > 1 (SO_REUSEPORT hashes the source port) always to
    the same worker, which answers in arrival order, so a user's HOTP codes never
    overtake each other however long the queue. Identifiers go round per socket, so a
    (socket, id) pair recurs only after 256 requests from that socket."""

    def __init__(self) -> None:
        self.sent = [0] * SOCKETS

    def request(self, key: int, user: str, password: str) -> Request:
        sock = key % SOCKETS
        ident = self.sent[sock] % 256
        self.sent[sock] += 1
        return sock, key, encode(ident, user, password)


def write_requests(
    path: Path,
    requests: list[Request],
    expect: int = codec.ACCESS_ACCEPT,
    due: list[float] | None = None,
) -> None:
    """loadgen's input: [socket][expected reply code][u32 due µs][u32 user][u16 length]
    [datagram]. `due`: open-loop send times (s)."""
    with open(path, "wb") as f:
        for i, (sock, user, p) in enumerate(requests):
            at = round(due[i] * 1e6) if due else 0
            head = bytes((sock, expect)) + at.to_bytes(4, "big") + user.to_bytes(4, "big")
            f.write(head + len(p).to_bytes(2, "big") + p)


def schedule(count: int, rate: float, start_epoch: float) -> list[float]:
    """Open-loop send times (s after `start_epoch`) at `rate`, none within STEP_GUARD of
    a TOTP step boundary (the time is skipped, so the rate elsewhere stays `rate`)."""
    out: list[float] = []
    t, dt = 0.0, 1.0 / rate
    before, after = STEP_GUARD
    while len(out) < count:
        pos = (start_epoch + t) % TOTP_STEP
        if pos > TOTP_STEP - before:
            t += TOTP_STEP - pos + after
        elif pos < after:
            t += after - pos
        else:
            out.append(t)
            t += dt
    return out


def wait_for_fresh_step(margin: float) -> None:
    """Sleep into the next TOTP step when fewer than `margin` seconds are left of this
    one: a burst's codes are computed for the step it starts in (rlm_totp accepts no
    other), and a roll-over mid-run would turn accepts into rejects."""
    left = TOTP_STEP - time.time() % TOTP_STEP
    if left < margin:
        log(f"waiting {left:.1f}s for a fresh TOTP step")
        time.sleep(left + STEP_GUARD[1])


def encode(ident: int, user: str, password: str) -> bytes:
    auth = os.urandom(16)
    attrs = [
        (codec.USER_NAME, user.encode()),
        (codec.USER_PASSWORD, codec.encode_password(password.encode(), SECRET.encode(), auth)),
    ]
    return codec.encode_request(codec.ACCESS_REQUEST, ident, auth, SECRET.encode(), attrs)


def wait_for_status(port: int, timeout: float = 60.0) -> None:
    """Poll with Status-Server until the server answers (bounded)."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        while time.monotonic() < deadline:
            auth = os.urandom(16)
            pkt = codec.encode_request(
                codec.STATUS_SERVER, 1, auth, SECRET.encode(), [(codec.USER_NAME, b"status")]
            )
            s.sendto(pkt, ("127.0.0.1", port))
            try:
                s.recv(4096)
                return
            except TimeoutError:
                continue
    raise SystemExit(f"server on port {port} did not answer Status-Server in {timeout}s")


def run_loadgen(
    loadgen: Path,
    reqfile: Path,
    port: int,
    window: int,
    cores: str | None,
    pids: list[int],
    timeout_ms: int = 3000,
    open_loop: tuple[float, float, float] | None = None,
) -> tuple[dict[str, Any], float]:
    """One loadgen run; `open_loop` = (offered rate, wall-clock start, row seconds) for a
    sustained run (the request file then carries each request's due time)."""
    before = cpu_seconds(pids)
    out = subprocess.run(
        [
            *taskset(cores),
            str(loadgen),
            str(reqfile),
            "127.0.0.1",
            str(port),
            str(window),
            str(timeout_ms),
            *(repr(x) for x in open_loop or ()),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
        check=True,
    )
    after = cpu_seconds(pids)
    return json.loads(out.stdout), after - before


# ---------------------------------------------------------------- authd
@dataclass
class HotpUsers:
    """HOTP users of the authd store and each one's next counter: every request is a
    user's next code, used once, so each must be a real accept."""

    names: list[str]
    seeds: list[bytes]
    order: str
    seed: int
    counters: list[int] = field(default_factory=list)
    draws: int = 0
    last: list[int] = field(default_factory=list)  # the user of each request last drawn

    def requests(self, count: int, gap: int) -> list[Request]:
        """`count` requests in rounds over all users (see order.rounds): a user comes back
        at least `gap` requests later (HOTP codes must arrive in counter order)."""
        if not self.counters:
            self.counters = [0] * len(self.names)
        self.draws += 1
        n, wire = len(self.names), Wire()
        out: list[Request] = []
        self.last = []
        for perm in user_order.rounds(n, -(-count // n), self.order, self.seed + self.draws, gap):
            for u in perm[: count - len(out)]:
                code = hotp(self.seeds[u], self.counters[u])
                out.append(wire.request(u, self.names[u], code))
                self.counters[u] += 1
                self.last.append(u)
        return out

    def unsend(self, unsent: int) -> None:
        """The last `unsent` requests drawn were never sent: their codes are each user's
        latest, so the next draw starts from them again."""
        for u in self.last[len(self.last) - unsent :]:
            self.counters[u] -= 1


def authd_world(
    tmp: Path, args: argparse.Namespace, argon: dict[str, int], url: str
) -> tuple[HotpUsers, list[tuple[str, bytes]]]:
    """SQLite store with `--users` HOTP users (workload a, bursts and sustained runs) and
    `--b-requests` password+TOTP users (workload b); returns them, b's as (user, seed)."""
    from authd.auth.local import hash_password, make_password_hasher
    from authd.config.model import PasswordHashConfig
    from authd.core.model import Token, TokenType, User
    from authd.crypto import Keyring
    from authd.storage.sql import SqlStore

    store = SqlStore.open(url, Keyring.load_or_create(str(tmp / "keys.json")), pool_size=2)
    users = HotpUsers([f"hu{u:05d}" for u in range(args.users)], [], args.order, args.seed)
    for u, name in enumerate(users.names):
        users.seeds.append(os.urandom(20))
        store.add_user(User(name=name, source="local"))
        store.add_token(
            Token(serial=f"H{u:05d}", type=TokenType.HOTP, seed=users.seeds[u], user=name)
        )
    hasher = make_password_hasher(PasswordHashConfig(**argon))
    b_users = []
    pw_hash = hash_password(hasher, "bench-password")  # one hash, verified per request
    for u in range(args.b_requests):
        name, seed = f"pu{u:05d}", os.urandom(20)
        store.add_user(User(name=name, source="local", password_hash=pw_hash))
        store.add_token(Token(serial=f"P{u:05d}", type=TokenType.TOTP, seed=seed, user=name))
        b_users.append((name, seed))
    store.close()
    return users, b_users


def daemon_yaml(
    tmp: Path, url: str, threads: int, port: int, workers: int, pin: bool, first_factor: str
) -> tuple[str, str]:
    """The parts of a bench daemon's config every variant shares: (store, keys, threads,
    logging) before the variant's own sections, (http off, the RADIUS listener and the
    bench client) after them."""
    head = f"""
store:
  url: "{url}"
  pool_size: {max(2, threads)}
keys:
  file: "{tmp / "keys.json"}"
auth_threads: {threads}
logging:
  level: warning
"""
    tail = f"""http:
  enabled: false
radius:
  listen: ["127.0.0.1:{port}"]
  workers: {workers}
  pin_workers: {"true" if pin else "false"}
  reject_delay: 0s
  clients:
    - name: bench
      address: 127.0.0.1/32
      secret: "{SECRET}"
      first_factor: {first_factor}
      otp_mode: inline
"""
    return head, tail


def authd_config(
    tmp: Path,
    port: int,
    first_factor: str,
    workers: int,
    argon: dict[str, int],
    threads: int,
    pin: bool,
    url: str,
) -> Path:
    cfg = tmp / f"authd-{first_factor}-{workers}.yaml"
    head, tail = daemon_yaml(tmp, url, threads, port, workers, pin, first_factor)
    cfg.write_text(f"""{head}local_users:
  password_hash:
    time_cost: {argon["time_cost"]}
    memory_cost_kib: {argon["memory_cost_kib"]}
    parallelism: {argon["parallelism"]}
{tail}""")
    return cfg


def start_authd(cfg: Path, port: int, workers: int, cores: str | None) -> subprocess.Popen[bytes]:
    """The daemon; with radius.workers > 1 it starts its own worker processes (all
    binding the port with SO_REUSEPORT). Returns once every process has bound it. Each
    daemon is a process group of its own (as systemd runs it): a signal meant for the
    bench, or for another node, never reaches it."""
    with open(cfg.with_suffix(".log"), "ab") as logfile:
        proc = subprocess.Popen(
            [*taskset(cores), sys.executable, "-m", "authd", "serve", "-c", str(cfg)],
            cwd=REPO,
            stdout=logfile,  # the daemon logs on stdout (authd/logsetup.py)
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_status(port)
    deadline = time.monotonic() + 60
    while udp_sockets_on(port) < workers or len(server_pids(proc)) < workers:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"authd did not start {workers} workers on port {port}")
        time.sleep(0.1)
    return proc


def udp_sockets_on(port: int) -> int:
    """How many UDP sockets are bound to `port` (one per RADIUS process)."""
    with open("/proc/net/udp") as f:
        return sum(1 for line in f if line.split()[1].endswith(f":{port:04X}"))


def server_pids(proc: subprocess.Popen[bytes]) -> list[int]:
    """The daemon and its worker processes (children), for CPU accounting."""
    try:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            return [proc.pid, *(int(c) for c in f.read().split())]
    except OSError:
        return [proc.pid]


def cores_of(pid: int) -> str:
    """The affinity of a process, as taskset would print it (to report pinning)."""
    return ",".join(map(str, sorted(os.sched_getaffinity(pid))))


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


@contextmanager
def postgres_cluster(
    tmp: Path, fsync: bool = False, settings: tuple[str, ...] = ()
) -> Iterator[str]:
    """A throwaway PostgreSQL 15 cluster on loopback; yields its URL. Without `fsync`,
    fsync, synchronous_commit and full_page_writes are off (the data is disposable, as in
    tests/fixtures/postgres.py); with it they are on, as in production. `settings`: more
    server settings, each "name=value"."""
    bindir = Path("/usr/lib/postgresql/15/bin")
    if not (bindir / "initdb").exists():
        raise SystemExit("PostgreSQL server binaries not found: apt-get install postgresql-15")
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    pgdir = tmp / "pg"
    pgdir.mkdir()
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(pgdir, pw.pw_uid, pw.pw_gid)
    data = pgdir / "data"
    subprocess.run(
        [*as_pg, str(bindir / "initdb"), "-D", str(data), "-U", "authd", "--auth=trust"]
        + ["-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_tcp_port()
    durable = "on" if fsync else "off"
    opts = (
        f"-k {pgdir} -c listen_addresses=127.0.0.1 -p {port} -c fsync={durable} "
        f"-c synchronous_commit={durable} -c full_page_writes={durable} -c max_connections=200"
    ) + "".join(f" -c {s}" for s in settings)
    subprocess.run(
        [*as_pg, str(bindir / "pg_ctl"), "start", "-D", str(data), "-l", str(pgdir / "log")]
        + ["-w", "-t", "60", "-o", opts],
        check=True,
        capture_output=True,
        timeout=90,
    )
    try:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=port, user="authd", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute('CREATE DATABASE "authd_bench"')
        yield f"postgresql://authd@127.0.0.1:{port}/authd_bench"
    finally:
        subprocess.run(
            [*as_pg, str(bindir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w"],
            capture_output=True,
            timeout=90,
            check=False,
        )


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- FreeRADIUS
FR_CONF = """
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {d}
raddbdir = {d}
radacctdir = {d}
name = freeradius
confdir = {d}
modconfdir = {d}
run_dir = {d}
db_dir = {d}
libdir = /usr/lib/freeradius
pidfile = {d}/radiusd.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 1048576
hostname_lookups = no
log {{
  destination = stdout
  auth = no
}}
security {{
  allow_core_dumps = no
  max_attributes = 200
  reject_delay = 0
  status_server = yes
  require_message_authenticator = yes
}}
thread pool {{
  start_servers = 8
  max_servers = 32
  min_spare_servers = 4
  max_spare_servers = 16
  max_requests_per_server = 0
}}
client local {{
  ipaddr = 127.0.0.1
  secret = {secret}
  require_message_authenticator = yes
}}
modules {{
  files {{
    filename = {d}/users
  }}
  totp {{
  }}
}}
server default {{
  listen {{
    type = auth
    ipaddr = 127.0.0.1
    port = {port}
    recv_buff = 1048576
  }}
  authorize {{
    files
    update request {{
      &TOTP-Password := &User-Password
    }}
    update control {{
      &Auth-Type := totp
    }}
  }}
  authenticate {{
    Auth-Type totp {{
      totp
    }}
  }}
}}
"""


@dataclass
class Sustain:
    """One sustained (open-loop) run: `rate` req/s offered for `seconds`, a row every
    `interval` seconds."""

    rate: float
    seconds: float
    interval: float

    def plan(self, build_us: float = 0.0) -> tuple[float, list[float]]:
        """(wall-clock start, due times): the start leaves time to build and write the
        requests (`build_us` each, if they are built after this)."""
        count = round(self.rate * self.seconds)
        start = time.time() + 2.0 + count * build_us / 1e6
        return start, schedule(count, self.rate, start)


def offer(
    loadgen: Path,
    reqfile: Path,
    port: int,
    packets: list[Request],
    sustain: Sustain,
    args: argparse.Namespace,
    cores: str | None,
    pids: list[int],
) -> tuple[dict[str, Any], float]:
    """A sustained run of `packets` built beforehand (HOTP: no clock in them): scheduled
    from a moment from now, offered by the load generator on the other core."""
    start, due = sustain.plan()
    write_requests(reqfile, packets, due=due)
    open_loop = (sustain.rate, start, sustain.interval)
    window = args.sustain_window
    return run_loadgen(
        loadgen, reqfile, port, window, other_core(cores), pids, SUSTAIN_TIMEOUT_MS, open_loop
    )


def freeradius_run(
    tmp: Path,
    args: argparse.Namespace,
    users: int,
    requests: int,
    cores: str | None,
    loadgen: Path,
    label: str,
    run: int = 0,
    sustain: Sustain | None = None,
) -> Result:
    """FreeRADIUS + rlm_totp, fresh users with TOTP secrets, driven like authd: a burst of
    `requests`, or the `sustain` schedule. Codes are those of the step each request is
    sent in (rlm_totp accepts no other step), and every answer is checked."""
    binary = shutil.which("freeradius") or "/usr/sbin/freeradius"
    if not os.path.exists(binary) or not os.path.exists("/usr/lib/freeradius/rlm_totp.so"):
        raise SystemExit("FreeRADIUS with rlm_totp not found: apt-get install freeradius")
    d = tmp / f"raddb-{label}-{run}{'-sustained' if sustain else ''}"
    d.mkdir()
    port = free_port()
    (d / "radiusd.conf").write_text(FR_CONF.format(d=d, port=port, secret=SECRET))
    seeds = [os.urandom(20) for _ in range(users)]
    with open(d / "users", "w") as f:
        for u, seed in enumerate(seeds):
            f.write(f'fu{u:05d} TOTP-Secret := "{base64.b32encode(seed).decode()}"\n')
    with open(d / "radiusd.log", "wb") as logfile:
        proc = subprocess.Popen(
            [*taskset(cores), binary, "-f", "-d", str(d), "-l", "stdout"],
            stdout=logfile,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_status(port)
        if sustain is None:
            wait_for_fresh_step(args.step_margin)
            start, due = time.time(), [0.0] * requests
        else:
            start, due = sustain.plan(build_us=25)
        # rlm_totp 3.2.1 has no replay protection: a user's current code is accepted
        # again, so FreeRADIUS does strictly less work per request than authd.
        perms = user_order.rounds(users, -(-len(due) // users), args.order, args.seed + run, 1)
        order = [u for perm in perms for u in perm][: len(due)]
        codes: dict[tuple[int, int], str] = {}
        packets, wire = [], Wire()
        for u, at in zip(order, due, strict=True):
            step = int((start + at) // TOTP_STEP)
            code = codes.get((u, step))
            if code is None:
                code = codes[u, step] = totp(seeds[u], step * TOTP_STEP)
            packets.append(wire.request(u, f"fu{u:05d}", code))
        reqfile = tmp / f"fr-{label}.bin"
        write_requests(reqfile, packets, due=due if sustain else None)
        open_loop = (sustain.rate, start, sustain.interval) if sustain else None
        window = args.sustain_window if sustain else args.window
        timeout = SUSTAIN_TIMEOUT_MS if sustain else 3000
        stats, cpu = run_loadgen(
            loadgen, reqfile, port, window, other_core(cores), [proc.pid], timeout, open_loop
        )
    finally:
        stop([proc])
    return result(f"FreeRADIUS 3.2 + rlm_totp ({label})", cores or "all", stats, cpu)


def other_core(cores: str | None) -> str | None:
    """The load generator runs on the core the server does not use (when pinned)."""
    if cores is None:
        return None
    ncpu = os.cpu_count() or 1
    free = [c for c in range(ncpu) if str(c) not in cores.split(",")]
    return str(free[0]) if free else None


def result(name: str, cores: str, stats: dict[str, Any], cpu: float) -> Result:
    """A loadgen run as a row, judged: every request was built to be accepted."""
    answered = int(stats["accept"] + stats["reject"] + stats["challenge"])
    sent, wrong, lost = int(stats["sent"]), int(stats["wrong"]), int(stats["lost"])
    return Result(
        name,
        cores,
        stats["rps"],
        stats["p50_ms"],
        stats["p99_ms"],
        cpu / max(1, answered) * 1e6,
        int(stats["accept"]),
        sent,
        lost,
        wrong=wrong,
        problem=verdict.problem(sent, answered - wrong, wrong, lost),
        offered=float(stats.get("offered_rps", 0.0)),
        late=int(stats.get("late", 0)),
        unsent=int(stats.get("unsent", 0)),
        blocked=int(stats.get("blocked", 0)),
        cpu_share=cpu / max(float(stats["elapsed"]), 1e-9),
        intervals=list(stats.get("intervals", [])),
        load1=os.getloadavg()[0],
    )


# ---------------------------------------------------------------- LDAP (c)
LDAP_BACKEND = "directory"  # the backend's name: the store's `source` of its users


def ldap_world(
    tmp: Path, users: int, url: str, args: argparse.Namespace
) -> tuple[Any, list[tuple[str, str, str]], Iterator[list[Request]]]:
    """A private slapd (tests/fixtures/slapd.py) with `users` more entries, each user
    with an HOTP token in authd's SQLite store (as `authctl token add` makes for a
    directory user). Returns the slapd, [(uid, dn, password)] and endless rounds, each
    one datagram per user: "password" + that round's HOTP code, so every request is a
    real accept and every code is used once."""
    from authd.core.model import Token, TokenType, User
    from authd.crypto import Keyring
    from authd.storage.sql import SqlStore
    from tests.fixtures.slapd import start_slapd

    slapd = start_slapd(tmp / "slapd", log_stats=False)
    try:
        creds = [(f"lu{u:05d}", f"Pw-{u:05d}-{os.urandom(6).hex()}") for u in range(users)]
        slapd.ldapmodify(
            "\n".join(
                f"dn: {slapd.user_dn(uid)}\nchangetype: add\nobjectClass: inetOrgPerson\n"
                f"uid: {uid}\ncn: {uid}\nsn: Bench\nmail: {uid}@example.org\n"
                f"userPassword: {pw}\n"
                for uid, pw in creds
            )
        )
        store = SqlStore.open(url, Keyring.load_or_create(str(tmp / "keys.json")), pool_size=2)
        seeds = []
        for u, (uid, _) in enumerate(creds):
            seed = os.urandom(20)
            store.add_user(User(name=uid, source=LDAP_BACKEND))
            store.add_token(Token(serial=f"L{u:05d}", type=TokenType.HOTP, seed=seed, user=uid))
            seeds.append(seed)
        store.close()
    except BaseException:
        slapd.stop()
        raise
    # Rounds over all users, as in workload (a): a user's next code is sent at least
    # half the users later, never while the previous one may be in flight (an open loop
    # may hold many more than --window).
    wire = Wire()
    rounds = (
        [wire.request(u, creds[u][0], creds[u][1] + hotp(seeds[u], r)) for u in perm]
        for r, perm in enumerate(user_order.endless(users, args.order, args.seed, users // 2))
    )
    return slapd, [(uid, slapd.user_dn(uid), pw) for uid, pw in creds], rounds


def ldap_config(
    tmp: Path,
    port: int,
    slapd: Any,
    workers: int,
    threads: int,
    pool_size: int,
    pin: bool,
    url: str,
) -> Path:
    """authd as an operator would run it for LDAP + OTP: a `chain` client, one ldap
    backend (search-then-bind as the service account, groups from memberOf, defaults
    for timeouts and cache), tokens in SQLite."""
    cfg = tmp / f"authd-ldap-{workers}.yaml"
    head, tail = daemon_yaml(tmp, url, threads, port, workers, pin, "chain")
    cfg.write_text(f"""{head}primary:
  backends:
    - type: ldap
      name: {LDAP_BACKEND}
      servers:
        - url: "{slapd.url}"
      bind_dn: "{slapd.service_dn}"
      bind_password: "{slapd.service_password}"
      user_search:
        base: "{slapd.people}"
      pool_size: {pool_size}
{tail}""")
    return cfg


def raw_binds(
    tmp: Path,
    slapd_url: str,
    creds: list[tuple[str, str, str]],
    requests: int,
    procs: int,
    threads: int,
    slapd_pid: int,
    cores: str | None,
    order: str,
    seed: int,
    sustain: Sustain | None = None,
) -> Result:
    """The baseline: `procs` processes x `threads` threads of raw ldap3 binds
    (scripts/bench/ldap/rawbind.py), `requests` binds in all, all started together.
    CPU µs/req is the clients' own CPU (the authd rows show authd's)."""
    creds_file = tmp / "creds.json"
    # The same user order as authd's requests get (a shuffle unless --order name).
    perm = user_order.rounds(len(creds), 1, order, seed, 1)[0]
    creds_file.write_text(json.dumps([[creds[u][1], creds[u][2]] for u in perm]))
    start_at = time.time() + 1.0 + 0.3 * procs  # every process connected by then
    # Sustained: each process offers its share of the rate, paced (open loop).
    rate = f"{sustain.rate / procs:.3f}" if sustain else "0"
    share = [requests // procs + (i < requests % procs) for i in range(procs)]
    before = cpu_seconds([slapd_pid])
    children = [
        subprocess.Popen(
            [
                *taskset(cores),
                sys.executable,
                str(REPO / "scripts/bench/ldap/rawbind.py"),
                slapd_url,
                str(creds_file),
                str(threads),
                str(share[i]),
                repr(start_at),
                # Each process starts at its own place in the user list.
                str(i * len(creds) // procs),
                rate,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(procs)
    ]
    outs = []
    for child in children:
        out, _ = child.communicate(timeout=300)
        if child.returncode != 0:
            raise SystemExit(f"raw bind client failed ({child.returncode})")
        outs.append(json.loads(out))
    slapd_cpu = cpu_seconds([slapd_pid]) - before
    failures = sum(o["failures"] for o in outs)
    lat = sorted(x for o in outs for x in o["latencies_ms"])
    done = len(lat)
    elapsed = max(o["t1"] for o in outs) - min(o["t0"] for o in outs)
    intervals = []
    if sustain:
        t0 = min(o["t0"] for o in outs)
        ends = [
            (t - t0, x) for o in outs for t, x in zip(o["done_at"], o["latencies_ms"], strict=True)
        ]
        for k in range(int(-(-elapsed // sustain.interval))):
            lo, hi = k * sustain.interval, (k + 1) * sustain.interval
            part = sorted(x for t, x in ends if lo <= t < hi)
            length = min(sustain.interval, elapsed - lo)
            intervals.append(
                {
                    "from_s": lo,
                    "rps": len(part) / length if length > 0 else 0.0,
                    "p50_ms": part[len(part) // 2] if part else 0.0,
                    "p99_ms": part[int(0.99 * (len(part) - 1))] if part else 0.0,
                    "wrong": 0.0,
                    "lost": 0.0,
                    "load1": os.getloadavg()[0],
                }
            )
    return Result(
        f"raw ldap3 binds, {procs} proc x {threads} threads",
        cores or "all",
        done / elapsed,
        lat[len(lat) // 2],
        lat[int(0.99 * (len(lat) - 1))],
        sum(o["cpu_s"] for o in outs) / done * 1e6,
        done - failures,
        requests,
        requests - done,
        slapd_cpu / done * 1e6,
        wrong=failures,
        problem=verdict.problem(requests, done - failures, failures, requests - done, "bind"),
        load1=os.getloadavg()[0],
        offered=sustain.rate if sustain else 0.0,
        intervals=intervals,
        # Paced binds started late: every thread was still waiting for slapd (the raw
        # clients' in-flight cap is their thread count).
        blocked=sum(o.get("late", 0) for o in outs),
        cpu_share=sum(o["cpu_s"] for o in outs) / max(elapsed, 1e-9),
    )


# (name, radius.workers = raw-bind client processes, taskset cores or None for all)
LDAP_LAYOUTS: dict[str, tuple[int, str | None]] = {
    # One core for the client side (authd, or the raw clients), slapd and loadgen on the
    # other: as when the directory is another host.
    "one": (1, "0"),
    # Both cores for everything: authd radius.workers 2 (pinned one per core by authd),
    # two raw-bind processes.
    "two": (2, None),
}


def place_threads(pid: int, cores: str | None) -> None:
    """Set the CPU affinity of every thread of `pid` (taskset -p alone moves one
    thread); None: all cores."""
    allowed = {int(c) for c in cores.split(",")} if cores else set(range(os.cpu_count() or 1))
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), allowed)


def ldap_main(
    args: argparse.Namespace, loadgen: Path, tmp: Path
) -> tuple[list[tuple[str, list[Result]]], dict[str, tuple[Result, Result]]]:
    """Workload (c): authd with an LDAP first factor (password + HOTP in one
    User-Password) against raw ldap3 binds on the same slapd, interleaved in one run.

    Per layout, the same processes, threads (auth_threads = raw-bind threads per process)
    and cores on both sides. Every daemon is started and warmed up first; then each round
    runs, per layout, the raw binds and authd once (an idle daemon costs nothing), so
    other load on the machine hits both alike. Then, per layout, a sustained run of each
    at the same offered rate. Returns (layout, burst runs of a row) pairs and, per layout,
    the sustained (raw, authd) runs."""
    layouts = [(name, *LDAP_LAYOUTS[name]) for name in args.ldap_layouts.split(",")]
    per_user = -(-args.requests // args.ldap_users)
    url = f"sqlite:///{tmp / 'authd-ldap.db'}"
    log(f"building slapd with {args.ldap_users} users and the authd store")
    slapd, creds, round_iter = ldap_world(tmp, args.ldap_users, url, args)
    pool_size = args.ldap_pool_size or args.threads
    daemons: dict[str, tuple[int, subprocess.Popen[bytes], list[int]]] = {}
    raw_runs: dict[str, list[Result]] = {name: [] for name, _, _ in layouts}
    sustained: dict[str, tuple[Result, Result]] = {}
    spare: list[Request] = []
    authd_runs: dict[str, list[Result]] = {name: [] for name, _, _ in layouts}
    reqfile = tmp / "authd-c.bin"
    try:
        for name, workers, cores in layouts:
            port = free_port()
            cfg = ldap_config(tmp, port, slapd, workers, args.threads, pool_size, True, url)
            log(f"authd (c) LDAP + HOTP, {name} core(s), workers={workers}: start, warm up")
            proc = start_authd(cfg, port, workers, cores)
            daemons[name] = (port, proc, server_pids(proc))
            # Warm-up: every user once (first sight: search and groups, then the DN is
            # cached for groups.cache_ttl as in production; pool connections opened).
            write_requests(reqfile, next(round_iter))
            stats, _ = run_loadgen(loadgen, reqfile, port, args.window, None, daemons[name][2])
            if stats["accept"] != len(creds):
                raise SystemExit(f"warm-up: {stats}: not every request was accepted")
        for n in range(args.repeat):
            for name, workers, cores in layouts:
                # slapd (and loadgen) on the cores the client side does not use, if any.
                place_threads(slapd.process.pid, other_core(cores))
                log(f"raw ldap3 binds, {name} core(s), {workers} x {args.threads}, run {n + 1}")
                raw_runs[name].append(
                    raw_binds(
                        tmp,
                        slapd.url,
                        creds,
                        args.requests,
                        workers,
                        args.threads,
                        slapd.process.pid,
                        cores,
                        args.order,
                        args.seed + n,
                    )
                )
                if raw_runs[name][-1].problem:
                    verdict.shout(raw_runs[name][-1].name, n + 1, raw_runs[name][-1].problem)
                port, _, pids = daemons[name]
                log(f"authd (c) LDAP + HOTP, {name} core(s), workers={workers}, run {n + 1}")
                packets = [p for _ in range(per_user) for p in next(round_iter)]
                write_requests(reqfile, packets)
                slapd_before = cpu_seconds([slapd.process.pid])
                stats, cpu = run_loadgen(
                    loadgen, reqfile, port, args.window, other_core(cores), pids
                )
                r = result(
                    f"authd LDAP + HOTP, workers {workers} x {args.threads} threads",
                    cores or "all",
                    stats,
                    cpu,
                )
                r.peer_cpu_us = (
                    (cpu_seconds([slapd.process.pid]) - slapd_before) / max(1, r.sent) * 1e6
                )
                authd_runs[name].append(r)
                if r.problem:
                    verdict.shout(r.name, n + 1, r.problem)
        for name, workers, cores in layouts if args.sustain > 0 else []:
            burst = verdict.median_kept(authd_runs[name])
            if burst is None and not args.sustain_rate:
                log(f"no kept authd burst, {name} core(s): no sustained runs")
                continue
            sustain = Sustain(
                args.sustain_rate or (args.sustain_share * burst.rps if burst else 0.0),
                args.sustain,
                args.interval,
            )
            count = round(sustain.rate * sustain.seconds)
            place_threads(slapd.process.pid, other_core(cores))
            log(f"raw ldap3 binds, {name} core(s), sustained at {sustain.rate:.0f}/s")
            raw = raw_binds(
                tmp,
                slapd.url,
                creds,
                count,
                workers,
                args.threads,
                slapd.process.pid,
                cores,
                args.order,
                args.seed,
                sustain,
            )
            if raw.problem:
                verdict.shout(raw.name, 1, raw.problem)
            port, _, pids = daemons[name]
            log(f"authd (c) LDAP + HOTP, {name} core(s), sustained at {sustain.rate:.0f}/s")
            packets, spare = spare, []
            while len(packets) < count:
                packets += next(round_iter)
            spare = packets[count:]
            slapd_before = cpu_seconds([slapd.process.pid])
            stats, cpu = offer(loadgen, reqfile, port, packets[:count], sustain, args, cores, pids)
            # Codes never sent go first next time (HOTP: each user's in counter order).
            spare = packets[count - int(stats["unsent"]) : count] + spare
            r = result(
                f"authd LDAP + HOTP, workers {workers} x {args.threads} threads",
                cores or "all",
                stats,
                cpu,
            )
            r.peer_cpu_us = (cpu_seconds([slapd.process.pid]) - slapd_before) / max(1, r.sent) * 1e6
            if r.problem:
                verdict.shout(r.name, 1, r.problem)
            sustained[name] = (raw, r)
    finally:
        stop([proc for _, proc, _ in daemons.values()])
        slapd.stop()
    out: list[tuple[str, list[Result]]] = []
    for name, _, _ in layouts:
        out += [(name, raw_runs[name]), (name, authd_runs[name])]
    return out, sustained


def row_cells(runs: list[Result]) -> tuple[Result | None, str]:
    """The median kept run of a row and its 'kept' cell."""
    return verdict.median_kept(runs), verdict.kept_label(runs)


def ldap_bench(args: argparse.Namespace) -> int:
    """`--ldap`: build the world, run workload (c), print its table and the ratios."""
    if shutil.which("gcc") is None:
        raise SystemExit("gcc not found: apt-get install gcc")
    if shutil.which("taskset") is None:
        raise SystemExit("taskset not found: apt-get install util-linux")
    print(f"uptime before: {uptime()}")
    with tempfile.TemporaryDirectory(prefix="authd-bench-ldap-") as tmpname:
        tmp = Path(args.keep).resolve() if args.keep else Path(tmpname)
        tmp.mkdir(parents=True, exist_ok=True)
        loadgen = build_loadgen(tmp)
        results, sustained = ldap_main(args, loadgen, tmp)
    print()
    print(
        f"slapd (mdb) on loopback, {args.ldap_users} users, "
        f"{user_order.label(args.order, args.seed)}; "
        f"authd: RADIUS PAP password+HOTP, "
        f"LDAP search-then-bind (DN cached), tokens in SQLite, auth_threads {args.threads}, "
        f"ldap pool_size {args.ldap_pool_size or args.threads}, {args.window} requests in "
        f"flight; raw: ldap3 binds, one persistent connection per thread; median of the kept "
        f"runs of {args.repeat} interleaved runs of >= {args.requests} requests (burst); "
        f"authd hot path: {hot_path_build()}"
    )
    print_sustained(
        args,
        [r for pair in sustained.values() for r in pair],
        "raw binds offered authd's rate on the same cores, paced per thread",
    )
    for layout, (raw, authd) in sustained.items():
        if not raw.problem and not authd.problem:
            print(
                f"sustained at {authd.offered:.0f}/s, {layout} core(s): authd "
                f"{authd.cpu_us / max(raw.cpu_us, 1e-9):.1f}x the raw clients' CPU per request, "
                f"p99 {authd.p99:.1f} vs {raw.p99:.1f} ms"
            )
    print("BURST:")
    print(
        f"| {'client':<42} | cores | req/s   | p50 ms | p99 ms | CPU µs/req | slapd µs/req "
        "| load1 | kept |"
    )
    print(
        f"|{'-' * 44}|-------|---------|--------|--------|------------|--------------|"
        "-------|------|"
    )
    best: list[tuple[str, Result | None]] = []
    for layout, runs in results:
        r, kept = row_cells(runs)
        best.append((layout, r))
        if r is None:
            print(f"| {runs[0].name:<42} | {runs[0].cores:<5} | all runs DISCARDED | {kept} |")
            continue
        print(
            f"| {r.name:<42} | {r.cores:<5} | {r.rps:7.0f} | {r.p50:6.2f} | {r.p99:6.2f} "
            f"| {r.cpu_us:10.0f} | {r.peer_cpu_us:12.0f} | {r.load1:5.2f} | {kept} |"
        )
    for i in range(0, len(best), 2):
        (layout, raw), (_, authd) = best[i], best[i + 1]
        if raw is None or authd is None:
            print(f"ratio authd / raw ldap3 binds, {layout} core(s): none (a row was discarded)")
            continue
        print(
            f"ratio authd / raw ldap3 binds, {layout} core(s): {authd.rps / raw.rps:.1%} of "
            f"req/s, {authd.cpu_us / max(raw.cpu_us, 1e-9):.1f}x client CPU per request"
        )
    print(f"uptime after: {uptime()}")
    return 0


def build_loadgen(tmp: Path) -> Path:
    loadgen = tmp / "loadgen"
    subprocess.run(
        ["gcc", "-O2", "-o", str(loadgen), str(REPO / "scripts/bench/loadgen.c")], check=True
    )
    return loadgen


def pinned_cores(pids: list[int], timeout: float = 10.0) -> str:
    """Each process's core once it has pinned itself (radius.pin_workers): read too early,
    every process still shows the cores it was started with."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cores = [cores_of(p) for p in pids]
        if all("," not in c for c in cores):
            return "|".join(cores)
        time.sleep(0.05)
    return "|".join(cores_of(p) for p in pids) + " (not pinned)"


@dataclass
class Row:
    """One line of a table: the runs of one server set-up (burst or sustained)."""

    name: str
    cores: str
    runs: list[Result]
    sustained: bool = False


def add_run(runs: list[Result], r: Result) -> None:
    runs.append(r)
    if r.problem:
        verdict.shout(f"{r.name} (cores {r.cores})", len(runs), r.problem)


# The next sustained try offers this share of what authd answered per second in a try
# whose rate it did not hold.
STEP_DOWN = 0.8


def held(r: Result) -> bool:
    """Whether a sustained run held its offered rate: every answer right, nothing given
    up on, and (nearly) no request held back because the server still had the in-flight
    cap's worth unanswered. (Late sends from a starved load generator do not count: they
    are the machine's, and are shown.)"""
    return not r.problem and not r.unsent and r.blocked <= 0.01 * r.sent


def print_sustained(args: argparse.Namespace, runs: list[Result], note: str) -> None:
    """The sustained table (the operator's figure, printed first), then each run's rows."""
    if not runs:
        return
    print(
        f"SUSTAINED: open loop, a fixed offered rate for {args.sustain:.0f} s (up to "
        f"{args.sustain_window} in flight; latency from each request's due time); {note}"
    )
    cells = [
        [r.name, r.cores, f"{r.offered:.0f}", f"{r.rps:.0f}", f"{r.p50:.2f}", f"{r.p99:.2f}"]
        + [f"{r.cpu_us:.0f}", f"{r.cpu_share:.0%}", f"{r.load1:.2f}"]
        + [f"{r.late / max(1, r.sent):.1%}", f"{r.blocked / max(1, r.sent):.1%}", str(r.unsent)]
        + ["DISCARDED" if r.problem else "ok", "yes" if held(r) else "no"]
        for r in runs
    ]
    columns = ["server", "cores", "offered", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "CPU"]
    print(table([*columns, "load1", "sent late", "held back", "unsent", "checked", "held"], cells))
    for r in runs:
        print(f"per {args.interval:.0f} s, {r.name} (cores {r.cores}), offered {r.offered:.0f}/s:")
        cells = [
            [f"{iv['from_s']:.0f}", f"{iv['rps']:.0f}", f"{iv['p50_ms']:.2f}"]
            + [
                f"{iv['p99_ms']:.2f}",
                f"{iv['wrong']:.0f}",
                f"{iv['lost']:.0f}",
                f"{iv['load1']:.2f}",
            ]
            for iv in r.intervals
        ]
        print(table(["from s", "req/s", "p50 ms", "p99 ms", "wrong", "lost", "load1"], cells))


def print_tables(args: argparse.Namespace, rows: list[Row]) -> None:
    """Sustained figures first (the operator's), then bursts, then ratios of kept runs."""
    print()
    print(
        f"store: {args.store}; {user_order.label(args.order, args.seed)}; loadgen on the other "
        f"core when pinned; authd hot path: {hot_path_build()}"
    )
    print_sustained(
        args,
        [row.runs[0] for row in rows if row.sustained],
        f"{args.users} users; FreeRADIUS offered authd's (last) rate on the same cores",
    )
    print(
        f"BURST: {args.window} requests in flight; median of the kept runs of {args.repeat} "
        f"runs of {args.requests} requests (by req/s); a run with a wrong or missing answer "
        "is discarded"
    )
    cells = []
    for row in rows:
        r, kept = row_cells(row.runs)
        if row.sustained:
            continue
        if r is None:
            cells.append([row.name, row.cores, "all runs DISCARDED", "", "", "", "", "", kept])
            continue
        cells.append(
            [row.name, r.cores, f"{r.rps:.0f}", f"{r.p50:.2f}", f"{r.p99:.2f}", f"{r.cpu_us:.0f}"]
            + [f"{r.cpu_share:.0%}", f"{r.load1:.2f}", kept]
        )
    columns = ["server", "cores", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "CPU", "load1"]
    print(table([*columns, "kept"], cells))
    pairs = [(a, f) for a, f in zip(rows, rows[1:], strict=False) if a.name.startswith("authd")]
    for a_row, f_row in pairs:
        if not f_row.name.startswith("FreeRADIUS") or a_row.sustained != f_row.sustained:
            continue
        if a_row.sustained and a_row.runs[0].offered != f_row.runs[0].offered:
            continue
        a, f = (verdict.median_kept(a_row.runs), verdict.median_kept(f_row.runs))
        what = "sustained" if a_row.sustained else "burst"
        if a is None or f is None or not f.rps:
            print(
                f"ratio authd/FreeRADIUS, {what}, cores {a_row.cores}: none (a run was discarded)"
            )
        elif a_row.sustained:
            print(
                f"ratio authd/FreeRADIUS, sustained at {a.offered:.0f} req/s, cores {a_row.cores}: "
                f"{a.cpu_us / max(f.cpu_us, 1e-9):.1f}x CPU/req, p99 {a.p99:.1f} vs {f.p99:.1f} ms"
            )
        else:
            print(
                f"ratio authd/FreeRADIUS, burst, cores {a_row.cores}: {a.rps / f.rps:.1%} of "
                f"req/s, {a.cpu_us / max(f.cpu_us, 1e-9):.1f}x CPU/req"
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10000, help="requests per burst run")
    ap.add_argument("--users", type=int, default=2000, help="workload (a) HOTP users (bursts)")
    ap.add_argument("--window", type=int, default=64, help="requests in flight (bursts)")
    ap.add_argument("--repeat", type=int, default=3, help="burst runs per row; median shown")
    ap.add_argument(
        "--order", choices=user_order.ORDERS, default="random", help="order users are driven in"
    )
    ap.add_argument("--seed", type=int, default=1, help="seed of the random user order")
    ap.add_argument(
        "--sustain", type=float, default=180.0, help="seconds of each sustained run (0: none)"
    )
    ap.add_argument("--interval", type=float, default=60.0, help="sustained: seconds per row")
    ap.add_argument(
        "--sustain-rate",
        type=float,
        default=0.0,
        help="sustained offered req/s (0: --sustain-share of authd's burst median)",
    )
    ap.add_argument("--sustain-share", type=float, default=0.7)
    ap.add_argument(
        "--sustain-tries",
        type=int,
        default=2,
        help="sustained tries of authd per layout while it does not hold the rate (the "
        "next at 80%% of the rate it answered)",
    )
    ap.add_argument("--sustain-window", type=int, default=4096, help="sustained: in-flight cap")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a short run: 1 burst of 5,000 per row, 30 s sustained in 10 s rows",
    )
    ap.add_argument(
        "--step-margin",
        type=float,
        default=5.0,
        help="FreeRADIUS bursts start in a fresh TOTP step unless this many s are left",
    )
    ap.add_argument("--b-requests", type=int, default=48, help="workload (b) requests")
    ap.add_argument("--b-window", type=int, default=8, help="workload (b) in flight")
    ap.add_argument("--threads", type=int, default=8, help="authd auth_threads")
    ap.add_argument("--skip-freeradius", action="store_true")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep logs and databases")
    ap.add_argument("--skip-b", action="store_true", help="skip workload (b)")
    ap.add_argument("--skip-two-cores", action="store_true")
    ap.add_argument(
        "--listener-only", action="store_true", help="only the listener run (profiling aid)"
    )
    ap.add_argument(
        "--store",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="authd's store (postgresql: a throwaway local cluster, fsync off)",
    )
    ap.add_argument(
        "--compare-pinning",
        action="store_true",
        help="also run workers=2 with radius.pin_workers: false",
    )
    ap.add_argument(
        "--ldap",
        action="store_true",
        help="workload (c) only: LDAP first factor + HOTP vs raw ldap3 binds, same slapd",
    )
    ap.add_argument("--ldap-users", type=int, default=1000, help="(c) directory users")
    ap.add_argument(
        "--ldap-layouts",
        default="one,two",
        help="(c) comma-separated: one (client side on core 0), two (workers 2, both cores)",
    )
    ap.add_argument(
        "--ldap-pool-size", type=int, default=0, help="(c) ldap pool_size (0: --threads)"
    )
    ap.add_argument(
        "--radsec",
        action="store_true",
        help="RadSec (classic and RADIUS/1.1) against UDP on one daemon, same run",
    )
    ap.add_argument("--connections", type=int, default=4, help="--radsec: TLS connections")
    args = ap.parse_args()
    if args.quick:  # where not given explicitly
        quick = {"requests": 5000, "repeat": 1, "sustain": 30.0, "interval": 10.0}
        for key, value in quick.items():
            if getattr(args, key) == ap.get_default(key):
                setattr(args, key, value)
    if args.ldap:
        return ldap_bench(args)
    if args.radsec:
        from radsec_bench import radsec_bench

        return radsec_bench(args)

    for prog, pkg in (("gcc", "gcc"), ("taskset", "util-linux")):
        if shutil.which(prog) is None:
            raise SystemExit(f"{prog} not found: apt-get install {pkg}")
    argon = {"time_cost": 3, "memory_cost_kib": 65536, "parallelism": 1}  # config defaults
    # (label, radius.workers, cores for taskset, radius.pin_workers)
    configs: list[tuple[str, int, str | None, bool]] = [("workers=1", 1, "0", True)]
    if not args.skip_two_cores:
        # Both cores: one process unpinned (SQLite and argon2 release the GIL) and
        # radius.workers=2 (SO_REUSEPORT, one core each); FreeRADIUS unpinned.
        configs.append(("workers=1", 1, None, True))
        configs.append(("workers=2", 2, None, True))
        if args.compare_pinning:
            configs.append(("workers=2 unpinned", 2, None, False))
    if args.listener_only:
        configs = []
    print(f"uptime before: {uptime()}", flush=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="authd-bench-") as tmpname, ExitStack() as stack:
        tmp = Path(args.keep).resolve() if args.keep else Path(tmpname)
        tmp.mkdir(parents=True, exist_ok=True)
        if args.store == "postgresql":
            os.chmod(tmp, 0o711)  # noqa: S103 - the cluster (user postgres) must reach pg/
            url = stack.enter_context(postgres_cluster(tmp))
        else:
            url = f"sqlite:///{tmp / 'authd.db'}"
        loadgen = build_loadgen(tmp)
        log(
            f"building the authd store: {args.users} HOTP users, "
            f"{args.b_requests} password+TOTP users"
        )
        burst_users, b_users = authd_world(tmp, args, argon, url)

        listener = Row("authd listener only (no engine/store)", "0", [])
        for n in range(args.repeat):
            log(f"authd listener only (engine answers at once), cores=0, run {n + 1}")
            port = free_port()
            lproc = subprocess.Popen(
                [
                    *taskset("0"),
                    sys.executable,
                    str(REPO / "scripts/bench/radius_listener.py"),
                    str(port),
                    SECRET,
                ],
                cwd=REPO,
            )
            try:
                wait_for_status(port)
                reqfile = tmp / "listener.bin"
                # The listener's engine accepts anything: fresh datagrams, counters unused.
                write_requests(
                    reqfile,
                    HotpUsers(burst_users.names, burst_users.seeds, args.order, args.seed).requests(
                        args.requests, args.window
                    ),
                )
                stats, cpu = run_loadgen(
                    loadgen, reqfile, port, args.window, other_core("0"), [lproc.pid]
                )
            finally:
                stop([lproc])
            add_run(listener.runs, result(listener.name, "0", stats, cpu))
        rows.append(listener)

        def authd_run(
            label: str, workers: int, cores: str | None, pin: bool, sustain: Sustain | None
        ) -> Result:
            port = free_port()
            cfg = authd_config(tmp, port, "none", workers, argon, args.threads, pin, url)
            kind = f"sustained at {sustain.rate:.0f} req/s" if sustain else "burst"
            log(f"authd (a) OTP-only, {label}, cores={cores or 'all'}, {kind}")
            proc = start_authd(cfg, port, workers, cores)
            pids = server_pids(proc)
            placed = pinned_cores(pids) if pin and workers > 1 else ""
            try:
                reqfile = tmp / "authd-a.bin"
                if sustain is None:
                    write_requests(reqfile, burst_users.requests(args.requests, args.window))
                    stats, cpu = run_loadgen(
                        loadgen, reqfile, port, args.window, other_core(cores), pids
                    )
                else:
                    packets = burst_users.requests(
                        round(sustain.rate * sustain.seconds), args.users // 2
                    )
                    stats, cpu = offer(loadgen, reqfile, port, packets, sustain, args, cores, pids)
                    burst_users.unsend(int(stats["unsent"]))
            finally:
                stop([proc])
            shown = cores or ("all" if workers == 1 or not pin else placed)
            return result(f"authd (a) OTP-only, {label}", shown, stats, cpu)

        fr_rows: dict[str | None, Row] = {}
        for label, workers, cores, pin in configs:
            row = Row(f"authd (a) OTP-only, {label}", cores or "all", [])
            for _ in range(args.repeat):
                add_run(row.runs, authd_run(label, workers, cores, pin, None))
            rows.append(row)
            if (cores == "0" or (cores is None and workers == 1)) and not args.skip_freeradius:
                fr = Row(f"FreeRADIUS 3.2 + rlm_totp (cores={cores or 'all'})", cores or "all", [])
                for n in range(args.repeat):
                    log(f"FreeRADIUS (a), cores={cores or 'all'}, burst, run {n + 1}")
                    add_run(
                        fr.runs,
                        freeradius_run(
                            tmp,
                            args,
                            args.users,
                            args.requests,
                            cores,
                            loadgen,
                            f"cores={cores or 'all'}",
                            n,
                        ),
                    )
                rows.append(fr)
                fr_rows[cores] = fr
        if args.sustain > 0:
            # Sustained, per layout: authd at a share of its own burst rate, FreeRADIUS
            # offered the same rate on the same cores (CPU per request and latency at
            # equal load are then comparable).
            offered: dict[str | None, float] = {}
            for label, workers, cores, pin in configs:
                burst = verdict.median_kept(
                    next(
                        r
                        for r in rows
                        if r.name == f"authd (a) OTP-only, {label}" and r.cores == (cores or "all")
                    ).runs
                )
                if burst is None and not args.sustain_rate:
                    log(f"no kept burst of authd {label}, cores={cores or 'all'}: no sustained run")
                    continue
                rate = args.sustain_rate or args.sustain_share * (burst.rps if burst else 0.0)
                for attempt in range(args.sustain_tries):
                    if attempt:
                        rate = STEP_DOWN * min(rate, row.runs[0].rps)
                        log(f"authd did not hold the rate: trying {rate:.0f} req/s")
                    sustain = Sustain(rate, args.sustain, args.interval)
                    row = Row(f"authd (a) OTP-only, {label}", cores or "all", [], sustained=True)
                    add_run(row.runs, authd_run(label, workers, cores, pin, sustain))
                    rows.append(row)
                    if held(row.runs[0]):
                        break
                offered[cores] = max(offered.get(cores, 0.0), rate)
            for cores, fr in fr_rows.items():
                if cores not in offered:
                    continue
                sustain = Sustain(offered[cores], args.sustain, args.interval)
                log(
                    f"FreeRADIUS (a), cores={cores or 'all'}, sustained at {sustain.rate:.0f} req/s"
                )
                row = Row(fr.name, fr.cores, [], sustained=True)
                add_run(
                    row.runs,
                    freeradius_run(
                        tmp,
                        args,
                        args.users,
                        0,
                        cores,
                        loadgen,
                        f"cores={cores or 'all'}",
                        0,
                        sustain,
                    ),
                )
                rows.append(row)
        if not args.skip_b and not args.listener_only:
            port = free_port()
            cfg = authd_config(tmp, port, "chain", 1, argon, args.threads, True, url)
            log("authd (b) password (argon2id) + TOTP, workers=1, cores=0")
            proc = start_authd(cfg, port, 1, "0")
            try:
                now, wire = time.time(), Wire()
                reqfile = tmp / "authd-b.bin"
                write_requests(
                    reqfile,
                    [
                        wire.request(i, name, "bench-password" + totp(seed, now))
                        for i, (name, seed) in enumerate(b_users)
                    ],
                )
                stats, cpu = run_loadgen(
                    loadgen,
                    reqfile,
                    port,
                    args.b_window,
                    other_core("0"),
                    [proc.pid],
                    60000,
                )
            finally:
                stop([proc])
            b = result(
                f"authd (b) argon2id t=3 m=64MiB p=1 + TOTP, {args.b_window} in flight",
                "0",
                stats,
                cpu,
            )
            row = Row(b.name, "0", [])
            add_run(row.runs, b)
            rows.append(row)
    print_tables(args, sustained_first(rows))
    print(f"uptime after: {uptime()}")
    return 0


def sustained_first(rows: list[Row]) -> list[Row]:
    """Sustained rows before bursts, each FreeRADIUS one right after the authd one offered
    the same rate on the same cores (the ratios compare neighbours)."""
    sustained = [r for r in rows if r.sustained]
    anchors = [r for r in sustained if not r.name.startswith("authd")]
    paired: list[Row] = []
    for r in sustained:
        if r.name.startswith("authd"):
            paired.append(r)
            for f in anchors:
                if f.runs[0].offered == r.runs[0].offered and f.cores == r.cores:
                    paired.append(f)
                    anchors.remove(f)
                    break
    return paired + anchors + [r for r in rows if not r.sustained]


if __name__ == "__main__":
    raise SystemExit(main())
