"""RADIUS benchmark: authd (the real daemon, real engine and SQLite store) against
Debian's FreeRADIUS 3.2 + rlm_totp, same machine, same load generator, same cores.

Run through `scripts/bench/radius` (one command). Not part of the test suite.

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
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

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
    tmp: Path, users: int, requests: int, tb_users: int, argon: dict[str, int]
) -> tuple[list[bytes], list[tuple[str, bytes]]]:
    """SQLite store with `users` HOTP users (workload a) and `tb_users` password+TOTP users
    (workload b); returns workload a's datagrams and b's (user, seed) list."""
    from authd.auth.local import hash_password, make_password_hasher
    from authd.config.model import PasswordHashConfig
    from authd.core.model import Token, TokenType, User
    from authd.crypto import Keyring
    from authd.storage.sql import SqlStore

    store = SqlStore.open(
        f"sqlite:///{tmp / 'authd.db'}", Keyring.load_or_create(str(tmp / "keys.json")), pool_size=1
    )
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


def authd_config(
    tmp: Path, port: int, first_factor: str, workers: int, argon: dict[str, int], threads: int
) -> Path:
    cfg = tmp / f"authd-{first_factor}-{workers}.yaml"
    cfg.write_text(f"""
store:
  url: "sqlite:///{tmp / "authd.db"}"
  pool_size: {threads}
keys:
  file: "{tmp / "keys.json"}"
auth_threads: {threads}
logging:
  level: warning
local_users:
  password_hash:
    time_cost: {argon["time_cost"]}
    memory_cost_kib: {argon["memory_cost_kib"]}
    parallelism: {argon["parallelism"]}
http:
  enabled: false
radius:
  listen: ["127.0.0.1:{port}"]
  workers: {workers}
  reject_delay: 0s
  clients:
    - name: bench
      address: 127.0.0.1/32
      secret: "{SECRET}"
      first_factor: {first_factor}
      otp_mode: inline
""")
    return cfg


def start_authd(
    cfg: Path, port: int, workers: int, cores: str | None
) -> list[subprocess.Popen[bytes]]:
    """`workers` daemons on one port: with radius.workers > 1 each binds SO_REUSEPORT,
    as the worker processes of `radius.workers` do."""
    procs = []
    for _ in range(workers):
        with open(cfg.with_suffix(".log"), "ab") as logfile:
            procs.append(
                subprocess.Popen(
                    [*taskset(cores), sys.executable, "-m", "authd", "serve", "-c", str(cfg)],
                    cwd=REPO,
                    stdout=subprocess.DEVNULL,
                    stderr=logfile,
                )
            )
        wait_for_status(port)
    return procs


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
    tmp: Path, users: int, requests: int, window: int, cores: str | None, loadgen: Path, label: str
) -> Result:
    binary = shutil.which("freeradius") or "/usr/sbin/freeradius"
    if not os.path.exists(binary) or not os.path.exists("/usr/lib/freeradius/rlm_totp.so"):
        raise SystemExit("FreeRADIUS with rlm_totp not found: apt-get install freeradius")
    d = tmp / f"raddb-{label}"
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
        stop([proc])  # type: ignore[list-item]
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20000, help="workload (a) requests")
    ap.add_argument("--users", type=int, default=2000, help="workload (a) HOTP users")
    ap.add_argument("--window", type=int, default=64, help="requests in flight")
    ap.add_argument("--b-requests", type=int, default=48, help="workload (b) requests")
    ap.add_argument("--b-window", type=int, default=8, help="workload (b) in flight")
    ap.add_argument("--threads", type=int, default=8, help="authd auth_threads")
    ap.add_argument("--skip-freeradius", action="store_true")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep logs and databases")
    ap.add_argument("--skip-b", action="store_true", help="skip workload (b)")
    ap.add_argument("--skip-two-cores", action="store_true")
    args = ap.parse_args()

    for prog, pkg in (("gcc", "gcc"), ("taskset", "util-linux")):
        if shutil.which(prog) is None:
            raise SystemExit(f"{prog} not found: apt-get install {pkg}")
    argon = {"time_cost": 3, "memory_cost_kib": 65536, "parallelism": 1}  # config defaults
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="authd-bench-") as tmpname:
        tmp = Path(args.keep) if args.keep else Path(tmpname)
        tmp.mkdir(parents=True, exist_ok=True)
        loadgen = tmp / "loadgen"
        subprocess.run(
            ["gcc", "-O2", "-o", str(loadgen), str(REPO / "scripts/bench/loadgen.c")], check=True
        )
        log(
            f"building the authd store: {args.users} HOTP users, {args.b_requests} "
            "password+TOTP users"
        )
        packets, b_users = authd_world(tmp, args.users, args.requests, args.b_requests, argon)
        port = free_port()
        log("authd listener only (engine answers at once), cores=0")
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
            write_requests(reqfile, packets)
            stats, cpu = run_loadgen(
                loadgen, reqfile, port, args.window, other_core("0"), [lproc.pid]
            )
        finally:
            stop([lproc])
        results.append(result("authd listener only (no engine/store)", "0", stats, cpu))
        third = len(packets) // 3
        runs = [("1", "0", packets[:third], True)]
        if not args.skip_two_cores:
            # Both cores: one process unpinned (SQLite and argon2 release the GIL) and
            # radius.workers=2 (SO_REUSEPORT); FreeRADIUS runs once, unpinned.
            runs.append(("1", None, packets[third : 2 * third], False))
            runs.append(("2", None, packets[2 * third :], True))
        for workers, cores, pkts, anchor in runs:
            port = free_port()
            cfg = authd_config(tmp, port, "none", int(workers), argon, args.threads)
            log(f"authd (a) OTP-only, workers={workers}, cores={cores or 'all'}")
            procs = start_authd(cfg, port, int(workers), cores)
            try:
                reqfile = tmp / f"authd-a-{workers}-{cores}.bin"
                write_requests(reqfile, pkts)
                stats, cpu = run_loadgen(
                    loadgen, reqfile, port, args.window, other_core(cores), [p.pid for p in procs]
                )
            finally:
                stop(procs)
            results.append(
                result(f"authd (a) OTP-only, workers={workers}", cores or "all", stats, cpu)
            )
            if anchor and not args.skip_freeradius:
                log(f"FreeRADIUS (a), cores={cores or 'all'}")
                results.append(
                    freeradius_run(
                        tmp,
                        args.users,
                        len(pkts),
                        args.window,
                        cores,
                        loadgen,
                        f"cores={cores or 'all'}",
                    )
                )
        if not args.skip_b:
            port = free_port()
            cfg = authd_config(tmp, port, "chain", 1, argon, args.threads)
            log("authd (b) password (argon2id) + TOTP, workers=1, cores=0")
            procs = start_authd(cfg, port, 1, "0")
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
                    [p.pid for p in procs],
                    60000,
                )
            finally:
                stop(procs)
            results.append(
                result(
                    f"authd (b) argon2id t=3 m=64MiB p=1 + TOTP, {args.b_window} in flight",
                    "0",
                    stats,
                    cpu,
                )
            )

    print()
    print(f"requests in flight: {args.window}; loadgen on the other core when pinned")
    print(f"| {'server':<52} | cores | req/s   | p50 ms | p99 ms | CPU µs/req | accepted |")
    print(f"|{'-' * 54}|-------|---------|--------|--------|------------|----------|")
    for r in results:
        lost = f" lost {r.lost}" if r.lost else ""
        print(
            f"| {r.name:<52} | {r.cores:<5} | {r.rps:7.0f} | {r.p50:6.2f} | {r.p99:6.2f} "
            f"| {r.cpu_us:10.0f} | {r.accept}/{r.sent}{lost} |"
        )
    by = {(r.name, r.cores): r for r in results}
    fr1 = ("FreeRADIUS 3.2 + rlm_totp (cores=0)", "0")
    fr2 = ("FreeRADIUS 3.2 + rlm_totp (cores=all)", "all")
    for label, a_key, f_key in (
        ("one core", ("authd (a) OTP-only, workers=1", "0"), fr1),
        ("two cores, one process", ("authd (a) OTP-only, workers=1", "all"), fr2),
        ("two cores, workers=2", ("authd (a) OTP-only, workers=2", "all"), fr2),
    ):
        if a_key in by and f_key in by and by[f_key].rps:
            a, f = by[a_key], by[f_key]
            print(
                f"ratio authd/FreeRADIUS, {label}: {a.rps / f.rps:.1%} of req/s, "
                f"{a.cpu_us / max(f.cpu_us, 1e-9):.1f}x CPU/req"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
