"""RADIUS wire format: parse and check requests, encode replies (RFC 2865, 3579, 5997).

Pure functions on bytes, no I/O and no clock, so every packet rule is testable without
a reactor. The hot path parses the header and attributes by hand: pyrad's `Packet`
costs tens of microseconds per datagram, which is most of a request's budget. pyrad is
used only to read the dictionary file that names reply attributes (this is the only
module importing it).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from pyrad import tools as pyrad_tools
from pyrad.dictionary import Dictionary

# RFC 2865 §3 / RFC 5997 codes
ACCESS_REQUEST = 1
ACCESS_ACCEPT = 2
ACCESS_REJECT = 3
ACCOUNTING_REQUEST = 4
ACCOUNTING_RESPONSE = 5
ACCESS_CHALLENGE = 11
STATUS_SERVER = 12
STATUS_CLIENT = 13
# Codes a RADIUS peer may legitimately send (RFC 2865, 2866, 3576/5176, 5997); any
# other code is a malformed packet, these are merely not served here.
KNOWN_CODES = frozenset({1, 2, 3, 4, 5, 11, 12, 13, 40, 41, 42, 43, 44, 45})
SERVED_CODES = frozenset({ACCESS_REQUEST, STATUS_SERVER})

# attribute types
USER_NAME = 1
USER_PASSWORD = 2
REPLY_MESSAGE = 18
STATE = 24
VENDOR_SPECIFIC = 26
PROXY_STATE = 33
PROMPT = 76  # RFC 2869 §5.10
MESSAGE_AUTHENTICATOR = 80

HEADER_LEN = 20
MIN_LENGTH = 20
MAX_LENGTH = 4096  # RFC 2865 §3
MAX_ATTRIBUTES = 200
MAX_ATTR_VALUE = 253
_ZERO16 = bytes(16)
_MA_HEAD = bytes((MESSAGE_AUTHENTICATOR, 18))
_MA_ZEROED = _MA_HEAD + _ZERO16


class DecodeError(Exception):
    """A datagram that breaks a packet rule; `reason` is a short metric label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)  # not frozen: a frozen __init__ costs ~1 µs per packet
class Packet:
    """A parsed request: header fields, attributes in wire order, and where the
    Message-Authenticator value sits (an offset into `raw`, -1 when absent).

    The repr leaves out attributes and raw bytes: the hidden User-Password with the
    authenticators is enough for an offline search for the shared secret.
    """

    code: int
    identifier: int
    authenticator: bytes = field(repr=False)
    attributes: tuple[tuple[int, bytes], ...] = field(repr=False)
    raw: bytes = field(repr=False)
    ma_offset: int = -1
    proxy: bool = False  # any Proxy-State (saves a scan when encoding the reply)

    def first(self, attr_type: int) -> bytes | None:
        """The first value of `attr_type`, or None."""
        for t, v in self.attributes:
            if t == attr_type:
                return v
        return None

    def all(self, attr_type: int) -> list[bytes]:
        """Every value of `attr_type`, in order (Proxy-State must be echoed so)."""
        return [v for t, v in self.attributes if t == attr_type]


def decode(datagram: bytes) -> Packet:
    """Parse and validate a datagram; raises DecodeError on any malformation.

    Never raises anything else, whatever the bytes (a Hypothesis test holds it to that).
    """
    n = len(datagram)
    if n < MIN_LENGTH:
        raise DecodeError("short")
    code = datagram[0]
    length = (datagram[2] << 8) | datagram[3]
    if length < MIN_LENGTH or length > MAX_LENGTH:
        raise DecodeError("bad_length")
    # RFC 2865 §3 allows padding past Length to be ignored; we are stricter on purpose
    # (the packet rules): a datagram whose size differs from Length is dropped.
    if length != n:
        raise DecodeError("length_mismatch")
    if code not in KNOWN_CODES:
        raise DecodeError("unknown_code")
    attrs: list[tuple[int, bytes]] = []
    ma_offset = -1
    proxy = False
    pos = HEADER_LEN
    while pos < length:
        if len(attrs) >= MAX_ATTRIBUTES:
            raise DecodeError("too_many_attributes")
        if pos + 2 > length:
            raise DecodeError("attribute_truncated")
        a_type = datagram[pos]
        a_len = datagram[pos + 1]
        if a_len < 2:
            raise DecodeError("attribute_length")
        end = pos + a_len
        if end > length:
            raise DecodeError("attribute_truncated")
        if a_type == MESSAGE_AUTHENTICATOR:
            # RFC 3579 §3.2: exactly 16 octets; two of them is not a valid packet.
            if a_len != 18:
                raise DecodeError("bad_message_authenticator")
            if ma_offset >= 0:
                raise DecodeError("duplicate_message_authenticator")
            ma_offset = pos + 2
        elif a_type == PROXY_STATE:
            proxy = True
        attrs.append((a_type, datagram[pos + 2 : end]))
        pos = end
    return Packet(
        code=code,
        identifier=datagram[1],
        authenticator=datagram[4:20],
        attributes=tuple(attrs),
        raw=datagram,
        ma_offset=ma_offset,
        proxy=proxy,
    )


class Keys:
    """One shared secret keyed once for the hot path (per client, per reload).

    HMAC-MD5 is computed from pre-keyed inner and outer MD5 states (RFC 2104), and the
    User-Password pad from a pre-fed MD5 state: copying a keyed state costs about half
    of keying from the secret on every packet. The repr never shows the secret.
    """

    __slots__ = ("secret", "_inner", "_outer", "_pad")

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        # RFC 2104 §2: a key longer than the block is hashed first, then zero-padded.
        key = hashlib.md5(secret, usedforsecurity=False).digest() if len(secret) > 64 else secret
        key = key.ljust(64, b"\x00")
        self._inner = hashlib.md5(bytes(b ^ 0x36 for b in key), usedforsecurity=False)
        self._outer = hashlib.md5(bytes(b ^ 0x5C for b in key), usedforsecurity=False)
        self._pad = hashlib.md5(secret, usedforsecurity=False)

    def __repr__(self) -> str:
        return "Keys(<secret hidden>)"

    def hmac_md5(self, message: bytes) -> bytes:
        """HMAC-MD5(secret, message), equal to hmac.digest(secret, message, "md5")."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def pad(self, previous: bytes) -> bytes:
        """MD5(secret + previous): one RFC 2865 §5.2 keystream block."""
        h = self._pad.copy()
        h.update(previous)
        return h.digest()


def as_keys(secret: bytes | Keys) -> Keys:
    """Callers outside the hot path (tests, tools) may pass the raw secret."""
    return secret if isinstance(secret, Keys) else Keys(secret)


def verify_message_authenticator(packet: Packet, secret: bytes | Keys) -> bool:
    """RFC 3579 §3.2 HMAC-MD5 over the packet with the MA value zeroed, compared in
    constant time. False when the packet has no Message-Authenticator."""
    off = packet.ma_offset
    if off < 0:
        return False
    raw = packet.raw
    expected = as_keys(secret).hmac_md5(raw[:off] + _ZERO16 + raw[off + 16 :])
    return hmac.compare_digest(expected, raw[off : off + 16])


def decode_password(hidden: bytes, secret: bytes | Keys, authenticator: bytes) -> bytes:
    """RFC 2865 §5.2 User-Password on raw bytes; trailing NUL padding removed.

    Raises DecodeError unless the value is 16-128 octets in 16-octet blocks.
    """
    n = len(hidden)
    if n < 16 or n > 128 or n % 16:
        raise DecodeError("bad_password_length")
    keys = as_keys(secret)
    if n == 16:  # the common case: one block, no join
        plain = int.from_bytes(hidden, "big") ^ int.from_bytes(keys.pad(authenticator), "big")
        return plain.to_bytes(16, "big").rstrip(b"\x00")
    out = []
    prev = authenticator
    for i in range(0, n, 16):
        block = hidden[i : i + 16]
        plain = int.from_bytes(block, "big") ^ int.from_bytes(keys.pad(prev), "big")
        out.append(plain.to_bytes(16, "big"))
        prev = block
    return b"".join(out).rstrip(b"\x00")


def encode_password(password: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """The client side of RFC 2865 §5.2 (tests and the benchmark's load generator)."""
    if len(password) > 128:
        raise ValueError("password longer than 128 octets")
    padded = password + b"\x00" * (-len(password) % 16 or (16 if not password else 0))
    out = bytearray()
    prev = authenticator
    for i in range(0, len(padded), 16):
        b = hashlib.md5(secret + prev, usedforsecurity=False).digest()
        block = bytes(x ^ y for x, y in zip(padded[i : i + 16], b, strict=True))
        out += block
        prev = block
    return bytes(out)


def attribute(attr_type: int, value: bytes) -> bytes:
    """One TLV; raises ValueError when the value does not fit (callers split first)."""
    if len(value) > MAX_ATTR_VALUE:
        raise ValueError("attribute value longer than 253 octets")
    return bytes((attr_type, len(value) + 2)) + value


def vendor_attribute(vendor_id: int, vendor_type: int, value: bytes) -> bytes:
    """RFC 2865 §5.26 Vendor-Specific with one RFC-format sub-attribute."""
    if len(value) > MAX_ATTR_VALUE - 6:
        raise ValueError("vendor attribute value longer than 247 octets")
    inner = vendor_id.to_bytes(4, "big") + bytes((vendor_type, len(value) + 2)) + value
    return bytes((VENDOR_SPECIFIC, len(inner) + 2)) + inner


def text_attributes(attr_type: int, text: str) -> list[bytes]:
    """A text split over as many attributes as it needs (Reply-Message, RFC 2865 §5.18)."""
    data = text.encode("utf-8")
    return [
        attribute(attr_type, data[i : i + MAX_ATTR_VALUE])
        for i in range(0, len(data), MAX_ATTR_VALUE)
    ]


def reply_room(request: Packet) -> int:
    """Octets a reply to `request` has left for its own attributes once the header,
    Message-Authenticator and the echoed Proxy-States are counted (RFC 2865 §3: a
    packet is at most 4096 octets; §5.33: every Proxy-State comes back unmodified).
    Negative when not even that minimal reply can be sent."""
    room = MAX_LENGTH - HEADER_LEN - 18
    if request.proxy:
        for a_type, value in request.attributes:
            if a_type == PROXY_STATE:
                room -= len(value) + 2
    return room


def fitted_text_attributes(attr_type: int, text: str, room: int) -> list[bytes]:
    """`text_attributes` for as much of `text` as fits in `room` octets of TLVs, cut at
    a character boundary (a Reply-Message is informational: it gives way first)."""
    data = text.encode("utf-8")
    n = len(data)
    if n <= MAX_ATTR_VALUE and n + 2 <= room:  # the common case: one attribute, room left
        return [bytes((attr_type, n + 2)) + data] if n else []
    full, rest = divmod(max(0, room), MAX_ATTR_VALUE + 2)
    fits = full * MAX_ATTR_VALUE + max(0, rest - 2)
    if n > fits:
        data = data[:fits].decode("utf-8", "ignore").encode("utf-8")  # no half character
    step = MAX_ATTR_VALUE
    return [attribute(attr_type, data[i : i + step]) for i in range(0, len(data), step)]


def encode_reply(
    code: int,
    request: Packet,
    secret: bytes | Keys,
    attributes: Iterable[bytes] = (),
) -> bytes:
    """A reply to `request`: Message-Authenticator first, then `attributes` (already
    encoded TLVs), then the request's Proxy-States in order; Response Authenticator last.

    RFC 3579 §3.2: the MA of a reply is computed with the Request Authenticator in the
    header; RFC 2865 §3: the Response Authenticator covers the final attributes.
    """
    keys = as_keys(secret)
    tail = b"".join(attributes)
    if request.proxy:
        tail += b"".join(attribute(PROXY_STATE, v) for v in request.all(PROXY_STATE))
    length = HEADER_LEN + 18 + len(tail)
    if length > MAX_LENGTH:
        raise ValueError("reply longer than 4096 octets")
    head = bytes((code, request.identifier)) + length.to_bytes(2, "big")
    ma = keys.hmac_md5(head + request.authenticator + _MA_ZEROED + tail)
    attrs = _MA_HEAD + ma + tail
    response_auth = hashlib.md5(
        head + request.authenticator + attrs + keys.secret, usedforsecurity=False
    ).digest()
    return head + response_auth + attrs


def encode_request(
    code: int,
    identifier: int,
    authenticator: bytes,
    secret: bytes,
    attributes: Sequence[tuple[int, bytes]],
    *,
    message_authenticator: bool = True,
) -> bytes:
    """A client request (tests, benchmark): attributes in order, MA appended and signed."""
    body = b"".join(attribute(t, v) for t, v in attributes)
    extra = 18 if message_authenticator else 0
    length = HEADER_LEN + len(body) + extra
    head = bytes((code, identifier)) + length.to_bytes(2, "big") + authenticator
    if not message_authenticator:
        return head + body
    ma = hmac.digest(secret, head + body + b"\x50\x12" + _ZERO16, "md5")
    return head + body + b"\x50\x12" + ma


def verify_reply(reply: bytes, request_authenticator: bytes, secret: bytes) -> bool:
    """Check a reply's Response Authenticator and Message-Authenticator (client side)."""
    pkt = decode(reply)
    expect = hashlib.md5(
        reply[:4] + request_authenticator + reply[20:] + secret, usedforsecurity=False
    ).digest()
    if not hmac.compare_digest(expect, reply[4:20]):
        return False
    if pkt.ma_offset < 0:
        return False
    off = pkt.ma_offset
    zeroed = reply[:4] + request_authenticator + reply[20:off] + _ZERO16 + reply[off + 16 :]
    return hmac.compare_digest(hmac.digest(secret, zeroed, "md5"), reply[off : off + 16])


# ---------------------------------------------------------------- dictionary
@dataclass(frozen=True, slots=True)
class AttributeDef:
    """A dictionary entry as reply building needs it."""

    name: str
    vendor_id: int
    code: int
    type: str

    def encode(self, value: str) -> bytes:
        """The attribute's TLV for a textual config value; ValueError if it cannot be."""
        try:
            data = pyrad_tools.EncodeAttr(self.type, value)
        except (TypeError, ValueError, OSError) as exc:
            raise ValueError(f"{self.name}: cannot encode value as {self.type}") from exc
        if isinstance(data, str):
            data = data.encode("utf-8")
        if self.vendor_id:
            return vendor_attribute(self.vendor_id, self.code, data)
        return attribute(self.code, data)


def shipped_dictionary_text() -> str:
    """The curated dictionary, package data read through the import system: wheels,
    `--user` and editable installs find it alike (conf/dictionary links to it)."""
    return resources.files("authd.radius").joinpath("dictionary").read_text(encoding="utf-8")


class RadiusDictionary:
    """Attribute names from a FreeRADIUS-format dictionary file, read once."""

    def __init__(self, path: str | os.PathLike[str] = "") -> None:
        if path:
            if not Path(path).is_file():
                raise FileNotFoundError(f"RADIUS dictionary not found: {path}")
            self._dict = Dictionary(str(path))
        else:
            self._dict = Dictionary(io.StringIO(shipped_dictionary_text()))

    def get(self, name: str) -> AttributeDef | None:
        """The named attribute, or None when the dictionary lacks it (or pyrad skipped it)."""
        if name not in self._dict:
            return None
        a = self._dict[name]
        if a.is_sub_attribute or a.type in ("tlv",):
            return None
        vendor_id = int(self._dict.vendors.GetForward(a.vendor)) if a.vendor else 0
        return AttributeDef(name=a.name, vendor_id=vendor_id, code=int(a.code), type=a.type)
