"""One-time log-in codes mailed to users who have no password: made, sealed for the
portal session row, and checked. Pure functions of an explicit `now`.

Only a salted scrypt hash of the code is kept (RFC 7914), so a reader of the sessions
table cannot recover a live code by trying all of them; the code is bound to the browser
session that asked for it, is checked once (the session ends with the first answer) and
expires after CODE_TTL.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

CODE_TTL = 600.0  # seconds a mailed code stays good
# No 0/O, 1/I/L: codes are read off a mail and typed (about 40 bits in 8 characters).
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
LENGTH = 8
_PREFIX = "scrypt1"


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def _digest(code: str, salt: bytes) -> bytes:
    # RFC 7914 §2 interactive parameters: N=2^14, r=8, p=1 (16 MiB, tens of ms).
    return hashlib.scrypt(code.encode("ascii", "replace"), salt=salt, n=2**14, r=8, p=1,
                          dklen=32)


def seal(code: str, now: float) -> str:
    """What the session row keeps: the hash and the moment the code stops working."""
    salt = secrets.token_bytes(16)
    return f"{_PREFIX}:{salt.hex()}:{_digest(code, salt).hex()}:{now + CODE_TTL:.3f}"


def normalize(typed: str) -> str:
    """What the user typed, as the code was made: upper case, no spaces or dashes."""
    return "".join(c for c in typed.upper() if c not in " -\t")


def matches(sealed: str, typed: str, now: float) -> bool:
    """Whether `typed` is the sealed code and it has not expired (constant-time compare;
    anything malformed fails closed)."""
    try:
        prefix, salt_hex, digest_hex, expires = sealed.split(":")
        salt, digest, until = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex), float(expires)
    except ValueError:
        return False
    code = normalize(typed)
    if prefix != _PREFIX or now > until or len(code) != LENGTH:
        return False
    return hmac.compare_digest(_digest(code, salt), digest)
