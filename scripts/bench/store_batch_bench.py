"""Store write phases one by one against batched: CPU per write on the client (this
process) and on the database server (PostgreSQL: every server process, from
/proc/PID/stat), on a throwaway local PostgreSQL cluster and a SQLite file.

Run through `scripts/bench/store_batch` (one command). Not part of the test suite.

Each write is what a decision of the OTP-only RADIUS workload writes: a TOTP step won
past the lock gate, the user's success and one audit row. Every write must be won (the
steps only grow), or the run stops. Modes, each on fresh users:
- `one`: `commit_decision` per write (PostgreSQL: one transaction, three round trips);
- `batch`: `commit_decisions` per batch (PostgreSQL: one pipelined transaction);
- `batch-serial` (PostgreSQL): the same transaction with its statements sent one at a
  time, no pipeline (one round trip per statement): what the pipeline saves.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from authd.auth.interfaces import AttemptRecord, DecisionWrite, UseTotpStep  # noqa: E402
from authd.core.model import AuditEvent, Token, TokenType, User  # noqa: E402
from authd.crypto import Keyring  # noqa: E402
from authd.storage.hot_path import PgHotPath  # noqa: E402
from authd.storage.sql import SqlStore, _pg_commit, _pg_decision  # noqa: E402
from scripts.bench.machine import table, uptime  # noqa: E402
from scripts.bench.radius_bench import CLK_TCK, postgres_cluster  # noqa: E402

NOW = 1_767_225_600.0


def _record(user: str, result: str, failure: bool) -> AttemptRecord:
    event = AuditEvent(NOW, "radius:bench", "auth", result, user, "bench", "127.0.0.1", result)
    return AttemptRecord(success=result == "accept", count_failure=failure, audit=event)


def _writes(users: list[str], step: int) -> list[DecisionWrite]:
    return [
        DecisionWrite(
            name,
            NOW,
            "127.0.0.1",
            "bench",
            5,
            300,
            won=_record(name, "accept", False),
            use=UseTotpStep(f"T-{name}", step, 0),
            lost=_record(name, "reject", True),
            locked=_record(name, "reject", False),
        )
        for name in users
    ]


def _serial_batch(store: SqlStore, writes: Sequence[DecisionWrite]) -> list[Any]:
    """`commit_decisions` on PostgreSQL without the pipeline: one round trip a statement."""
    hot = store._hot
    assert isinstance(hot, PgHotPath)
    statements = [_pg_decision(w) for w in sorted(writes, key=lambda w: w.user or "")]
    with hot._conn() as conn, conn.transaction():
        rows = [conn.execute(*s).fetchone() for s in statements if s is not None]
    return [_pg_commit(w, r) for w, r in zip(writes, rows, strict=True)]


def _server_pids(data_dir: Path | None) -> list[int]:
    """The postmaster and its children (backends, WAL writer, ...)."""
    if data_dir is None:
        return []
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    with open(f"/proc/{postmaster}/task/{postmaster}/children") as f:
        return [postmaster, *map(int, f.read().split())]


def _cpu(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a process gone meanwhile: its CPU is not counted
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def _run(
    store: SqlStore,
    data_dir: Path | None,
    users: list[str],
    rounds: int,
    batch: int,
    commit: Callable[[SqlStore, list[DecisionWrite]], list[Any]],
) -> tuple[float, float, float, int]:
    """(client CPU µs a write, server CPU µs a write, writes/s, writes) over `rounds`
    passes through `users`, `batch` writes a call."""
    done = 0
    step = 1
    commit(store, _writes(users[:batch], step))  # warm: prepared statements, caches
    pids = _server_pids(data_dir)
    wall0, cpu0, srv0 = time.perf_counter(), time.process_time(), _cpu(pids)
    for step in range(2, rounds + 2):
        for i in range(0, len(users), batch):
            results = commit(store, _writes(users[i : i + batch], step))
            if not all(r.won for r in results):
                raise SystemExit("a write was not won: the run is void")
            done += len(results)
    wall, cpu, srv = time.perf_counter() - wall0, time.process_time() - cpu0, _cpu(pids) - srv0
    return cpu / done * 1e6, srv / done * 1e6, done / wall, done


def _one(store: SqlStore, writes: list[DecisionWrite]) -> list[Any]:
    return [store.commit_decision(w) for w in writes]


def _batched(store: SqlStore, writes: list[DecisionWrite]) -> list[Any]:
    return store.commit_decisions(writes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=10_000, help="writes per mode")
    parser.add_argument("--batch", type=int, default=64, help="writes per commit_decisions")
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--store", choices=("postgresql", "sqlite", "both"), default="both")
    args = parser.parse_args()
    rounds = max(1, args.writes // args.users)
    print(f"# {uptime()}; {args.users} users, {rounds * args.users} writes a mode")
    rows: list[list[str]] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="authd-bench-")))
        keyring = Keyring.load_or_create(str(tmp / "keys.json"))
        stores: list[tuple[str, str, Path | None]] = []
        if args.store in ("sqlite", "both"):
            stores.append(("sqlite", f"sqlite:///{tmp}/bench.db", None))
        if args.store in ("postgresql", "both"):
            os.chmod(tmp, 0o711)  # noqa: S103 - the cluster (user postgres) must reach pg/
            stores.append(
                ("postgresql", stack.enter_context(postgres_cluster(tmp)), tmp / "pg" / "data")
            )
        for backend, url, data_dir in stores:
            store = SqlStore.open(url, keyring, pool_size=2)
            modes: list[tuple[str, int, Callable[[SqlStore, list[DecisionWrite]], list[Any]]]] = [
                ("one", 1, _one),
                ("batch", args.batch, _batched),
            ]
            if backend == "postgresql":
                modes.append(("batch-serial", args.batch, _serial_batch))
            try:
                for mode, size, commit in modes:
                    users = [f"{mode}-{i:07d}" for i in range(args.users)]
                    for name in users:
                        store.add_user(User(name=name, created_at=NOW))
                        token = Token(
                            serial=f"T-{name}", type=TokenType.TOTP, seed=b"s" * 20, user=name
                        )
                        store.add_token(token)
                    client, server, rate, n = _run(store, data_dir, users, rounds, size, commit)
                    rows.append(
                        [
                            backend,
                            mode,
                            str(size),
                            str(n),
                            f"{rate:,.0f}",
                            f"{client:.1f}",
                            f"{server:.1f}" if data_dir else "-",
                        ]
                    )
            finally:
                store.close()
    print(
        table(
            [
                "store",
                "mode",
                "batch",
                "writes",
                "writes/s",
                "client CPU µs/write",
                "server CPU µs/write",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
