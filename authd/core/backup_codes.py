"""Single-use backup codes: generation, the one accepted spelling, keyed hashing.

A code is 15 characters from a 31-symbol alphabet without look-alikes (no 0/o, 1/l/i),
printed in three groups of five (`k7wq9-xhem3-tfab2`): 15 * log2(31) = 74 bits, above the
60 required. Its normal form (15 symbols) can never be confused with an OTP (6 to 10
digits) in either direction. The store keeps only `hash_code` values and consumes one with
`DELETE ... RETURNING`, so a code works once across nodes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from authd.core.errors import InvalidInput

__all__ = [
    "ALPHABET",
    "CODE_LENGTH",
    "GROUP",
    "HASH_PREFIX",
    "generate_codes",
    "hash_code",
    "normalize_code",
]

ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
GROUP = 5
CODE_LENGTH = 3 * GROUP
HASH_PREFIX = "h1:"
# Domain separation: PINs are hashed under the same pepper (core/pin.py).
_LABEL = b"authd backup code v1\x00"
_SYMBOLS = frozenset(ALPHABET)
_SEPARATORS = frozenset(" -\t")
# Generous bound so a pasted novel is refused before any work.
_MAX_INPUT = 64


def _format(raw: str) -> str:
    return "-".join(raw[i : i + GROUP] for i in range(0, len(raw), GROUP))


def generate_codes(count: int) -> list[str]:
    """`count` distinct fresh codes from the CSPRNG, in their printed form."""
    if count < 1:
        raise InvalidInput("count must be at least 1")
    seen: set[str] = set()
    codes: list[str] = []
    while len(codes) < count:
        raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
        if raw not in seen:  # a repeat is astronomically unlikely; never print one twice
            seen.add(raw)
            codes.append(_format(raw))
    return codes


def normalize_code(text: str) -> str | None:
    """The code in its normal form (no spaces or dashes, lower case), or None when the text
    cannot be a backup code (wrong length or a symbol outside the alphabet, e.g. an OTP)."""
    if len(text) > _MAX_INPUT:
        return None
    raw = "".join(ch for ch in text if ch not in _SEPARATORS).lower()
    if len(raw) != CODE_LENGTH or not set(raw) <= _SYMBOLS:
        return None
    return raw


def hash_code(code: str, key: bytes) -> str:
    """`h1:` + hex HMAC-SHA256 of the normalised code under the server's hash key (a pepper
    kept out of the database). Equal codes hash equal, so the store looks one up by hash."""
    normal = normalize_code(code)
    if normal is None:
        raise InvalidInput("not a backup code")
    if not key:
        raise InvalidInput("hash key is empty")
    digest = hmac.new(key, _LABEL + normal.encode("ascii"), hashlib.sha256).hexdigest()
    return HASH_PREFIX + digest
