"""RadiusService: listen parsing, binding rules, reload, and drain on SIGTERM."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from authd.config.parse import listen_address
from authd.metrics import Metrics
from authd.radius import codec
from authd.radius.clients import ClientConfigError
from authd.radius.service import RadiusService, bind_socket
from tests.fixtures.logs import Logged
from tests.fixtures.radius import (
    PASSWORD,
    SECRET,
    FakeEngine,
    access_request,
    client_config,
    client_spec,
    radius_config,
    totp,
)


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("127.0.0.1:1812", ("127.0.0.1", 1812)),
        ("[::1]:1812", ("::1", 1812)),
    ],
)
def test_parse_listen(spec: str, want: tuple[str, int]) -> None:
    """host:port and [v6]:port are understood (config refuses anything else)."""
    assert listen_address(spec) == want


@pytest.mark.parametrize("spec", ["127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000"])
def test_parse_listen_refuses_bad_specs(spec: str) -> None:
    """A listen entry without a valid port is an error naming the entry."""
    with pytest.raises(ValueError, match="ADDRESS:PORT|larger than 65535"):
        listen_address(spec)


def test_bind_sets_receive_buffer_and_fails_on_taken_port() -> None:
    """SO_RCVBUF is applied (the kernel doubles it, capped by rmem_max), and a port
    already bound without SO_REUSEPORT cannot be bound again: start-up must fail."""
    s = bind_socket("127.0.0.1", 0, 1 << 20)
    try:
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 200_000
        with pytest.raises(OSError):
            bind_socket("127.0.0.1", s.getsockname()[1], 1 << 20).close()
    finally:
        s.close()


def test_reuse_port_lets_workers_share_a_port() -> None:
    """With SO_REUSEPORT (radius.workers > 1) two sockets bind the same port."""
    a = bind_socket("127.0.0.1", 0, 1 << 16, reuse_port=True)
    try:
        b = bind_socket("127.0.0.1", a.getsockname()[1], 1 << 16, reuse_port=True)
        b.close()
    finally:
        a.close()


def test_reload_swaps_secrets_and_refuses_bad_config(clock: Clock) -> None:
    """After reload the new secret is used; a config with an unusable client is refused
    and the previous clients stay in force."""
    engine = FakeEngine(now=clock.seconds)
    svc = RadiusService(radius_config(), engine, clock, Metrics())
    new_secret = "rotated-secret-abcdefghijklmnop"
    svc.reload(radius_config(client_config(secret=new_secret)))
    sent: list[bytes] = []
    data, auth = access_request(password=PASSWORD + totp(clock.seconds()), secret=new_secret)
    svc.handler.datagram(data, ("127.0.0.1", 1), lambda d, a: sent.append(d))
    assert sent and codec.verify_reply(sent[0], auth, new_secret.encode())
    with pytest.raises(ClientConfigError):
        svc.reload(radius_config(client_config(address="not-an-address")))
    assert svc.handler.settings.clients.match("127.0.0.1").secret == new_secret.encode()  # type: ignore[union-attr]


def test_unknown_reply_attribute_fails_construction(clock: Clock) -> None:
    """A misspelt reply attribute stops the service from being built at all."""
    from authd.config.model import ReplyAttribute

    bad = client_config(reply_attributes=(ReplyAttribute(group="g", attribute="Clas", value="x"),))
    with pytest.raises(ClientConfigError, match="Clas"):
        RadiusService(radius_config(bad), FakeEngine(now=clock.seconds), clock, Metrics())


@pytest.mark.integration
def test_sigterm_drains_pending_reject_then_exits_zero(radius_server: Any, tmp_path: Path) -> None:
    """A reject still waiting out its delay when SIGTERM arrives is sent before exit."""
    server = radius_server({"reject_delay": 5.0, "clients": [client_spec()]})
    data, auth = access_request(password="wrong")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        s.sendto(data, ("127.0.0.1", server.port))
        # The Status-Server answer proves the request before it was read (same socket,
        # FIFO), so SIGTERM surely finds the reject waiting: no sleep needed.
        s.sendto(
            access_request(code=codec.STATUS_SERVER, identifier=8)[0], ("127.0.0.1", server.port)
        )
        assert s.recv(4096)[1] == 8
        started = time.monotonic()
        assert server.stop() == 0
        reply = s.recv(4096)
    assert time.monotonic() - started < 4.0
    assert reply[0] == codec.ACCESS_REJECT and codec.verify_reply(reply, auth, SECRET.encode())


@pytest.mark.integration
def test_one_socket_per_listen_address_ipv4_and_ipv6(radius_server: Any) -> None:
    """Each radius.listen entry gets its own socket (port 0 resolved in bound_ports) and
    replies leave from the address the request came to, over IPv4 and IPv6."""
    server = radius_server(
        {
            "listen": ["127.0.0.1:0", "[::1]:0"],
            "clients": [client_spec(), client_spec("v6", "::1/128")],
        }
    )
    (host4, port4), (host6, port6) = server.ports
    assert (host4, host6) == ("127.0.0.1", "::1") and port4 and port6
    for family, host, port in ((socket.AF_INET, host4, port4), (socket.AF_INET6, host6, port6)):
        data, auth = access_request(code=codec.STATUS_SERVER)
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(data, (host, port))
            reply, src = s.recvfrom(4096)
        assert src[:2] == (host, port)
        assert codec.verify_reply(reply, auth, SECRET.encode())


class _PortsClock(Clock):
    """A Clock that adopts datagram sockets as fake ports (no real reactor needed)."""

    def __init__(self) -> None:
        super().__init__()
        self.adopted: list[int] = []

    def adoptDatagramPort(self, fd: int, family: Any, proto: Any, maxPacketSize: int) -> Any:  # noqa: N802,N803
        self.adopted.append(fd)
        return _FakePort()


class _FakePort:
    def getHost(self) -> Any:  # noqa: N802 - Twisted's name
        return type("Addr", (), {"host": "127.0.0.1", "port": 1812})()

    def stopListening(self) -> None:  # noqa: N802 - Twisted's name
        return None


@pytest.mark.parametrize(
    ("workers", "pin", "cores", "index", "want"),
    [
        (2, True, "0,1", "", 0),  # main process: the first allowed core
        (2, True, "2,3", "1", 3),  # worker 1: the second
        (2, False, "0,1", "1", None),  # radius.pin_workers: false
        (1, True, "0,1", "", None),  # one process: left to the scheduler
        (3, True, "0,1", "2", None),  # fewer cores than processes
    ],
)
def test_start_pins_by_worker_index_when_configured(
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
    pin: bool,
    cores: str,
    index: str,
    want: int | None,
) -> None:
    """startService pins process i to the i-th allowed core only when radius.pin_workers
    is on and there are at least `workers` cores."""
    import dataclasses

    from authd.radius import service as service_module
    from authd.workers import CORES_ENV, WORKER_ENV

    monkeypatch.setenv(CORES_ENV, cores)
    monkeypatch.setenv(WORKER_ENV, index)
    pinned: list[int] = []

    def fake_pin(core: int) -> bool:
        pinned.append(core)
        return True

    monkeypatch.setattr(service_module, "pin_process", fake_pin)
    reactor: Any = _PortsClock()
    config = dataclasses.replace(
        radius_config(), listen=("127.0.0.1:0",), workers=workers, pin_workers=pin
    )
    svc = RadiusService(config, FakeEngine(now=reactor.seconds), reactor, Metrics())
    svc.startService()
    try:
        assert svc.pinned_core == want
        assert pinned == ([] if want is None else [want])
        assert len(reactor.adopted) == 1
    finally:
        svc.stopService()
        reactor.advance(20)
    assert reactor.getDelayedCalls() == []


def test_running_service_writes_drop_summaries_on_its_clock(logged: Logged) -> None:
    """A burst of drops that stops is still summed up a minute later by the service's
    own timer, which goes away with the service."""
    import dataclasses

    reactor: Any = _PortsClock()
    config = dataclasses.replace(radius_config(), listen=("127.0.0.1:0",))
    svc = RadiusService(config, FakeEngine(now=reactor.seconds), reactor, Metrics())
    svc.startService()
    try:
        data, _ = access_request(message_authenticator=False)
        for _ in range(4):
            svc.handler.datagram(data, ("127.0.0.1", 4000), lambda d, a: None)
        assert len(logged.lines("authd.radius.protocol")) == 1
        reactor.advance(60)
        lines = logged.lines("authd.radius.protocol")
        assert len(lines) == 2 and "dropped 3 more packets from 127.0.0.1" in lines[1]
    finally:
        svc.stopService()
        reactor.advance(20)
    assert reactor.getDelayedCalls() == []
