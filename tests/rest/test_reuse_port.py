"""SO_REUSEPORT listeners: several HttpServices (one per worker process in production)
share one port, each answering the connections the kernel hands it."""

from __future__ import annotations

import socket
import ssl as pyssl
import time
from dataclasses import replace
from pathlib import Path

import pytest

from authd.config.model import Config, TlsConfig
from authd.rest.service import reuse_port_socket
from tests.rest.harness import App, make_config, start_app
from tests.rest.test_service import _cert, _https_get

CONNECTIONS = 40  # all on one service by chance: 2**-39


def _healthz_over_fresh_connection(port: int, apps: list[App], timeout: float = 10.0) -> bytes:
    """GET /healthz on a new connection, iterating every app's reactor until answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setblocking(False)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for a in apps:
                a.loop.reactor.iterate(0)
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                return got
            got += chunk
    raise AssertionError("no complete answer within the timeout")


def _served(app: App) -> float:
    value = app.metrics.registry.get_sample_value(
        "authd_http_responses_total", {"route": "/healthz", "status": "200"}
    )
    return value or 0.0


def test_two_services_share_one_port_and_both_answer(tmp_path: Path) -> None:
    """With http.workers > 1 both services bind the same port; fresh connections are
    spread by the kernel and each service answers some of them."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = start_app(tmp_path / "a", _with_workers(make_config(tmp_path / "a"), 2))
    port = first.port
    cfg_b = make_config(tmp_path / "b")
    cfg_b = replace(cfg_b, http=replace(cfg_b.http, listen=(f"127.0.0.1:{port}",), workers=2))
    second = start_app(tmp_path / "b", cfg_b)
    try:
        assert second.port == port
        for _ in range(CONNECTIONS):
            answer = _healthz_over_fresh_connection(port, [first, second])
            assert answer.startswith(b"HTTP/1.1 200")
        assert _served(first) > 0
        assert _served(second) > 0
        assert _served(first) + _served(second) == CONNECTIONS
    finally:
        second.close()
        first.close()


def test_without_workers_the_port_is_not_shared(tmp_path: Path) -> None:
    """One worker (the default) binds without SO_REUSEPORT, so no other process can
    join the port and silently take a share of an operator's traffic."""
    app = start_app(tmp_path)
    try:
        with pytest.raises(OSError):
            reuse_port_socket("127.0.0.1", app.port).close()
    finally:
        app.close()


def _with_workers(config: Config, workers: int) -> Config:
    """The config with `http.workers` set (how production turns SO_REUSEPORT on)."""
    return replace(config, http=replace(config.http, workers=workers))


def test_tls_listener_with_workers_speaks_tls(tmp_path: Path) -> None:
    """A socket bound for SO_REUSEPORT still gets TLS when http.tls is set: the adopted
    port wraps the site in the same TLS context as listenSSL would."""
    cert, key, _, _ = _cert(tmp_path, "server")
    config = make_config(tmp_path, tls=TlsConfig(cert_file=str(cert), key_file=str(key)))
    app = start_app(tmp_path, _with_workers(config, 2))
    try:
        ctx = pyssl.create_default_context(cafile=str(cert))
        assert b'{"status":"ok"}' in _https_get(app, ctx)
        try:
            plain = _healthz_over_fresh_connection(app.port, [app], timeout=5)
        except ConnectionError:
            plain = b""
        assert not plain.startswith(b"HTTP/")  # no plaintext HTTP on a TLS port
    finally:
        app.close()
