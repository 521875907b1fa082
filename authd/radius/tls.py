"""The RadSec listener: RADIUS over TLS on TCP (RFC 6614), RADIUS/1.1 by ALPN (RFC 9765).

Thin like the UDP protocol: a connection splits the TLS stream into packets by their
Length field (RFC 6613 §2.6) and hands each to the shared `RadiusHandler`, with the
client its certificate named and the dialect ALPN chose; replies go back on the same
connection in whatever order decisions finish. The handler applies every RADIUS rule
exactly as for UDP (Message-Authenticator, Status-Server, duplicates, reject delay).

Hygiene: a handshake deadline, an idle timeout, a bound on connections and on requests
in flight per connection; a client that stops reading its replies stops being read
(TCP back-pressure), so no peer can make the daemon queue without end.
"""

from __future__ import annotations

import socket
from typing import Any

from cryptography import x509
from OpenSSL import SSL
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLServerConnectionCreator,
    IPushProducer,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from authd.metrics import Metrics
from authd.radius import certmatch, codec
from authd.radius.clients import Client
from authd.radius.protocol import CLASSIC, Address, Dialect, RadiusHandler
from authd.radius.radius11 import ALPN_1_1, RADIUS_1_1
from authd.radius.tls_context import VERIFY_ERRORS, NoApplicationProtocol, RadsecMaterial

log = Logger(namespace="authd.radius.tls")

CLOSE_GRACE = 5.0  # seconds a closing connection may take to flush before it is aborted
FRONTEND = "radsec"


def bind_stream_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A bound, listening, non-blocking TCP socket (SO_REUSEPORT for workers)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def handshake_failure_reason(failure: Failure, verify_error: str) -> str:
    """A bounded label for why a handshake failed (metric and log)."""
    if verify_error:
        return verify_error
    if failure.check(NoApplicationProtocol):
        return "no_application_protocol"
    if failure.check(SSL.Error):
        text = str(failure.value).lower()
        if "no shared cipher" in text or "version" in text:
            return "protocol_mismatch"
        if "peer did not return a certificate" in text or "certificate required" in text:
            return "no_client_certificate"
        return "tls_error"
    return "closed_during_handshake"


@implementer(IHandshakeListener, IPushProducer)
class RadsecConnection(Protocol):
    """One TLS connection: framing, client identity, per-connection limits."""

    def __init__(self, listener: RadsecListener, material: RadsecMaterial) -> None:
        self._listener = listener
        self._material = material
        self._handler = listener.handler
        self.client: Client | None = None
        self.chain: list[x509.Certificate] = []
        self.dialect: Dialect = CLASSIC
        self.peer: Address = ("", 0)
        self._buffer = bytearray()
        self._pending = 0
        self._write_blocked = False
        self._reading_paused = False
        self._closing = False
        self._reading = False  # inside _process: a reply sent meanwhile must not re-enter
        self._verify_error = ""
        self._timer: Any = None
        self._packets: Any = None  # the client's packet counter, once it is known
        self.state = "handshake"

    # ------------------------------------------------------------ TLS events
    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        transport: Any = self.transport
        peer = transport.getPeer()
        self.peer = (str(peer.host), int(peer.port))
        self._listener.opened(self)
        # Replies are small and pipelined: Nagle would hold one back until the peer's
        # (delayed) ACK of the previous, tens of milliseconds per reply.
        transport.setTcpNoDelay(True)
        transport.registerProducer(self, True)
        self._arm(self._material.config.handshake_timeout)

    def note_verify_error(self, errnum: int) -> None:
        """Called from OpenSSL's verify callback: keep the first reason."""
        if not self._verify_error:
            self._verify_error = VERIFY_ERRORS.get(errnum, "certificate_invalid")

    def handshakeCompleted(self) -> None:  # noqa: N802 - Twisted's name
        transport: Any = self.transport
        conn: SSL.Connection = transport.getHandle()
        self.chain = conn.get_verified_chain(as_cryptography=True) or []
        client = certmatch.match(self._material.rules, self.chain)
        if client is None:
            subject = self.chain[0].subject.rfc4514_string() if self.chain else "?"
            log.warn(
                "radsec: certificate {subject!r} from {peer} matches no radius.tls client; "
                "closing",
                subject=subject,
                peer=self.peer[0],
            )
            self._listener.refused("no_matching_client")
            self.state = "refused"  # counted here, not again as a failed handshake
            self._close(abort=True)
            return
        alpn = conn.get_alpn_proto_negotiated()
        self.dialect = RADIUS_1_1 if alpn == ALPN_1_1 else CLASSIC
        self._listener.established(self, client)
        self.client = client
        self._packets = self._listener.packet_counter(client)
        log.info(
            "radsec: client {client} connected from {host}:{port} ({version}, {dialect})",
            client=client.name,
            host=self.peer[0],
            port=self.peer[1],
            version=conn.get_protocol_version_name(),
            dialect=self.dialect.name,
        )
        self._arm(self._material.config.idle_timeout)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: N802,B008
        self._cancel_timer()
        if self.state == "handshake":
            why = handshake_failure_reason(reason, self._verify_error)
            if why != "closed_during_handshake" or self._verify_error:
                log.warn(
                    "radsec: TLS handshake with {peer} failed: {why}", peer=self.peer[0], why=why
                )
            self._listener.handshake_failed(why)
        self._listener.closed(self)
        self.client = None
        self._buffer.clear()

    # ------------------------------------------------------------ framing
    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if self.client is None or self._closing:
            return
        self._buffer += data
        self._arm(self._material.config.idle_timeout)
        self._process()

    def _process(self) -> None:
        if self._reading:
            return  # a reply sent while a packet is read: the running loop goes on
        self._reading = True
        try:
            self._read_packets()
        finally:
            self._reading = False
        self._steer_reading()

    def _read_packets(self) -> None:
        buf = self._buffer
        limit = self._material.config.max_in_flight
        while self._pending < limit and len(buf) >= 4 and self.client is not None:
            length = (buf[2] << 8) | buf[3]
            if length < codec.MIN_LENGTH or length > codec.MAX_LENGTH:
                # RFC 6613 §2.6.4: past a bad Length the stream cannot be re-framed;
                # the connection is closed.
                self._framing_error("malformed_bad_length")
                return
            if len(buf) < length:
                break
            data = bytes(buf[:length])
            del buf[:length]
            self._packets.inc()
            self._pending += 1
            reason = self._handler.packet(data, self.client, self.peer, self._send, self.dialect)
            if reason:
                self._pending -= 1
                if reason.startswith("malformed_"):
                    # RFC 6613 §2.6.4: a malformed packet closes the connection.
                    self._framing_error(reason, counted=True)
                    return

    def _framing_error(self, reason: str, counted: bool = False) -> None:
        if not counted:
            self._listener.drop(reason)
        name = self.client.name if self.client is not None else "?"
        log.warn(
            "radsec: {reason} from client {client}; closing the connection",
            reason=reason,
            client=name,
        )
        self._buffer.clear()
        self._close(abort=False)

    def _send(self, reply: bytes, addr: Address) -> None:
        self._pending -= 1
        transport: Any = self.transport
        if self._closing or transport is None:
            return  # the connection ended while the decision ran: nothing to answer on
        transport.write(reply)
        if self._buffer and not self._closing:
            self._process()
        else:
            self._steer_reading()

    # ------------------------------------------------------------ flow control
    def _steer_reading(self) -> None:
        """Read while replies can leave and requests in flight are under the bound."""
        want_pause = self._write_blocked or self._pending >= self._material.config.max_in_flight
        transport: Any = self.transport
        if want_pause and not self._reading_paused:
            self._reading_paused = True
            transport.pauseProducing()
        elif not want_pause and self._reading_paused:
            self._reading_paused = False
            transport.resumeProducing()

    def pauseProducing(self) -> None:  # noqa: N802 - IPushProducer: our replies back up
        self._write_blocked = True
        self._steer_reading()

    def resumeProducing(self) -> None:  # noqa: N802
        self._write_blocked = False
        self._steer_reading()

    def stopProducing(self) -> None:  # noqa: N802
        self._close(abort=True)

    # ------------------------------------------------------------ timers and closing
    def _arm(self, seconds: float) -> None:
        self._cancel_timer()
        self._timer = self._listener.reactor.callLater(seconds, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.state == "handshake":
            self._verify_error = self._verify_error or "handshake_timeout"
            self._close(abort=True)
        elif self._pending > 0:
            self._arm(self._material.config.idle_timeout)  # we owe replies: not idle
        else:
            log.info("radsec: closing idle connection from {peer}", peer=self.peer[0])
            self._close(abort=False)

    def _close(self, abort: bool) -> None:
        """Close; a peer that does not take our close_notify is cut after CLOSE_GRACE."""
        transport: Any = self.transport
        if transport is None or (self._closing and not abort):
            return
        self._closing = True
        self._cancel_timer()
        if abort:
            transport.abortConnection()
            return
        # TLS sends close_notify only once no producer is registered.
        transport.unregisterProducer()
        transport.loseConnection()
        self._timer = self._listener.reactor.callLater(CLOSE_GRACE, transport.abortConnection)

    def close_gracefully(self) -> None:
        self._close(abort=False)

    def rematch(self, material: RadsecMaterial) -> None:
        """After a reload: keep serving under the new rules, or close when the
        certificate no longer names a client."""
        self._material = material
        if self.client is None:
            return
        client = certmatch.match(material.rules, self.chain)
        if client is None:
            log.warn(
                "radsec: client {client} no longer matches radius.tls; closing",
                client=self.client.name,
            )
            self._close(abort=False)
            return
        self._listener.established(self, client)
        self.client = client
        self._packets = self._listener.packet_counter(client)


class _ConnectionFactory(Factory):
    def __init__(self, listener: RadsecListener) -> None:
        self._listener = listener

    def buildProtocol(self, addr: Any) -> Protocol:  # noqa: N802
        return RadsecConnection(self._listener, self._listener.material)


class _LimitedTLSFactory(TLSMemoryBIOFactory):
    """Refuses connections past radius.tls.max_connections before any TLS work."""

    def __init__(self, listener: RadsecListener) -> None:
        # zope interfaces do not type-check as classes under plain mypy.
        creator: Any = listener
        wrapped: Any = _ConnectionFactory(listener)
        super().__init__(creator, False, wrapped, clock=listener.reactor)
        self._listener = listener

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802
        if self._listener.full():
            self._listener.refused("too_many_connections")
            return None
        return super().buildProtocol(addr)


@implementer(IOpenSSLServerConnectionCreator)
class RadsecListener:
    """The RadSec sockets of one process, their connections and their TLS material.

    Also the connection creator Twisted asks for each new TLS connection, so a reload
    (`material` swapped) applies to the next connection without rebinding.
    """

    def __init__(
        self,
        handler: RadiusHandler,
        material: RadsecMaterial,
        reactor: Any,
        metrics: Metrics,
    ) -> None:
        self.handler = handler
        self.material = material
        self.reactor = reactor
        self._metrics = metrics
        self._ports: list[Any] = []
        self.connections: set[RadsecConnection] = set()
        self._per_client: dict[RadsecConnection, str] = {}

    # ------------------------------------------------------------ TLS connections
    def serverConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:  # noqa: N802
        return SSL.Connection(self.material.context, None)

    # ------------------------------------------------------------ accounting
    def full(self) -> bool:
        return len(self.connections) >= self.material.config.max_connections

    def opened(self, conn: RadsecConnection) -> None:
        self.connections.add(conn)
        self._metrics.radsec_connections.labels(state="handshake").inc()

    def established(self, conn: RadsecConnection, client: Client) -> None:
        old = self._per_client.get(conn)
        if old == client.name:
            return
        if old is None:
            self._metrics.radsec_connections.labels(state="handshake").dec()
            self._metrics.radsec_connections.labels(state="open").inc()
            conn.state = "open"
        else:
            self._metrics.radsec_client_connections.labels(client=old).dec()
        self._per_client[conn] = client.name
        self._metrics.radsec_client_connections.labels(client=client.name).inc()

    def closed(self, conn: RadsecConnection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        name = self._per_client.pop(conn, None)
        if name is None:
            self._metrics.radsec_connections.labels(state="handshake").dec()
        else:
            self._metrics.radsec_connections.labels(state="open").dec()
            self._metrics.radsec_client_connections.labels(client=name).dec()

    def handshake_failed(self, reason: str) -> None:
        self._metrics.radsec_handshake_failures.labels(reason=reason).inc()

    def refused(self, reason: str) -> None:
        if reason == "too_many_connections":
            log.warn(
                "radsec: {count} connections open; refusing another", count=len(self.connections)
            )
        self._metrics.radsec_refused.labels(reason=reason).inc()

    def packet_counter(self, client: Client) -> Any:
        """The client's packet counter, looked up once per connection (a labels()
        lookup per packet costs microseconds)."""
        return self._metrics.radsec_packets.labels(client=client.name)

    def drop(self, reason: str) -> None:
        self._metrics.drops.labels(frontend=FRONTEND, reason=reason).inc()

    # ------------------------------------------------------------ lifecycle
    def factory(self) -> TLSMemoryBIOFactory:
        """The listening factory: TLS around one RadsecConnection per TCP connection."""
        return _LimitedTLSFactory(self)

    def start(self, addresses: list[tuple[str, int]], reuse_port: bool) -> None:
        """Bind every address or none (raising the first OSError)."""
        factory = self.factory()
        try:
            for host, port in addresses:
                sock = bind_stream_socket(host, port, reuse_port)
                try:
                    listening = self.reactor.adoptStreamPort(sock.fileno(), sock.family, factory)
                finally:
                    sock.close()  # the reactor holds its own duplicate
                self._ports.append(listening)
                addr = listening.getHost()
                log.info("radsec: listening on {host}:{port}", host=addr.host, port=addr.port)
        except Exception:
            for p in self._ports:
                p.stopListening()
            self._ports = []
            raise

    def bound_ports(self) -> list[tuple[str, int]]:
        return [(str(p.getHost().host), int(p.getHost().port)) for p in self._ports]

    def stop_listening(self) -> Deferred[Any]:
        stops = [d for p in self._ports if isinstance(d := p.stopListening(), Deferred)]
        self._ports = []
        return DeferredList(stops)

    def close_connections(self) -> None:
        """After the drain: every reply has gone out, so close what remains."""
        for conn in list(self.connections):
            if conn.client is None:
                conn.stopProducing()
            else:
                conn.close_gracefully()

    def commit(self, material: RadsecMaterial) -> None:
        """Swap in reloaded material: new connections use it, open ones are matched
        again under the new rules."""
        self.material = material
        for conn in list(self.connections):
            conn.rematch(material)
