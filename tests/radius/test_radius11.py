"""The RADIUS/1.1 codec differences (RFC 9765): Token in, Token out, no MD5 anywhere."""

from __future__ import annotations

from authd.config.model import RadiusClient, RadiusConfig, Secret
from authd.radius import codec, radius11
from authd.radius.clients import build_client
from tests.fixtures.radsec import radius11_request

CLIENT = build_client(
    RadiusClient(name="t", address="0.0.0.0/0", secret=Secret("radsec")),
    RadiusConfig(),
    codec.RadiusDictionary(),
)
TOKEN = b"\xde\xad\xbe\xef"


def test_admit_keys_on_the_token_and_ignores_reserved_fields() -> None:
    """Identifier and Reserved-2 are ignored on receipt: two requests differing only
    there look the same to the duplicate cache."""
    a = radius11_request(TOKEN, [(codec.USER_NAME, b"u")], identifier=9)
    b = bytearray(a)
    b[12] = 0x55
    pa, pb = radius11.admit(a, CLIENT), radius11.admit(bytes(b), CLIENT)
    assert isinstance(pa, codec.Packet) and isinstance(pb, codec.Packet)
    assert (pa.identifier, pa.authenticator) == (pb.identifier, pb.authenticator)
    assert pa.authenticator[:4] == TOKEN


def test_message_authenticator_is_ignored_not_checked() -> None:
    """RFC 9765 §5.2: a received Message-Authenticator is an invalid attribute,
    dropped from the packet; the request itself is still served."""
    req = radius11_request(
        TOKEN, [(codec.USER_NAME, b"u"), (codec.MESSAGE_AUTHENTICATOR, bytes(16))]
    )
    packet = radius11.admit(req, CLIENT)
    assert isinstance(packet, codec.Packet)
    assert [t for t, _ in packet.attributes] == [codec.USER_NAME]


def test_unserved_codes_and_garbage_are_dropped() -> None:
    """Accounting is not served; a broken packet gives a malformed_ reason."""
    assert radius11.admit(radius11_request(TOKEN, [], code=4), CLIENT) == "unsupported_code"
    assert str(radius11.admit(b"\x01\x00\x00\x10", CLIENT)).startswith("malformed_")


def test_reply_echoes_token_and_proxy_state_without_authenticators() -> None:
    """The reply's header is code, zero, length, Token, twelve zero octets; Proxy-State
    is echoed; there is no Message-Authenticator."""
    req = radius11_request(TOKEN, [(codec.USER_NAME, b"u"), (codec.PROXY_STATE, b"ps1")])
    packet = radius11.admit(req, CLIENT)
    assert isinstance(packet, codec.Packet)
    reply = radius11.encode_reply(
        codec.ACCESS_ACCEPT, packet, CLIENT.keys, [codec.attribute(18, b"hi")]
    )
    assert reply[:2] == bytes((codec.ACCESS_ACCEPT, 0))
    assert reply[4:20] == TOKEN + bytes(12)
    decoded = codec.decode(reply)
    assert decoded.attributes == ((18, b"hi"), (codec.PROXY_STATE, b"ps1"))
    assert decoded.ma_offset == -1
