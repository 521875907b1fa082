"""Multi-node benchmark: one, two and three authd nodes on one PostgreSQL cluster,
driven together, and where the limit is.

Each node is its own `authd serve` (own config, RADIUS port and log; `--workers`
processes) on one throwaway PostgreSQL 15 cluster (fsync on by default, as in
production). One load generator per node, all started together: in bursts each keeps
`--window` requests in flight; with `--rate` they share one offered rate (open loop,
one wall-clock start). The workload is radius_bench's (a): an OTP-only client
(`first_factor: none`), HOTP users, each code used once and each answer checked, every
request a real accept; node i of k drives users i, i+k, i+2k, ... so no user's codes
reach two nodes at once (exactness across nodes has its own tests).

Per layout: total req/s, p50/p99 (of the slowest node), authd CPU per request (every
node process, /proc/PID/stat), PostgreSQL CPU per request (the cluster's processes,
exited backends included), the cores' idle share (/proc/stat), commits and WAL
(pg_stat_database, pg_stat_wal with track_wal_io_timing) and what the backends wait for
(pg_stat_activity sampled every 50 ms). `--sqlite-baseline` adds one node on SQLite,
same workload and cores, for the PostgreSQL/SQLite ratio. Run through
`scripts/bench/nodes`; not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from authd import hot_path_build  # noqa: E402
from scripts.bench import order as user_order  # noqa: E402
from scripts.bench import verdict  # noqa: E402
from scripts.bench.machine import cpu_jiffies, idle_shares, table, uptime  # noqa: E402
from scripts.bench.pg_observe import (  # noqa: E402
    STATS_SETTLE_S,
    Counters,
    WaitSampler,
    cluster_cpu_seconds,
    postmaster_pid,
    read_counters,
)
from scripts.bench.radius_bench import (  # noqa: E402
    SUSTAIN_TIMEOUT_MS,
    HotpUsers,
    Request,
    Result,
    authd_world,
    build_loadgen,
    daemon_yaml,
    free_port,
    log,
    postgres_cluster,
    result,
    run_loadgen,
    schedule,
    server_pids,
    start_authd,
    stop,
    write_requests,
)

ARGON = {"time_cost": 3, "memory_cost_kib": 65536, "parallelism": 1}  # config defaults
# A share of a core group counted as saturated, and of the run spent in WAL fsync.
BUSY = 0.9


@dataclass
class Node:
    """One running daemon: its RADIUS port, processes and the core it is pinned to."""

    name: str
    port: int
    proc: Any  # subprocess.Popen[bytes]
    pids: list[int]
    cores: str | None


@dataclass
class Layout:
    """The nodes one row drives together, over one store's users."""

    label: str
    store: str  # "postgresql" or "sqlite"
    nodes: list[Node]
    users: HotpUsers
    per_node: int = 0  # requests per node of a measured burst (from the warm-up)


@dataclass
class LayoutRun:
    """One measured run of a layout: every node's loadgen result and what the run cost."""

    layout: str
    nodes: int
    node_results: list[Result]
    elapsed: float  # s, the longest loadgen's run
    authd_cpu: float  # s, every node process
    idle: dict[str, float]  # /proc/stat line -> idle share during the run
    busy: dict[str, float]  # core group -> busy share ("authd cores", ...)
    pg_cpu: float | None = None  # s, the whole cluster
    pg: Counters | None = None  # counters' growth over the run
    waits: dict[str, float] = field(default_factory=dict)  # kind -> backends per sample, and
    # "longer than 1 s": the lock waits the server logged
    lock_events: str = ""  # the lock waits by event, e.g. "extend 0.04"
    offered: float = 0.0

    @property
    def answered(self) -> int:
        return sum(r.sent - r.lost for r in self.node_results)

    @property
    def rps(self) -> float:
        return self.answered / max(self.elapsed, 1e-9)

    @property
    def problem(self) -> str:
        return "; ".join(
            f"node {i}: {r.problem}" for i, r in enumerate(self.node_results) if r.problem
        )

    @property
    def held(self) -> bool:
        """Open loop: every node held its share of the rate (see radius_bench.held)."""
        return all(
            not r.problem and not r.unsent and r.blocked <= 0.01 * r.sent for r in self.node_results
        )

    def per_request_us(self, seconds: float | None) -> str:
        return "-" if seconds is None else f"{seconds / max(1, self.answered) * 1e6:.0f}"


def node_requests(
    users: HotpUsers, nodes: int, node: int, count: int, gap: int, draw: int
) -> tuple[list[Request], HotpUsers, range]:
    """`count` requests of node `node` of `nodes`: its users are i, i+nodes, ... of
    `users`, each user's next HOTP codes (the counters in `users` move on). Returns the
    requests, the node's view of its users (to give back unsent codes) and its part."""
    if not users.counters:
        users.counters = [0] * len(users.names)
    part = range(node, len(users.names), nodes)
    view = HotpUsers(
        [users.names[u] for u in part],
        [users.seeds[u] for u in part],
        users.order,
        users.seed + 1000 * draw + node,
        counters=[users.counters[u] for u in part],
    )
    packets = view.requests(count, gap)
    give_back(users, view, part)
    return packets, view, part


def give_back(users: HotpUsers, view: HotpUsers, part: range) -> None:
    """Copy a node's counters back into the whole population's."""
    for j, u in enumerate(part):
        users.counters[u] = view.counters[j]


def limits(busy: dict[str, float], lock_waits: float, wal_sync_share: float) -> str:
    """Where a run's limit is, from what was saturated during it: a core group busy at
    least BUSY of the time (whoever used it), backends waiting on heavyweight locks (half
    a backend on average or more: rows, or a table being extended), or the WAL being
    fsynced at least BUSY of the run."""
    found = [f"{group} {share:.0%} busy" for group, share in busy.items() if share >= BUSY]
    if lock_waits >= 0.5:
        found.append(f"locks ({lock_waits:.1f} backends waiting)")
    if wal_sync_share >= BUSY:
        found.append(f"WAL fsync ({wal_sync_share:.0%} of the run)")
    return "; ".join(found) or "nothing saturated (latency: the in-flight window)"


class PgWatch:
    """The cluster's counters, CPU and waits, read so that one run's figures are
    complete: counters are read STATS_SETTLE_S after the cluster was last driven, and
    reused while it stays idle."""

    def __init__(self, url: str, settle: float) -> None:
        self.url, self.settle = url, settle
        self.dbname = url.rsplit("/", 1)[1]
        self.conn = psycopg.connect(url, dbname="postgres", autocommit=True)
        self.postmaster = postmaster_pid(self.conn)
        data = self.conn.execute("SHOW data_directory").fetchone()
        assert data is not None
        self.log_file = Path(data[0]).parent / "log"  # radius_bench.postgres_cluster's
        self._quiet_since = 0.0
        self._counters: Counters | None = None

    def counters(self) -> Counters:
        if self._counters is None:
            wait = self._quiet_since + self.settle - time.monotonic()
            if wait > 0:
                log(f"waiting {wait:.0f}s for PostgreSQL's statistics to settle")
                time.sleep(wait)
            self._counters = read_counters(self.conn, self.dbname)
        return self._counters

    def driven(self) -> None:
        """The cluster was just driven: the next counters need a fresh, settled read."""
        self._counters = None
        self._quiet_since = time.monotonic()

    def long_lock_waits(self) -> int:
        """Lock waits the server logged so far (log_lock_waits: a wait longer than
        deadlock_timeout, 1 s)."""
        with open(self.log_file, errors="replace") as f:
            return sum("still waiting for" in line for line in f)

    def cpu(self) -> float:
        return cluster_cpu_seconds(self.postmaster)

    def sampler(self) -> WaitSampler:
        return WaitSampler(self.url, self.dbname)

    def close(self) -> None:
        self.conn.close()


def start_nodes(
    tmp: Path, prefix: str, url: str, count: int, cores: list[str] | None, args: argparse.Namespace
) -> list[Node]:
    """`count` daemons on the store at `url`, node i pinned to cores[i % len] (or not)."""
    nodes = []
    for i in range(count):
        port = free_port()
        head, tail = daemon_yaml(tmp, url, args.threads, port, args.workers, True, "none")
        cfg = tmp / f"{prefix}{i}.yaml"
        cfg.write_text(head + tail)
        pin = cores[i % len(cores)] if cores else None
        log(f"starting {prefix}{i} on port {port}, cores {pin or 'all'}")
        proc = start_authd(cfg, port, args.workers, pin)
        nodes.append(Node(f"{prefix}{i}", port, proc, server_pids(proc), pin))
    return nodes


def drive(
    layout: Layout,
    count: int,
    args: argparse.Namespace,
    loadgen: Path,
    tmp: Path,
    loadgen_cores: str | None,
    core_groups: dict[str, set[int]],
    pg: PgWatch | None,
    draw: int,
) -> LayoutRun:
    """One run of `layout`: every node's loadgen started together, `count` requests each
    (a burst, or its share of `--rate`), with the machine's and the cluster's costs."""
    k = len(layout.nodes)
    rate = args.rate / k if args.rate else 0.0
    gap = args.window if not rate else len(layout.users.names) // (2 * k)
    drawn = [node_requests(layout.users, k, i, count, gap, draw) for i in range(k)]
    open_loop, start = None, 0.0
    if rate:
        start = time.time() + 2.0 + k * count * 2e-6  # files written by then
        open_loop = (rate, start, args.seconds)
    for i, (packets, _, _) in enumerate(drawn):
        due = schedule(count, rate, start) if rate else None
        write_requests(tmp / f"node{i}.bin", packets, due=due)
    before = pg.counters() if pg else None
    window = args.sustain_window if rate else args.window
    timeout = SUSTAIN_TIMEOUT_MS if rate else 3000
    with ExitStack() as stack, ThreadPoolExecutor(k) as pool:
        sampler = stack.enter_context(pg.sampler()) if pg else None
        pg_cpu0, jiffies0 = (pg.cpu() if pg else 0.0), cpu_jiffies()
        long_waits0 = pg.long_lock_waits() if pg else 0
        futures = [
            pool.submit(
                run_loadgen,
                loadgen,
                tmp / f"node{i}.bin",
                node.port,
                window,
                loadgen_cores,
                node.pids,
                timeout,
                open_loop,
            )
            for i, node in enumerate(layout.nodes)
        ]
        outs = [f.result() for f in futures]
        idle = idle_shares(jiffies0, cpu_jiffies())
        pg_cpu = pg.cpu() - pg_cpu0 if pg else None
        long_waits = pg.long_lock_waits() - long_waits0 if pg else 0
    for (_, view, part), (stats, _) in zip(drawn, outs, strict=True):
        if int(stats["unsent"]):  # codes never sent go first next time
            view.unsend(int(stats["unsent"]))
            give_back(layout.users, view, part)
    run = LayoutRun(
        layout.label,
        k,
        [
            result(f"{layout.label}, {node.name}", node.cores or "all", stats, cpu)
            for node, (stats, cpu) in zip(layout.nodes, outs, strict=True)
        ],
        max(float(stats["elapsed"]) for stats, _ in outs),
        sum(cpu for _, cpu in outs),
        idle,
        {
            group: 1 - sum(idle[f"cpu{c}"] for c in cores) / len(cores)
            for group, cores in core_groups.items()
        },
        offered=args.rate,
    )
    if pg and sampler:
        pg.driven()
        run.pg_cpu = pg_cpu
        assert before is not None
        run.pg = pg.counters() - before
        run.lock_events = ", ".join(
            f"{k.split(':', 1)[1]} {sampler.mean(k):.2f}" for k in sampler.lock_events()
        )
        run.waits = {
            "Lock": sampler.mean_locks(),
            "WAL": sampler.mean_wal(),
            "CPU": sampler.mean("CPU"),
            "idle in transaction": sampler.mean("idle in transaction"),
            "longer than 1 s": long_waits,
        }
    log(
        f"{layout.label}: {run.rps:.0f} req/s; per node "
        + ", ".join(f"{r.rps:.0f}" for r in run.node_results)
    )
    for r in run.node_results:
        if r.problem:
            verdict.shout(r.name, draw, r.problem)
    return run


def core_plan(args: argparse.Namespace) -> tuple[list[str] | None, set[int] | None, str | None]:
    """(authd cores, one per node in turn; PostgreSQL's cores; the load generators')."""
    allowed = sorted(os.sched_getaffinity(0))
    if args.pin == "none":
        return None, None, None
    if len(allowed) < 2:
        raise SystemExit("--pin split needs two cores: use --pin none")
    pg = (
        [int(c) for c in args.pg_cores.split(",")]
        if args.pg_cores
        else allowed[-max(1, len(allowed) // 4) :]
    )
    authd = (
        [c.strip() for c in args.authd_cores.split(",")]
        if args.authd_cores
        else [str(c) for c in allowed if c not in pg]
    )
    return authd, set(pg), ",".join(map(str, pg))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layouts", default="1,2,3", help="node counts to drive, comma-separated")
    ap.add_argument("--users", type=int, default=3000, help="HOTP users (split over the nodes)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each measured run")
    ap.add_argument("--window", type=int, default=64, help="bursts: requests in flight per node")
    ap.add_argument("--rate", type=float, default=0.0, help="offered req/s in all (0: bursts)")
    ap.add_argument(
        "--sustain-window", type=int, default=4096, help="--rate: in-flight cap per node"
    )
    ap.add_argument(
        "--warmup", type=int, default=2000, help="requests per node of each layout's warm-up burst"
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="runs per layout, interleaved; median shown"
    )
    ap.add_argument("--threads", type=int, default=8, help="authd auth_threads and store.pool_size")
    ap.add_argument("--workers", type=int, default=1, help="radius.workers of each node")
    ap.add_argument("--fsync", choices=("on", "off"), default="on", help="the cluster's fsync")
    ap.add_argument("--sqlite-baseline", action="store_true", help="add one node on SQLite")
    ap.add_argument(
        "--pin",
        choices=("split", "none"),
        default="split",
        help="split: authd nodes on their cores, PostgreSQL and the load generators on the "
        "others (on 2 cores: authd on 0, the rest on 1); none: nothing pinned",
    )
    ap.add_argument("--authd-cores", default="", help="split: authd cores, node i on the i-th")
    ap.add_argument("--pg-cores", default="", help="split: PostgreSQL's (and loadgen's) cores")
    ap.add_argument("--settle", type=float, default=STATS_SETTLE_S, help="s before PG counters")
    ap.add_argument("--order", choices=user_order.ORDERS, default="random")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep logs and databases")
    args = ap.parse_args()
    counts = [int(n) for n in args.layouts.split(",")]
    for prog, pkg in (("gcc", "gcc"), ("taskset", "util-linux")):
        if shutil.which(prog) is None:
            raise SystemExit(f"{prog} not found: apt-get install {pkg}")
    authd_cores, pg_cores, loadgen_cores = core_plan(args)
    if pg_cores:
        # This process, and so the cluster it starts and its world builder, on
        # PostgreSQL's cores (the daemons and load generators are pinned with taskset).
        os.sched_setaffinity(0, pg_cores)
    print(f"uptime before: {uptime()}", flush=True)
    runs: dict[str, list[LayoutRun]] = {}
    with tempfile.TemporaryDirectory(prefix="authd-bench-nodes-") as tmpname, ExitStack() as stack:
        tmp = Path(args.keep).resolve() if args.keep else Path(tmpname)
        tmp.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o711)  # noqa: S103 - the cluster (user postgres) must reach pg/
        settings = ("track_wal_io_timing=on", "log_lock_waits=on")
        url = stack.enter_context(postgres_cluster(tmp, args.fsync == "on", settings))
        loadgen = build_loadgen(tmp)
        pg = PgWatch(url, args.settle)
        stack.callback(pg.close)
        world = argparse.Namespace(users=args.users, order=args.order, seed=args.seed, b_requests=0)
        log(f"building the PostgreSQL store: {args.users} HOTP users (fsync {args.fsync})")
        t = time.monotonic()
        pg_users, _ = authd_world(tmp, world, ARGON, url)
        log(f"built in {time.monotonic() - t:.0f}s")
        daemons: list[Node] = []
        stack.callback(lambda: stop([n.proc for n in daemons]))
        daemons += start_nodes(tmp, "pg-node", url, max(counts), authd_cores, args)
        layouts = [
            Layout(f"PostgreSQL, {k} node{'s' * (k > 1)}", "postgresql", daemons[:k], pg_users)
            for k in counts
        ]
        if args.sqlite_baseline:
            sqlite_url = f"sqlite:///{tmp / 'authd.db'}"
            log(f"building the SQLite store: {args.users} HOTP users")
            sqlite_users, _ = authd_world(tmp, world, ARGON, sqlite_url)
            sqlite_node = start_nodes(tmp, "sqlite-node", sqlite_url, 1, authd_cores, args)
            daemons += sqlite_node
            layouts.insert(0, Layout("SQLite, 1 node", "sqlite", sqlite_node, sqlite_users))
        groups: dict[str, set[int]] = {}
        if authd_cores and pg_cores:
            groups = {"authd cores": set(), "PostgreSQL+loadgen cores": pg_cores}
        draw = 0
        for layout in layouts:
            # Warm-up: connections, caches and the first sight of every user, and the
            # burst rate that sizes the measured runs to --seconds.
            draw += 1
            k = len(layout.nodes)
            log(f"{layout.label}: warm-up, {args.warmup} requests per node")
            warm = drive(
                layout,
                args.warmup,
                argparse.Namespace(**{**vars(args), "rate": 0.0}),
                loadgen,
                tmp,
                loadgen_cores,
                {},
                None,
                draw,
            )
            if layout.store == "postgresql":
                pg.driven()
            layout.per_node = (
                round(args.rate / k * args.seconds)
                if args.rate
                else max(args.warmup, round(warm.rps / k * args.seconds))
            )
            log(
                f"{layout.label}: warm-up {warm.rps:.0f} req/s; {layout.per_node} requests per node"
            )
        for n in range(args.repeat):
            for layout in layouts:
                draw += 1
                cores = {
                    int(c) for node in layout.nodes if node.cores for c in node.cores.split(",")
                }
                if groups:
                    groups["authd cores"] = cores
                log(f"{layout.label}: run {n + 1}, {layout.per_node} requests per node")
                run = drive(
                    layout,
                    layout.per_node,
                    args,
                    loadgen,
                    tmp,
                    loadgen_cores,
                    dict(groups) if groups else {"all cores": set(sorted(os.sched_getaffinity(0)))},
                    pg if layout.store == "postgresql" else None,
                    draw,
                )
                runs.setdefault(layout.label, []).append(run)
    print_report(args, runs, authd_cores, pg_cores)
    print(f"uptime after: {uptime()}")
    return 0


def print_report(
    args: argparse.Namespace,
    runs: dict[str, list[LayoutRun]],
    authd_cores: list[str] | None,
    pg_cores: set[int] | None,
) -> None:
    """The two tables (throughput and CPU; PostgreSQL and the limit) and the ratios."""
    kind = (
        f"open loop, {args.rate:.0f} req/s offered in all for {args.seconds:.0f} s"
        if args.rate
        else f"bursts of {args.seconds:.0f} s, {args.window} requests in flight per node"
    )
    pinning = (
        f"authd node i on core {authd_cores}[i], PostgreSQL and the load generators on "
        f"{sorted(pg_cores or ())}"
        if authd_cores
        else "nothing pinned"
    )
    print()
    print(
        f"OTP-only RADIUS (HOTP), {args.users} users split over the nodes, "
        f"{user_order.label(args.order, args.seed)}; {kind}; PostgreSQL 15, fsync {args.fsync}; "
        f"{os.cpu_count()} cores: {pinning}; auth_threads {args.threads}, "
        f"radius.workers {args.workers} per node; median of {args.repeat} run(s); "
        f"authd hot path: {hot_path_build()}"
    )
    best = {label: verdict.median_kept(rs) for label, rs in runs.items()}
    cells, pg_cells = [], []
    for label, rs in runs.items():
        r = best[label]
        kept = verdict.kept_label(rs)
        if r is None:
            cells.append([label, "all runs DISCARDED", *[""] * 10, kept])
            continue
        idle = " ".join(f"{v:.0%}" for name, v in sorted(r.idle.items()) if name != "cpu")
        held = ("yes" if r.held else "no") if r.offered else "-"
        cells.append(
            [label, f"{r.offered:.0f}" if r.offered else "burst", f"{r.rps:.0f}"]
            + [
                f"{max(x.p50 for x in r.node_results):.2f}",
                f"{max(x.p99 for x in r.node_results):.2f}",
            ]
            + [r.per_request_us(r.authd_cpu), f"{r.authd_cpu / r.elapsed:.2f}"]
            + [
                r.per_request_us(r.pg_cpu),
                "-" if r.pg_cpu is None else f"{r.pg_cpu / r.elapsed:.2f}",
            ]
            + [f"{r.idle['cpu']:.0%} ({idle})", held, kept]
        )
        if r.pg is not None:
            p, per = r.pg, max(1, r.answered)
            sync_share = p.wal_sync_time_ms / 1000 / r.elapsed
            pg_cells.append(
                [label, f"{p.xact_commit / r.elapsed:.0f}", f"{p.xact_commit / per:.2f}"]
                + [f"{p.wal_bytes / per:.0f}", f"{p.wal_records / per:.1f}"]
                + [f"{p.wal_sync / r.elapsed:.0f}"]
                + [f"{p.wal_sync_time_ms / max(1, p.wal_sync):.2f}", f"{sync_share:.0%}"]
                + [f"{r.waits[w]:.2f}" for w in ("Lock", "WAL", "CPU", "idle in transaction")]
                + [r.lock_events or "-", f"{r.waits['longer than 1 s']:.0f}", str(p.deadlocks)]
                + [limits(r.busy, r.waits["Lock"], sync_share)]
            )
        else:
            pg_cells.append([label, *["-"] * 13, limits(r.busy, 0.0, 0.0)])
    print(
        table(
            ["layout", "offered", "req/s", "p50 ms", "p99 ms", "authd µs/req", "authd cores"]
            + ["PG µs/req", "PG cores", "machine idle (per core)", "held", "kept"],
            cells,
        )
    )
    print(
        "p50/p99: the slowest node's; cores: CPU seconds per wall second; held (open loop): "
        "every node answered its share with nothing held back or given up on"
    )
    print(
        table(
            ["layout", "commits/s", "commits/req", "WAL B/req", "WAL rec/req", "WAL syncs/s"]
            + ["ms/sync", "syncing", "Lock waits", "WAL waits", "on CPU", "idle in txn"]
            + ["lock events", "lock waits > 1 s", "deadlocks", "limit"],
            pg_cells,
        )
    )
    print(
        "waits: backends of the authd database per sample (every 50 ms) waiting on a "
        "heavyweight lock (lock events by kind: transactionid or tuple is a row, extend a "
        "growing table), on the WAL (write, fsync, WALWrite lock), running, or idle inside "
        "a transaction its node holds open; syncing: share of the run spent in WAL fsync"
    )
    sqlite, one = best.get("SQLite, 1 node"), best.get("PostgreSQL, 1 node")
    if sqlite and one:
        print(
            "PostgreSQL 1 node / SQLite 1 node: "
            + (f"{one.rps / sqlite.rps:.0%} of req/s (goal >= 70%); " if not args.rate else "")
            + f"authd CPU per request {one.per_request_us(one.authd_cpu)} vs "
            f"{sqlite.per_request_us(sqlite.authd_cpu)} µs, plus {one.per_request_us(one.pg_cpu)} "
            "µs of PostgreSQL"
        )
    for label, r in best.items():
        if r is None or r.pg_cpu is None:
            continue
        if one and r.nodes > 1 and not args.rate:
            print(
                f"{label} / 1 node: {r.rps / one.rps:.2f}x req/s (goal for 2 nodes: >= 1.7x "
                "where cores allow)"
            )
        # Sizing: PostgreSQL CPU per request over authd's is the database cores that
        # each fully busy authd core calls for.
        print(
            f"{label}: {r.pg_cpu / max(r.authd_cpu, 1e-9):.2f} PostgreSQL cores per busy "
            "authd core (PG over authd CPU per request)"
        )


if __name__ == "__main__":
    raise SystemExit(main())
