"""Population benchmark: the OTP-only RADIUS workload of scripts/bench/radius_bench.py
(workload a: first_factor none, one HOTP code a request, each a real accept) over
random users of stores holding 1k, 100k and 1M users, to show whether a decision costs
more as the user base grows.

Run through `scripts/bench/population` (one command). Not part of the test suite.

Each size gets a fresh store, seeded through the operators' bulk path (`authctl user
import` of a CSV: one HOTP token a user) and timed; then one warm-up burst and
`--repeat` measured bursts of `--requests` over users drawn in a seeded random order
(every user once per round). The daemon, the load generator, the answer checks and the
CPU accounting are radius_bench.py's, imported. Prints req/s, p50/p99 and server CPU
per request for each size, and the largest size against the smallest (goal: within
10% in req/s and CPU per request).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from scripts.bench import radius_bench as rb  # noqa: E402
from scripts.bench import verdict  # noqa: E402
from scripts.bench.machine import table, uptime  # noqa: E402


def write_users(path: Path, count: int) -> rb.HotpUsers:
    """The users file `authctl user import` reads, and the same users for the load."""
    users = rb.HotpUsers([f"pop{u:07d}" for u in range(count)], [], "random", 1)
    with path.open("w") as f:
        f.write("name,secret,type,serial\n")
        for u, name in enumerate(users.names):
            seed = os.urandom(20)
            users.seeds.append(seed)
            f.write(f"{name},{seed.hex()},hotp,P{u:07d}\n")
    return users


def seed_store(cfg: Path, users_file: Path) -> float:
    """`authctl user import` into the daemon's store; returns its wall seconds."""
    start = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "authd.authctl", "-c", str(cfg), "user", "import", str(users_file)],
        cwd=REPO,
        check=True,
        timeout=3600,
        stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - start


def daemon_config(tmp: Path, url: str, port: int, args: argparse.Namespace) -> Path:
    """radius_bench's OTP-only daemon (first factor none, one worker), with the page
    cache of --cache-size when given."""
    head, tail = rb.daemon_yaml(tmp, url, args.threads, port, 1, False, "none")
    if args.cache_size:
        head = head.replace("  pool_size:", f"  cache_size: {args.cache_size}\n  pool_size:")
    cfg = tmp / "authd.yaml"
    cfg.write_text(head + tail)
    return cfg


def measure(
    tmp: Path, url: str, size: int, loadgen: Path, args: argparse.Namespace
) -> tuple[float, list[rb.Result]]:
    """Seed `size` users, then the warm-up and the measured bursts on one daemon."""
    port = rb.free_port()
    cfg = daemon_config(tmp, url, port, args)
    users = write_users(tmp / "users.csv", size)
    rb.log(f"{size} users: seeding through authctl user import")
    seconds = seed_store(cfg, tmp / "users.csv")
    rb.log(f"{size} users seeded in {seconds:.1f}s ({size / seconds:.0f} users/s)")
    proc = rb.start_authd(cfg, port, 1, args.cores)
    pids = rb.server_pids(proc)
    runs: list[rb.Result] = []
    try:
        reqfile = tmp / "requests.bin"
        for n in range(args.repeat + 1):
            rb.write_requests(reqfile, users.requests(args.requests, args.window))
            stats, cpu = rb.run_loadgen(
                loadgen, reqfile, port, args.window, rb.other_core(args.cores), pids
            )
            run = rb.result(f"{size} users", args.cores or "all", stats, cpu)
            if n == 0:
                rb.log(f"{size} users: warm-up {run.rps:.0f} req/s")
                continue
            if run.problem:
                verdict.shout(f"{size} users", n, run.problem)
            runs.append(run)
            rb.log(f"{size} users, run {n}: {run.rps:.0f} req/s, {run.cpu_us:.0f} µs CPU/req")
    finally:
        rb.stop([proc])
    return seconds, runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes", default="1000,100000,1000000", help="comma-separated user counts"
    )
    ap.add_argument("--requests", type=int, default=20000, help="requests per burst")
    ap.add_argument("--window", type=int, default=64, help="requests in flight")
    ap.add_argument("--repeat", type=int, default=3, help="measured bursts per size; median")
    ap.add_argument("--threads", type=int, default=8, help="authd auth_threads")
    ap.add_argument("--cores", default="0", help="authd's cores (taskset); '' for all")
    ap.add_argument("--cache-size", type=int, default=0, help="store.cache_size MiB (0: default)")
    ap.add_argument(
        "--store", choices=("sqlite", "postgresql"), default="sqlite",
        help="postgresql: a throwaway local cluster per size (fsync off)",
    )  # fmt: skip
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep stores and logs")
    args = ap.parse_args()
    args.cores = args.cores or None
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {uptime()}; hot path {rb.hot_path_build()}; store {args.store}")
    rows: list[list[str]] = []
    median: dict[int, rb.Result] = {}
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="authd-pop-"))
    base.mkdir(parents=True, exist_ok=True)
    loadgen = rb.build_loadgen(base)
    for size in sizes:
        tmp = base / f"n{size}"
        tmp.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            url = (
                stack.enter_context(rb.postgres_cluster(tmp))
                if args.store == "postgresql"
                else f"sqlite:///{tmp / 'authd.db'}"
            )
            seconds, runs = measure(tmp, url, size, loadgen, args)
        best = verdict.median_kept(runs)
        seeded = f"{seconds:.1f} s ({size / seconds:,.0f}/s)"
        if best is None:
            rows.append([f"{size:,}", seeded, "discarded", "", "", "", verdict.kept_label(runs)])
            continue
        median[size] = best
        rows.append([
            f"{size:,}", seeded, f"{best.rps:,.0f}", f"{best.p50:.2f}", f"{best.p99:.2f}",
            f"{best.cpu_us:.0f}", verdict.kept_label(runs),
        ])  # fmt: skip
    print(
        table(
            ["users", "seeded in", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "runs kept"], rows
        )
    )
    small, large = min(sizes), max(sizes)
    if small in median and large in median and small != large:
        a, b = median[small], median[large]
        print(
            f"{large:,} vs {small:,} users: req/s x{b.rps / a.rps:.2f}, "
            f"CPU per request x{b.cpu_us / a.cpu_us:.2f} (goal: within 10%)"
        )
    print(f"machine after: {uptime()}")
    if not args.keep:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
