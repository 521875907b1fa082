"""The listener over the real Engine and SqlStore (SQLite and PostgreSQL), time injected
with a Clock: replay, challenge States (reuse, alteration, expiry, another client),
retransmits and group reply attributes, all without a socket or a sleep."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from authd.config.model import RadiusConfig
from authd.metrics import Metrics
from authd.radius import codec
from authd.radius.clients import build_client_table
from authd.radius.protocol import RadiusHandler, Settings
from tests.fixtures.radius import (
    GROUP_REPLIES,
    OTHER_SECRET,
    PASSWORD,
    SECRET,
    access_request,
    add_local_user,
    client_config,
    radius_config,
    real_authenticate,
    totp,
)

KEY = SECRET.encode()
INLINE = ("127.0.0.1", 40000)
CHALLENGE = ("127.0.0.2", 40000)
OTHER = ("127.0.0.3", 40000)
OTP_ONLY = ("127.0.0.4", 40000)
AUTO = ("127.0.0.5", 40000)


class Wire:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def __call__(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append(data)


@pytest.fixture
def world(store: Any, keyring: Any, clock: Clock) -> Any:
    """alice (password + TOTP, groups vpn-users/admins) on four clients: inline,
    challenge, another challenge client, and OTP-only."""
    add_local_user(store, "alice", PASSWORD)
    cfg: RadiusConfig = radius_config(
        client_config("inline", "127.0.0.1", reply_attributes=GROUP_REPLIES),
        client_config("chal", "127.0.0.2", otp_mode="challenge"),
        client_config("other", "127.0.0.3", OTHER_SECRET, otp_mode="challenge"),
        client_config("otp-only", "127.0.0.4", first_factor="none"),
        client_config("auto", "127.0.0.5", otp_mode="auto"),
        challenge_ttl=120.0,
    )
    settings = Settings(clients=build_client_table(cfg, codec.RadiusDictionary()), reject_delay=0.5)
    handler = RadiusHandler(
        settings,
        real_authenticate(store, keyring, cfg, clock.seconds),
        clock,
        Metrics(),
        jitter=lambda: 0.0,
    )
    return handler


def _ask(
    handler: RadiusHandler, clock: Clock, src: tuple[str, int], secret: str = SECRET, **kw: Any
) -> codec.Packet:
    wire = Wire()
    data, auth = access_request(secret=secret, **kw)
    handler.datagram(data, src, wire)
    clock.advance(1)  # past any reject delay
    assert len(wire.sent) == 1, "exactly one reply"
    assert codec.verify_reply(wire.sent[0], auth, secret.encode())
    return codec.decode(wire.sent[0])


def test_inline_accept_then_replay_rejected(world: RadiusHandler, clock: Clock, store: Any) -> None:
    """password+TOTP accepts with the mapped group attributes; the same code again (new
    request) is a replay and is rejected; the audit trail records both."""
    code = totp(clock.seconds())
    ok = _ask(world, clock, INLINE, password=PASSWORD + code, identifier=1)
    assert ok.code == codec.ACCESS_ACCEPT
    assert ok.first(25) == b"vpn" and ok.first(11) == b"admin-acl"
    again = _ask(world, clock, INLINE, password=PASSWORD + code, identifier=2)
    assert again.code == codec.ACCESS_REJECT
    assert {t for t, _ in again.attributes} <= {80, 18, 33}
    results = [e.result for e in store.query_audit(user="alice")]
    assert results == ["reject", "accept"]


def test_wrong_code_and_wrong_password_look_the_same(world: RadiusHandler, clock: Clock) -> None:
    """Wrong OTP and wrong password give byte-for-byte the same kind of reject."""
    a = _ask(world, clock, INLINE, password=PASSWORD + "000000", identifier=1)
    b = _ask(world, clock, INLINE, password="wrong" + totp(clock.seconds()), identifier=2)
    c = _ask(world, clock, INLINE, user="nobody", password="x" + "123456", identifier=3)
    assert a.code == b.code == c.code == codec.ACCESS_REJECT
    assert a.attributes[1:] == b.attributes[1:] == c.attributes[1:]


def test_retransmit_does_not_consume_the_code_twice(
    world: RadiusHandler, clock: Clock, store: Any
) -> None:
    """A retransmitted accept gets the identical bytes and only one audit record."""
    data, _ = access_request(password=PASSWORD + totp(clock.seconds()))
    wire = Wire()
    world.datagram(data, INLINE, wire)
    clock.advance(2)
    world.datagram(data, INLINE, wire)
    assert len(wire.sent) == 2 and wire.sent[0] == wire.sent[1]
    assert codec.decode(wire.sent[0]).code == codec.ACCESS_ACCEPT
    assert len(store.query_audit(user="alice")) == 1


def _challenge(handler: RadiusHandler, clock: Clock) -> bytes:
    ch = _ask(handler, clock, CHALLENGE, password=PASSWORD, identifier=1)
    assert ch.code == codec.ACCESS_CHALLENGE
    state = ch.first(codec.STATE)
    assert state is not None and len(state) >= 16  # >= 128 bits
    assert ch.first(codec.REPLY_MESSAGE)
    return state


def test_challenge_round_trip_and_state_reuse(world: RadiusHandler, clock: Clock) -> None:
    """Password -> Challenge; State + OTP -> Accept; the same State again -> Reject."""
    state = _challenge(world, clock)
    ok = _ask(world, clock, CHALLENGE, password=totp(clock.seconds()), state=state, identifier=2)
    assert ok.code == codec.ACCESS_ACCEPT
    clock.advance(30)
    reuse = _ask(world, clock, CHALLENGE, password=totp(clock.seconds()), state=state, identifier=3)
    assert reuse.code == codec.ACCESS_REJECT


def test_altered_state_is_rejected(world: RadiusHandler, clock: Clock) -> None:
    """A State with one bit flipped is unknown: rejected even with the right code."""
    state = bytearray(_challenge(world, clock))
    state[0] ^= 1
    r = _ask(
        world, clock, CHALLENGE, password=totp(clock.seconds()), state=bytes(state), identifier=2
    )
    assert r.code == codec.ACCESS_REJECT


def test_expired_state_is_rejected(world: RadiusHandler, clock: Clock) -> None:
    """Past challenge_ttl (clock advanced, not slept) the State no longer works."""
    state = _challenge(world, clock)
    clock.advance(121)
    r = _ask(world, clock, CHALLENGE, password=totp(clock.seconds()), state=state, identifier=2)
    assert r.code == codec.ACCESS_REJECT


def test_state_from_another_client_is_rejected(world: RadiusHandler, clock: Clock) -> None:
    """A State issued to one client, answered from another, is rejected."""
    state = _challenge(world, clock)
    r = _ask(
        world, clock, OTHER, OTHER_SECRET, password=totp(clock.seconds()), state=state, identifier=2
    )
    assert r.code == codec.ACCESS_REJECT


def test_otp_only_client(world: RadiusHandler, clock: Clock) -> None:
    """first_factor none: User-Password is just the OTP; a password+OTP is refused."""
    bad = _ask(world, clock, OTP_ONLY, password=PASSWORD + totp(clock.seconds()), identifier=1)
    assert bad.code == codec.ACCESS_REJECT
    ok = _ask(world, clock, OTP_ONLY, password=totp(clock.seconds()), identifier=2)
    assert ok.code == codec.ACCESS_ACCEPT


def test_auto_mode_inline_or_challenge(world: RadiusHandler, clock: Clock) -> None:
    """auto: password+code accepts inline; the password alone gets a challenge whose
    State then accepts the code."""
    ok = _ask(world, clock, AUTO, password=PASSWORD + totp(clock.seconds()), identifier=1)
    assert ok.code == codec.ACCESS_ACCEPT
    clock.advance(30)
    ch = _ask(world, clock, AUTO, password=PASSWORD, identifier=2)
    assert ch.code == codec.ACCESS_CHALLENGE
    state = ch.first(codec.STATE)
    done = _ask(world, clock, AUTO, password=totp(clock.seconds()), state=state, identifier=3)
    assert done.code == codec.ACCESS_ACCEPT
