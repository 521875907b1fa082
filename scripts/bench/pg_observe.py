"""What a PostgreSQL cluster spends while a benchmark drives it: the CPU of its
processes, its commit and WAL counters, and what its backends wait for (sampled).
scripts/bench/nodes_bench.py reads them to say where a multi-node run's limit is.

The observer connects to the `postgres` database, so its own queries never count in
the driven database's commits.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any

import psycopg

CLK_TCK = os.sysconf("SC_CLK_TCK")
# PostgreSQL 15 backends flush their statistics at most once a second while busy, and
# the rest within PGSTAT_IDLE_INTERVAL (10 s) of going idle: counters read sooner after
# a run miss its last second.
STATS_SETTLE_S = 11.0


@dataclass(frozen=True)
class Counters:
    """Cumulative counters of one database (pg_stat_database) and of the cluster's WAL
    (pg_stat_wal; wal_sync_time needs track_wal_io_timing)."""

    xact_commit: int = 0
    xact_rollback: int = 0
    deadlocks: int = 0
    wal_records: int = 0
    wal_bytes: int = 0
    wal_write: int = 0
    wal_sync: int = 0
    wal_sync_time_ms: float = 0.0

    def __sub__(self, other: Counters) -> Counters:
        return Counters(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(Counters)))


def read_counters(conn: psycopg.Connection[Any], dbname: str) -> Counters:
    """The counters now (a fresh statistics snapshot, not the transaction's cached one)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT d.xact_commit, d.xact_rollback, d.deadlocks, w.wal_records, w.wal_bytes,"
        " w.wal_write, w.wal_sync, w.wal_sync_time"
        " FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = %s",
        (dbname,),
    ).fetchone()
    if row is None:
        raise SystemExit(f"no database {dbname!r} in pg_stat_database")
    commit, rollback, deadlocks, records, wal_bytes, writes, syncs = (int(x) for x in row[:7])
    return Counters(commit, rollback, deadlocks, records, wal_bytes, writes, syncs, float(row[7]))


def postmaster_pid(conn: psycopg.Connection[Any]) -> int:
    """The cluster's postmaster: the parent of this connection's backend."""
    backend = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert backend is not None
    return parent_pid(int(backend[0]))


def parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def cluster_cpu_seconds(postmaster: int) -> float:
    """CPU seconds of the whole cluster since it started: the postmaster's own, its
    reaped children's (backends that have exited) and its live children's."""
    with open(f"/proc/{postmaster}/stat") as f:
        stat = f.read().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in stat[11:15])  # utime stime cutime cstime
    for child in children(postmaster):
        try:
            with open(f"/proc/{child}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile: its time is in cutime/cstime from now on
        ticks += int(stat[11]) + int(stat[12])
    return ticks / CLK_TCK


def wait_kind(state: str | None, event_type: str | None, event: str | None) -> str | None:
    """What a backend of pg_stat_activity is doing, for the sampler: None when idle
    between transactions; 'CPU' when running; 'idle in transaction' when its client
    holds a transaction open; else its wait event type, with the event for heavyweight
    locks ('Lock:transactionid' a row, 'Lock:extend' a growing table) and for the WAL
    ('IO:WALSync', 'LWLock:WALWrite'), where fsync shows."""
    if state == "idle in transaction":
        return state
    if state != "active":
        return None
    if event_type is None:
        return "CPU"
    if event_type == "Lock" or (event and event.startswith("WAL")):
        return f"{event_type}:{event}"
    return event_type


class WaitSampler:
    """Samples the backends of `dbname` every `period` s on its own thread and
    connection while in a `with` block; `mean(kind)` is then the average number of
    backends found doing `kind` (see wait_kind) per sample."""

    def __init__(self, url: str, dbname: str, period: float = 0.05) -> None:
        self._url, self._dbname, self._period = url, dbname, period
        self.samples = 0
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> WaitSampler:
        conn = psycopg.connect(self._url, dbname="postgres", autocommit=True)
        self._thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self, conn: psycopg.Connection[Any]) -> None:
        with conn:
            while not self._stop.is_set():
                t = time.monotonic()
                rows = conn.execute(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
                    " WHERE datname = %s AND backend_type = 'client backend'"
                    " AND pid <> pg_backend_pid()",
                    (self._dbname,),
                ).fetchall()
                kinds = (wait_kind(*row) for row in rows)
                self.counts.update(k for k in kinds if k is not None)
                self.samples += 1
                self._stop.wait(max(0.0, self._period - (time.monotonic() - t)))

    def mean(self, *kinds: str) -> float:
        """Backends per sample doing any of `kinds`."""
        return sum(self.counts[k] for k in kinds) / max(1, self.samples)

    def mean_locks(self) -> float:
        """Backends per sample waiting on a heavyweight lock (rows, tables, extension)."""
        return self.mean(*self.lock_events())

    def lock_events(self) -> list[str]:
        """The lock waits seen, most frequent first ('Lock:transactionid', ...)."""
        return [k for k, _ in self.counts.most_common() if k.startswith("Lock:")]

    def mean_wal(self) -> float:
        """Backends per sample waiting on the WAL: writing or syncing it, or for the lock
        of whoever does (IO:WALSync, IO:WALWrite, LWLock:WALWrite, ...)."""
        return self.mean(*(k for k in self.counts if ":WAL" in k))
