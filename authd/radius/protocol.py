"""The RADIUS request path: admit a datagram, hand it to the engine, send the answer.

`screen` is the pure gatekeeper (client by source address, packet rules, Message-
Authenticator); `RadiusHandler` adds what needs time and the reactor (duplicates,
the engine's Deferred, the jittered reject delay); `RadiusProtocol` is the thin
DatagramProtocol that feeds one socket into the shared handler, so a reply leaves
from the address its request came to. RadSec connections (radius/tls.py) feed the same
handler through `RadiusHandler.packet`, with the client their certificate named and
the `Dialect` ALPN chose (classic, or RADIUS/1.1 from radius/radius11.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from authd.auth.interfaces import AuthRequest, Decision, Outcome
from authd.metrics import Metrics
from authd.radius import codec
from authd.radius.clients import Client, ClientTable
from authd.radius.dedup import NO_REPLY, DuplicateCache, Key, Seen
from authd.radius.drop_log import DropLine, DropLog

log = Logger(namespace="authd.radius.protocol")

# RFC 2869 §5.10: Prompt = No-Echo (0) on Access-Challenge, so the NAS (pam_radius,
# a VPN client) does not echo the one-time code the user types next.
_PROMPT_NO_ECHO = codec.attribute(codec.PROMPT, (0).to_bytes(4, "big"))

Address = tuple[str, int]
Send = Callable[[bytes, Address], None]

# The codes a server receives and the ones it sends: only series that can move exist.
RECEIVED_CODES = {
    codec.ACCESS_REQUEST: "Access-Request",
    codec.STATUS_SERVER: "Status-Server",
}
SENT_CODES = {
    codec.ACCESS_ACCEPT: "Access-Accept",
    codec.ACCESS_REJECT: "Access-Reject",
    codec.ACCESS_CHALLENGE: "Access-Challenge",
}
# Bounds memory and queueing under a flood; past it new requests are dropped (the
# client retransmits) rather than queued without end in front of the thread pool.
MAX_IN_FLIGHT = 10_000
_SYSTEM_RANDOM = random.SystemRandom()


class Authenticate(Protocol):
    """What the listener needs of the engine (ThreadedEngine.authenticate)."""

    def __call__(self, req: AuthRequest) -> Deferred[Decision]: ...


@dataclass(frozen=True, slots=True)
class Admitted:
    """A datagram that passed every packet rule, with the client it came from."""

    client: Client
    packet: codec.Packet


@dataclass(frozen=True, slots=True)
class Dropped:
    """A datagram dropped without reply; `reason` is the metric label."""

    reason: str


_UNKNOWN_CLIENT = "unknown_client"


def screen(data: bytes, ip: str, clients: ClientTable) -> Admitted | Dropped:
    """Apply the packet rules that need no state: known source, well-formed, a served
    code, a valid Message-Authenticator where present and where required."""
    client = clients.match(ip)
    if client is None:
        return Dropped(_UNKNOWN_CLIENT)
    verdict = admit(data, client)
    if isinstance(verdict, str):
        return Dropped(verdict)
    return Admitted(client, verdict)


_UNSUPPORTED_CODE = "unsupported_code"


def admit_code(code: int) -> str:
    """The drop reason for a code this server does not serve, else ""."""
    if code != codec.ACCESS_REQUEST and code != codec.STATUS_SERVER:
        return _UNSUPPORTED_CODE
    return ""


def admit(data: bytes, client: Client) -> codec.Packet | str:
    """`screen` for a datagram whose client is known: the Packet, or the drop reason
    (a plain string, so the hot path builds no verdict object)."""
    try:
        packet = codec.decode(data)
    except codec.DecodeError as exc:
        return "malformed_" + exc.reason
    code = packet.code
    if code != codec.ACCESS_REQUEST and code != codec.STATUS_SERVER:
        return _UNSUPPORTED_CODE
    if packet.ma_offset >= 0:
        # RFC 3579 §3.2: verified wherever it is present, whatever the client setting.
        if not codec.verify_message_authenticator(packet, client.keys):
            return "bad_message_authenticator"
    elif code == codec.STATUS_SERVER or client.require_message_authenticator:
        # RFC 5997 §3: Status-Server without MA is silently discarded; BlastRADIUS
        # (CVE-2024-3596): Access-Request without MA is dropped unless the client opts out.
        return "missing_message_authenticator"
    return packet


EncodeReply = Callable[[int, codec.Packet, codec.Keys, list[bytes]], bytes]


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one transport profile admits requests and encodes replies: classic RADIUS
    (UDP and RadSec, MD5 under the shared secret) or RADIUS/1.1 (RFC 9765, no MD5)."""

    name: str
    admit: Callable[[bytes, Client], codec.Packet | str]
    encode_reply: EncodeReply
    clear_password: bool  # RFC 9765 §5.1: User-Password travels unobfuscated in TLS


CLASSIC = Dialect("classic", admit, codec.encode_reply, False)


class BadRequest(ValueError):
    """An admitted Access-Request whose contents cannot be authenticated (rejected)."""


def to_auth_request(
    packet: codec.Packet, client: Client, ip: str, clear_password: bool = False
) -> AuthRequest:
    """The engine's view of an Access-Request; BadRequest when it cannot be one.

    The password is decoded from raw bytes (RFC 2865 §5.2; as sent with
    `clear_password`) and must be strict UTF-8 without NUL: a lossy decode could make
    two different byte strings equal.
    """
    raw_user = hidden = state = None
    for a_type, value in packet.attributes:  # one pass; the first of each counts
        if a_type == codec.USER_NAME:
            if raw_user is None:
                raw_user = value
        elif a_type == codec.USER_PASSWORD:
            if hidden is None:
                hidden = value
        elif a_type == codec.STATE and state is None:
            state = value
    if raw_user is None or hidden is None:
        raise BadRequest("User-Name and User-Password are required (PAP only)")
    try:
        user = raw_user.decode("utf-8")
        if clear_password:
            typed = hidden.decode("utf-8")
        else:
            typed = codec.decode_password(hidden, client.keys, packet.authenticator).decode("utf-8")
    except (UnicodeDecodeError, codec.DecodeError) as exc:
        raise BadRequest("undecodable User-Name or User-Password") from exc
    # An empty password never authenticates (fail closed before any backend sees it).
    if not user or not typed or "\x00" in user or "\x00" in typed:
        raise BadRequest("empty User-Name or User-Password, or NUL inside a value")
    if state is not None:
        # Answer to an Access-Challenge: User-Password carries the second factor only.
        return AuthRequest(
            user=user,
            password="",
            otp=typed,
            state=state,
            frontend="radius",
            client=client.name,
            source=ip,
            first_factor=client.first_factor,
            otp_mode=client.otp_mode,
            realms=client.realms,
        )
    return AuthRequest(
        user=user,
        password=typed,
        frontend="radius",
        client=client.name,
        source=ip,
        first_factor=client.first_factor,
        otp_mode=client.otp_mode,
        realms=client.realms,
    )


def reply_for(
    decision: Decision,
    packet: codec.Packet,
    client: Client,
    challenge_message: str,
    dialect: Dialect = CLASSIC,
) -> tuple[int, bytes]:
    """The (code, encoded reply) for an engine decision; anything odd becomes a reject.

    Every reply fits in 4096 octets (RFC 2865 §3) around the echoed Proxy-States: what
    a reply must carry (an accept's attributes, a challenge's State) fits whole or the
    answer is a bare reject; the Reply-Message is trimmed to the room left.
    """
    encode = dialect.encode_reply
    room = codec.reply_room(packet)
    if decision.outcome is Outcome.ACCEPT:
        attrs = client.replies.attributes(decision.groups)
        room -= sum(map(len, attrs))
        if room < 0:
            log.error(
                "radius client {client}: reply attributes do not fit in one packet; rejecting",
                client=client.name,
            )
            return reject_for("", packet, client, dialect)
        if decision.message:
            message = codec.fitted_text_attributes(codec.REPLY_MESSAGE, decision.message, room)
            attrs = message + attrs
        return codec.ACCESS_ACCEPT, encode(codec.ACCESS_ACCEPT, packet, client.keys, attrs)
    if decision.outcome is Outcome.CHALLENGE:
        state = decision.state
        if not state or len(state) > codec.MAX_ATTR_VALUE or len(state) + 2 > room:
            return reject_for("", packet, client, dialect)  # fail closed: no usable State
        attrs = [codec.attribute(codec.STATE, state)]
        room -= len(attrs[0])
        if len(_PROMPT_NO_ECHO) <= room:  # a hint to the NAS: gives way like Reply-Message
            attrs.append(_PROMPT_NO_ECHO)
            room -= len(_PROMPT_NO_ECHO)
        attrs += codec.fitted_text_attributes(
            codec.REPLY_MESSAGE, decision.message or challenge_message, room
        )
        return codec.ACCESS_CHALLENGE, encode(codec.ACCESS_CHALLENGE, packet, client.keys, attrs)
    return reject_for(decision.message, packet, client, dialect)


def reject_for(
    message: str, packet: codec.Packet, client: Client, dialect: Dialect = CLASSIC
) -> tuple[int, bytes]:
    """Access-Reject: Reply-Message (if any, trimmed to fit), Proxy-State,
    Message-Authenticator only."""
    attrs = (
        codec.fitted_text_attributes(codec.REPLY_MESSAGE, message, codec.reply_room(packet))
        if message
        else []
    )
    return codec.ACCESS_REJECT, dialect.encode_reply(
        codec.ACCESS_REJECT, packet, client.keys, attrs
    )


@dataclass
class Settings:
    """The reloadable knobs of the request path (swapped whole on SIGHUP)."""

    clients: ClientTable
    reject_delay: float = 1.0
    challenge_message: str = "Enter your one-time code"


def _log_drop(line: DropLine) -> None:
    client = line.client or "unknown"
    if line.first:
        log.warn("radius: dropped a packet from {source} (client {client}): {why}",
                 source=line.source, client=client, reason=line.reason, why=line.why, count=1)
    else:
        log.warn("radius: dropped {count} more packets from {source} (client {client}) "
                 "in {seconds:.0f}s: {why}", source=line.source, client=client,
                 reason=line.reason, why=line.why, count=line.count, seconds=line.seconds)


class RadiusHandler:
    """Shared by every listening socket: one duplicate cache, one in-flight set."""

    def __init__(
        self,
        settings: Settings,
        authenticate: Authenticate,
        reactor: IReactorTime,
        metrics: Metrics,
        duplicate_window: float = 30.0,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self._authenticate = authenticate
        # zope interfaces do not type-check as classes under plain mypy: hold as Any.
        self._reactor: Any = reactor
        self._seconds: Callable[[], float] = cast(Any, reactor).seconds
        self._metrics = metrics
        self._jitter = jitter if jitter is not None else _SYSTEM_RANDOM.random
        self.dedup = DuplicateCache(duplicate_window)
        self._in_flight: set[Deferred[Any]] = set()
        self._delayed: dict[Key, tuple[Any, Callable[[], None]]] = {}
        # Packets and replies are counted in plain integers, pushed to Prometheus before
        # each collection: a Counter.inc per packet cost ~1 µs of a ~25 µs budget.
        self._packet_counters = {
            code: metrics.radius_packets.labels(code=name) for code, name in RECEIVED_CODES.items()
        }
        self._reply_counters = {
            code: metrics.radius_replies.labels(code=name) for code, name in SENT_CODES.items()
        }
        self._packets = dict.fromkeys(RECEIVED_CODES, 0)
        self._sent = dict.fromkeys(SENT_CODES, 0)
        metrics.before_collect(self.flush_metrics)
        self._latency = metrics.latency.labels(frontend="radius")
        self._drops: dict[str, Any] = {}
        self.drop_log = DropLog()
        metrics.watch_cache("radius_duplicates", self.dedup.__len__)
        metrics.watch_cache("radius_client_lookups", self._client_lookups)
        metrics.watch_cache("radius_drop_log", self.drop_log.__len__)

    # ---------------------------------------------------------------- accounting
    def _client_lookups(self) -> int:
        return self.settings.clients.cached_lookups()  # the table a reload swapped in

    def flush_metrics(self) -> None:
        """Add the packets and replies counted since the last call to their counters."""
        for counts, counters in (
            (self._packets, self._packet_counters),
            (self._sent, self._reply_counters),
        ):
            for code, n in counts.items():
                if n:
                    counters[code].inc(n)
                    counts[code] = 0

    def _drop(self, reason: str) -> None:
        counter = self._drops.get(reason)
        if counter is None:
            counter = self._drops[reason] = self._metrics.drops.labels(
                frontend="radius", reason=reason
            )
        counter.inc()

    def _refuse(self, reason: str, source: str, client: str) -> None:
        """A drop the sender should hear about: counted, and logged rate-limited."""
        self._drop(reason)
        line = self.drop_log.note(source, client, reason, self._seconds())
        if line is not None:
            _log_drop(line)

    def flush_drop_log(self) -> None:
        """Write the drop summaries that are due (the service calls it periodically)."""
        for line in self.drop_log.flush(self._seconds()):
            _log_drop(line)

    @property
    def in_flight(self) -> int:
        """Requests received and not yet answered (decisions and delayed rejects)."""
        return len(self._in_flight) + len(self._delayed)

    # ---------------------------------------------------------------- the path
    def datagram(self, data: bytes, addr: Address, send: Send) -> None:
        """Handle one datagram; never raises into the reactor (STYLE pattern 3)."""
        try:
            self._datagram(data, addr, send)
        except Exception:
            log.failure("radius: unexpected error handling a datagram from {source}",
                        source=addr[0])
            self._drop("internal_error")

    def _datagram(self, data: bytes, addr: Address, send: Send) -> None:
        client = self.settings.clients.match(addr[0])
        if client is None:
            self._refuse(_UNKNOWN_CLIENT, addr[0], "")
            return
        self._request(data, client, addr, send, CLASSIC)

    def packet(
        self, data: bytes, client: Client, addr: Address, send: Send, dialect: Dialect
    ) -> str:
        """Handle one packet of a stream transport (RadSec) whose client its certificate
        named; `addr` is the connection's peer. "" when a reply was or will be sent
        through `send`, else the reason the packet was dropped. Never raises."""
        try:
            return self._request(data, client, addr, send, dialect)
        except Exception:
            log.failure(
                "radius: unexpected error handling a packet from {client}", client=client.name
            )
            self._drop("internal_error")
            return "internal_error"

    def _request(
        self, data: bytes, client: Client, addr: Address, send: Send, dialect: Dialect
    ) -> str:
        packet = dialect.admit(data, client)
        if isinstance(packet, str):
            self._refuse(packet, addr[0], client.name)
            return packet
        self._packets[packet.code] += 1
        if packet.proxy and codec.reply_room(packet) < 0:
            # RFC 2865 §5.33: Proxy-State is echoed whole, and with it no reply fits in
            # 4096 octets (§3): refused before anything is decided or remembered.
            log.warn(
                "radius: request from client {client} dropped: its Proxy-State echo leaves "
                "no room for a reply within 4096 octets",
                client=client.name,
            )
            self._drop("reply_too_large")
            return "reply_too_large"
        if packet.code == codec.STATUS_SERVER:
            # RFC 5997 §3: answered with Access-Accept, no auth work, not cached.
            reply = dialect.encode_reply(codec.ACCESS_ACCEPT, packet, client.keys, [])
            send(reply, addr)
            self._sent[codec.ACCESS_ACCEPT] += 1
            return ""
        ip = addr[0]
        now = self._seconds()
        key: Key = (ip, addr[1], packet.identifier, packet.authenticator)
        seen, cached = self.dedup.check(key, now)
        if seen is not Seen.NEW:
            if seen is Seen.IN_PROGRESS:
                self._drop("duplicate_in_progress")  # RFC 5080 §2.2.2: drop while in flight
                return "duplicate_in_progress"
            assert cached is not None
            if not cached:  # NO_REPLY: decided, but nothing could be sent; never again
                self._drop("duplicate_unanswered")
                return "duplicate_unanswered"
            self._drop("duplicate_answered")
            send(cached, addr)
            return ""
        if len(self._in_flight) + len(self._delayed) >= MAX_IN_FLIGHT:
            self.dedup.forget(key)
            self._refuse("overload", ip, client.name)
            return "overload"
        try:
            req = to_auth_request(packet, client, ip, dialect.clear_password)
        except BadRequest:
            code, reply = reject_for("", packet, client, dialect)
            self._finish(key, code, reply, addr, send, now, True)
            return ""
        try:
            d = self._authenticate(req)
        except Exception:
            # Not a Deferred at all: answer as for a failed decision (fail closed) so the
            # duplicate entry does not stay "in progress" for ever.
            self._failed(Failure(), key, packet, client, addr, send, now, dialect)
            return ""
        self._in_flight.add(d)
        # One callback for both outcomes: each Deferred callback costs about a microsecond.
        d.addBoth(self._answered, d, key, packet, client, addr, send, now, dialect)
        return ""

    def _answered(
        self,
        result: Decision | Failure,
        d: Deferred[Any],
        key: Key,
        packet: codec.Packet,
        client: Client,
        addr: Address,
        send: Send,
        received: float,
        dialect: Dialect,
    ) -> None:
        self._in_flight.discard(d)
        try:
            if isinstance(result, Failure):
                self._failed(result, key, packet, client, addr, send, received, dialect)
                return
            code, reply = reply_for(
                result, packet, client, self.settings.challenge_message, dialect
            )
            if code == codec.ACCESS_REJECT:
                self._finish(key, code, reply, addr, send, received, True)
            else:
                self._send(key, code, reply, addr, send, received)
        except Exception:
            log.failure("radius: error while answering client {client}", client=client.name)
            # The decision is committed: its retransmissions must not be decided again
            # (another failure counted, a used code now a replay), so the entry stays.
            self.dedup.answered(key, NO_REPLY, self._seconds())
            self._drop("internal_error")

    def _failed(
        self,
        failure: Failure,
        key: Key,
        packet: codec.Packet,
        client: Client,
        addr: Address,
        send: Send,
        received: float,
        dialect: Dialect,
    ) -> None:
        # Fail closed: an engine error is a reject (never an accept, never silence that
        # makes the gateway retry the same broken request for ever).
        # The exception's type only: its message might quote request data.
        log.error(
            "radius: decision failed for client {client}: {error}",
            client=client.name,
            error=type(failure.value).__name__,
        )
        self._drop("engine_error")
        code, reply = reject_for("", packet, client, dialect)
        self._finish(key, code, reply, addr, send, received, True)

    def _finish(
        self,
        key: Key,
        code: int,
        reply: bytes,
        addr: Address,
        send: Send,
        received: float,
        delay: bool,
    ) -> None:
        """Send now, or for a reject at received + jittered reject_delay, so that a
        reject's timing says nothing of which check failed; then cache it."""
        if not (delay and self.settings.reject_delay > 0):
            self._send(key, code, reply, addr, send, received)
            return

        def fire() -> None:
            self._delayed.pop(key, None)
            self._send(key, code, reply, addr, send, received)

        when = received + self.settings.reject_delay * (1.0 + 0.25 * self._jitter())
        wait = max(0.0, when - self._seconds())
        self._delayed[key] = (self._reactor.callLater(wait, fire), fire)

    def _send(
        self, key: Key, code: int, reply: bytes, addr: Address, send: Send, received: float
    ) -> None:
        """Send a reply, cache it for retransmits, count it."""
        send(reply, addr)
        now = self._seconds()
        self.dedup.answered(key, reply, now)
        self._sent[code] += 1
        self._latency.observe(now - received)

    # ---------------------------------------------------------------- shutdown
    def drain(self) -> Deferred[None]:
        """Answer every request in progress: delayed rejects go out now, decisions are
        awaited. Fires when nothing is in flight."""
        for call, fire in list(self._delayed.values()):
            if call.active():
                call.cancel()
            fire()
        pending = list(self._in_flight)
        if not pending:
            return Deferred.fromCoroutine(_nothing())
        dl: Deferred[Any] = DeferredList(pending, consumeErrors=True)
        result: Deferred[None] = Deferred()

        def then(_: object) -> None:
            # Decisions that ended in a reject were delayed again: send those now too.
            for call, fire in list(self._delayed.values()):
                if call.active():
                    call.cancel()
                fire()
            result.callback(None)

        dl.addBoth(then)
        return result


async def _nothing() -> None:
    return None


class RadiusProtocol(DatagramProtocol):
    """One UDP socket: decode, hand off, encode happen in the shared handler.

    Replies go straight to the socket's `sendto`: Twisted's `Port.write` re-validates
    the address three ways per datagram (~3 µs), and our addresses come from recvfrom.
    """

    noisy = False  # no "Starting protocol" line; the service logs what it listens on

    def __init__(self, handler: RadiusHandler) -> None:
        self.handler = handler
        self._sendto: Callable[[bytes, Address], object] | None = None

    def startProtocol(self) -> None:  # noqa: N802 - Twisted's name
        sock = getattr(self.transport, "socket", None)
        self._sendto = sock.sendto if sock is not None else None

    def stopProtocol(self) -> None:  # noqa: N802 - Twisted's name
        self._sendto = None

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:  # noqa: N802
        self.handler.datagram(datagram, addr, self._send)

    def _send(self, data: bytes, addr: Address) -> None:
        try:
            if self._sendto is not None:
                self._sendto(data, addr)
                return
            transport: Any = self.transport
            if transport is None:
                return  # socket closed while the decision ran: nothing to answer on
            transport.write(data, addr)
        except OSError as exc:
            # Includes a full send buffer (EAGAIN): the client retransmits and gets the
            # cached reply.
            log.warn("radius: cannot send reply to {source}: {error}",
                     source=addr[0], error=str(exc))
