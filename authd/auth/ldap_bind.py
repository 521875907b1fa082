"""The user's simple bind on an open ldap3 connection: request encoded here, response
decoded by ldap3.

Why not `ldap3.Connection.bind`: it builds each request as a pyasn1 object tree and
encodes it generically, ~140 µs of CPU a bind (measured), most of a directory user's
first factor. A simple BindRequest is five fixed BER fields (RFC 4511 §4.2); encoding
them directly costs a few µs and gives the same octets as ldap3 (the tests compare them
byte for byte). Everything else (connecting, ldaps and StartTLS, the service account's
bind, searches, modifies, closing) stays with ldap3, and the BindResponse is decoded with
ldap3's own BER decoder.

Used on connections that only ever bind (the bind pool): one request in flight at a
time, as with ldap3's SYNC strategy.
"""

from __future__ import annotations

import contextlib
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.protocol.sasl.sasl import validate_simple_password
from ldap3.utils.asn1 import decode_message_fast

# A BindResponse is a result code, a matched DN and a diagnostic message (AD: ~100
# octets); a "response" bigger than this is no answer to a bind.
MAX_RESPONSE = 64 * 1024
RECV_SIZE = 4096
_BIND_RESPONSE = 1  # RFC 4511 protocolOp [APPLICATION 1]
_INVALID_CREDENTIALS = 49


class BadBindResponse(LDAPException):
    """The server sent something other than this bind's response (or closed the
    connection): the connection is unusable, as after any network error."""


def _length(n: int) -> bytes:
    """BER definite length (X.690 §8.1.3): short form below 128, else long form."""
    if n < 0x80:
        return bytes((n,))
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + _length(len(value)) + value


def encode_simple_bind(message_id: int, dn: str, password: bytes) -> bytes:
    """LDAPMessage{messageID, bindRequest{version 3, name, simple password}}, no
    controls (RFC 4511 §4.1.1, §4.2)."""
    # INTEGER: minimal two's complement; a messageID is 1..2^31-1, so one spare bit.
    mid = message_id.to_bytes(message_id.bit_length() // 8 + 1, "big")
    request = b"\x02\x01\x03" + _tlv(0x04, dn.encode("utf-8")) + _tlv(0x80, password)
    return _tlv(0x30, _tlv(0x02, mid) + _tlv(0x60, request))


def password_octets(password: str) -> bytes | None:
    """The simple-bind password as sent, for this module and for ldap3 (which sends
    `bytes` as given). RFC 4513 §5.1.1 has clients SASLprep (RFC 4013) it, ~24 µs for a
    20-character password in ldap3; SASLprep maps printable ASCII to itself (no mapping,
    NFKC identity, nothing prohibited, no bidi), so those go as their ASCII bytes without
    the work. None when SASLprep prohibits the password (RFC 4013 §2.3): no directory
    could accept it."""
    if password.isascii() and password.isprintable():
        return password.encode("ascii")
    try:
        prepared = validate_simple_password(password)
    except LDAPException:
        return None
    return prepared if isinstance(prepared, bytes) else str(prepared).encode("utf-8")


def message_length(buffer: bytes) -> int | None:
    """The length of the LDAPMessage at the start of `buffer` (tag, length and value),
    or None while its length octets have not all arrived."""
    if len(buffer) < 2:
        return None
    first = buffer[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if count == 0 or count > 4:  # indefinite form (not allowed in LDAP) or > 4 GiB
        raise BadBindResponse("unusable BER length in response")
    if len(buffer) < 2 + count:
        return None
    return 2 + count + int.from_bytes(buffer[2 : 2 + count], "big")


def bind_result(message: bytes, message_id: int) -> int:
    """The resultCode of `message` if it is the BindResponse to `message_id`."""
    if message[:1] != b"\x30":
        raise BadBindResponse("response is not an LDAPMessage")
    try:
        decoded: dict[str, Any] = decode_message_fast(message)
        mid, op = decoded["messageID"], decoded["protocolOp"]
        code = decoded["payload"][0][3]
    except Exception as e:  # ldap3's decoder raises whatever malformed BER trips
        raise BadBindResponse(f"undecodable response ({type(e).__name__})") from None
    if mid != message_id or op != _BIND_RESPONSE or not isinstance(code, int):
        # e.g. a Notice of Disconnection (messageID 0, RFC 4511 §4.4.1)
        raise BadBindResponse(f"unexpected response (message {mid}, operation {op})")
    return code


def simple_bind(conn: ldap3.Connection, dn: str, password: str) -> int:
    """Bind `conn` as `dn` and return the LDAP result code. Socket timeouts and errors
    propagate as OSError, anything but the matching BindResponse as BadBindResponse;
    after either the connection must be dropped."""
    octets = password_octets(password)
    if octets is None:
        return _INVALID_CREDENTIALS
    sock = conn.socket
    if sock is None:
        raise BadBindResponse("connection is closed")
    # ldap3's own counter, so ids stay unique with its operations on the same server.
    message_id = conn.server.next_message_id()
    sock.sendall(encode_simple_bind(message_id, dn, octets))
    buffer = b""
    while True:
        data = sock.recv(RECV_SIZE)
        if not data:
            raise BadBindResponse("connection closed by the server")
        buffer += data
        length = message_length(buffer)
        if length is not None and len(buffer) >= length:
            code = bind_result(buffer[:length], message_id)
            if len(buffer) > length:
                # More than the answer arrived (unsolicited): the stream can no longer be
                # trusted, so the connection is closed; this bind's answer still stands.
                with contextlib.suppress(Exception):
                    conn.unbind()
            return code
        if len(buffer) > MAX_RESPONSE or (length is not None and length > MAX_RESPONSE):
            raise BadBindResponse("oversized response")
