"""Soak benchmark: the real authd daemon held at a fixed offered rate (or at the most it
answers) for minutes, sampled every interval, then judged against what a daemon that
runs for weeks must keep: a bounded WAL, flat memory, flat p99, a bounded audit trail
and, at the maximum, a sustained rate close to the burst rate.

Run through `scripts/bench/soak` (one command). Not part of the test suite.

The workload is radius_bench's OTP-only one, built and replayed by its functions and its
C load generator: RADIUS PAP from a `first_factor: none` client, each request a user's
next HOTP code over many users in a seeded random order, so every answer must be an
accept and every code is used once (replay protection, the counter compare-and-set, the
attempt record and the audit row are all in the path). One load-generator run per row:

- `--rate R`: an open loop on one schedule of R req/s for the whole run. Each row's run
  starts when the last one has its last answer (so a user's next code never overtakes
  its previous one); requests that fell due meanwhile go out at once, and latency counts
  from each request's due time (a server that falls behind shows its queue). A user's
  next code comes at least half the users later.
- `--rate max`: a 3-second burst (closed loop, `--window` in flight) gives the burst
  figure; then the same closed loop for the whole run, each row sized from the last
  one's rate: the rate authd holds, as a share of the burst figure.

The daemon runs with `audit.retention` 1d and `audit.prune_interval` 60s, the shortest
the config allows, so a run of minutes would never see a row pruned. The trail is first
seeded with rows (copies of a real one) aged so that they pass the retention at the
offered rate during the run: the state of a daemon that has run at this rate for longer
than the retention. The audit-rows column stays flat when the prune keeps pace with the
inserts (it counts max(id) - min(id) + 1: rows come with rising ids and go oldest first,
and a count(*) would hold a read snapshot for seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from authd import hot_path_build  # noqa: E402
from authd.core.otp import hotp  # noqa: E402
from scripts.bench import order as user_order  # noqa: E402
from scripts.bench import radius_bench as rb  # noqa: E402
from scripts.bench.machine import table, uptime  # noqa: E402

MIB = 1 << 20
# What a daemon that runs for weeks must keep, over the whole run.
WAL_GOAL = 64 * MIB  # SQLite's -wal file at every sample
RSS_GOAL = 0.10  # growth of the daemon's RSS after the first row
P99_FACTOR, P99_SLACK_MS = 1.5, 1.0  # last row's p99 against the second row's
AUDIT_GOAL = 0.10  # growth of the audit trail after the first row
SHARE_GOAL = 0.80  # --rate max: the run's req/s as a share of the burst figure
HELD_GOAL = 0.99  # --rate R: answered req/s as a share of the offered rate
# audit.retention and audit.prune_interval: the smallest values the config accepts.
RETENTION_S, PRUNE_INTERVAL_S = 86400.0, 60.0
ARGON = {"time_cost": 3, "memory_cost_kib": 65536, "parallelism": 1}  # config defaults
LEAD_S = 2.0  # an open loop's first due time, after its first input is written
BURST_S = 3.0  # --rate max: the burst's length, sized from a shorter probe
PROBE_REQUESTS = 3000
WARM_UP_REQUESTS = 2000  # --rate R: a burst first (first-sight costs, the audit template)
MAX_RATE_GUESS = 20000.0  # --rate max: req/s assumed when sizing the users
SEED_CHUNK = 50000  # audit rows per seeding transaction (keeps the seeding WAL small)
POLL_S = 1.0  # WAL size polled this often between samples: a row shows its peak


def log(msg: str) -> None:
    print(f"[soak] {msg}", file=sys.stderr, flush=True)


def users_for(requests: int, per_user: int = 256, least: int = 20000, most: int = 200000) -> int:
    """How many HOTP users a run of `requests` gets: about `per_user` codes each, at least
    `least` (a user comes back half the users later, well past the 4,096 requests an open
    loop may hold in flight) and at most `most` (seeding time)."""
    return max(least, min(most, -(-requests // per_user)))


def segments(seconds: float, interval: float) -> list[tuple[float, float]]:
    """(start, length) of each row of a run of `seconds`, the last one shorter if the
    interval does not divide the run."""
    out, at = [], 0.0
    while at < seconds - 1e-6:
        length = min(interval, seconds - at)
        out.append((at, length))
        at += length
    return out


class CodeStream:
    """Each user's next HOTP code, in endless rounds over all users (order.endless): a
    user comes back at least `gap` requests later, across load-generator runs too."""

    def __init__(self, users: rb.HotpUsers, gap: int) -> None:
        if not users.counters:
            users.counters = [0] * len(users.names)
        self.users = users
        self._rounds = user_order.endless(len(users.names), users.order, users.seed, gap)
        self._perm: list[int] = []
        self._pos = 0

    def take(self, count: int) -> list[rb.Request]:
        wire, u, out = rb.Wire(), self.users, []
        while len(out) < count:
            if self._pos == len(self._perm):
                self._perm, self._pos = next(self._rounds), 0
            k = self._perm[self._pos]
            self._pos += 1
            out.append(wire.request(k, u.names[k], hotp(u.seeds[k], u.counters[k])))
            u.counters[k] += 1
        return out

    def write(self, path: Path, count: int, rate: float = 0.0) -> Path:
        """A load-generator input of the next `count` codes; with `rate`, due times for
        an open loop from 0 s."""
        due = [i / rate for i in range(count)] if rate else None
        rb.write_requests(path, self.take(count), due=due)
        return path


def seed_users(tmp: Path, url: str, count: int, order: str, seed: int) -> rb.HotpUsers:
    """`count` local users with one HOTP token each, in one bulk transaction (the store's
    import path: seconds for 100k users, where one add_user a user takes minutes)."""
    from authd.core.model import Token, TokenType, User
    from authd.crypto import Keyring
    from authd.portability.merge import ImportPlan
    from authd.portability.records import UserRecord
    from authd.storage.sql import SqlStore

    users = rb.HotpUsers([f"hu{u:06d}" for u in range(count)], [], order, seed)
    users.seeds = [os.urandom(20) for _ in range(count)]
    plan = ImportPlan(
        users=[UserRecord(User(name=name, source="local")) for name in users.names],
        tokens=[
            Token(serial=f"H{u:06d}", type=TokenType.HOTP, seed=users.seeds[u], user=name)
            for u, name in enumerate(users.names)
        ],
    )
    store = SqlStore.open(url, Keyring.load_or_create(str(tmp / "keys.json")), pool_size=2)
    try:
        store.import_records(lambda _held: plan)
    finally:
        store.close()
    return users


def audit_backlog(
    tmp: Path, url: str, names: list[str], rate: float, count: int, base: float
) -> int:
    """Replace the trail with `count` copies of its newest row (a real accept of the
    warm-up), row i written at `base - retention + i / rate` for user i mod len(names):
    they pass the retention at `rate` from `base` on. Returns the rows written."""
    from sqlalchemy import delete, select

    from authd.crypto import Keyring
    from authd.storage.schema import audit, audit_bucket
    from authd.storage.sql import SqlStore

    store = SqlStore.open(url, Keyring.load_or_create(str(tmp / "keys.json")), pool_size=2)
    columns = [c.name for c in audit.columns if c.name != "id"]
    quoted = ", ".join(f'"{c}"' for c in columns)
    try:
        with store.transaction() as conn:
            newest = conn.execute(select(audit).order_by(audit.c.id.desc()).limit(1)).one()
            conn.execute(delete(audit))
            pg = conn.dialect.name == "postgresql"
        template = dict(newest._mapping)
        for lo in range(0, count, SEED_CHUNK):
            rows = [
                [
                    base - RETENTION_S + i / rate
                    if c == "at"
                    else names[i % len(names)]
                    if c == "user"
                    else audit_bucket(names[i % len(names)])
                    if c == "user_bucket"
                    else template[c]
                    for c in columns
                ]
                for i in range(lo, min(count, lo + SEED_CHUNK))
            ]
            # On the driver's connection: a run of 30 minutes needs millions of rows.
            with store.transaction() as conn:
                driver: Any = conn.connection.driver_connection
                if pg:
                    with driver.cursor().copy(f"COPY audit ({quoted}) FROM STDIN") as copy:
                        for r in rows:
                            copy.write_row(r)
                else:
                    marks = ", ".join("?" * len(columns))
                    sql = f"INSERT INTO audit ({quoted}) VALUES ({marks})"  # noqa: S608 - schema names
                    driver.executemany(sql, rows)
    finally:
        store.close()
    return count


# ---------------------------------------------------------------- what is sampled
class StoreProbe(Protocol):
    """Sizes of the store while the daemon runs; each read is one short statement."""

    wal_goal: int  # bytes the WAL must stay below
    wal_what: str  # what the WAL column measures and why that goal

    def db_bytes(self) -> int: ...
    def wal_bytes(self) -> int: ...
    def audit_rows(self) -> int: ...
    def checkpoint(self) -> None: ...
    def db_cpu_s(self) -> float: ...
    def close(self) -> None: ...


AUDIT_SPAN = "SELECT coalesce(max(id) - min(id) + 1, 0) FROM audit"


class SqliteProbe:
    wal_goal = WAL_GOAL
    wal_what = "the -wal file (goal < 64 MiB)"

    def __init__(self, path: Path) -> None:
        self.path = path

    def db_bytes(self) -> int:
        return self.path.stat().st_size

    def wal_bytes(self) -> int:
        try:
            return Path(f"{self.path}-wal").stat().st_size
        except FileNotFoundError:
            return 0

    def _query(self, sql: str) -> Any:
        # Read only, opened per call: the bench never holds a snapshot the daemon's
        # checkpoints would have to wait for.
        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(sql).fetchone()[0]

    def audit_rows(self) -> int:
        return int(self._query(AUDIT_SPAN))

    def checkpoint(self) -> None:
        with sqlite3.connect(self.path, timeout=30) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def db_cpu_s(self) -> float:
        return 0.0  # in the daemon's own processes

    def close(self) -> None:
        pass


class PgProbe:
    wal_what = "pg_wal (goal: the cluster's max_wal_size, its checkpointer's bound)"

    def __init__(self, url: str, data: Path) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.wal_goal = int(self._query("SELECT pg_size_bytes(current_setting('max_wal_size'))"))
        self.postmaster = int((data / "postmaster.pid").read_text().split()[0])

    def _query(self, sql: str) -> Any:
        row = self.conn.execute(sql).fetchone()
        return row[0] if row else None

    def db_bytes(self) -> int:
        return int(self._query("SELECT pg_database_size(current_database())"))

    def wal_bytes(self) -> int:
        return int(self._query("SELECT coalesce(sum(size), 0) FROM pg_ls_waldir()"))

    def audit_rows(self) -> int:
        return int(self._query(AUDIT_SPAN))

    def checkpoint(self) -> None:
        self.conn.execute("CHECKPOINT")

    def db_cpu_s(self) -> float:
        """The cluster's CPU so far: the postmaster with its exited children (cutime,
        cstime) and the live ones."""
        with open(f"/proc/{self.postmaster}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        own = sum(int(x) for x in fields[11:15]) / rb.CLK_TCK  # utime stime cutime cstime
        with open(f"/proc/{self.postmaster}/task/{self.postmaster}/children") as f:
            children = [int(c) for c in f.read().split()]
        live = 0.0
        for pid in children:
            try:
                live += rb.cpu_seconds([pid])
            except OSError:  # exited meanwhile: in cutime at the next sample
                continue
        return own + live

    def close(self) -> None:
        self.conn.close()


def run_queue_s(pids: list[int]) -> float:
    """Seconds the daemon's threads have waited for a CPU while runnable, summed
    (/proc/PID/task/TID/schedstat): what other processes on a shared machine took."""
    total = 0
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[1])
            except OSError:  # the thread ended meanwhile
                continue
    return total / 1e9


def rss_bytes(pids: list[int]) -> int:
    """The daemon's own resident memory, summed over its processes (RssAnon: heap and
    stacks). Not VmRSS: that counts the pages of the database file SQLite reads through
    its memory map (store.mmap_size), which grow with the pages touched, are the kernel's
    page cache and are dropped under memory pressure."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))
    return total * 1024


@dataclass
class Sample:
    at: float  # wall clock
    cpu_s: float  # the daemon's processes
    waited_s: float  # their threads' run-queue waits
    db_cpu_s: float  # PostgreSQL's processes (0 on SQLite)
    rss: int
    db: int
    wal: int
    audit: int


@dataclass
class Row:
    """One interval of a run, as printed and written to the JSON lines."""

    from_s: float
    seconds: float
    offered: float  # req/s offered (0: closed loop)
    sent: int
    answered: int
    rps: float  # answered / seconds
    p50_ms: float
    p99_ms: float
    wrong: int
    lost: int
    unsent: int
    late: int  # sent > 10 ms after their due time (the daemon's queue, or a starved sender)
    blocked: int  # held back while the in-flight cap was full: the daemon's queue
    cpu_us: float  # the daemon's CPU per answered request
    db_cpu_us: float
    cpu_share: float  # the daemon's CPU seconds per second
    waited: float  # its threads' run-queue seconds per second (a shared machine's toll)
    rss_mib: float
    db_mib: float
    wal_mib: float  # at the end of the row
    wal_peak_mib: float  # the largest seen in the row (polled every POLL_S)
    audit_rows: int
    load1: float


def make_row(
    stats: dict[str, Any], before: Sample, after: Sample, wal_peak: int, start: float
) -> Row:
    answered = int(stats["accept"] + stats["reject"] + stats["challenge"])
    seconds = max(after.at - before.at, 1e-9)
    per = 1e6 / max(1, answered)
    return Row(
        from_s=before.at - start,
        seconds=seconds,
        offered=float(stats.get("offered_rps", 0.0)),
        sent=int(stats["sent"]),
        answered=answered,
        rps=answered / seconds,
        p50_ms=float(stats["p50_ms"]),
        p99_ms=float(stats["p99_ms"]),
        wrong=int(stats["wrong"]),
        lost=int(stats["lost"]),
        unsent=int(stats.get("unsent", 0)),
        late=int(stats.get("late", 0)),
        blocked=int(stats.get("blocked", 0)),
        cpu_us=(after.cpu_s - before.cpu_s) * per,
        db_cpu_us=(after.db_cpu_s - before.db_cpu_s) * per,
        cpu_share=(after.cpu_s - before.cpu_s) / seconds,
        waited=(after.waited_s - before.waited_s) / seconds,
        rss_mib=after.rss / MIB,
        db_mib=after.db / MIB,
        wal_mib=after.wal / MIB,
        wal_peak_mib=max(wal_peak, after.wal, before.wal) / MIB,
        audit_rows=after.audit,
        load1=os.getloadavg()[0],
    )


# ---------------------------------------------------------------- the verdict
@dataclass
class Goal:
    name: str
    ok: bool | None  # None: not enough rows to tell
    detail: str


def judge(rows: list[Row], wal_goal: int, burst_rps: float | None, backlog: bool) -> list[Goal]:
    """The run against the goals; each goal says how it is defined."""
    goals = []
    bad = sum(r.wrong + r.lost + r.unsent for r in rows)
    goals.append(
        Goal("answers", bad == 0, f"{bad} wrong, lost or unsent of {sum(r.sent for r in rows)}")
    )
    peak = max(r.wal_peak_mib for r in rows)
    goals.append(
        Goal("WAL", peak * MIB < wal_goal, f"peak {peak:.1f} MiB (goal < {wal_goal / MIB:.0f} MiB)")
    )
    if len(rows) >= 2:
        base, most = rows[0].rss_mib, max(r.rss_mib for r in rows[1:])
        growth = most / base - 1
        goals.append(
            Goal(
                "RSS",
                growth < RSS_GOAL,
                f"{base:.0f} MiB after the first row, at most {most:.0f} MiB later: "
                f"{growth:+.1%} (goal < {RSS_GOAL:.0%})",
            )
        )
    else:
        goals.append(Goal("RSS", None, "needs 2 rows"))
    if len(rows) >= 3:
        second, last = rows[1].p99_ms, rows[-1].p99_ms
        limit = max(P99_FACTOR * second, second + P99_SLACK_MS)
        goals.append(
            Goal(
                "p99 flat",
                last <= limit,
                f"last row {last:.2f} ms, second row {second:.2f} ms (goal: last <= "
                f"max({P99_FACTOR}x second, second + {P99_SLACK_MS:.0f} ms) = {limit:.2f} ms)",
            )
        )
    else:
        goals.append(Goal("p99 flat", None, "needs 3 rows"))
    if backlog and len(rows) >= 2:
        first, last_rows = rows[0].audit_rows, rows[-1].audit_rows
        growth = last_rows / max(1, first) - 1
        goals.append(
            Goal(
                "audit bounded",
                growth <= AUDIT_GOAL,
                f"{first} rows after the first row, {last_rows} at the end: {growth:+.1%} "
                f"(goal <= {AUDIT_GOAL:.0%}: the prune keeps pace with the inserts)",
            )
        )
    else:
        goals.append(Goal("audit bounded", None, "needs 2 rows and the aged backlog"))
    seconds = sum(r.seconds for r in rows)
    average = sum(r.answered for r in rows) / max(seconds, 1e-9)
    if burst_rps is not None:
        share = average / burst_rps
        goals.append(
            Goal(
                "sustained/burst",
                share >= SHARE_GOAL,
                f"{average:.0f} req/s over {seconds:.0f} s against a burst of "
                f"{burst_rps:.0f}: {share:.0%} (goal >= {SHARE_GOAL:.0%})",
            )
        )
    else:
        offered, sent = rows[0].offered, sum(r.sent for r in rows)
        share, blocked = average / max(offered, 1e-9), sum(r.blocked for r in rows) / max(1, sent)
        goals.append(
            Goal(
                "rate held",
                share >= HELD_GOAL and blocked <= 1 - HELD_GOAL,
                f"{average:.0f} of {offered:.0f} req/s offered answered ({share:.1%}), "
                f"{blocked:.1%} held back by the in-flight cap (goal: >= {HELD_GOAL:.0%}, "
                f"<= {1 - HELD_GOAL:.0%})",
            )
        )
    return goals


# ---------------------------------------------------------------- the run
COLUMNS = ["from s", "req/s", "p50 ms", "p99 ms", "wrong", "lost", "held back", "anon RSS MiB"]
COLUMNS += ["CPU µs/req", "CPU", "waited", "DB MiB", "WAL MiB", "WAL peak", "audit rows", "load1"]


def cells(r: Row, pg: bool) -> list[str]:
    cpu = f"{r.cpu_us:.0f}" + (f" + {r.db_cpu_us:.0f} pg" if pg else "")
    return [
        f"{r.from_s:.0f}",
        f"{r.rps:.0f}",
        f"{r.p50_ms:.2f}",
        f"{r.p99_ms:.2f}",
        str(r.wrong),
        str(r.lost + r.unsent),
        str(r.blocked),
        f"{r.rss_mib:.0f}",
        cpu,
        f"{r.cpu_share:.0%}",
        f"{r.waited:.2f}",
        f"{r.db_mib:.0f}",
        f"{r.wal_mib:.1f}",
        f"{r.wal_peak_mib:.1f}",
        str(r.audit_rows),
        f"{r.load1:.2f}",
    ]


# A row's load-generator run: (requests, offered req/s or 0 for a closed loop, seconds
# from the run's start to its first due request).
Segment = tuple[int, float, float]


class Soak:
    """A running daemon, its store's probe, and the rows of the run so far."""

    def __init__(
        self,
        args: argparse.Namespace,
        tmp: Path,
        loadgen: Path,
        port: int,
        pids: list[int],
        probe: StoreProbe,
        stream: CodeStream,
        out: Callable[[dict[str, Any]], None],
    ) -> None:
        self.args, self.tmp, self.loadgen, self.port = args, tmp, loadgen, port
        self.pids, self.probe, self.stream, self.out = pids, probe, stream, out
        self.core = rb.other_core(args.cores)
        self.rows_done: list[Row] = []
        self.wal_peak = 0
        self.pg = args.store == "postgresql"

    def sample(self) -> Sample:
        return Sample(
            time.time(),
            rb.cpu_seconds(self.pids),
            run_queue_s(self.pids),
            self.probe.db_cpu_s(),
            rss_bytes(self.pids),
            self.probe.db_bytes(),
            self.probe.wal_bytes(),
            self.probe.audit_rows(),
        )

    def wait(self, until: float | None = None, job: Future[Any] | None = None) -> None:
        """Sleep until the wall-clock time `until` or until `job` is done, polling the
        WAL's size meanwhile (a row reports its peak)."""
        while True:
            self.wal_peak = max(self.wal_peak, self.probe.wal_bytes())
            left = (until - time.time()) if until is not None else POLL_S
            if (job is not None and job.done()) or left <= 0:
                return
            if job is not None:
                try:
                    job.exception(timeout=min(left, POLL_S))
                except TimeoutError:
                    continue
                return
            time.sleep(min(left, POLL_S))

    def burst(self, count: int, name: str) -> rb.Result:
        """A closed-loop burst of `count` requests, every answer checked."""
        reqfile = self.stream.write(self.tmp / "burst.bin", count)
        stats, cpu = rb.run_loadgen(
            self.loadgen, reqfile, self.port, self.args.window, self.core, self.pids
        )
        r = rb.result(name, self.args.cores or "all", stats, cpu)
        if r.problem:
            raise SystemExit(f"{name}: {r.problem}: the bench or the daemon is broken")
        log(f"{name}: {count} requests, {r.rps:.0f} req/s, {r.cpu_us:.0f} µs CPU/req")
        return r

    def add(self, stats: dict[str, Any], before: Sample, after: Sample, start: float) -> None:
        row = make_row(stats, before, after, self.wal_peak, start)
        self.wal_peak = 0
        self.rows_done.append(row)
        print("| " + " | ".join(cells(row, self.pg)) + " |", flush=True)
        self.out({"kind": "row", **asdict(row)})

    def rows(self, plan: Callable[[int], Segment | None]) -> None:
        """One load-generator run per row, each started when the last one has its last
        answer (a user's next code can then never overtake its previous one, whatever
        the daemon's queue), the next one's input built while the current one runs.
        `plan(k)` gives row k, or None after the last row."""
        seg = plan(0)
        if seg is None:
            return
        with ThreadPoolExecutor(1) as builder, ThreadPoolExecutor(1) as runner:
            reqfile = self.stream.write(self.tmp / "seg0.bin", seg[0], seg[1])
            # An open loop's schedule starts once its first input is written.
            origin = time.time() + (LEAD_S if seg[1] else 0.0)
            before, k = None, 0
            while seg is not None:
                count, rate, offset = seg
                job = runner.submit(
                    rb.run_loadgen,
                    self.loadgen,
                    reqfile,
                    self.port,
                    self.args.sustain_window if rate else self.args.window,
                    self.core,
                    self.pids,
                    rb.SUSTAIN_TIMEOUT_MS if rate else 3000,
                    (rate, origin + offset, count / rate) if rate else None,
                )
                k += 1
                seg = plan(k)
                building = (
                    builder.submit(self.stream.write, self.tmp / f"seg{k % 2}.bin", seg[0], seg[1])
                    if seg is not None
                    else None
                )
                if before is None:  # the run's start (an open loop's first due time)
                    self.wait(origin)
                    before = self.sample()
                self.wait(job=job)
                after = self.sample()
                self.add(job.result()[0], before, after, origin)
                before = after
                if building is not None:
                    reqfile = building.result()

    def open_loop(self, rate: float, seconds: float) -> None:
        """Rows of `--interval` at `rate` req/s on one schedule: each request is due at
        its time from the run's start, whenever its row's run could start."""
        plan = segments(seconds, self.args.interval)

        def row(k: int) -> Segment | None:
            if k == len(plan):
                return None
            at, length = plan[k]
            return round(rate * length), rate, at

        self.rows(row)

    def closed_loop(self, first_rps: float, seconds: float) -> None:
        """The rows of `segments`, `--window` in flight, each sized from the rate of the
        last row done (the first two from the burst: a daemon that cannot hold it makes
        them, and the run, longer)."""
        plan = segments(seconds, self.args.interval)

        def row(k: int) -> Segment | None:
            if k == len(plan):
                return None
            rps = self.rows_done[-1].rps if self.rows_done else first_rps
            return round(rps * plan[k][1]), 0.0, 0.0

        self.rows(row)


def config(args: argparse.Namespace, tmp: Path, port: int, url: str) -> Path:
    """radius_bench's daemon config (OTP-only client), with the audit retention."""
    cfg = rb.authd_config(tmp, port, "none", args.workers, ARGON, args.threads, True, url)
    with open(cfg, "a") as f:
        f.write(f"audit:\n  retention: {RETENTION_S:.0f}s\n")
        f.write(f"  prune_interval: {PRUNE_INTERVAL_S:.0f}s\n")
    return cfg


def soak(args: argparse.Namespace, tmp: Path, out: Callable[[dict[str, Any]], None]) -> int:
    rate = None if args.rate == "max" else float(args.rate)
    seconds = args.minutes * 60.0
    with ExitStack() as stack:
        if args.store == "postgresql":
            os.chmod(tmp, 0o711)  # noqa: S103 - the cluster (user postgres) must reach pg/
            url = stack.enter_context(rb.postgres_cluster(tmp))
        else:
            url = f"sqlite:///{tmp / 'authd.db'}"
        core = rb.other_core(args.cores)
        if core is not None:  # builder and sampler off the daemon's cores
            os.sched_setaffinity(0, {int(core)})
        loadgen = rb.build_loadgen(tmp)
        count = args.users or users_for(round((rate or MAX_RATE_GUESS) * seconds))
        t = time.monotonic()
        users = seed_users(tmp, url, count, args.order, args.seed)
        log(f"{count} HOTP users seeded in {time.monotonic() - t:.1f} s")
        port = rb.free_port()
        proc = rb.start_authd(config(args, tmp, port, url), port, args.workers, args.cores)
        stack.callback(rb.stop, [proc])
        pids = rb.server_pids(proc)
        probe: StoreProbe = (
            PgProbe(url, tmp / "pg" / "data")
            if args.store == "postgresql"
            else SqliteProbe(tmp / "authd.db")
        )
        stack.callback(probe.close)
        run = Soak(args, tmp, loadgen, port, pids, probe, CodeStream(users, count // 2), out)
        burst_rps = None
        if rate is None:
            probe_rps = run.burst(PROBE_REQUESTS, "probe burst").rps
            burst_rps = run.burst(max(PROBE_REQUESTS, round(BURST_S * probe_rps)), "burst").rps
        else:
            run.burst(WARM_UP_REQUESTS, "warm-up burst")
        backlog = 0
        if not args.no_audit_backlog:
            backlog_rate = rate or burst_rps or 0.0
            backlog = round(backlog_rate * seconds)
            t = time.monotonic()
            base = time.time() + backlog * 12e-6 + 5.0  # about when the seeding ends
            audit_backlog(tmp, url, users.names, backlog_rate, backlog, base)
            probe.checkpoint()
            log(
                f"audit trail: {backlog} rows aged to pass the retention at "
                f"{backlog_rate:.0f}/s, seeded in {time.monotonic() - t:.1f} s"
            )
            run.wait(base)
        out(
            {
                "kind": "run",
                "store": args.store,
                "rate": args.rate,
                "minutes": args.minutes,
                "interval_s": args.interval,
                "users": count,
                "workers": args.workers,
                "cores": args.cores or "all",
                "threads": args.threads,
                "window": args.window if rate is None else args.sustain_window,
                "burst_rps": burst_rps,
                "audit_backlog": backlog,
                "retention_s": RETENTION_S,
                "prune_interval_s": PRUNE_INTERVAL_S,
                "hot_path": hot_path_build(),
                "uptime": uptime(),
            }
        )
        print(
            f"store {args.store}; {count} HOTP users, {user_order.label(args.order, args.seed)}; "
            f"authd workers {args.workers} on cores {args.cores or 'all'}, loadgen on "
            f"{run.core or 'any core'}; hot path: {hot_path_build()}; WAL: {probe.wal_what}"
        )
        if rate is None:
            print(
                f"--rate max: burst {burst_rps:.0f} req/s ({args.window} in flight, "
                f"~{BURST_S:.0f} s); then the same closed loop for {seconds:.0f} s"
            )
        else:
            print(f"offered {rate:.0f} req/s (open loop) for {seconds:.0f} s")
        print(
            "lost: unanswered or never sent; held back: due while the in-flight cap was full; "
            "CPU: the daemon's CPU seconds a second (µs/req: + PostgreSQL's); waited: its "
            "threads' run-queue seconds a second (what other processes took); WAL peak: "
            f"polled every {POLL_S:.0f} s; audit rows: max(id) - min(id) + 1"
        )
        print(table(COLUMNS, []))
        if rate is None:
            run.closed_loop(burst_rps or 0.0, seconds)
        else:
            run.open_loop(rate, seconds)
        goals = judge(run.rows_done, probe.wal_goal, burst_rps, backlog > 0)
    print()
    print(table(COLUMNS, [cells(r, args.store == "postgresql") for r in run.rows_done]))
    print("VERDICT:")
    for g in goals:
        mark = {True: "PASS", False: "FAIL", None: "n/a "}[g.ok]
        print(f"  {mark}  {g.name}: {g.detail}")
    out({"kind": "verdict", "goals": [asdict(g) for g in goals], "uptime": uptime()})
    return 0 if all(g.ok is not False for g in goals) else 1


def rate_arg(value: str) -> str:
    if value == "max":
        return value
    if float(value) <= 0:
        raise argparse.ArgumentTypeError("a rate > 0, or max")
    return value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the run")
    ap.add_argument("--interval", type=float, default=60.0, help="seconds per row")
    ap.add_argument(
        "--rate", type=rate_arg, default="max", help="offered req/s (open loop), or max"
    )
    ap.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--users", type=int, default=0, help="HOTP users (0: from rate x minutes)")
    ap.add_argument("--workers", type=int, default=1, help="authd radius.workers")
    ap.add_argument(
        "--cores", default="0", help="taskset cores of authd ('' for all; loadgen: another)"
    )
    ap.add_argument("--threads", type=int, default=8, help="authd auth_threads")
    ap.add_argument("--window", type=int, default=64, help="in flight: bursts, --rate max")
    ap.add_argument("--sustain-window", type=int, default=4096, help="in-flight cap, --rate R")
    ap.add_argument(
        "--order", choices=user_order.ORDERS, default="random", help="order users are driven in"
    )
    ap.add_argument("--seed", type=int, default=1, help="seed of the random user order")
    ap.add_argument(
        "--no-audit-backlog",
        action="store_true",
        help="do not seed the aged audit trail (nothing is then pruned during the run)",
    )
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep logs and databases")
    ap.add_argument(
        "--jsonl", metavar="FILE", help="rows as JSON lines (default: DIR/soak.jsonl with --keep)"
    )
    args = ap.parse_args()
    args.cores = args.cores or None
    for prog, pkg in (("gcc", "gcc"), ("taskset", "util-linux")):
        if shutil.which(prog) is None:
            raise SystemExit(f"{prog} not found: apt-get install {pkg}")
    print(f"uptime before: {uptime()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="authd-soak-") as tmpname:
        tmp = Path(args.keep).resolve() if args.keep else Path(tmpname)
        tmp.mkdir(parents=True, exist_ok=True)
        jsonl = Path(args.jsonl) if args.jsonl else (tmp / "soak.jsonl" if args.keep else None)
        with ExitStack() as stack:
            sink = stack.enter_context(open(jsonl, "w")) if jsonl else None

            def out(record: dict[str, Any]) -> None:
                if sink is not None:
                    sink.write(json.dumps(record) + "\n")
                    sink.flush()

            code = soak(args, tmp, out)
    print(f"uptime after: {uptime()}")
    if jsonl:
        print(f"rows as JSON lines: {jsonl}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
