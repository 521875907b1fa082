"""Packet rules of the codec, checked on bytes (and against pyrad where it helps)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyrad import packet as pyrad_packet
from pyrad.dictionary import Dictionary

from authd.radius import codec
from tests.fixtures.radius import SECRET, access_request

KEY = SECRET.encode()


def _raw(code: int, attrs: bytes, length: int | None = None) -> bytes:
    n = 20 + len(attrs) if length is None else length
    return bytes((code, 1)) + n.to_bytes(2, "big") + bytes(16) + attrs


def test_decode_reads_header_and_attributes_in_order() -> None:
    """A well-formed request yields its code, id, authenticator and attributes in order."""
    data, auth = access_request(proxy_states=(b"p1", b"p2"), identifier=42)
    pkt = codec.decode(data)
    assert (pkt.code, pkt.identifier, pkt.authenticator) == (1, 42, auth)
    assert pkt.first(codec.USER_NAME) == b"alice"
    assert pkt.all(codec.PROXY_STATE) == [b"p1", b"p2"]
    assert pkt.ma_offset == len(data) - 16


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x01\x01\x00\x14" + bytes(10), "short"),
        (_raw(1, b"", length=19), "bad_length"),
        (_raw(1, b"", length=4097), "bad_length"),
        (_raw(1, b"\x01\x03a", length=22), "length_mismatch"),
        (_raw(1, b"", length=30), "length_mismatch"),
        (_raw(99, b""), "unknown_code"),
        (_raw(1, b"\x01\x00"), "attribute_length"),
        (_raw(1, b"\x01\x01"), "attribute_length"),
        (_raw(1, b"\x01\x09abc"), "attribute_truncated"),
        (_raw(1, b"\x01"), "attribute_truncated"),
        (_raw(1, b"\x01\x02" * 201), "too_many_attributes"),
        (_raw(1, b"\x50\x05abc"), "bad_message_authenticator"),
        (_raw(1, (b"\x50\x12" + bytes(16)) * 2), "duplicate_message_authenticator"),
    ],
)
def test_malformed_datagrams_raise_decode_error_with_reason(data: bytes, reason: str) -> None:
    """Each malformation named by the issue is refused with its own metric reason."""
    with pytest.raises(codec.DecodeError) as err:
        codec.decode(data)
    assert err.value.reason == reason


def test_two_hundred_attributes_are_allowed() -> None:
    """Exactly 200 attributes is the limit, not a violation."""
    assert len(codec.decode(_raw(1, b"\x01\x02" * 200)).attributes) == 200


def test_unknown_attributes_are_kept_not_fatal() -> None:
    """An attribute type authd does not know is carried along, never a decode error."""
    pkt = codec.decode(_raw(1, b"\xf0\x04ab\x01\x03x"))
    assert pkt.attributes == ((0xF0, b"ab"), (1, b"x"))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_only_ever_raise_decode_error(data: bytes) -> None:
    """Whatever arrives, decode either parses it or raises DecodeError."""
    with contextlib.suppress(codec.DecodeError):
        codec.decode(data)


@settings(max_examples=400, deadline=None)
@given(
    code=st.integers(0, 255),
    attrs=st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=30),
    cut=st.integers(0, 40),
    length_delta=st.integers(-3, 3),
)
def test_near_valid_packets_only_ever_raise_decode_error(
    code: int, attrs: list[tuple[int, bytes]], cut: int, length_delta: int
) -> None:
    """Structured packets with a wrong length field or a cut tail never crash the parser,
    and any packet it accepts has a consistent length."""
    body = b"".join(bytes((t, len(v) + 2)) + v for t, v in attrs)
    data = _raw(code, body, length=20 + len(body) + length_delta)
    data = data[: len(data) - cut] if cut < len(data) else data
    try:
        pkt = codec.decode(data)
    except codec.DecodeError:
        return
    assert 20 + sum(len(v) + 2 for _, v in pkt.attributes) == len(data)


def test_message_authenticator_verifies_and_detects_tampering() -> None:
    """A correct MA verifies; a flipped bit anywhere, or the wrong secret, fails."""
    data, _ = access_request()
    assert codec.verify_message_authenticator(codec.decode(data), KEY)
    assert not codec.verify_message_authenticator(codec.decode(data), b"wrong")
    tampered = bytearray(data)
    tampered[22] ^= 1  # inside User-Name
    assert not codec.verify_message_authenticator(codec.decode(bytes(tampered)), KEY)


def test_message_authenticator_verified_wherever_it_sits() -> None:
    """MA placed first (not last) is found and verified all the same."""
    auth = os.urandom(16)
    body = b"\x01\x07alice"
    head = bytes((1, 3)) + (20 + 18 + len(body)).to_bytes(2, "big") + auth
    ma = hmac.digest(KEY, head + b"\x50\x12" + bytes(16) + body, "md5")
    data = head + b"\x50\x12" + ma + body
    assert codec.verify_message_authenticator(codec.decode(data), KEY)


def test_missing_message_authenticator_does_not_verify() -> None:
    """No MA is never a valid MA."""
    data, _ = access_request(message_authenticator=False)
    assert not codec.verify_message_authenticator(codec.decode(data), KEY)


@pytest.mark.parametrize("size", [1, 15, 16, 17, 31, 32, 127, 128])
def test_password_round_trips_on_raw_bytes(size: int) -> None:
    """RFC 2865 §5.2 hiding and unhiding agree for every block boundary up to 128."""
    password = bytes((i % 94) + 33 for i in range(size))
    auth = os.urandom(16)
    hidden = codec.encode_password(password, KEY, auth)
    assert len(hidden) % 16 == 0
    assert codec.decode_password(hidden, KEY, auth) == password


def test_password_matches_pyrads_encoding() -> None:
    """Our decoder reads what pyrad's (independent) PwCrypt writes, non-ASCII included."""
    d = Dictionary(io.StringIO(codec.shipped_dictionary_text()))
    pkt = pyrad_packet.AuthPacket(secret=KEY, dict=d)
    for pw in ("pässwörd-123456", "x" * 128, "a" * 16):
        hidden = pkt.PwCrypt(pw)
        assert codec.decode_password(hidden, KEY, pkt.authenticator) == pw.encode()


@pytest.mark.parametrize("size", [0, 15, 17, 144])
def test_password_of_bad_length_is_refused(size: int) -> None:
    """Hidden passwords must be 16-128 octets in whole blocks."""
    with pytest.raises(codec.DecodeError):
        codec.decode_password(bytes(size), KEY, bytes(16))


def test_reply_has_message_authenticator_first_and_valid_authenticators() -> None:
    """Replies start with MA, echo Proxy-State in order, and both authenticators check
    out (verified by our client-side check and by pyrad's VerifyReply)."""
    data, auth = access_request(proxy_states=(b"one", b"two"))
    req = codec.decode(data)
    reply = codec.encode_reply(
        codec.ACCESS_ACCEPT, req, KEY, [codec.attribute(codec.REPLY_MESSAGE, b"hi")]
    )
    parsed = codec.decode(reply)
    assert parsed.attributes[0][0] == codec.MESSAGE_AUTHENTICATOR
    assert [t for t, _ in parsed.attributes] == [80, 18, 33, 33]
    assert parsed.all(codec.PROXY_STATE) == [b"one", b"two"]
    assert parsed.identifier == req.identifier
    assert codec.verify_reply(reply, auth, KEY)
    d = Dictionary(io.StringIO(codec.shipped_dictionary_text()))
    pyreq = pyrad_packet.AuthPacket(id=req.identifier, secret=KEY, authenticator=auth, dict=d)
    pyreq.AddAttribute("Proxy-State", b"one")
    pyreq.AddAttribute("Proxy-State", b"two")
    assert pyreq.VerifyReply(pyrad_packet.Packet(packet=reply, secret=KEY, dict=d), reply)
    assert not codec.verify_reply(reply, auth, b"wrong")


def test_reply_message_authenticator_uses_request_authenticator() -> None:
    """RFC 3579 §3.2: the reply MA is an HMAC over the reply with the Request
    Authenticator in place of the Response Authenticator."""
    data, auth = access_request()
    reply = codec.encode_reply(codec.ACCESS_REJECT, codec.decode(data), KEY)
    signed = reply[:4] + auth + reply[20:22] + bytes(16) + reply[38:]
    assert hmac.compare_digest(hmac.digest(KEY, signed, "md5"), reply[22:38])
    expect = hashlib.md5(reply[:4] + auth + reply[20:] + KEY, usedforsecurity=False).digest()
    assert reply[4:20] == expect


def test_long_text_is_split_over_attributes() -> None:
    """A Reply-Message longer than 253 octets becomes several attributes."""
    parts = codec.text_attributes(codec.REPLY_MESSAGE, "x" * 600)
    assert [len(p) - 2 for p in parts] == [253, 253, 94]


def test_dictionary_resolves_vendor_attributes() -> None:
    """The shipped dictionary names the vendor attributes the issue lists."""
    d = codec.RadiusDictionary()
    found = {
        n: d.get(n)
        for n in (
            "Class",
            "Filter-Id",
            "Fortinet-Group-Name",
            "PaloAlto-User-Group",
            "ASA-Group-Policy",
            "Citrix-User-Groups",
            "Proxy-State",
            "State",
            "Reply-Message",
            "Message-Authenticator",
        )
    }
    got = {n: (a.vendor_id, a.code) for n, a in found.items() if a is not None}
    assert got == {
        "Class": (0, 25),
        "Filter-Id": (0, 11),
        "Fortinet-Group-Name": (12356, 1),
        "PaloAlto-User-Group": (25461, 5),
        "ASA-Group-Policy": (3076, 25),
        "Citrix-User-Groups": (3845, 16),
        "Proxy-State": (0, 33),
        "State": (0, 24),
        "Reply-Message": (0, 18),
        "Message-Authenticator": (0, 80),
    }
    assert d.get("No-Such-Attribute") is None


@given(secret=st.binary(min_size=1, max_size=200), message=st.binary(max_size=600))
@settings(max_examples=200, deadline=None)
def test_prekeyed_hmac_equals_the_standard_library(secret: bytes, message: bytes) -> None:
    """Keys' RFC 2104 shortcut gives hmac's HMAC-MD5 for any secret, also past 64 octets."""
    assert codec.Keys(secret).hmac_md5(message) == hmac.digest(secret, message, "md5")


@pytest.mark.parametrize("size", [1, 16, 17, 100, 128])
def test_password_decodes_the_same_with_prekeyed_keys(size: int) -> None:
    """The hot path's Keys object and the raw secret decode User-Password identically."""
    password, auth = os.urandom(size).replace(b"\x00", b"x"), os.urandom(16)
    hidden = codec.encode_password(password, KEY, auth)
    keys = codec.Keys(KEY)
    assert codec.decode_password(hidden, keys, auth) == password
    assert codec.decode_password(hidden, KEY, auth) == password


def test_keys_repr_hides_the_secret() -> None:
    """A Keys object in a log line or traceback shows nothing of the shared secret."""
    keys = codec.Keys(KEY)
    assert SECRET not in repr(keys) and SECRET not in str(keys)
    assert "hidden" in repr(keys)


def test_reply_without_proxy_state_echoes_none_and_with_keeps_order() -> None:
    """The Proxy-State flag set while decoding drives the echo: none, or all in order."""
    plain = codec.decode(access_request()[0])
    assert not plain.proxy
    reply = codec.decode(codec.encode_reply(codec.ACCESS_ACCEPT, plain, codec.Keys(KEY)))
    assert reply.all(codec.PROXY_STATE) == []
    proxied = codec.decode(access_request(proxy_states=(b"a", b"b"))[0])
    assert proxied.proxy
    reply = codec.decode(codec.encode_reply(codec.ACCESS_ACCEPT, proxied, KEY))
    assert reply.all(codec.PROXY_STATE) == [b"a", b"b"]


def test_reply_room_counts_header_ma_and_every_proxy_state() -> None:
    """The room a reply has left is 4096 minus header, MA and each echoed Proxy-State TLV."""
    bare = codec.decode(access_request()[0])
    assert codec.reply_room(bare) == 4096 - 20 - 18
    proxied = codec.decode(access_request(proxy_states=(b"a" * 100, b"b"))[0])
    assert codec.reply_room(proxied) == 4096 - 20 - 18 - 102 - 3


@pytest.mark.parametrize("room", [0, 2, 3, 10, 254, 255, 256, 257, 600])
def test_fitted_text_stays_within_room_and_whole_characters(room: int) -> None:
    """A trimmed text takes at most `room` octets of TLVs, keeps a prefix of the text
    and never ends in half a UTF-8 character; a text that fits is left whole."""
    text = "é" * 400  # two octets each: some cut points fall inside a character
    tlvs = codec.fitted_text_attributes(codec.REPLY_MESSAGE, text, room)
    assert sum(map(len, tlvs)) <= room
    kept = b"".join(t[2:] for t in tlvs).decode("utf-8")
    assert text.startswith(kept)
    assert len(kept.encode()) >= min(len(text.encode()), room - room // 255 * 2 - 3)
    assert codec.fitted_text_attributes(codec.REPLY_MESSAGE, "ok", 4) == [b"\x12\x04ok"]
