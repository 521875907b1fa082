"""Server-side PINs: the policy a new PIN must meet, and keyed hashing.

A PIN has at most 10^8 values, so a slow hash would not stop an offline search; the pepper
(`hash_key` from the key file, never in the database) does, and lockout stops online
guessing. The user name is mixed in so that two users with the same PIN do not share a
hash. Reasons returned by the policy name the rule, never the PIN or its length.
"""

from __future__ import annotations

import hashlib
import hmac

from authd.config.model import PinConfig
from authd.core.errors import InvalidInput

__all__ = ["COMMON_PINS", "HASH_PREFIX", "check_pin_policy", "hash_pin", "is_trivial", "verify_pin"]

HASH_PREFIX = "h1:"
_LABEL = b"authd pin v1\x00"
_ASCII_DIGITS = frozenset("0123456789")

# Very common PINs that no run/repeat rule below catches (keypad shapes, years, words
# spelled on a keypad). Repeats (1212, 6969, 123123) and runs (1234, 7890) are rules.
COMMON_PINS = frozenset(
    {
        "2580", "0852", "1470", "0741", "3690", "0963", "1379", "1397", "2468", "1357",
        "1004", "2000", "2001", "1122", "1984", "1986", "1987", "1988", "1989", "1990",
        "5683", "1010", "7410", "8520", "9630", "1478", "3698", "1590", "112233", "159753",
        "147258", "258369", "789456", "123321", "147258369", "11223344", "12341234",
    }
)  # fmt: skip


def _is_run(pin: str) -> bool:
    """Ascending or descending by one at every position, wrapping 9-0 (1234, 4321, 7890)."""
    steps = {(int(b) - int(a)) % 10 for a, b in zip(pin, pin[1:], strict=False)}
    return steps in ({1}, {9})


def _is_repeat(pin: str) -> bool:
    """A shorter block typed over and over (1111, 1212, 123123, 19841984)."""
    n = len(pin)
    return any(n % size == 0 and pin == pin[:size] * (n // size) for size in range(1, n // 2 + 1))


def is_trivial(pin: str) -> bool:
    """All one digit, a run, a repeated block, or on the list of very common PINs."""
    return len(pin) < 2 or _is_repeat(pin) or _is_run(pin) or pin in COMMON_PINS


def check_pin_policy(pin: str, cfg: PinConfig) -> str | None:
    """Why `pin` may not be set, or None when it may. The reason is safe to show."""
    if not pin or not all(ch in _ASCII_DIGITS for ch in pin):
        return "PIN must consist of digits 0-9 only"
    if len(pin) < cfg.min_length:
        return f"PIN must have at least {cfg.min_length} digits"
    if len(pin) > cfg.max_length:
        return f"PIN must have at most {cfg.max_length} digits"
    if not cfg.allow_trivial and is_trivial(pin):
        return "PIN is too easy to guess (a repeated digit or block, a run, or a common PIN)"
    return None


def _mac(pin: str, key: bytes, user: str) -> str:
    if not key:
        raise InvalidInput("hash key is empty")
    who = user.encode("utf-8")
    # Length-prefixed user name: ("ab", "1234") and ("a", "b1234") never share an input.
    message = _LABEL + len(who).to_bytes(4, "big") + who + pin.encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def hash_pin(pin: str, key: bytes, user: str) -> str:
    """`h1:` + hex HMAC-SHA256 over (user, pin) under the server's hash key."""
    return HASH_PREFIX + _mac(pin, key, user)


def verify_pin(pin: str, stored: str, key: bytes, user: str) -> bool:
    """Constant-time comparison against a stored `hash_pin` value. Fails closed: an
    unknown hash version, an empty PIN or an empty stored value never verifies."""
    if not pin or not stored.startswith(HASH_PREFIX) or not key:
        return False
    expected = hash_pin(pin, key, user)
    return hmac.compare_digest(expected.encode("ascii"), stored.encode("ascii", "replace"))
