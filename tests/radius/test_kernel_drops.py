"""Requests the kernel drops on a full receive buffer are counted: a real RADIUS socket
with a small SO_RCVBUF, flooded on 127.0.0.1 while nobody reads it."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock

from authd.metrics import Metrics
from authd.radius.kernel_drops import KernelDrops
from authd.radius.service import RadiusService
from tests.fixtures.radius import FakeEngine, radius_config

SENT = 300  # 4 KiB datagrams: ~30 fit in the smallest allowed buffer (64 KiB, doubled)
LABELS = {"frontend": "radius", "reason": "receive_buffer_full"}


class _StalledReactor(Clock):
    """Adopts each datagram socket and never reads it: a reactor too busy to keep up."""

    def __init__(self) -> None:
        super().__init__()
        self.sockets: list[socket.socket] = []

    def adoptDatagramPort(self, fd: int, family: Any, proto: Any, maxPacketSize: int) -> Any:  # noqa: N802,N803
        sock = socket.socket(family, socket.SOCK_DGRAM, fileno=os.dup(fd))
        self.sockets.append(sock)
        return _Port(sock)


class _Port:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def getHost(self) -> Any:  # noqa: N802 - Twisted's name
        host, port = self.sock.getsockname()
        return type("Addr", (), {"host": host, "port": port})()

    def stopListening(self) -> None:  # noqa: N802 - Twisted's name
        self.sock.close()


def _drops(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("authd_drops_total", LABELS) or 0.0


def test_full_receive_buffer_drops_are_counted() -> None:
    """Every datagram the kernel dropped for lack of buffer space shows in
    authd_drops_total{reason=receive_buffer_full}: sent = received + counted."""
    reactor, metrics = _StalledReactor(), Metrics()
    config = dataclasses.replace(radius_config(), listen=("127.0.0.1:0",), receive_buffer=65536)
    svc = RadiusService(config, FakeEngine(now=reactor.seconds), reactor, metrics)
    svc.startService()
    try:
        (port,) = svc.bound_ports()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            for _ in range(SENT):
                client.sendto(b"\x01" * 4000, port)
        counted = _drops(metrics)
        received = 0
        (listening,) = reactor.sockets
        listening.setblocking(False)
        while received < SENT:
            try:
                listening.recv(8192)
            except BlockingIOError:
                break
            received += 1
        assert counted > 0 and counted + received == SENT
        assert _drops(metrics) == counted  # read again: nothing counted twice
    finally:
        svc.stopService()
        reactor.advance(20)
    assert reactor.getDelayedCalls() == []


def test_without_proc_net_nothing_is_counted(tmp_path: Path) -> None:
    """Where the kernel publishes no UDP table (not Linux), the count stays at zero."""
    metrics = Metrics()
    drops = KernelDrops(metrics, proc_net=str(tmp_path))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        drops.watch(sock)
        assert _drops(metrics) == 0
