"""The soak benchmark's own logic (scripts/bench/soak_bench.py): its request stream keeps
every HOTP code a real accept, its rows follow one schedule without overlapping runs,
and its verdict fails each goal that a run misses. Rows are driven against the fake
RADIUS server of test_harness through the real load generator."""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from authd.core.otp import hotp
from authd.radius import codec
from scripts.bench import radius_bench, soak_bench
from scripts.bench.soak_bench import MIB, Row
from tests.bench.test_harness import fake_server, loadgen  # noqa: F401 - the fixture


def hotp_users(count: int) -> radius_bench.HotpUsers:
    return radius_bench.HotpUsers(
        [f"u{i}" for i in range(count)], [os.urandom(20) for _ in range(count)], "random", 3
    )


def test_users_cover_the_run_within_bounds() -> None:
    """About 256 codes a user, never fewer users than two in-flight caps need, nor
    more than seeding allows."""
    assert soak_bench.users_for(2000 * 120) == 20000
    assert soak_bench.users_for(10000 * 1800) == 70313
    assert soak_bench.users_for(10**10) == 200000


def test_segments_cover_the_run() -> None:
    """Rows of the interval from 0 to the end, the last one shorter when it must be."""
    assert soak_bench.segments(60, 20) == [(0.0, 20), (20.0, 20), (40.0, 20)]
    assert soak_bench.segments(50, 20) == [(0.0, 20), (20.0, 20), (40.0, 10)]


def test_code_stream_sends_each_users_codes_in_order_with_a_gap() -> None:
    """Across takes, each request is its user's next HOTP code, and a user comes back
    only `gap` requests later (so a code never waits behind the user's previous one)."""
    users, gap = hotp_users(40), 10
    stream = soak_bench.CodeStream(users, gap)
    sent: list[tuple[str, str]] = []
    for count in (25, 7, 60, 33):
        for _, _, datagram in stream.take(count):
            packet = codec.decode(datagram)
            attrs = dict(packet.attributes)
            name, hidden = attrs[codec.USER_NAME].decode(), attrs[codec.USER_PASSWORD]
            password = codec.decode_password(
                hidden, radius_bench.SECRET.encode(), packet.authenticator
            )
            sent.append((name, password.decode()))
    seen: dict[str, list[int]] = defaultdict(list)
    for i, (name, code) in enumerate(sent):
        u = users.names.index(name)
        assert code == hotp(users.seeds[u], len(seen[name]))
        seen[name].append(i)
    assert all(b - a >= gap for places in seen.values() for a, b in pairwise(places))
    assert sum(users.counters) == len(sent) == 125


def row(**values: Any) -> Row:
    """A healthy row (2,000 req/s offered and answered), with `values` changed."""
    base: dict[str, Any] = dict(
        from_s=0.0,
        seconds=60.0,
        offered=2000.0,
        sent=120000,
        answered=120000,
        rps=2000.0,
        p50_ms=1.0,
        p99_ms=4.0,
        wrong=0,
        lost=0,
        unsent=0,
        late=0,
        blocked=0,
        cpu_us=150.0,
        db_cpu_us=0.0,
        cpu_share=0.3,
        waited=0.01,
        rss_mib=150.0,
        db_mib=40.0,
        wal_mib=2.0,
        wal_peak_mib=5.0,
        audit_rows=3600000,
        load1=0.5,
    )
    return Row(**{**base, **values})


def verdict(rows: list[Row], burst: float | None = None) -> dict[str, bool | None]:
    return {g.name: g.ok for g in soak_bench.judge(rows, 64 * MIB, burst, backlog=True)}


def test_a_flat_run_passes_every_goal() -> None:
    """Right answers, a small WAL, flat RSS, p99 and audit trail, the rate held."""
    assert set(verdict([row(), row(), row(rss_mib=160.0, p99_ms=5.9)]).values()) == {True}


@pytest.mark.parametrize(
    ("changed", "goal"),
    [
        ({"lost": 1}, "answers"),
        ({"wrong": 1}, "answers"),
        ({"wal_peak_mib": 64.0}, "WAL"),
        ({"rss_mib": 166.0}, "RSS"),
        ({"p99_ms": 6.1}, "p99 flat"),
        ({"audit_rows": 3960001}, "audit bounded"),
        ({"answered": 110000}, "rate held"),
        ({"blocked": 3700}, "rate held"),
    ],
)
def test_a_missed_goal_fails(changed: dict[str, Any], goal: str) -> None:
    """Each goal fails on its own when the last row misses it, the others still pass."""
    result = verdict([row(), row(), row(**changed)])
    assert result.pop(goal) is False
    assert set(result.values()) == {True}


def test_p99_has_a_floor_for_sub_millisecond_rows() -> None:
    """A p99 going from 0.4 to 1.3 ms is still flat: 1 ms of slack under 1.5x."""
    assert verdict([row(), row(p99_ms=0.4), row(p99_ms=1.3)])["p99 flat"] is True


def test_the_maximum_rate_is_judged_against_the_burst() -> None:
    """With --rate max the run's average must be 80% of the burst figure."""
    rows = [row(offered=0.0), row(offered=0.0)]
    assert verdict(rows, burst=2500.0)["sustained/burst"] is True
    assert verdict(rows, burst=2501.0)["sustained/burst"] is False


def test_too_few_rows_say_so() -> None:
    """One row cannot tell growth or flatness: those goals are not judged."""
    result = verdict([row()])
    assert (result["RSS"], result["p99 flat"], result["audit bounded"]) == (None, None, None)


class FakeProbe:
    """A store that never grows."""

    wal_goal = 64 * MIB
    wal_what = "nothing"

    def db_bytes(self) -> int:
        return 0

    def wal_bytes(self) -> int:
        return 0

    def audit_rows(self) -> int:
        return 0

    def checkpoint(self) -> None:
        pass

    def db_cpu_s(self) -> float:
        return 0.0

    def close(self) -> None:
        pass


def soak(tmp: Path, loadgen_path: Path, port: int, records: list[dict[str, Any]]) -> Any:
    args = argparse.Namespace(
        interval=0.4, sustain_window=256, window=16, cores=None, store="sqlite"
    )
    stream = soak_bench.CodeStream(hotp_users(2000), 1000)
    return soak_bench.Soak(
        args, tmp, loadgen_path, port, [os.getpid()], FakeProbe(), stream, records.append
    )


def test_open_loop_rows_offer_the_rate_one_run_after_another(
    loadgen: Path,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    """An open loop of 1.2 s in 0.4 s rows: three rows, each offered and answered in
    full, one after the other on one schedule, each written as a JSON record."""
    records: list[dict[str, Any]] = []
    with fake_server() as port:
        run = soak(tmp_path, loadgen, port, records)
        run.open_loop(1000.0, 1.2)
    rows = run.rows_done
    assert [(r.sent, r.answered, r.wrong, r.lost, r.unsent) for r in rows] == [
        (400, 400, 0, 0, 0)
    ] * 3
    assert all(r.offered == 1000.0 for r in rows)
    assert all(b.from_s == pytest.approx(a.from_s + a.seconds) for a, b in pairwise(rows))
    assert [rec["kind"] for rec in records] == ["row"] * 3


def test_closed_loop_rows_follow_the_last_rate(loadgen: Path, tmp_path: Path) -> None:  # noqa: F811
    """--rate max: the run's rows, the first two sized from the burst, each later one
    from the rate of the last row done (the next is built while one runs)."""
    with fake_server() as port:
        run = soak(tmp_path, loadgen, port, [])
        run.closed_loop(500.0, 1.0)
    rows = run.rows_done
    assert [r.sent for r in rows[:2]] == [200, 200]  # 0.4 s at the burst's rate
    assert len(rows) == 3 and rows[2].sent == round(rows[0].rps * 0.2)
    assert all(r.offered == 0.0 and r.answered == r.sent for r in rows)
