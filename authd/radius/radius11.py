"""RADIUS/1.1 (RFC 9765): the RadSec profile without MD5, chosen by ALPN.

Inside a mutually authenticated TLS session the shared secret protects nothing, so
RADIUS/1.1 drops everything MD5 did: the 16-octet Authenticator becomes a 4-octet Token
(which matches a reply to its request) and 12 reserved octets, the Identifier becomes
reserved, User-Password travels as typed, and Message-Authenticator is not used. The
attribute format is unchanged, so `codec.decode` still parses the packet.
"""

from __future__ import annotations

from authd.radius import codec
from authd.radius.clients import Client
from authd.radius.protocol import Dialect, admit_code

# RFC 9765 §3.1: the ALPN protocol names
ALPN_1_0 = b"radius/1.0"
ALPN_1_1 = b"radius/1.1"

_RESERVED_2 = bytes(12)


def admit(data: bytes, client: Client) -> codec.Packet | str:
    """A RADIUS/1.1 request as the handler reads it, or the drop reason.

    The Identifier (Reserved-1) and Reserved-2 are ignored on receipt (RFC 9765 §4.1),
    so they are zeroed here: requests are told apart by their Token alone, which keeps
    the duplicate cache and the reply keyed on it.
    """
    try:
        packet = codec.decode(data)
    except codec.DecodeError as exc:
        return "malformed_" + exc.reason
    reason = admit_code(packet.code)
    if reason:
        return reason
    attributes = packet.attributes
    if packet.ma_offset >= 0:
        # RFC 9765 §5.2: a received Message-Authenticator is an invalid attribute
        # (RFC 6929 §2.8), ignored; the packet itself is processed.
        attributes = tuple(a for a in attributes if a[0] != codec.MESSAGE_AUTHENTICATOR)
    return codec.Packet(
        code=packet.code,
        identifier=0,
        authenticator=data[4:8] + _RESERVED_2,
        attributes=attributes,
        raw=data,
        proxy=packet.proxy,
    )


def encode_reply(
    code: int, request: codec.Packet, secret: codec.Keys, attributes: list[bytes]
) -> bytes:
    """A RADIUS/1.1 reply: Reserved-1 zero, the request's Token, Reserved-2 zero, then
    `attributes` and the request's Proxy-States (RFC 9765 §4.1). No Message-Authenticator
    and no Response Authenticator (§5.2): `secret` is not used."""
    tail = b"".join(attributes)
    if request.proxy:
        tail += b"".join(
            codec.attribute(codec.PROXY_STATE, v) for v in request.all(codec.PROXY_STATE)
        )
    length = codec.HEADER_LEN + len(tail)
    if length > codec.MAX_LENGTH:
        raise ValueError("reply longer than 4096 octets")
    return (
        bytes((code, 0))
        + length.to_bytes(2, "big")
        + request.authenticator[:4]
        + _RESERVED_2
        + tail
    )


RADIUS_1_1 = Dialect("radius/1.1", admit, encode_reply, True)
