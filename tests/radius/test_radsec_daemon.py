"""RadSec against a real listener process (real Engine, SqlStore, OpenSSL sockets), with
Python's `ssl` as the client: RADIUS/1.1 by ALPN, classic RadSec, framing fuzz over a
real TLS connection, and refused certificates counted and logged by the daemon.
"""

from __future__ import annotations

import re
import ssl
import time
from pathlib import Path

import pytest

from authd.radius import codec
from tests.fixtures.radius import (
    PASSWORD,
    ServerProcess,
    access_request,
    start_server,
    totp,
)
from tests.fixtures.radsec import (
    RadsecWorld,
    client_context,
    radius11_request,
    radsec_spec,
    read_packet,
    tls_connect,
)

pytestmark = pytest.mark.integration


def _port(radsec_server: ServerProcess) -> int:
    return radsec_server.tls_ports[0][1]


def test_radius_1_1_accept_over_python_ssl(
    radsec_server: ServerProcess, radsec_world: RadsecWorld
) -> None:
    """ALPN radius/1.1 is chosen; an inline OTP accept comes back with the Token, zero
    reserved octets and no Message-Authenticator: no MD5-derived field at all."""
    ctx = client_context(radsec_world, radsec_world.proxy, alpn=("radius/1.1", "radius/1.0"))
    with tls_connect(_port(radsec_server), ctx) as sock:
        assert sock.selected_alpn_protocol() == "radius/1.1"
        assert sock.version() == "TLSv1.3"
        token = b"\x10\x20\x30\x40"
        typed = (PASSWORD + totp(time.time())).encode()
        sock.sendall(
            radius11_request(token, [(codec.USER_NAME, b"r11"), (codec.USER_PASSWORD, typed)])
        )
        reply = read_packet(sock)
    assert reply[0] == codec.ACCESS_ACCEPT
    assert reply[1] == 0 and reply[4:8] == token and reply[8:20] == bytes(12)
    assert codec.decode(reply).ma_offset == -1


def test_classic_radsec_many_packets_in_one_record(
    radsec_server: ServerProcess, radsec_world: RadsecWorld
) -> None:
    """Without ALPN: classic RadSec; three requests in one TLS record get three replies
    signed with the fixed secret `radsec`, matched by Identifier."""
    ctx = client_context(radsec_world, radsec_world.nas)
    with tls_connect(_port(radsec_server), ctx) as sock:
        assert sock.selected_alpn_protocol() is None
        reqs = [
            access_request("burst", "wrong-" + str(i), "radsec", identifier=i) for i in range(3)
        ]
        sock.sendall(b"".join(d for d, _ in reqs))
        replies = {r[1]: r for r in (read_packet(sock) for _ in reqs)}
    for i, (_, auth) in enumerate(reqs):
        assert replies[i][0] == codec.ACCESS_REJECT
        assert codec.verify_reply(replies[i], auth, b"radsec")


def test_one_packet_across_many_records(
    radsec_server: ServerProcess, radsec_world: RadsecWorld
) -> None:
    """A request sent as one TLS record per 5 octets is reassembled and accepted."""
    ctx = client_context(radsec_world, radsec_world.nas)
    data, auth = access_request("slow", PASSWORD + totp(time.time()), "radsec")
    with tls_connect(_port(radsec_server), ctx) as sock:
        for i in range(0, len(data), 5):
            sock.sendall(data[i : i + 5])
        reply = read_packet(sock)
    assert reply[0] == codec.ACCESS_ACCEPT and codec.verify_reply(reply, auth, b"radsec")


@pytest.mark.parametrize("length", [19, 5000])
def test_bad_length_closes_connection_and_listener_lives(
    radsec_server: ServerProcess, radsec_world: RadsecWorld, length: int
) -> None:
    """An impossible Length closes that connection (RFC 6613 §2.6.4); the next
    connection is served as usual."""
    ctx = client_context(radsec_world, radsec_world.nas)
    with tls_connect(_port(radsec_server), ctx) as sock:
        sock.sendall(bytes((1, 1)) + length.to_bytes(2, "big") + bytes(16))
        with pytest.raises((ConnectionError, ssl.SSLError)):
            read_packet(sock)
    with tls_connect(_port(radsec_server), ctx) as sock:
        data, auth = access_request(code=codec.STATUS_SERVER, secret="radsec")
        sock.sendall(data)
        assert codec.verify_reply(read_packet(sock), auth, b"radsec")


def test_truncated_packet_then_close_is_harmless(
    radsec_server: ServerProcess, radsec_world: RadsecWorld
) -> None:
    """Half a packet followed by the peer's close decides nothing and breaks nothing."""
    ctx = client_context(radsec_world, radsec_world.nas)
    data, _ = access_request("fuzz", PASSWORD + totp(time.time()), "radsec")
    with tls_connect(_port(radsec_server), ctx) as sock:
        sock.sendall(data[: len(data) // 2])
    with tls_connect(_port(radsec_server), ctx) as sock:
        sock.sendall(data)
        assert read_packet(sock)[0] == codec.ACCESS_ACCEPT  # the code was not used before


def _refused(port: int, ctx: ssl.SSLContext) -> bool:
    """True when the server refuses at the handshake or closes before answering."""
    try:
        with tls_connect(port, ctx) as sock:
            data, _ = access_request(code=codec.STATUS_SERVER, secret="radsec")
            sock.sendall(data)
            read_packet(sock)
    except (TimeoutError, ssl.SSLError, ConnectionError):
        return True
    return False


def test_bad_certificates_refused_counted_logged(radsec_world: RadsecWorld, tmp_path: Path) -> None:
    """Another CA's certificate, an expired one and one matching no client entry are
    refused; the daemon counts each by reason and logs it."""
    s = start_server(radsec_spec(tmp_path, radsec_world), tmp_path)
    try:
        port = s.tls_ports[0][1]
        assert _refused(port, client_context(radsec_world, radsec_world.foreign))
        assert _refused(port, client_context(radsec_world, radsec_world.expired))
        assert _refused(port, client_context(radsec_world, radsec_world.stranger))
        assert not _refused(port, client_context(radsec_world, radsec_world.nas))
    finally:
        assert s.stop() == 0
        log = s.proc.stderr.read() if s.proc.stderr else ""
    for reason in ("unknown_ca", "certificate_expired"):
        assert re.search(
            rf'authd_radsec_handshake_failures_total{{reason="{reason}"}} 1\.0', s.metrics
        )
        assert f"failed: {reason}" in log
    assert 'authd_radsec_refused_total{reason="no_matching_client"} 1.0' in s.metrics
    assert "stranger.example.org" in log
