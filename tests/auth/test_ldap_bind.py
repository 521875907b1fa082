"""The hand-encoded simple bind: the same octets as ldap3, strict about what comes back,
and safe on a socket that misbehaves (a socketpair plays the server)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import ldap3
import pytest
from hypothesis import given
from hypothesis import strategies as st
from ldap3.operation.bind import bind_operation
from ldap3.protocol.rfc4511 import LDAPMessage, MessageID, ProtocolOp
from ldap3.protocol.sasl.sasl import sasl_prep
from pyasn1.codec.ber import encoder

from authd.auth.ldap_bind import (
    MAX_RESPONSE,
    BadBindResponse,
    bind_result,
    encode_simple_bind,
    message_length,
    password_octets,
    simple_bind,
)


def ldap3_bytes(message_id: int, dn: str, password: bytes) -> bytes:
    """What ldap3 itself sends for this bind (its pyasn1 path)."""
    message = LDAPMessage()
    message["messageID"] = MessageID(message_id)
    message["protocolOp"] = ProtocolOp().setComponentByName(
        "bindRequest", bind_operation(3, ldap3.SIMPLE, dn, password)
    )
    return bytes(encoder.encode(message))


def bind_response(message_id: int, code: int, diagnostic: bytes = b"") -> bytes:
    """A BindResponse as a server sends it (short-form lengths suffice here)."""
    body = b"\x0a\x01" + bytes((code,)) + b"\x04\x00" + b"\x04" + bytes((len(diagnostic),))
    body += diagnostic
    mid = message_id.to_bytes(message_id.bit_length() // 8 + 1, "big")
    inner = b"\x02" + bytes((len(mid),)) + mid + b"\x61" + bytes((len(body),)) + body
    return b"\x30" + bytes((len(inner),)) + inner


@given(
    st.integers(min_value=1, max_value=2**31 - 1),
    st.text(min_size=1, max_size=400),
    st.binary(min_size=1, max_size=400),
)
def test_request_octets_are_ldap3s_own(message_id: int, dn: str, password: bytes) -> None:
    """Byte for byte what ldap3 would send, long-form lengths and non-ASCII DNs
    included: the directory cannot tell the two clients apart."""
    assert encode_simple_bind(message_id, dn, password) == ldap3_bytes(message_id, dn, password)


@given(st.text(min_size=1, max_size=64))
def test_password_octets_are_saslprep_or_refused(password: str) -> None:
    """Every password goes out as RFC 4013 prepares it (ldap3's sasl_prep), or not at
    all when SASLprep prohibits it."""
    try:
        expected: bytes | None = sasl_prep(password).encode("utf-8")
    except ldap3.core.exceptions.LDAPException:
        expected = None
    assert password_octets(password) == expected


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1))
def test_printable_ascii_passwords_go_out_exactly_as_saslprep_would_send_them(pw: str) -> None:
    """The SASLprep shortcut is exact: for printable ASCII, the octets sent are the UTF-8
    of RFC 4013's output, so no password binds differently because of it."""
    assert password_octets(pw) == sasl_prep(pw).encode("utf-8")


def test_other_passwords_go_through_saslprep() -> None:
    """Non-ASCII and control characters take SASLprep, not the shortcut: mapped,
    normalised, or refused."""
    assert password_octets("pässwörd") == "pässwörd".encode()
    assert password_octets("a\u00a0b") == b"a b"
    assert password_octets("e\u0301") == "\u00e9".encode()
    assert password_octets("tab\there") is None
    assert password_octets("x\x7f") is None


def test_prohibited_password_is_refused() -> None:
    """A control character cannot be sent (RFC 4013 §2.3): no octets, so no bind."""
    assert password_octets("bad\x7fpassword") is None
    assert password_octets("Grüße\u00a0aus") == "Grüße aus".encode()


def test_message_length_short_long_and_partial() -> None:
    """Definite lengths in both forms; None until the length octets are all there."""
    assert message_length(b"") is None
    assert message_length(b"\x30") is None
    assert message_length(b"\x30\x05") == 7
    assert message_length(b"\x30\x82\x01") is None
    assert message_length(b"\x30\x82\x01\x00") == 4 + 256
    for bad in (b"\x30\x80", b"\x30\x85\x01\x02\x03\x04\x05"):
        with pytest.raises(BadBindResponse):
            message_length(bad)


def test_bind_result_reads_the_code_of_this_bind_only() -> None:
    """The result code of the matching BindResponse; another id, another operation or
    a Notice of Disconnection is no answer."""
    assert bind_result(bind_response(7, 0), 7) == 0
    assert bind_result(bind_response(7, 49, b"bad"), 7) == 49
    with pytest.raises(BadBindResponse):
        bind_result(bind_response(8, 0), 7)
    oid = b"1.3.6.1.4.1.1466.20036"  # RFC 4511 §4.4.1 Notice of Disconnection
    notice = b"\x30\x24\x02\x01\x00\x78\x1f\x0a\x01\x34\x04\x00\x04\x00\x8a\x16" + oid
    assert message_length(notice) == len(notice)
    with pytest.raises(BadBindResponse):
        bind_result(notice, 7)
    search_done = bytes.fromhex("300c02010765070a010004000400")
    with pytest.raises(BadBindResponse):
        bind_result(search_done, 7)


@given(st.binary(max_size=200), st.integers(min_value=1, max_value=2**31 - 1))
def test_garbage_is_a_bad_response_never_a_crash(data: bytes, message_id: int) -> None:
    """Whatever a broken or hostile server sends decodes to a code or BadBindResponse."""
    try:
        length = message_length(data)
        if length is not None and len(data) >= length:
            assert isinstance(bind_result(data[:length], message_id), int)
    except BadBindResponse:
        pass


class _Server:
    def __init__(self) -> None:
        self.next_id = 41

    def next_message_id(self) -> int:
        self.next_id += 1
        return self.next_id


class _Conn:
    """The parts of an ldap3 Connection simple_bind uses, on one end of a socketpair."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket: socket.socket | None = sock
        self.server = _Server()
        self.unbound = False

    def unbind(self) -> None:
        self.unbound = True
        assert self.socket is not None
        self.socket.close()
        self.socket = None


@pytest.fixture
def pair() -> Iterator[tuple[_Conn, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(2)
    theirs.settimeout(2)
    yield _Conn(ours), theirs
    ours.close()
    theirs.close()


def bind(conn: _Conn, password: str = "s3cret") -> int:  # noqa: S107 - a test password
    return simple_bind(conn, "uid=alice,dc=example", password)  # type: ignore[arg-type]


def test_answer_in_pieces_is_reassembled(pair: tuple[_Conn, socket.socket]) -> None:
    """TCP may deliver the response a byte at a time; the request is ldap3's octets."""
    conn, server = pair
    answer = bind_response(42, 0)
    for octet in answer:
        server.sendall(bytes((octet,)))
    assert bind(conn) == 0
    assert server.recv(4096) == ldap3_bytes(42, "uid=alice,dc=example", b"s3cret")
    assert not conn.unbound


def test_closed_connection_is_a_bad_response(pair: tuple[_Conn, socket.socket]) -> None:
    """A server that hangs up mid-answer fails the connection, not the password."""
    conn, server = pair
    server.sendall(bind_response(42, 0)[:5])
    server.shutdown(socket.SHUT_WR)
    with pytest.raises(BadBindResponse):
        bind(conn)


def test_timeout_propagates(pair: tuple[_Conn, socket.socket]) -> None:
    """A server that never answers costs the socket's timeout, then OSError."""
    conn, _ = pair
    assert conn.socket is not None
    conn.socket.settimeout(0.05)
    with pytest.raises(OSError):
        bind(conn)


def test_oversized_answer_is_refused(pair: tuple[_Conn, socket.socket]) -> None:
    """A length beyond any BindResponse is refused before it is read."""
    conn, server = pair
    server.sendall(b"\x30\x84" + (MAX_RESPONSE + 1).to_bytes(4, "big") + b"\x02\x01\x2a")
    with pytest.raises(BadBindResponse):
        bind(conn)


def test_unsolicited_extra_data_closes_the_connection(pair: tuple[_Conn, socket.socket]) -> None:
    """The answer stands, but a stream with more in it is not reused."""
    conn, server = pair
    server.sendall(bind_response(42, 49) + b"\x30\x03\x02\x01\x00")
    assert bind(conn) == 49
    assert conn.unbound


def test_prohibited_password_sends_nothing(pair: tuple[_Conn, socket.socket]) -> None:
    """invalidCredentials without a request on the wire (no directory could accept it,
    and the server must not be blamed for it)."""
    conn, server = pair
    assert bind(conn, "bad\x7fpassword") == 49
    server.setblocking(False)
    with pytest.raises(BlockingIOError):
        server.recv(1)
