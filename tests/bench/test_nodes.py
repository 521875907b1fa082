"""The multi-node benchmark's own parts (scripts/bench/nodes_bench.py, pg_observe.py):
users split over nodes without a code used twice, loadgens driven together and summed,
the machine's idle share, and the PostgreSQL figures read from a real cluster."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import psycopg
import pytest

from scripts.bench import machine, nodes_bench, pg_observe, radius_bench
from tests.bench.test_harness import fake_server


def users(count: int) -> radius_bench.HotpUsers:
    return radius_bench.HotpUsers(
        [f"u{u:03d}" for u in range(count)], [bytes([u]) * 20 for u in range(count)], "random", 1
    )


def test_nodes_share_users_out_and_codes_move_on_across_layouts() -> None:
    """Node i of k drives users i, i+k, ...: no user reaches two nodes, and a later layout
    with another split starts from every user's next HOTP counter, never a used one."""
    world = users(12)
    for node in range(3):
        packets, view, part = nodes_bench.node_requests(world, 3, node, 8, 2, 1)
        assert len(packets) == 8
        assert view.names == [world.names[u] for u in part] == world.names[node::3]
    assert world.counters == [2] * 12  # 24 requests, every user twice
    for node in range(2):
        _, view, part = nodes_bench.node_requests(world, 2, node, 8, 2, 2)
        drawn = [view.last.count(j) for j in range(len(part))]
        assert [world.counters[u] for u in part] == [2 + n for n in drawn]
    assert sum(world.counters) == 24 + 16


def test_unsent_codes_go_back_to_their_users() -> None:
    """Codes drawn for a node but never sent are its users' next ones again."""
    world = users(6)
    _, view, part = nodes_bench.node_requests(world, 2, 1, 6, 1, 1)
    assert [world.counters[u] for u in part] == [2, 2, 2]
    view.unsend(3)
    nodes_bench.give_back(world, view, part)
    assert sum(world.counters[u] for u in part) == 3
    assert [world.counters[u] for u in range(0, 6, 2)] == [0, 0, 0]


def test_two_nodes_are_driven_together_and_their_answers_summed(tmp_path: Path) -> None:
    """Each node gets its own loadgen at the same time; the layout's rate is every answer
    over the longest run, and a node with wrong answers discards the layout."""
    loadgen = radius_bench.build_loadgen(tmp_path)
    args = argparse.Namespace(rate=0.0, window=8, sustain_window=64, seconds=1.0)
    world = users(64)
    with fake_server() as good, fake_server(reject_every=10) as bad:
        layout = nodes_bench.Layout(
            "two fakes",
            "postgresql",
            [
                nodes_bench.Node("a", good, None, [], None),
                nodes_bench.Node("b", bad, None, [], None),
            ],
            world,
        )
        run = nodes_bench.drive(
            layout, args.window * 25, args, loadgen, tmp_path, None, {}, None, 1
        )
    assert [r.sent for r in run.node_results] == [200, 200]
    assert run.answered == 400
    assert run.rps == pytest.approx(400 / run.elapsed)
    assert run.node_results[0].problem == ""
    assert run.problem.startswith("node 1: 20 of 200 answers")
    assert run.pg is None and run.pg_cpu is None
    assert 0.0 <= run.idle["cpu"] <= 1.0


def test_idle_shares_count_idle_and_iowait_per_cpu() -> None:
    """The idle share of each CPU between two /proc/stat readings includes iowait."""
    before = machine.cpu_jiffies(
        "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\nintr 1 2\n"
    )
    after = machine.cpu_jiffies(
        "cpu  200 0 200 1300 300 0 0 0 0 0\ncpu0 150 0 50 400 100 0 0 0 0 0\nintr 3 4\n"
    )
    shares = machine.idle_shares(before, after)
    assert shares == {"cpu": pytest.approx(0.8), "cpu0": pytest.approx(0.5)}


def test_limits_name_what_was_saturated() -> None:
    """The limit names each saturated core group, lock waits and WAL fsync, or says none."""
    assert nodes_bench.limits({"authd cores": 0.97, "PostgreSQL cores": 0.5}, 0.1, 0.2) == (
        "authd cores 97% busy"
    )
    both = nodes_bench.limits({"authd cores": 0.5}, 2.0, 0.95)
    assert both == "locks (2.0 backends waiting); WAL fsync (95% of the run)"
    assert nodes_bench.limits({"all cores": 0.4}, 0.0, 0.0).startswith("nothing saturated")


def test_wait_kinds_tell_cpu_locks_and_wal_apart() -> None:
    """pg_stat_activity rows map to running, lock, WAL waits, held transactions or idle."""
    kinds = [
        pg_observe.wait_kind("active", None, None),
        pg_observe.wait_kind("active", "Lock", "transactionid"),
        pg_observe.wait_kind("active", "IO", "WALSync"),
        pg_observe.wait_kind("active", "LWLock", "WALWrite"),
        pg_observe.wait_kind("active", "IO", "DataFileRead"),
        pg_observe.wait_kind("idle in transaction", "Client", "ClientRead"),
        pg_observe.wait_kind("idle", "Client", "ClientRead"),
    ]
    assert kinds == [
        "CPU",
        "Lock:transactionid",
        "IO:WALSync",
        "LWLock:WALWrite",
        "IO",
        "idle in transaction",
        None,
    ]


def test_cluster_figures_from_a_real_postgresql(postgres_db_url: str) -> None:
    """Against a real cluster: a blocked UPDATE is sampled as a lock wait, commits and WAL
    grow by what was done, and the cluster's CPU (backends included) grows."""
    dbname = postgres_db_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, n int)")
        conn.execute("INSERT INTO t VALUES (1, 0)")
    with psycopg.connect(postgres_db_url, dbname="postgres", autocommit=True) as admin:
        postmaster = pg_observe.postmaster_pid(admin)
        cpu0 = pg_observe.cluster_cpu_seconds(postmaster)
        before = pg_observe.read_counters(admin, dbname)
        with (
            psycopg.connect(postgres_db_url) as holder,
            psycopg.connect(postgres_db_url, autocommit=True) as waiter,
        ):
            holder.execute("UPDATE t SET n = n + 1 WHERE id = 1")
            blocked = threading.Thread(
                target=waiter.execute, args=("UPDATE t SET n = n + 1 WHERE id = 1",)
            )
            with pg_observe.WaitSampler(postgres_db_url, dbname, period=0.02) as sampler:
                blocked.start()
                deadline = time.monotonic() + 5
                while sampler.mean_locks() * sampler.samples < 5 and time.monotonic() < deadline:
                    time.sleep(0.02)
            holder.commit()
            blocked.join(5)
            for _ in range(50):
                waiter.execute("UPDATE t SET n = n + 1 WHERE id = 1")
            # Flush this backend's statistics now, not within 10 s of going idle.
            waiter.execute("SELECT pg_stat_force_next_flush()")
            waiter.execute("SELECT 1")
            holder.execute("SELECT count(*) FROM generate_series(1, 2000000)")
            holder.commit()
        grown = pg_observe.read_counters(admin, dbname) - before
        assert sampler.counts["Lock:transactionid"] >= 5
        assert sampler.lock_events() == ["Lock:transactionid"]
        assert sampler.counts["idle in transaction"] >= 1
        assert grown.xact_commit >= 52
        assert grown.wal_records >= 52 and grown.wal_bytes > 0
        assert grown.deadlocks == 0
        # Both backends have exited: their CPU (the count above) still counts.
        assert pg_observe.cluster_cpu_seconds(postmaster) >= cpu0 + 0.05
