"""The benchmark harness itself (scripts/bench): a run whose answers are not the ones
its requests were built for is discarded, never used; a correct run is kept. Driven
against a fake RADIUS server on loopback through the real load generator."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from authd.radius import codec
from scripts.bench import order, radius_bench, verdict
from scripts.bench.http import bench as http_bench


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.fail("gcc not found: apt-get install gcc (the bench's load generator is C)")
    return radius_bench.build_loadgen(tmp_path_factory.mktemp("loadgen"))


@contextmanager
def fake_server(reject_every: int = 0, drop_every: int = 0, delay: float = 0.0) -> Iterator[int]:
    """A RADIUS server that accepts everything, except every `reject_every`-th request
    (rejected) and every `drop_every`-th (never answered), taking `delay` s over each
    one; yields its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    done = threading.Event()

    def serve() -> None:
        seen = 0
        while not done.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            seen += 1
            time.sleep(delay)
            if drop_every and seen % drop_every == 0:
                continue
            code = codec.ACCESS_REJECT if reject_every and seen % reject_every == 0 else 2
            sock.sendto(bytes((code, data[1])) + (20).to_bytes(2, "big") + data[4:20], peer)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        done.set()
        thread.join()
        sock.close()


def burst(loadgen: Path, tmp: Path, port: int, count: int = 400) -> radius_bench.Result:
    """One burst of `count` requests, each built to be accepted, judged as the bench does."""
    wire = radius_bench.Wire()
    packets = [wire.request(i, f"u{i}", "123456") for i in range(count)]
    reqfile = tmp / "requests.bin"
    radius_bench.write_requests(reqfile, packets)
    stats, cpu = radius_bench.run_loadgen(loadgen, reqfile, port, 16, None, [], timeout_ms=300)
    return radius_bench.result("fake", "all", stats, cpu)


def test_correct_answers_keep_the_run(loadgen: Path, tmp_path: Path) -> None:
    """A server that accepts every request built to be accepted gives a kept run."""
    with fake_server() as port:
        run = burst(loadgen, tmp_path, port)
    assert (run.problem, run.accept, run.wrong, run.lost) == ("", 400, 0, 0)
    assert verdict.median_kept([run]) is run


def test_rejecting_a_share_discards_the_run(loadgen: Path, tmp_path: Path) -> None:
    """Rejecting one request in ten discards the run, even when it would be the fastest."""
    with fake_server(reject_every=10) as port:
        bad = burst(loadgen, tmp_path, port)
    with fake_server() as port:
        good = burst(loadgen, tmp_path, port)
    assert bad.wrong == 40
    assert "40 of 400 answers were not the expected accept" in bad.problem
    bad.rps = good.rps * 10
    assert verdict.median_kept([bad]) is None
    assert verdict.median_kept([bad, good, bad]) is good
    assert verdict.kept_label([bad, good, bad]) == "1/3"


def test_unanswered_requests_discard_the_run(loadgen: Path, tmp_path: Path) -> None:
    """Requests that never get an answer make the run unusable too."""
    with fake_server(drop_every=50) as port:
        run = burst(loadgen, tmp_path, port)
    assert run.lost == 8
    assert "8 of 400 requests got no answer" in run.problem


def test_sustained_run_reports_rows_and_wrong_answers(loadgen: Path, tmp_path: Path) -> None:
    """An open-loop run reports per-interval rows and counts wrong answers where they fell."""
    rate, count = 2000.0, 600
    start = time.time() + 0.3
    due = radius_bench.schedule(count, rate, start)
    wire = radius_bench.Wire()
    packets = [wire.request(i, f"u{i}", "123456") for i in range(count)]
    reqfile = tmp_path / "sustained.bin"
    radius_bench.write_requests(reqfile, packets, due=due)
    with fake_server(reject_every=100) as port:
        stats, cpu = radius_bench.run_loadgen(
            loadgen, reqfile, port, 256, None, [], 300, open_loop=(rate, start, 0.1)
        )
    run = radius_bench.result("fake sustained", "all", stats, cpu)
    assert run.offered == rate
    assert sum(iv["replies"] for iv in run.intervals) == count
    assert sum(iv["wrong"] for iv in run.intervals) == run.wrong == 6
    assert len(run.intervals) >= 3  # 0.3 s of sends in 0.1 s rows
    assert run.problem


def test_schedule_keeps_off_totp_step_boundaries() -> None:
    """No open-loop request is due within the guard around a TOTP step boundary."""
    start = 1_767_225_600.0 - 0.5  # half a second before a boundary
    due = radius_bench.schedule(5000, 1000.0, start)
    before, after = radius_bench.STEP_GUARD
    positions = [(start + t) % radius_bench.TOTP_STEP for t in due]
    assert all(after <= p <= radius_bench.TOTP_STEP - before for p in positions)
    assert due == sorted(due)


def test_random_order_is_a_seeded_shuffle_with_a_gap() -> None:
    """Seeded random rounds visit each user once and never bring one back within `gap`."""
    rounds = order.rounds(200, 30, "random", seed=7, gap=64)
    assert rounds == order.rounds(200, 30, "random", seed=7, gap=64)
    assert all(sorted(r) == list(range(200)) for r in rounds)
    assert rounds[0] != list(range(200))
    flat = [u for r in rounds for u in r]
    last: dict[int, int] = {}
    for i, u in enumerate(flat):
        assert i - last.get(u, -64) >= 64
        last[u] = i
    assert order.rounds(5, 2, "name", seed=7, gap=64) == [list(range(5))] * 2


async def _fake_http(reject_every: int) -> tuple[asyncio.Server, int]:
    """An HTTP server answering every `reject_every`-th POST with a reject, else accept."""
    seen = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                seen += 1
                verdict = "reject" if reject_every and seen % reject_every == 0 else "accept"
                body = json.dumps({"result": verdict}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def http_burst(reject_every: int) -> http_bench.Result:
    """A short closed-loop HTTP run against the fake server, judged as the bench does."""

    async def run() -> http_bench.Result:
        server, port = await _fake_http(reject_every)
        async with server:
            counters = {f"u{i:05d}": 0 for i in range(32)}
            users = http_bench.connection_users(counters, 4, 8, "random", 1)
            return await http_bench.load(port, "k", "/api/v1/otp/check", users, b"\0" * 20, 0.3, 0)

    return asyncio.run(run())


def test_http_run_with_rejects_is_discarded_and_a_correct_one_kept() -> None:
    """The HTTP bench discards a run in which some answers were rejects, keeps a clean one."""
    bad, good = http_burst(reject_every=7), http_burst(reject_every=0)
    assert bad.other > 0 and "were not the expected accept" in bad.problem
    assert good.problem == "" and good.accepts == good.answered > 0
    assert verdict.median_kept([bad, good, bad]) is good


def test_a_server_that_falls_behind_does_not_hold_the_rate(loadgen: Path, tmp_path: Path) -> None:
    """A server too slow for the offered rate does not hold it, and the run stays bounded."""
    rate, count = 1000.0, 200
    start = time.time() + 0.2
    due = radius_bench.schedule(count, rate, start)
    wire = radius_bench.Wire()
    reqfile = tmp_path / "behind.bin"
    radius_bench.write_requests(
        reqfile, [wire.request(i, f"u{i}", "1") for i in range(count)], due=due
    )
    began = time.monotonic()
    with fake_server(delay=0.01) as port:
        stats, cpu = radius_bench.run_loadgen(
            loadgen, reqfile, port, 8, None, [], 300, open_loop=(rate, start, 0.1)
        )
    run = radius_bench.result("fake slow", "all", stats, cpu)
    assert time.monotonic() - began < 3
    assert run.problem == "" and run.unsent > 0 and run.blocked > 0
    assert run.sent + run.unsent == count
    assert not radius_bench.held(run)


def overlaps(loadgen: Path, tmp: Path, keys: list[int]) -> tuple[radius_bench.Result, int]:
    """A burst with one request per key, against a server that takes 3 ms a request and
    counts the times a next request was already waiting when it answered one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    waiting, done = [0], threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            time.sleep(0.003)
            sock.setblocking(False)
            try:
                sock.recv(4096, socket.MSG_PEEK)
                waiting[0] += 1
            except BlockingIOError:
                pass
            sock.settimeout(0.05)
            sock.sendto(bytes((2, data[1])) + (20).to_bytes(2, "big") + data[4:20], peer)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        wire = radius_bench.Wire()
        reqfile = tmp / "overlap.bin"
        radius_bench.write_requests(reqfile, [wire.request(k, "u", "1") for k in keys])
        port = sock.getsockname()[1]
        stats, cpu = radius_bench.run_loadgen(loadgen, reqfile, port, 16, None, [], 1000)
    finally:
        done.set()
        thread.join()
        sock.close()
    return radius_bench.result("overlap", "all", stats, cpu), waiting[0]


def test_a_users_next_request_waits_for_its_last_answer(loadgen: Path, tmp_path: Path) -> None:
    """The load generator never has two requests of one user in flight (16 of others may)."""
    one_user, seen_one = overlaps(loadgen, tmp_path, [0] * 40)
    many_users, seen_many = overlaps(loadgen, tmp_path, list(range(40)))
    assert one_user.problem == "" and many_users.problem == ""
    assert seen_one == 0 and seen_many > 0
