"""Slow senders and connection floods against a live HTTP front-end, with real sockets
on 127.0.0.1: a real request still gets through, header dribblers are closed at the
read deadline, and one address cannot hold more than its share. Bounded: a few hundred
sockets, a lowered open-files limit, a half-second deadline."""

from __future__ import annotations

import contextlib
import os
import resource
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.task import deferLater

from tests.rest.harness import PASSWORD, App, make_config, start_app

DEADLINE = 0.5  # http.read_timeout here: short, since it runs on the real reactor
HEAD = b"POST /api/v1/validate HTTP/1.1\r\nHost: authd\r\n"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    config = make_config(tmp_path, read_timeout=DEADLINE, max_connections=100,
                         max_connections_per_source=40)
    a = start_app(tmp_path, config)
    a.add_user("hank", token="hotp")
    yield a
    a.close()


def open_idle(app: App, sources: list[str], each: int) -> list[socket.socket]:
    """`each` connections from every source address, each sending a request's first
    lines and no end of headers; the server accepts as they come."""
    socks: list[socket.socket] = []
    for source in sources:
        for _ in range(each):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.settimeout(5)
            s.bind((source, 0))
            s.connect(("127.0.0.1", app.port))
            with contextlib.suppress(OSError):  # closed by the server: counted below
                s.sendall(HEAD)
            app.loop.reactor.iterate(0)
    return socks


def closed(s: socket.socket) -> bool:
    """Whether the server has closed this connection (EOF or reset is waiting)."""
    readable, _, _ = select.select([s], [], [], 0)
    if not readable:
        return False
    try:
        return s.recv(1024) == b""
    except OSError:
        return True


def drops(app: App, reason: str) -> float:
    labels = {"frontend": "http", "reason": reason}
    return app.metrics.registry.get_sample_value("authd_drops_total", labels) or 0.0


def pause(app: App, seconds: float) -> None:
    """Let the server's reactor run for `seconds` of real time (its deadline is real)."""
    app.loop.run(deferLater(app.loop.reactor, seconds, lambda: None))


def test_real_request_gets_through_and_dribblers_are_cut_off(app: App) -> None:
    """300 connections from 10 addresses hold their headers open under an open-files
    limit that 300 server-side sockets would exhaust: a real request is still answered,
    and every dribbler is closed at the deadline although it keeps sending lines."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 500, hard))
    socks: list[socket.socket] = []
    try:
        socks = open_idle(app, [f"127.0.0.{i}" for i in range(2, 12)], 30)
        answer = app.request("POST", "/api/v1/validate",
                             {"user": "hank", "password": PASSWORD, "otp": app.next_hotp("hank")},
                             key="validate-key-0123456789abcdef")
        assert (answer.status, answer.json) == (200, {"result": "accept"})
        pause(app, DEADLINE * 0.6)
        for s in socks:
            with contextlib.suppress(OSError):  # a header line now and then does not help
                s.send(b"X-Slow: 1\r\n")
        pause(app, DEADLINE * 0.8)
        assert sum(closed(s) for s in socks) == len(socks)
        assert len(app.service.site.connections) <= 1  # at most the client pool's own
        assert drops(app, "pushed_out") >= 200 and drops(app, "too_slow") >= 1
        assert drops(app, "pushed_out") + drops(app, "too_slow") == len(socks)
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_one_address_holds_at_most_its_share(app: App) -> None:
    """The 41st to 60th connection from one address are closed at once; another
    address still connects and is answered."""
    socks = open_idle(app, ["127.0.0.12"], 60)
    try:
        app.loop.reactor.iterate(0.01)
        shut = [closed(s) for s in socks]
        assert sum(shut) == 20 and not any(shut[:40])
        assert drops(app, "connection_refused") == 20
        assert app.request("GET", "/healthz").status == 200
    finally:
        for s in socks:
            s.close()
