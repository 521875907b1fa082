"""RADIUS benchmark: authd (the real daemon, real engine and SQLite store) against
Debian's FreeRADIUS 3.2 + rlm_totp, same machine, same load generator, same cores.

Run through `scripts/bench/radius` (one command). Not part of the test suite.

`--ldap` runs workload (c) instead: authd with an LDAP first factor (password + HOTP)
against raw ldap3 binds on the same private slapd, in the same run (issue 4).

Every authd request is a real accept by a distinct (user, HOTP counter) pair, so replay
protection, counter compare-and-set, attempt recording and audit are all in the measured
path. The load generator (loadgen.c, compiled here with gcc) replays pre-encoded
datagrams with a fixed number in flight and records each latency. Server CPU per
request comes from /proc/PID/stat (utime+stime of every server process) around the run.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from authd import hot_path_build  # noqa: E402
from authd.core.otp import hotp, totp  # noqa: E402
from authd.radius import codec  # noqa: E402

SECRET = "bench-secret-0123456789abcdef"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SOCKETS = 16  # loadgen source ports: SO_REUSEPORT spreads them over workers


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


def write_requests(path: Path, packets: list[bytes]) -> None:
    """loadgen's input: [socket][u16 length][datagram]; request i uses socket
    (i // 256) % SOCKETS and Identifier i % 256, so a (socket, id) pair recurs only
    SOCKETS*256 requests later."""
    with open(path, "wb") as f:
        for i, p in enumerate(packets):
            f.write(bytes(((i // 256) % SOCKETS,)) + len(p).to_bytes(2, "big") + p)


def encode(i: int, user: str, password: str) -> bytes:
    auth = os.urandom(16)
    attrs = [
        (codec.USER_NAME, user.encode()),
        (codec.USER_PASSWORD, codec.encode_password(password.encode(), SECRET.encode(), auth)),
    ]
    return codec.encode_request(codec.ACCESS_REQUEST, i % 256, auth, SECRET.encode(), attrs)


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
) -> tuple[dict[str, float], float]:
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
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    after = cpu_seconds(pids)
    return json.loads(out.stdout), after - before


# ---------------------------------------------------------------- authd
def authd_world(
    tmp: Path, users: int, requests: int, tb_users: int, argon: dict[str, int], url: str
) -> tuple[list[bytes], list[tuple[str, bytes]]]:
    """SQLite store with `users` HOTP users (workload a) and `tb_users` password+TOTP users
    (workload b); returns workload a's datagrams and b's (user, seed) list."""
    from authd.auth.local import hash_password, make_password_hasher
    from authd.config.model import PasswordHashConfig
    from authd.core.model import Token, TokenType, User
    from authd.crypto import Keyring
    from authd.storage.sql import SqlStore

    store = SqlStore.open(url, Keyring.load_or_create(str(tmp / "keys.json")), pool_size=1)
    seeds = []
    per_user = -(-requests // users)
    for u in range(users):
        name, seed = f"hu{u:05d}", distinct_codes_seed(per_user + 11)
        store.add_user(User(name=name, source="local"))
        store.add_token(Token(serial=f"H{u:05d}", type=TokenType.HOTP, seed=seed, user=name))
        seeds.append((name, seed))
    hasher = make_password_hasher(PasswordHashConfig(**argon))
    b_users = []
    pw_hash = hash_password(hasher, "bench-password")  # one hash, verified per request
    for u in range(tb_users):
        name, seed = f"pu{u:05d}", os.urandom(20)
        store.add_user(User(name=name, source="local", password_hash=pw_hash))
        store.add_token(Token(serial=f"P{u:05d}", type=TokenType.TOTP, seed=seed, user=name))
        b_users.append((name, seed))
    store.close()
    # Round-robin over users, counters in order: a user's next code is sent only
    # `users` requests later, never while its previous one is still in flight.
    packets = [
        encode(i, seeds[i % users][0], hotp(seeds[i % users][1], i // users))
        for i in range(requests)
    ]
    return packets, b_users


def distinct_codes_seed(counters: int) -> bytes:
    """A seed whose first `counters` HOTP codes are all different.

    authd's HOTP matcher takes the *latest* match in the look-ahead window, so a code
    that recurs within it (chance ~ look_ahead / 10^6 per request) moves the counter past
    codes not yet sent and the bench would count false replays; reported to the engine
    owner. Drawing seeds without collisions keeps every request a real accept.
    """
    while True:
        seed = os.urandom(20)
        codes = [hotp(seed, c) for c in range(counters)]
        if len(set(codes)) == len(codes):
            return seed


def daemon_yaml(
    tmp: Path, url: str, threads: int, port: int, workers: int, pin: bool, first_factor: str
) -> tuple[str, str]:
    """The parts of a bench daemon's config every variant shares: (store, keys, threads,
    logging) before the variant's own sections, (http off, the RADIUS listener and the
    bench client) after them."""
    head = f"""
store:
  url: "{url}"
  pool_size: {threads}
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
    binding the port with SO_REUSEPORT). Returns once every process has bound it."""
    with open(cfg.with_suffix(".log"), "ab") as logfile:
        proc = subprocess.Popen(
            [*taskset(cores), sys.executable, "-m", "authd", "serve", "-c", str(cfg)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=logfile,
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
def postgres_cluster(tmp: Path) -> Iterator[str]:
    """A throwaway PostgreSQL 15 cluster on loopback (fsync off: the data is disposable,
    as in tests/fixtures/postgres.py); yields its URL."""
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
    opts = (
        f"-k {pgdir} -c listen_addresses=127.0.0.1 -p {port} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
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


def freeradius_run(
    tmp: Path,
    users: int,
    requests: int,
    window: int,
    cores: str | None,
    loadgen: Path,
    label: str,
    run: int = 0,
) -> Result:
    binary = shutil.which("freeradius") or "/usr/sbin/freeradius"
    if not os.path.exists(binary) or not os.path.exists("/usr/lib/freeradius/rlm_totp.so"):
        raise SystemExit("FreeRADIUS with rlm_totp not found: apt-get install freeradius")
    d = tmp / f"raddb-{label}-{run}"
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
        now = time.time()
        # rlm_totp 3.2.1 has no replay protection: the same current code per user is
        # accepted again, so FreeRADIUS does strictly less work per request than authd.
        codes = [totp(seed, now) for seed in seeds]
        reqfile = tmp / f"fr-{label}.bin"
        write_requests(
            reqfile, [encode(i, f"fu{i % users:05d}", codes[i % users]) for i in range(requests)]
        )
        stats, cpu = run_loadgen(loadgen, reqfile, port, window, other_core(cores), [proc.pid])
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


def result(name: str, cores: str, stats: dict[str, float], cpu: float) -> Result:
    done = max(1, int(stats["accept"] + stats["reject"] + stats["challenge"]))
    return Result(
        name,
        cores,
        stats["rps"],
        stats["p50_ms"],
        stats["p99_ms"],
        cpu / done * 1e6,
        int(stats["accept"]),
        int(stats["sent"]),
        int(stats["lost"]),
    )


def median_run(runs: list[Result]) -> Result:
    """The run with the median requests/s (its own latency and CPU figures with it)."""
    ordered = sorted(runs, key=lambda r: r.rps)
    return ordered[(len(ordered) - 1) // 2]


# ---------------------------------------------------------------- LDAP (c)
LDAP_BACKEND = "directory"  # the backend's name: the store's `source` of its users


def ldap_world(
    tmp: Path, users: int, per_user: int, url: str
) -> tuple[Any, list[tuple[str, str, str]], list[list[bytes]]]:
    """A private slapd (tests/fixtures/slapd.py) with `users` more entries, each user
    with an HOTP token in authd's SQLite store (as `authctl token add` makes for a
    directory user). Returns the slapd, [(uid, dn, password)] and, per round, one
    datagram per user: "password" + that round's HOTP code, so every request is a real
    accept and every code is used once."""
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
        store = SqlStore.open(url, Keyring.load_or_create(str(tmp / "keys.json")), pool_size=1)
        seeds = []
        for u, (uid, _) in enumerate(creds):
            seed = distinct_codes_seed(per_user + 11)
            store.add_user(User(name=uid, source=LDAP_BACKEND))
            store.add_token(Token(serial=f"L{u:05d}", type=TokenType.HOTP, seed=seed, user=uid))
            seeds.append(seed)
        store.close()
    except BaseException:
        slapd.stop()
        raise
    # Round-robin over users, as in workload (a): a user's next code is sent only
    # `users` requests later, never while the previous one is in flight.
    rounds = [
        [encode(u, uid, pw + hotp(seeds[u], r)) for u, (uid, pw) in enumerate(creds)]
        for r in range(per_user)
    ]
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
) -> Result:
    """The baseline: `procs` processes x `threads` threads of raw ldap3 binds
    (scripts/bench/ldap/rawbind.py), `requests` binds in all, all started together.
    CPU µs/req is the clients' own CPU (the authd rows show authd's)."""
    creds_file = tmp / "creds.json"
    creds_file.write_text(json.dumps([[dn, pw] for _, dn, pw in creds]))
    start_at = time.time() + 1.0 + 0.3 * procs  # every process connected by then
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
    if sum(o["failures"] for o in outs):
        raise SystemExit("raw binds failed: benchmark invalid")
    lat = sorted(x for o in outs for x in o["latencies_ms"])
    done = len(lat)
    elapsed = max(o["t1"] for o in outs) - min(o["t0"] for o in outs)
    return Result(
        f"raw ldap3 binds, {procs} proc x {threads} threads",
        cores or "all",
        done / elapsed,
        lat[len(lat) // 2],
        lat[int(0.99 * (len(lat) - 1))],
        sum(o["cpu_s"] for o in outs) / done * 1e6,
        done,
        done,
        0,
        slapd_cpu / done * 1e6,
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


def ldap_main(args: argparse.Namespace, loadgen: Path, tmp: Path) -> list[tuple[str, Result]]:
    """Workload (c): authd with an LDAP first factor (password + HOTP in one
    User-Password) against raw ldap3 binds on the same slapd, interleaved in one run.

    Per layout, the same processes, threads (auth_threads = raw-bind threads per process)
    and cores on both sides. Every daemon is started and warmed up first; then each round
    runs, per layout, the raw binds and authd once (an idle daemon costs nothing), so
    other load on the machine hits both alike. Returns (layout, row) pairs."""
    layouts = [(name, *LDAP_LAYOUTS[name]) for name in args.ldap_layouts.split(",")]
    per_user = -(-args.requests // args.ldap_users)
    rounds_needed = len(layouts) * (1 + args.repeat * per_user)
    url = f"sqlite:///{tmp / 'authd-ldap.db'}"
    log(
        f"building slapd with {args.ldap_users} users and the authd store "
        f"({rounds_needed} HOTP codes each)"
    )
    slapd, creds, rounds = ldap_world(tmp, args.ldap_users, rounds_needed, url)
    round_iter = iter(rounds)
    pool_size = args.ldap_pool_size or args.threads
    daemons: dict[str, tuple[int, subprocess.Popen[bytes], list[int]]] = {}
    raw_runs: dict[str, list[Result]] = {name: [] for name, _, _ in layouts}
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
                    )
                )
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
    finally:
        stop([proc for _, proc, _ in daemons.values()])
        slapd.stop()
    out: list[tuple[str, Result]] = []
    for name, _, _ in layouts:
        out += [(name, median_run(raw_runs[name])), (name, median_run(authd_runs[name]))]
    return out


def ldap_bench(args: argparse.Namespace) -> int:
    """`--ldap`: build the world, run workload (c), print its table and the ratios."""
    if shutil.which("gcc") is None:
        raise SystemExit("gcc not found: apt-get install gcc")
    if shutil.which("taskset") is None:
        raise SystemExit("taskset not found: apt-get install util-linux")
    with tempfile.TemporaryDirectory(prefix="authd-bench-ldap-") as tmpname:
        tmp = Path(args.keep) if args.keep else Path(tmpname)
        tmp.mkdir(parents=True, exist_ok=True)
        loadgen = tmp / "loadgen"
        subprocess.run(
            ["gcc", "-O2", "-o", str(loadgen), str(REPO / "scripts/bench/loadgen.c")], check=True
        )
        results = ldap_main(args, loadgen, tmp)
    print()
    print(
        f"slapd (mdb) on loopback, {args.ldap_users} users; authd: RADIUS PAP password+HOTP, "
        f"LDAP search-then-bind (DN cached), tokens in SQLite, auth_threads {args.threads}, "
        f"ldap pool_size {args.ldap_pool_size or args.threads}, {args.window} requests in "
        f"flight; raw: ldap3 binds, one persistent connection per thread; median of "
        f"{args.repeat} interleaved runs of >= {args.requests} requests; authd hot path: "
        f"{hot_path_build()}"
    )
    print(
        f"| {'client':<42} | cores | req/s   | p50 ms | p99 ms | CPU µs/req | slapd µs/req | ok |"
    )
    print(f"|{'-' * 44}|-------|---------|--------|--------|------------|--------------|----|")
    for _, r in results:
        lost = f" lost {r.lost}" if r.lost else ""
        print(
            f"| {r.name:<42} | {r.cores:<5} | {r.rps:7.0f} | {r.p50:6.2f} | {r.p99:6.2f} "
            f"| {r.cpu_us:10.0f} | {r.peer_cpu_us:12.0f} | {r.accept}/{r.sent}{lost} |"
        )
    for i in range(0, len(results), 2):
        (layout, raw), (_, authd) = results[i], results[i + 1]
        print(
            f"ratio authd / raw ldap3 binds, {layout} core(s): {authd.rps / raw.rps:.1%} of "
            f"req/s, {authd.cpu_us / max(raw.cpu_us, 1e-9):.1f}x client CPU per request"
        )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10000, help="workload (a) requests per run")
    ap.add_argument("--users", type=int, default=2000, help="workload (a) HOTP users")
    ap.add_argument("--window", type=int, default=64, help="requests in flight")
    ap.add_argument("--repeat", type=int, default=3, help="runs per row; the median is shown")
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
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="authd-bench-") as tmpname, ExitStack() as stack:
        tmp = Path(args.keep) if args.keep else Path(tmpname)
        tmp.mkdir(parents=True, exist_ok=True)
        if args.store == "postgresql":
            os.chmod(tmp, 0o711)  # noqa: S103 - the cluster (user postgres) must reach pg/
            url = stack.enter_context(postgres_cluster(tmp))
        else:
            url = f"sqlite:///{tmp / 'authd.db'}"
        loadgen = tmp / "loadgen"
        subprocess.run(
            ["gcc", "-O2", "-o", str(loadgen), str(REPO / "scripts/bench/loadgen.c")], check=True
        )
        total = args.requests * args.repeat * max(1, len(configs))
        log(
            f"building the authd store: {args.users} HOTP users ({total} codes), "
            f"{args.b_requests} password+TOTP users"
        )
        packets, b_users = authd_world(tmp, args.users, total, args.b_requests, argon, url)
        chunks = iter(packets[i : i + args.requests] for i in range(0, len(packets), args.requests))

        runs: list[Result] = []
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
                # The listener's engine accepts anything: the same datagrams every run.
                write_requests(reqfile, packets[: args.requests])
                stats, cpu = run_loadgen(
                    loadgen, reqfile, port, args.window, other_core("0"), [lproc.pid]
                )
            finally:
                stop([lproc])
            runs.append(result("authd listener only (no engine/store)", "0", stats, cpu))
        results.append(median_run(runs))

        for label, workers, cores, pin in configs:
            runs = []
            for n in range(args.repeat):
                port = free_port()
                cfg = authd_config(tmp, port, "none", workers, argon, args.threads, pin, url)
                log(f"authd (a) OTP-only, {label}, cores={cores or 'all'}, run {n + 1}")
                proc = start_authd(cfg, port, workers, cores)
                pids = server_pids(proc)
                placed = "|".join(cores_of(p) for p in pids)
                try:
                    reqfile = tmp / "authd-a.bin"
                    write_requests(reqfile, next(chunks))
                    stats, cpu = run_loadgen(
                        loadgen, reqfile, port, args.window, other_core(cores), pids
                    )
                finally:
                    stop([proc])
                shown = cores or ("all" if workers == 1 or not pin else placed)
                runs.append(result(f"authd (a) OTP-only, {label}", shown, stats, cpu))
            results.append(median_run(runs))
            if cores == "0" or (cores is None and workers == 1):
                if args.skip_freeradius:
                    continue
                runs = []
                for n in range(args.repeat):
                    log(f"FreeRADIUS (a), cores={cores or 'all'}, run {n + 1}")
                    runs.append(
                        freeradius_run(
                            tmp,
                            args.users,
                            args.requests,
                            args.window,
                            cores,
                            loadgen,
                            f"cores={cores or 'all'}",
                            n,
                        )
                    )
                results.append(median_run(runs))
        if not args.skip_b and not args.listener_only:
            port = free_port()
            cfg = authd_config(tmp, port, "chain", 1, argon, args.threads, True, url)
            log("authd (b) password (argon2id) + TOTP, workers=1, cores=0")
            proc = start_authd(cfg, port, 1, "0")
            try:
                now = time.time()
                reqfile = tmp / "authd-b.bin"
                write_requests(
                    reqfile,
                    [
                        encode(i, name, "bench-password" + totp(seed, now))
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
            results.append(
                result(
                    f"authd (b) argon2id t=3 m=64MiB p=1 + TOTP, {args.b_window} in flight",
                    "0",
                    stats,
                    cpu,
                )
            )

    print()
    print(
        f"store: {args.store}; requests in flight: {args.window}; "
        "loadgen on the other core when pinned; "
        f"median of {args.repeat} runs of {args.requests} requests (by req/s); "
        f"authd hot path: {hot_path_build()}"
    )
    print(f"| {'server':<52} | cores | req/s   | p50 ms | p99 ms | CPU µs/req | accepted |")
    print(f"|{'-' * 54}|-------|---------|--------|--------|------------|----------|")
    for r in results:
        lost = f" lost {r.lost}" if r.lost else ""
        print(
            f"| {r.name:<52} | {r.cores:<5} | {r.rps:7.0f} | {r.p50:6.2f} | {r.p99:6.2f} "
            f"| {r.cpu_us:10.0f} | {r.accept}/{r.sent}{lost} |"
        )

    def find(name: str, cores: str | None = None) -> Result | None:
        for r in results:
            if r.name == name and (cores is None or r.cores == cores):
                return r
        return None

    a_name = "authd (a) OTP-only, "
    fr1 = find("FreeRADIUS 3.2 + rlm_totp (cores=0)")
    fr2 = find("FreeRADIUS 3.2 + rlm_totp (cores=all)")
    for label, a, f in (
        ("one core", find(a_name + "workers=1", "0"), fr1),
        ("two cores, one process", find(a_name + "workers=1", "all"), fr2),
        ("two cores, workers=2", find(a_name + "workers=2"), fr2),
        ("two cores, workers=2 unpinned", find(a_name + "workers=2 unpinned"), fr2),
    ):
        if a is not None and f is not None and f.rps:
            print(
                f"ratio authd/FreeRADIUS, {label}: {a.rps / f.rps:.1%} of req/s, "
                f"{a.cpu_us / max(f.cpu_us, 1e-9):.1f}x CPU/req"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
