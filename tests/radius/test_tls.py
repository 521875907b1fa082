"""The RadSec listener in process: real OpenSSL on both ends over an in-memory transport
(twisted.test.iosim), an injected Clock and the fake engine. Handshakes, client
matching, both dialects, framing and the connection limits, without sockets or sleeps.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test import iosim

from authd.metrics import Metrics
from authd.radius import codec
from authd.radius.clients import ClientTable
from authd.radius.protocol import RadiusHandler, Settings
from authd.radius.tls import RadsecListener
from authd.radius.tls_context import RadsecConfigError, prepare
from tests.fixtures.logs import Logged
from tests.fixtures.radius import PASSWORD, USER, FakeEngine, access_request, totp
from tests.fixtures.radsec import (
    Issued,
    RadsecWorld,
    make_world,
    radius11_request,
    radsec_clients,
    radsec_config,
    split_packets,
)

RADSEC = b"radsec"
DICT = codec.RadiusDictionary()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> RadsecWorld:
    return make_world(tmp_path_factory.mktemp("radsec-pki"))


class Peer(Protocol):
    """The client's application side: collects reply bytes, notes the disconnect."""

    def __init__(self) -> None:
        self.data = b""
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.data += data

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: N802,B008
        self.lost = reason

    def replies(self) -> list[bytes]:
        return split_packets(self.data)


class Harness:
    """A handler, a RadSec listener and a way to connect TLS clients to it."""

    def __init__(self, world: RadsecWorld, engine_hold: bool = False, **tls: Any) -> None:
        self.world = world
        self.clock = Clock()
        self.clock.advance(1_700_000_000)  # TOTP needs a plausible "now"
        self.metrics = Metrics()
        self.engine = FakeEngine(now=self.clock.seconds, hold=engine_hold)
        self.config = radsec_config(world, **tls)
        self.handler = RadiusHandler(
            Settings(clients=ClientTable([]), reject_delay=0.0),
            self.engine,
            self.clock,
            self.metrics,
        )
        self.listener = RadsecListener(
            self.handler, prepare(self.config, DICT), self.clock, self.metrics
        )
        self._port = 50000

    def connect(self, cert: Issued, alpn: tuple[bytes, ...] = ()) -> tuple[Peer, iosim.IOPump, Any]:
        """A TLS client presenting `cert`: (client app, pump, server's RadsecConnection)."""
        pem = Path(cert.cert_file).read_bytes() + Path(cert.key_file).read_bytes()
        options = optionsForClientTLS(
            "localhost",
            trustRoot=Certificate.loadPEM(Path(self.world.ca.ca_file).read_bytes()),
            clientCertificate=PrivateCertificate.loadPEM(pem),
            acceptableProtocols=list(alpn) or None,
        )
        peer = Peer()
        self._port += 1
        here = IPv4Address("TCP", "127.0.0.1", self._port)
        there = IPv4Address("TCP", "127.0.0.1", 2083)
        client = TLSMemoryBIOFactory(
            options, True, Factory.forProtocol(lambda: peer), clock=self.clock
        ).buildProtocol(there)
        server = self.listener.factory().buildProtocol(here)
        connection = server.wrappedProtocol
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, True, there, here),
            client,
            iosim.FakeTransport(client, False, here, there),
            clock=self.clock,
        )
        pump.flush()
        return peer, pump, connection

    def total(self, name: str) -> float:
        """The sum of a metric over all its label values."""
        return sum(
            s.value
            for family in self.metrics.registry.collect()
            for s in family.samples
            if s.name == name
        )

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


def _inline(now: float, **kw: Any) -> tuple[bytes, bytes]:
    return access_request(USER, PASSWORD + totp(now), RADSEC.decode(), **kw)


def test_classic_radsec_accept_signed_with_the_fixed_secret(world: RadsecWorld) -> None:
    """Without ALPN a client gets classic RadSec: an MD5-signed accept under `radsec`."""
    h = Harness(world)
    peer, pump, server = h.connect(world.nas)
    assert server.client.name == "nas-tls"
    data, auth = _inline(h.clock.seconds())
    peer.transport.write(data)
    pump.flush()
    [reply] = peer.replies()
    assert reply[0] == codec.ACCESS_ACCEPT
    assert codec.verify_reply(reply, auth, RADSEC)
    assert h.engine.calls[0].client == "nas-tls"
    assert h.sample("authd_radsec_connections", state="open") == 1
    assert h.sample("authd_radsec_client_connections", client="nas-tls") == 1
    assert h.sample("authd_radsec_packets_total", client="nas-tls") == 1


def test_radius_1_1_accept_carries_no_md5_derived_field(world: RadsecWorld) -> None:
    """ALPN radius/1.1: clear User-Password in; the accept echoes the Token, zero
    reserved fields, no Message-Authenticator, nothing keyed with the secret."""
    h = Harness(world)
    peer, pump, server = h.connect(world.proxy, alpn=(b"radius/1.1", b"radius/1.0"))
    assert server.dialect.name == "radius/1.1"
    token = b"\x00\x00\x01\x07"
    typed = PASSWORD + totp(h.clock.seconds())
    attrs = [(codec.USER_NAME, USER.encode()), (codec.USER_PASSWORD, typed.encode())]
    peer.transport.write(radius11_request(token, attrs))
    pump.flush()
    [reply] = peer.replies()
    assert reply[0] == codec.ACCESS_ACCEPT
    assert reply[1] == 0  # Reserved-1
    assert reply[4:8] == token
    assert reply[8:20] == bytes(12)  # Reserved-2
    attrs = codec.decode(reply).attributes
    assert codec.MESSAGE_AUTHENTICATOR not in [t for t, _ in attrs]
    assert (h.engine.calls[0].user, h.engine.calls[0].password) == (USER, typed)


def test_radius_1_0_alpn_keeps_classic_radsec(world: RadsecWorld) -> None:
    """ALPN radius/1.0 alone is classic RadSec (MD5 under `radsec`)."""
    h = Harness(world)
    peer, pump, server = h.connect(world.nas, alpn=(b"radius/1.0",))
    assert server.dialect.name == "classic"
    data, auth = _inline(h.clock.seconds())
    peer.transport.write(data)
    pump.flush()
    [reply] = peer.replies()
    assert codec.verify_reply(reply, auth, RADSEC)


def test_foreign_alpn_is_refused_at_the_handshake(world: RadsecWorld) -> None:
    """A client offering only non-RADIUS ALPN names is refused (RFC 7301 §3.2)."""
    h = Harness(world)
    peer, pump, server = h.connect(world.nas, alpn=(b"h2",))
    assert peer.lost is not None
    assert h.sample("authd_radsec_handshake_failures_total", reason="no_application_protocol") == 1


@pytest.mark.parametrize(
    ("who", "reason"),
    [("foreign", "unknown_ca"), ("expired", "certificate_expired")],
)
def test_bad_client_certificate_fails_the_handshake(
    world: RadsecWorld, who: str, reason: str, logged: Logged
) -> None:
    """A certificate from another CA or an expired one never gets past TLS: counted by
    reason and logged with it."""
    h = Harness(world)
    peer, pump, server = h.connect(getattr(world, who))
    pump.flush()
    assert peer.lost is not None
    assert server.client is None
    assert h.sample("authd_radsec_handshake_failures_total", reason=reason) == 1
    assert any(reason in line for line in logged.lines("authd.radius.tls"))
    assert h.sample("authd_radsec_connections", state="handshake") == 0
    assert h.engine.calls == []


def test_certificate_matching_no_client_is_dropped(
    world: RadsecWorld, logged: Logged
) -> None:
    """A valid certificate naming no configured client: closed before any packet is
    read, counted and logged with its subject."""
    h = Harness(world)
    peer, pump, server = h.connect(world.stranger)
    data, _ = _inline(h.clock.seconds())
    peer.transport.write(data)
    pump.flush()
    assert peer.replies() == []
    assert peer.lost is not None
    assert h.engine.calls == []
    assert h.sample("authd_radsec_refused_total", reason="no_matching_client") == 1
    assert h.total("authd_radsec_handshake_failures_total") == 0  # counted once, above
    assert h.sample("authd_radsec_connections", state="handshake") == 0
    assert any("stranger.example.org" in line for line in logged.lines("authd.radius.tls"))


def test_match_rules_pick_the_client_and_its_settings(world: RadsecWorld) -> None:
    """The matched entry's own otp_mode applies: a challenge client gets a challenge."""
    clients = (
        dataclasses.replace(radsec_clients()[0], otp_mode="challenge"),
        radsec_clients()[1],
    )
    h = Harness(world, clients=clients)
    peer, pump, _ = h.connect(world.nas)
    data, auth = access_request(USER, PASSWORD, "radsec")
    peer.transport.write(data)
    pump.flush()
    [reply] = peer.replies()
    assert reply[0] == codec.ACCESS_CHALLENGE
    state = codec.decode(reply).first(codec.STATE)
    assert state is not None
    data2, auth2 = access_request(
        USER, totp(h.clock.seconds()), "radsec", state=state, identifier=8
    )
    peer.transport.write(data2)
    pump.flush()
    assert peer.replies()[1][0] == codec.ACCESS_ACCEPT
    assert codec.verify_reply(peer.replies()[1], auth2, RADSEC)


def test_status_server_answered_over_tls(world: RadsecWorld) -> None:
    """RFC 5997 Status-Server gets an Access-Accept on a RadSec connection too."""
    h = Harness(world)
    peer, pump, _ = h.connect(world.nas)
    data, auth = access_request(code=codec.STATUS_SERVER, secret="radsec")
    peer.transport.write(data)
    pump.flush()
    [reply] = peer.replies()
    assert reply[0] == codec.ACCESS_ACCEPT
    assert codec.verify_reply(reply, auth, RADSEC)


def test_missing_message_authenticator_dropped_in_classic_radsec(world: RadsecWorld) -> None:
    """The UDP rule holds inside TLS: no Message-Authenticator, no answer."""
    h = Harness(world)
    peer, pump, _ = h.connect(world.nas)
    data, _ = _inline(h.clock.seconds(), message_authenticator=False)
    peer.transport.write(data)
    pump.flush()
    assert peer.replies() == []
    assert h.engine.calls == []
    assert peer.lost is None  # a bad MA is dropped; the stream is still framed


# ---------------------------------------------------------------- framing
def test_many_packets_in_one_record_and_replies_in_any_order(world: RadsecWorld) -> None:
    """Several requests in one write are all answered, each reply as its decision
    finishes, not in request order."""
    h = Harness(world, engine_hold=True)
    peer, pump, _ = h.connect(world.nas)
    requests = [access_request(USER, "wrong" + str(i), "radsec", identifier=i) for i in range(5)]
    peer.transport.write(b"".join(d for d, _ in requests))
    pump.flush()
    assert len(h.engine.pending) == 5
    h.engine.pending.reverse()  # decisions finish last-first
    h.engine.release()
    pump.flush()
    replies = peer.replies()
    assert [r[1] for r in replies] == [4, 3, 2, 1, 0]
    assert all(r[0] == codec.ACCESS_REJECT for r in replies)


def test_one_packet_across_many_records(world: RadsecWorld) -> None:
    """A packet written a few octets at a time is reassembled and answered once."""
    h = Harness(world)
    peer, pump, _ = h.connect(world.nas)
    data, auth = _inline(h.clock.seconds())
    for i in range(0, len(data), 7):
        peer.transport.write(data[i : i + 7])
        pump.flush()
    [reply] = peer.replies()
    assert codec.verify_reply(reply, auth, RADSEC)


@pytest.mark.parametrize("length", [0, 19, 4097, 0xFFFF])
def test_impossible_length_closes_the_connection(world: RadsecWorld, length: int) -> None:
    """A Length outside 20..4096 loses the framing: the connection is closed
    (RFC 6613 §2.6.4), counted, and nothing reaches the engine."""
    h = Harness(world)
    peer, pump, _ = h.connect(world.nas)
    peer.transport.write(bytes((1, 1)) + length.to_bytes(2, "big") + bytes(40))
    pump.flush()
    assert peer.lost is not None
    assert h.engine.calls == []
    assert h.sample("authd_drops_total", frontend="radsec", reason="malformed_bad_length") == 1


def test_length_past_the_packet_closes_the_connection(world: RadsecWorld) -> None:
    """A Length longer than the packet swallows the next one's header: malformed, and
    the connection is closed rather than re-synchronised on a guess."""
    h = Harness(world)
    peer, pump, _ = h.connect(world.nas)
    data, _ = _inline(h.clock.seconds())
    lying = data[:2] + (len(data) + 6).to_bytes(2, "big") + data[4:]
    second, _ = _inline(h.clock.seconds(), identifier=9)
    peer.transport.write(lying + second)
    pump.flush()
    assert peer.lost is not None
    assert peer.replies() == []


def test_truncated_packet_waits_then_idles_out(world: RadsecWorld) -> None:
    """Half a packet is kept until the rest arrives; a peer that never sends it is closed
    at the idle timeout, and nothing is decided."""
    h = Harness(world, idle_timeout=30.0)
    peer, pump, _ = h.connect(world.nas)
    data, _ = _inline(h.clock.seconds())
    peer.transport.write(data[:3])
    pump.flush()
    h.clock.advance(29)
    pump.flush()
    assert peer.lost is None
    h.clock.advance(2)
    pump.flush()
    assert peer.lost is not None
    assert h.engine.calls == []


def test_idle_timeout_waits_for_replies_owed(world: RadsecWorld) -> None:
    """A connection with a decision in flight is not idle: it is closed only after the
    reply went out and the timeout passed again."""
    h = Harness(world, engine_hold=True, idle_timeout=10.0)
    peer, pump, _ = h.connect(world.nas)
    data, _ = _inline(h.clock.seconds())
    peer.transport.write(data)
    pump.flush()
    h.clock.advance(11)
    pump.flush()
    assert peer.lost is None
    h.engine.release()
    pump.flush()
    assert len(peer.replies()) == 1
    h.clock.advance(11)
    pump.flush()
    assert peer.lost is not None
    assert h.clock.getDelayedCalls() == [] or all(not c.active() for c in h.clock.getDelayedCalls())


def test_handshake_timeout_cuts_a_silent_peer(world: RadsecWorld) -> None:
    """A TCP peer that never starts TLS is cut at handshake_timeout and counted."""
    h = Harness(world, handshake_timeout=5.0)
    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    server = h.listener.factory().buildProtocol(peer)
    transport = iosim.FakeTransport(server, True, IPv4Address("TCP", "127.0.0.1", 2083), peer)
    server.makeConnection(transport)
    h.clock.advance(6)
    assert transport.disconnecting
    server.connectionLost(Failure(ConnectionError()))
    assert h.sample("authd_radsec_handshake_failures_total", reason="handshake_timeout") == 1
    assert h.sample("authd_radsec_connections", state="handshake") == 0


def test_in_flight_bound_stops_reading_until_replies_leave(world: RadsecWorld) -> None:
    """Past max_in_flight requests awaiting replies the connection is not read; the
    rest are taken up as replies go out, none lost."""
    h = Harness(world, engine_hold=True, max_in_flight=2)
    peer, pump, server = h.connect(world.nas)
    requests = [access_request(USER, "wrong" + str(i), "radsec", identifier=i) for i in range(5)]
    peer.transport.write(b"".join(d for d, _ in requests))
    pump.flush()
    assert len(h.engine.pending) == 2
    assert server._reading_paused
    for _ in range(3):
        h.engine.release()
        pump.flush()
    assert sorted(r[1] for r in peer.replies()) == [0, 1, 2, 3, 4]
    assert not server._reading_paused


def test_connection_limit_refuses_the_next_connection(world: RadsecWorld) -> None:
    """Past max_connections a new TCP connection gets no protocol at all, counted."""
    h = Harness(world, max_connections=1)
    h.connect(world.nas)
    assert h.listener.factory().buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)) is None
    assert h.sample("authd_radsec_refused_total", reason="too_many_connections") == 1


# ---------------------------------------------------------------- reload
def test_reload_rematches_open_connections(world: RadsecWorld) -> None:
    """A reload that removes a client's entry closes its open connection; the others
    keep theirs."""
    h = Harness(world)
    nas_peer, nas_pump, _ = h.connect(world.nas)
    proxy_peer, proxy_pump, _ = h.connect(world.proxy)
    only_proxy = radsec_config(world, radsec_clients()[1])
    h.listener.commit(prepare(only_proxy, DICT))
    nas_pump.flush()
    proxy_pump.flush()
    assert nas_peer.lost is not None
    assert proxy_peer.lost is None


def test_unusable_material_is_refused_with_every_problem(
    world: RadsecWorld, tmp_path: Path
) -> None:
    """A key that does not belong to the certificate and a client without any rule are
    both reported, by key path."""
    cfg = radsec_config(world)
    assert cfg.tls is not None
    bad_tls = dataclasses.replace(
        cfg.tls,
        key_file=world.nas.key_file,
        clients=(dataclasses.replace(radsec_clients()[0], subject=""),),
    )
    with pytest.raises(RadsecConfigError) as err:
        prepare(dataclasses.replace(cfg, tls=bad_tls), DICT)
    paths = [p for p, _ in err.value.problems]
    assert "radius.tls.cert_file" in paths
    assert "radius.tls.clients[0]" in paths


def test_service_reload_refuses_a_bad_certificate_and_swaps_a_good_one(
    world: RadsecWorld,
) -> None:
    """SIGHUP path: a new key that does not fit the certificate leaves the running
    material in force; a new valid certificate is used for the next connection."""
    from authd.radius.service import RadiusService

    config = radsec_config(world)
    assert config.tls is not None
    service = RadiusService(config, FakeEngine(now=lambda: 0.0), Clock(), Metrics())
    assert service.radsec is not None
    before = service.radsec.material
    broken = dataclasses.replace(config.tls, key_file=world.nas.key_file)
    with pytest.raises(RadsecConfigError):
        service.reload(dataclasses.replace(config, tls=broken))
    assert service.radsec.material is before
    renewed = world.ca.issue("127.0.0.1-renewed", server=True, dns=("localhost",))
    fresh = dataclasses.replace(config.tls, cert_file=renewed.cert_file, key_file=renewed.key_file)
    service.reload(dataclasses.replace(config, tls=fresh))
    assert service.radsec.material is not before
    assert service.radsec.material.config.cert_file == renewed.cert_file


def test_radius_1_1_clear_passwords_never_reach_logs(
    world: RadsecWorld, logged: Logged
) -> None:
    """RADIUS/1.1 carries User-Password in clear inside TLS: neither a reject, an engine
    failure nor a malformed packet that closes the connection logs any of it."""
    h = Harness(world)
    h.engine.fail = True
    secret = "Zq7-clear-text-password-Zq7"
    peer, pump, _ = h.connect(world.proxy, alpn=(b"radius/1.1",))
    attrs = [(codec.USER_NAME, USER.encode()), (codec.USER_PASSWORD, secret.encode())]
    peer.transport.write(radius11_request(b"\x00\x00\x00\x01", attrs))
    pump.flush()
    broken = radius11_request(b"\x00\x00\x00\x02", [*attrs, (codec.REPLY_MESSAGE, b"x")])
    peer.transport.write(broken[:-2] + b"\x09x")  # the last TLV claims more than it has
    pump.flush()
    assert [r[0] for r in peer.replies()] == [codec.ACCESS_REJECT]
    assert peer.lost is not None
    assert logged.events and secret[:8] not in logged.text


def test_hundreds_of_synchronous_answers_in_one_record(world: RadsecWorld) -> None:
    """Status-Server is answered while its packet is being read: a burst of them in
    one write is answered in full, without the reply path re-entering the reader."""
    h = Harness(world)
    peer, pump, _ = h.connect(world.nas)
    burst = [
        access_request(code=codec.STATUS_SERVER, secret="radsec", identifier=i % 256)[0]
        for i in range(1200)
    ]
    peer.transport.write(b"".join(burst))
    pump.flush()
    assert len(peer.replies()) == 1200
    assert peer.lost is None
    assert h.sample("authd_drops_total", frontend="radius", reason="internal_error") == 0
