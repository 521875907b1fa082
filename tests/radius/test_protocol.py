"""The request path with an injected Clock and a fake engine: no sockets, no sleeps."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from authd.auth.interfaces import AuthRequest, Decision, Outcome, Reason
from authd.config.model import RadiusConfig
from authd.metrics import Metrics
from authd.radius import codec
from authd.radius.clients import build_client_table
from authd.radius.protocol import Admitted, Dropped, RadiusHandler, Settings, reply_for, screen
from tests.fixtures.logs import Logged
from tests.fixtures.radius import (
    GROUP_REPLIES,
    PASSWORD,
    SECRET,
    USER,
    FakeEngine,
    access_request,
    client_config,
    radius_config,
    totp,
)

KEY = SECRET.encode()
NAS = ("127.0.0.1", 40000)
DICT = codec.RadiusDictionary()


class Wire:
    """Records what the handler sends, with the clock time it was sent."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, bytes, tuple[str, int]]] = []

    def __call__(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((self.clock.seconds(), data, addr))

    def codes(self) -> list[int]:
        return [d[0] for _, d, _ in self.sent]


def _handler(
    clock: Clock,
    engine: FakeEngine,
    cfg: RadiusConfig | None = None,
    metrics: Metrics | None = None,
) -> RadiusHandler:
    cfg = cfg or radius_config(client_config(reply_attributes=GROUP_REPLIES))
    settings = Settings(
        clients=build_client_table(cfg, DICT),
        reject_delay=cfg.reject_delay,
        challenge_message=cfg.challenge_message,
    )
    return RadiusHandler(
        settings,
        engine,
        clock,
        metrics or Metrics(),
        duplicate_window=cfg.duplicate_window,
        jitter=lambda: 0.0,
    )


def _metric(m: Metrics, name: str, **labels: str) -> float:
    v = m.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


@pytest.fixture
def setup(clock: Clock) -> tuple[RadiusHandler, FakeEngine, Wire, Metrics]:
    engine = FakeEngine(now=clock.seconds)
    metrics = Metrics()
    return _handler(clock, engine, metrics=metrics), engine, Wire(clock), metrics


Setup = tuple[RadiusHandler, FakeEngine, Wire, Metrics]


def test_inline_accept_carries_group_attributes(clock: Clock, setup: Setup) -> None:
    """password+OTP accepts at once; the reply verifies, starts with MA and carries the
    attributes mapped from the user's groups."""
    handler, engine, wire, metrics = setup
    data, auth = access_request(password=PASSWORD + totp(clock.seconds()))
    handler.datagram(data, NAS, wire)
    assert wire.codes() == [codec.ACCESS_ACCEPT]
    _, reply, addr = wire.sent[0]
    assert addr == NAS and codec.verify_reply(reply, auth, KEY)
    types = [t for t, _ in codec.decode(reply).attributes]
    assert types[0] == codec.MESSAGE_AUTHENTICATOR and 25 in types and 11 in types
    req = engine.calls[0]
    assert (req.user, req.client, req.source, req.frontend) == (USER, "nas1", NAS[0], "radius")
    assert _metric(metrics, "authd_radius_replies_total", code="Access-Accept") == 1


def test_reject_waits_for_delay_and_carries_only_allowed_attributes(
    clock: Clock, setup: Setup
) -> None:
    """A wrong code is rejected after reject_delay (clock-driven), with only MA,
    Reply-Message and Proxy-State, never group attributes."""
    handler, _, wire, _ = setup
    data, auth = access_request(password=PASSWORD + "000000", proxy_states=(b"ps",))
    handler.datagram(data, NAS, wire)
    assert wire.sent == []
    clock.advance(0.99)
    assert wire.sent == []
    clock.advance(0.01)
    assert wire.codes() == [codec.ACCESS_REJECT]
    reply = wire.sent[0][1]
    assert codec.verify_reply(reply, auth, KEY)
    assert {t for t, _ in codec.decode(reply).attributes} <= {80, 18, 33}
    assert handler.in_flight == 0


def test_reject_delay_is_jittered_and_counted_from_arrival(clock: Clock) -> None:
    """The delay is reject_delay * (1 + 0.25 * jitter), measured from arrival, so a slow
    decision does not lengthen it further."""
    engine = FakeEngine(now=clock.seconds, hold=True)
    handler = _handler(clock, engine)
    handler._jitter = lambda: 1.0
    wire = Wire(clock)
    t0 = clock.seconds()
    handler.datagram(access_request(password="wrong")[0], NAS, wire)
    clock.advance(0.5)
    engine.release()
    clock.advance(0.74)
    assert wire.sent == []
    clock.advance(0.01)
    assert wire.sent[0][0] == pytest.approx(t0 + 1.25)


def test_reject_delay_does_not_block_other_requests(clock: Clock, setup: Setup) -> None:
    """While a reject waits, an accept for another request goes out at once."""
    handler, _, wire, _ = setup
    handler.datagram(access_request(password="bad", identifier=1)[0], NAS, wire)
    handler.datagram(
        access_request(password=PASSWORD + totp(clock.seconds()), identifier=2)[0], NAS, wire
    )
    assert wire.codes() == [codec.ACCESS_ACCEPT]
    clock.advance(1.0)
    assert wire.codes() == [codec.ACCESS_ACCEPT, codec.ACCESS_REJECT]


def test_retransmit_gets_identical_reply_without_reevaluation(clock: Clock, setup: Setup) -> None:
    """Same source, id and authenticator: byte-identical reply, engine called once (the
    code is not consumed twice)."""
    handler, engine, wire, metrics = setup
    data, _ = access_request(password=PASSWORD + totp(clock.seconds()))
    handler.datagram(data, NAS, wire)
    clock.advance(3)
    handler.datagram(data, NAS, wire)
    assert len(engine.calls) == 1
    assert wire.sent[0][1] == wire.sent[1][1]
    assert (
        _metric(metrics, "authd_drops_total", frontend="radius", reason="duplicate_answered") == 1
    )


def test_duplicate_while_deciding_or_delayed_is_dropped(clock: Clock) -> None:
    """RFC 5080: a retransmit of a request in progress (deciding, or a reject waiting
    out its delay) is dropped; the one reply follows."""
    engine = FakeEngine(now=clock.seconds, hold=True)
    handler = _handler(clock, engine)
    wire = Wire(clock)
    data, _ = access_request(password="bad")
    handler.datagram(data, NAS, wire)
    handler.datagram(data, NAS, wire)
    engine.release()
    handler.datagram(data, NAS, wire)
    clock.advance(2)
    assert len(engine.calls) == 1 and wire.codes() == [codec.ACCESS_REJECT]


def test_same_id_from_another_port_is_a_new_request(clock: Clock, setup: Setup) -> None:
    """The key includes the source port: another port means another request."""
    handler, engine, wire, _ = setup
    data, _ = access_request(password="bad")
    handler.datagram(data, NAS, wire)
    handler.datagram(data, (NAS[0], NAS[1] + 1), wire)
    clock.advance(2)
    assert len(engine.calls) == 2


def test_duplicate_expires_after_window(clock: Clock, setup: Setup) -> None:
    """After duplicate_window the same datagram is evaluated again (and the fake
    refuses the replayed code)."""
    handler, engine, wire, _ = setup
    data, _ = access_request(password=PASSWORD + totp(clock.seconds()))
    handler.datagram(data, NAS, wire)
    clock.advance(31)
    handler.datagram(data, NAS, wire)
    clock.advance(2)
    assert len(engine.calls) == 2
    assert wire.codes() == [codec.ACCESS_ACCEPT, codec.ACCESS_REJECT]


def test_challenge_round_trip(clock: Clock) -> None:
    """challenge mode: password -> Access-Challenge with State and Reply-Message; the
    State and OTP then accept; the engine gets the OTP as `otp` with the State."""
    engine = FakeEngine(now=clock.seconds)
    handler = _handler(clock, engine, radius_config(client_config(otp_mode="challenge")))
    wire = Wire(clock)
    data, auth = access_request(password=PASSWORD, identifier=1)
    handler.datagram(data, NAS, wire)
    ch = codec.decode(wire.sent[0][1])
    assert ch.code == codec.ACCESS_CHALLENGE and codec.verify_reply(wire.sent[0][1], auth, KEY)
    state = ch.first(codec.STATE)
    assert state and ch.first(codec.REPLY_MESSAGE) == b"Enter your one-time code"
    data2, _ = access_request(password=totp(clock.seconds()), state=state, identifier=2)
    handler.datagram(data2, NAS, wire)
    assert wire.codes()[-1] == codec.ACCESS_ACCEPT
    assert engine.calls[1].otp == totp(clock.seconds()) and engine.calls[1].password == ""
    assert engine.calls[1].state == state


@pytest.mark.parametrize(
    "reason",
    [
        "unknown_client",
        "missing_message_authenticator",
        "bad_message_authenticator",
        "malformed_short",
    ],
)
def test_dropped_datagrams_get_no_reply_and_are_counted(clock: Clock, reason: str) -> None:
    """Unknown source, missing or wrong MA, malformed: no reply, no engine call, a count."""
    engine = FakeEngine(now=clock.seconds)
    metrics = Metrics()
    handler = _handler(clock, engine, metrics=metrics)
    wire = Wire(clock)
    src = NAS
    if reason == "unknown_client":
        data, _ = access_request()
        src = ("127.0.0.2", 1000)
    elif reason == "missing_message_authenticator":
        data, _ = access_request(message_authenticator=False)
    elif reason == "bad_message_authenticator":
        data, _ = access_request(secret="not-the-secret-0123456789")
    else:
        data = b"\x01\x02\x00"
    handler.datagram(data, src, wire)
    assert wire.sent == [] and engine.calls == []
    assert _metric(metrics, "authd_drops_total", frontend="radius", reason=reason) == 1


def test_missing_ma_accepted_when_client_opts_out(clock: Clock) -> None:
    """require_message_authenticator: false lets legacy clients in (still answered
    with MA first)."""
    engine = FakeEngine(now=clock.seconds)
    handler = _handler(
        clock, engine, radius_config(client_config(require_message_authenticator=False))
    )
    wire = Wire(clock)
    data, auth = access_request(
        password=PASSWORD + totp(clock.seconds()), message_authenticator=False
    )
    handler.datagram(data, NAS, wire)
    assert wire.codes() == [codec.ACCESS_ACCEPT]
    assert codec.decode(wire.sent[0][1]).attributes[0][0] == codec.MESSAGE_AUTHENTICATOR


def test_status_server_answered_without_auth_work(clock: Clock, setup: Setup) -> None:
    """RFC 5997: Status-Server with MA gets Access-Accept (MA first); without MA, nothing."""
    handler, engine, wire, _ = setup
    data, auth = access_request(code=codec.STATUS_SERVER)
    handler.datagram(data, NAS, wire)
    assert wire.codes() == [codec.ACCESS_ACCEPT] and engine.calls == []
    assert codec.verify_reply(wire.sent[0][1], auth, KEY)
    bare, _ = access_request(code=codec.STATUS_SERVER, message_authenticator=False)
    handler.datagram(bare, NAS, wire)
    assert len(wire.sent) == 1


def test_accounting_request_is_not_served(clock: Clock, setup: Setup) -> None:
    """A valid-looking code this listener does not serve is dropped and counted."""
    handler, engine, wire, metrics = setup
    handler.datagram(
        access_request(code=codec.ACCOUNTING_REQUEST, message_authenticator=False)[0], NAS, wire
    )
    assert (
        wire.sent == []
        and _metric(metrics, "authd_drops_total", frontend="radius", reason="unsupported_code") == 1
    )


@pytest.mark.parametrize("password", [b"\xff\xfe-not-utf8", b"pass\x00word", b""])
def test_undecodable_password_is_rejected_without_engine(
    clock: Clock, setup: Setup, password: bytes
) -> None:
    """Invalid UTF-8, NUL inside or an empty password: rejected locally (fail closed)."""
    handler, engine, wire, _ = setup
    handler.datagram(access_request(password=password)[0], NAS, wire)
    clock.advance(2)
    assert engine.calls == [] and wire.codes() == [codec.ACCESS_REJECT]


def test_engine_failure_rejects(clock: Clock) -> None:
    """An engine error fails closed: Access-Reject after the delay, and is counted."""
    engine = FakeEngine(now=clock.seconds, fail=True)
    handler = _handler(clock, engine)
    wire = Wire(clock)
    handler.datagram(access_request(password=PASSWORD + totp(clock.seconds()))[0], NAS, wire)
    clock.advance(2)
    assert wire.codes() == [codec.ACCESS_REJECT]


def test_challenge_without_state_fails_closed(clock: Clock) -> None:
    """A CHALLENGE decision without a State cannot be answered: reject instead."""
    handler = _handler(clock, FakeEngine(now=clock.seconds))

    def no_state(req: object) -> object:
        from twisted.internet.defer import succeed

        return succeed(Decision(Outcome.CHALLENGE, Reason.CHALLENGE_ISSUED, USER))

    handler._authenticate = no_state  # type: ignore[assignment]
    wire = Wire(clock)
    handler.datagram(access_request()[0], NAS, wire)
    clock.advance(2)
    assert wire.codes() == [codec.ACCESS_REJECT]


def test_drain_answers_delayed_rejects_and_pending_decisions(clock: Clock) -> None:
    """drain() sends waiting rejects at once and fires after the last decision."""
    engine = FakeEngine(now=clock.seconds, hold=True)
    handler = _handler(clock, engine)
    wire = Wire(clock)
    handler.datagram(access_request(password="bad", identifier=1)[0], NAS, wire)
    handler.datagram(access_request(password="bad", identifier=2)[0], NAS, wire)
    engine.release()
    handler.datagram(access_request(password="bad", identifier=3)[0], NAS, wire)
    done: list[object] = []
    handler.drain().addCallback(done.append)
    assert wire.codes() == [codec.ACCESS_REJECT] * 2 and done == []
    engine.release()
    assert wire.codes() == [codec.ACCESS_REJECT] * 3 and done == [None]
    assert handler.in_flight == 0


def test_secrets_never_reach_logs(clock: Clock, logged: Logged) -> None:
    """Across accepts, rejects, drops and engine errors, no log line holds the shared
    secret, the password or the code."""
    code = totp(clock.seconds())
    for engine in (FakeEngine(now=clock.seconds), FakeEngine(now=clock.seconds, fail=True)):
        handler = _handler(clock, engine)
        wire = Wire(clock)
        handler.datagram(access_request(password=PASSWORD + code)[0], NAS, wire)
        handler.datagram(access_request(secret="wrong-secret-0123456789")[0], NAS, wire)
        handler.datagram(b"\x01" * 30, NAS, wire)
        clock.advance(2)
    for secret in (SECRET, PASSWORD, code):
        assert secret not in logged.text
    assert logged.lines("authd.radius"), "the drops and the engine error were logged"


def test_screen_is_pure_and_reports_reasons() -> None:
    """screen() decides admission from bytes and the client table alone."""
    table = build_client_table(radius_config(), DICT)
    good, _ = access_request()
    assert isinstance(screen(good, "127.0.0.1", table), Admitted)
    assert screen(good, "10.9.9.9", table) == Dropped("unknown_client")
    assert screen(good[:-1], "127.0.0.1", table) == Dropped("malformed_length_mismatch")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=300))
def test_arbitrary_datagrams_never_raise_or_get_answers(clock: Clock, data: bytes) -> None:
    """Random bytes from a known client go through the whole handler: no exception,
    no engine call, no reply (they cannot carry a valid Message-Authenticator)."""
    engine = FakeEngine(now=clock.seconds)
    handler = _handler(clock, engine)
    wire = Wire(clock)
    handler.datagram(data, NAS, wire)
    assert wire.sent == [] and engine.calls == []


def test_packet_repr_hides_password_and_raw_bytes() -> None:
    """A Packet in a traceback shows code and id only, not the hidden password."""
    data, _ = access_request()
    text = repr(codec.decode(data))
    assert "User" not in text and "\\x" not in text and "raw" not in text


def test_engine_raising_synchronously_rejects_and_frees_the_request(clock: Clock) -> None:
    """An authenticate() that raises instead of returning a Deferred still yields a
    reject, and a later retransmit gets that reject (not silence)."""
    engine = FakeEngine(now=clock.seconds)
    handler = _handler(clock, engine)

    def broken(req: object) -> object:
        raise RuntimeError("bug")

    handler._authenticate = broken  # type: ignore[assignment]
    wire = Wire(clock)
    data, _ = access_request()
    handler.datagram(data, NAS, wire)
    clock.advance(2)
    handler.datagram(data, NAS, wire)
    assert wire.codes() == [codec.ACCESS_REJECT, codec.ACCESS_REJECT]
    assert wire.sent[0][1] == wire.sent[1][1]


class _FakeSocket:
    """Records sendto calls; `error` makes the next one fail like a full send buffer."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.error: OSError | None = None

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        if self.error is not None:
            raise self.error
        self.sent.append((data, addr))
        return len(data)


class _FakeTransport:
    """A port as Twisted's udp.Port looks to a protocol: `write`, and maybe `socket`."""

    def __init__(self, sock: _FakeSocket | None) -> None:
        if sock is not None:
            self.socket = sock
        self.written: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((data, addr))


@pytest.mark.parametrize("with_socket", [True, False])
def test_protocol_replies_through_the_socket_or_the_transport(
    clock: Clock, with_socket: bool
) -> None:
    """Replies go straight to the socket's sendto when the port exposes one, else through
    transport.write; a send error is logged, never raised into the reactor."""
    from authd.radius.protocol import RadiusProtocol

    engine = FakeEngine(now=clock.seconds)
    proto = RadiusProtocol(_handler(clock, engine))
    sock = _FakeSocket() if with_socket else None
    transport = _FakeTransport(sock)
    proto.makeConnection(transport)  # type: ignore[arg-type]
    data, auth = access_request(password=PASSWORD + totp(clock.seconds()))
    proto.datagramReceived(data, NAS)
    out = sock.sent if sock is not None else transport.written
    assert [a for _, a in out] == [NAS] and codec.verify_reply(out[0][0], auth, KEY)
    if sock is not None:
        assert transport.written == []
        sock.error = BlockingIOError(11, "Resource temporarily unavailable")
        data2, _ = access_request(password=PASSWORD + totp(clock.seconds() + 30), identifier=9)
        proto.datagramReceived(data2, NAS)  # does not raise
        assert len(sock.sent) == 1
    proto.doStop()
    proto.datagramReceived(data, NAS)  # after stop: the cached reply finds no socket
    assert len(out) == 1


def test_packet_and_reply_counts_are_exact_at_every_collection(clock: Clock, setup: Setup) -> None:
    """Counts kept in plain integers reach Prometheus before each collection, once: two
    scrapes in a row, and scrapes between packets, never double count or lag."""
    from prometheus_client import generate_latest

    handler, engine, wire, metrics = setup
    for i in range(3):
        data, _ = access_request(password=PASSWORD + totp(clock.seconds()), identifier=i)
        handler.datagram(data, NAS, wire)
        clock.advance(30)  # next TOTP step: each request is a fresh accept
        want = float(i + 1)
        assert _metric(metrics, "authd_radius_packets_total", code="Access-Request") == want
        assert _metric(metrics, "authd_radius_replies_total", code="Access-Accept") == want
    text = generate_latest(metrics.registry).decode()
    assert 'authd_radius_packets_total{code="Access-Request"} 3.0' in text
    assert _metric(metrics, "authd_radius_replies_total", code="Access-Accept") == 3.0


def _filled(total: int, **kw: object) -> tuple[bytes, bytes]:
    """An Access-Request of exactly `total` octets, the rest Proxy-States."""
    auth = bytes(16)
    base, _ = access_request(authenticator=auth, **kw)  # type: ignore[arg-type]
    room = total - len(base)
    states = []
    while room > 0:
        size = min(255, room) if room - min(255, room) not in (1, 2) else room - 3
        states.append(b"p" * (size - 2))
        room -= size
    data, _ = access_request(authenticator=auth, proxy_states=tuple(states), **kw)  # type: ignore[arg-type]
    assert len(data) == total
    return data, auth


def test_replies_to_a_full_size_request_fit_and_echo_every_proxy_state() -> None:
    """Against a 4096-octet request (22 octets of room): the reject's and the
    challenge's Reply-Message are trimmed to fit, every Proxy-State still comes back; a
    challenge whose State or an accept whose attributes cannot fit becomes a bare
    reject (RFC 2865 §3, §5.33)."""
    client = build_client_table(radius_config(client_config(reply_attributes=GROUP_REPLIES)), DICT)
    nas = client.match(NAS[0])
    assert nas is not None
    data, auth = _filled(codec.MAX_LENGTH, user="ab", password="123456")
    packet = codec.decode(data)
    long = "Authentication failed " * 20
    endings = [
        Decision(Outcome.REJECT, Reason.BAD_OTP, "ab", long),
        Decision(Outcome.CHALLENGE, Reason.CHALLENGE_ISSUED, "ab", long, state=b"s" * 16),
        Decision(Outcome.CHALLENGE, Reason.CHALLENGE_ISSUED, "ab", long, state=b"s" * 32),
        Decision(Outcome.ACCEPT, Reason.OK, "ab", groups=("vpn-users", "admins")),
    ]
    codes = []
    for decision in endings:
        code, reply = reply_for(decision, packet, nas, "Enter your one-time code")
        codes.append(code)
        assert len(reply) <= codec.MAX_LENGTH and codec.verify_reply(reply, auth, KEY)
        assert codec.decode(reply).all(codec.PROXY_STATE) == packet.all(codec.PROXY_STATE)
    assert codec.reply_room(packet) == 22
    assert codes == [codec.ACCESS_REJECT, codec.ACCESS_CHALLENGE] + [codec.ACCESS_REJECT] * 2


def test_request_whose_proxy_state_echo_cannot_fit_is_dropped_before_deciding(
    clock: Clock,
) -> None:
    """A legacy client's request (no MA) so full of Proxy-State that no reply can echo
    it within 4096 octets is dropped and counted up front, each retransmission too,
    and nothing reaches the engine or stays in the duplicate cache."""
    engine = FakeEngine(now=clock.seconds)
    metrics = Metrics()
    cfg = radius_config(client_config(require_message_authenticator=False))
    handler = _handler(clock, engine, cfg, metrics)
    wire = Wire(clock)
    data, _ = _filled(codec.MAX_LENGTH, code=codec.STATUS_SERVER, message_authenticator=False)
    request = bytearray(data)
    request[0] = codec.ACCESS_REQUEST  # no User-Password: a reject, were it answerable
    for _ in range(2):
        handler.datagram(bytes(request), NAS, wire)
    clock.advance(2)
    assert wire.sent == [] and engine.calls == [] and len(handler.dedup) == 0
    assert _metric(metrics, "authd_drops_total", frontend="radius", reason="reply_too_large") == 2


def test_decision_that_cannot_be_answered_is_never_decided_again(clock: Clock) -> None:
    """When building the reply fails after the decision was committed, the duplicate
    entry stays: retransmissions are dropped and counted, the engine sees one request."""
    engine = FakeEngine(now=clock.seconds)
    metrics = Metrics()
    handler = _handler(clock, engine, metrics=metrics)

    def unanswerable(req: AuthRequest) -> Deferred[Decision]:
        engine.calls.append(req)
        # a lone surrogate cannot be encoded: the Reply-Message, so the reply, fails
        return succeed(Decision(Outcome.ACCEPT, Reason.OK, USER, message="\ud800"))

    handler._authenticate = unanswerable
    wire = Wire(clock)
    data, _ = access_request(password=PASSWORD + totp(clock.seconds()))
    for _ in range(3):
        handler.datagram(data, NAS, wire)
    assert wire.sent == [] and len(engine.calls) == 1
    assert _metric(metrics, "authd_drops_total", frontend="radius", reason="internal_error") == 1
    assert (
        _metric(metrics, "authd_drops_total", frontend="radius", reason="duplicate_unanswered") == 2
    )
    clock.advance(31)  # past the duplicate window: the entry goes like any other
    handler.datagram(access_request(password="x")[0], NAS, wire)
    assert len(handler.dedup) == 1


def test_only_series_that_can_move_are_exported(setup: Setup) -> None:
    """A server receives requests and sends answers: no packets{code="Access-Accept"}
    or replies{code="Access-Request"} stuck at zero for ever."""
    _, _, _, metrics = setup
    series = {(s.name, s.labels.get("code")) for family in metrics.registry.collect()
              for s in family.samples if s.name.startswith("authd_radius_")}
    assert series == {
        ("authd_radius_packets_total", "Access-Request"),
        ("authd_radius_packets_total", "Status-Server"),
        ("authd_radius_replies_total", "Access-Accept"),
        ("authd_radius_replies_total", "Access-Reject"),
        ("authd_radius_replies_total", "Access-Challenge"),
    }
