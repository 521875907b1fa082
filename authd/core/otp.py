"""HOTP (RFC 4226) and TOTP (RFC 6238), computed with `hmac` directly.

Pure: every function takes `now` (or a counter) as an argument and nothing here mutates a
token. The matchers only *find* the step or counter a code belongs to; the caller makes it
stick with a compare-and-set in the store (`accept_totp_step`, `accept_hotp_counter`), which
is what keeps a code single-use across nodes (RFC 6238 §5.2, RFC 4226 §7.2).

pyotp is not used: its `verify()` reads the wall clock unless told otherwise, knows nothing
of replay, and costs ~8x more per candidate than one copied HMAC object.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from authd.core.errors import InvalidInput
from authd.core.model import Algorithm, Token, TokenStatus, TokenType

__all__ = [
    "MAX_DIGITS",
    "ResyncWrite",
    "MIN_DIGITS",
    "SEED_BYTES",
    "TotpMatch",
    "generate_seed",
    "hotp",
    "is_code_shaped",
    "match_hotp",
    "match_totp",
    "otpauth_uri",
    "parse_base32_secret",
    "resync_hotp",
    "resync_totp",
    "resync_write",
    "time_step",
    "totp",
]

# RFC 4226 §5.3: the truncated value has 31 bits, so at most 10 decimal digits carry
# information. Config limits real tokens to 6..8; the math allows 1..10.
MIN_DIGITS = 1
MAX_DIGITS = 10

# RFC 6238 §1.2 / Appendix B: seed length matches the hash output length.
SEED_BYTES: dict[Algorithm, int] = {
    Algorithm.SHA1: 20,
    Algorithm.SHA256: 32,
    Algorithm.SHA512: 64,
}

_DIGESTS: dict[Algorithm, Callable[..., hashlib._Hash]] = {
    Algorithm.SHA1: hashlib.sha1,
    Algorithm.SHA256: hashlib.sha256,
    Algorithm.SHA512: hashlib.sha512,
}

_COUNTER = struct.Struct(">Q")
_BASE32_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
# RFC 4648 §6: unpadded lengths (mod 8) that a whole number of bytes can produce.
_BASE32_VALID_TAILS = frozenset({0, 2, 4, 5, 7})


@dataclass(slots=True)  # not frozen: see authd.auth.interfaces
class TotpMatch:
    """Where a TOTP code matched: `step` to store as last_step, `drift` (in steps) =
    step minus the step of `now`, to remember so a drifting clock keeps working."""

    step: int
    drift: int


@dataclass(slots=True)  # not frozen: see authd.auth.interfaces
class ResyncWrite:
    """What a resync stores: `value` into `field` ("counter" or "last_step"), only while
    the stored value is below `before`, i.e. neither resync code was used yet."""

    field: str
    value: int
    before: int

    def allows(self, token: Token) -> bool:
        """True while neither resync code of `token` has been used (the write may go)."""
        current = token.counter if self.field == "counter" else token.last_step
        return current < self.before


def resync_write(counter: int | None, last_step: int | None) -> ResyncWrite:
    """The forward-only guard of a resync write; exactly one of the two is given.

    TOTP: `last_step` is the step of the second code; the first code's step
    (last_step - 1) must still be after the stored last_step (RFC 6238 §5.2: a step is
    accepted once). HOTP: `counter` is the next expected counter, after the second code;
    the stored counter must not be past the first code's (counter - 2) (RFC 4226 §7.2).
    """
    if last_step is not None and counter is None:
        return ResyncWrite("last_step", last_step, last_step - 1)
    if counter is not None and last_step is None:
        return ResyncWrite("counter", counter, counter - 1)
    raise InvalidInput("a resync sets either the HOTP counter or the TOTP step")


class _Generator:
    """One keyed HMAC object per call, copied per counter (the cheap path)."""

    __slots__ = ("_digits", "_mac", "_modulus")

    def __init__(self, seed: bytes, digits: int, algorithm: Algorithm) -> None:
        if not MIN_DIGITS <= digits <= MAX_DIGITS:
            raise InvalidInput(f"digits must be between {MIN_DIGITS} and {MAX_DIGITS}")
        digest = _DIGESTS.get(algorithm)  # StrEnum: "SHA1" and Algorithm.SHA1 hash alike
        if digest is None:
            raise InvalidInput("algorithm must be SHA1, SHA256 or SHA512")
        self._mac = hmac.new(seed, digestmod=digest)
        self._digits = digits
        self._modulus = 10**digits

    def values(self, counters: range) -> list[int]:
        """The code of every counter in `counters`, in order, as integers (the code's
        digits read as a number; `digits` fixes the width, so no formatting is needed)."""
        if counters and not (counters[0] >= 0 and counters[-1] < 1 << 64):
            raise InvalidInput("counter out of range")
        copy, pack, modulus = self._mac.copy, _COUNTER.pack, self._modulus
        out = []
        for counter in counters:
            mac = copy()
            mac.update(pack(counter))
            digest = mac.digest()
            # RFC 4226 §5.4 dynamic truncation.
            offset = digest[-1] & 0x0F
            out.append((int.from_bytes(digest[offset : offset + 4]) & 0x7FFFFFFF) % modulus)
        return out

    def codes(self, counters: range) -> list[str]:
        """The code of every counter in `counters`, in order, as shown to users."""
        digits = self._digits
        return [f"{value:0{digits}d}" for value in self.values(counters)]

    def first(self, target: int, counters: range) -> int | None:
        """The first counter in `counters` (in the order given) whose code is `target`,
        or None; stops at the first match (see `match_hotp` for why that is safe).

        The comparison is of two ints below 2**31: for 1..9 digits both are single-digit
        CPython ints, compared in constant time (no string formatting, no per-character
        loop)."""
        if counters and not (
            min(counters[0], counters[-1]) >= 0 and max(counters[0], counters[-1]) < 1 << 64
        ):
            raise InvalidInput("counter out of range")
        copy, pack, modulus = self._mac.copy, _COUNTER.pack, self._modulus
        for counter in counters:
            mac = copy()
            mac.update(pack(counter))
            digest = mac.digest()
            offset = digest[-1] & 0x0F  # RFC 4226 §5.4 dynamic truncation
            if (int.from_bytes(digest[offset : offset + 4]) & 0x7FFFFFFF) % modulus == target:
                return counter
        return None


def hotp(seed: bytes, counter: int, digits: int = 6, algorithm: Algorithm = Algorithm.SHA1) -> str:
    """The RFC 4226 code for `counter` (RFC 6238 extends it to SHA256/SHA512)."""
    return _Generator(seed, digits, algorithm).codes(range(counter, counter + 1))[0]


def time_step(now: float, period: int) -> int:
    """RFC 6238 §4.2: T = floor((now - T0) / X) with T0 = 0."""
    if period <= 0:
        raise InvalidInput("period must be positive")
    if not math.isfinite(now):
        raise InvalidInput("now must be a finite number of seconds")
    return math.floor(now / period)


def totp(
    seed: bytes,
    now: float,
    period: int = 30,
    digits: int = 6,
    algorithm: Algorithm = Algorithm.SHA1,
) -> str:
    """The RFC 6238 code shown at `now`."""
    return hotp(seed, time_step(now, period), digits, algorithm)


def is_code_shaped(text: str, digits: int) -> bool:
    """Exactly `digits` ASCII digits (str.isdigit would also take '²' or Arabic-Indic)."""
    return len(text) == digits and text.isascii() and text.isdigit()


def _usable(token: Token, expected: TokenType) -> bool:
    """Fail closed: only an active token of the right type with a seed can match."""
    return token.type == expected and token.status == TokenStatus.ACTIVE and bool(token.seed)


def match_totp(token: Token, code: str, now: float, skew: float) -> TotpMatch | None:
    """The step `code` belongs to, or None.

    Searches ceil(skew/period) steps each way around the step of `now` shifted by
    `token.drift`, and only steps after `token.last_step` (RFC 6238 §5.2: a code is used
    at most once). When a code matches several candidate steps the latest wins, so that
    storing it as last_step also burns the earlier ones. Never mutates anything.

    Stops at the first (latest) match: a wrong code always costs the whole window, a
    right one less, by how far below the top of the window its step lies. That timing
    says only where a *valid* code sits in the window, which whoever holds the code
    (it is shown on their token) knows already; it tells nothing about a wrong code,
    so it cannot guide a guess. The outcome itself is answered anyway.
    """
    if not _usable(token, TokenType.TOTP) or not is_code_shaped(code, token.digits):
        return None
    if skew < 0 or not math.isfinite(skew):
        raise InvalidInput("skew must be a finite, non-negative number of seconds")
    current = time_step(now, token.period)
    centre = current + token.drift
    reach = math.ceil(skew / token.period)
    # Only steps after last_step can match; the latest wins, so walk down from the top
    # and stop at the first hit (it is the maximum). Steps at or before last_step are
    # never computed.
    low = max(0, centre - reach, token.last_step + 1)
    high = centre + reach
    if low > high:
        return None
    gen = _Generator(token.seed, token.digits, token.algorithm)
    step = gen.first(int(code), range(high, low - 1, -1))
    return None if step is None else TotpMatch(step, step - current)


def match_hotp(token: Token, code: str, look_ahead: int) -> int | None:
    """The counter c in [token.counter, token.counter + look_ahead] whose code is `code`
    (the earliest, if several, as RFC 4226 §7.2 walks the window in order: taking a later
    twin would skip counters the token has not shown yet and refuse its next codes). The
    caller stores c + 1 as the next expected counter, so the counter never moves back.

    Walks the window from the expected counter and stops at the first match (usually
    the first HMAC instead of look_ahead + 1). The time saved tells only how far ahead
    of the server a *valid* code's token was, which its holder knows; every wrong code
    costs the full window, so timing cannot narrow a guess (as in `match_totp`)."""
    if not _usable(token, TokenType.HOTP) or not is_code_shaped(code, token.digits):
        return None
    if look_ahead < 0:
        raise InvalidInput("look_ahead must not be negative")
    start = max(0, token.counter)
    gen = _Generator(token.seed, token.digits, token.algorithm)
    return gen.first(int(code), range(start, start + look_ahead + 1))


def _consecutive(codes: list[str], first: int, code1: str, code2: str) -> list[int]:
    """Counters `first + i` where codes[i] == code1 and codes[i + 1] == code2."""
    return [
        first + i
        for i in range(len(codes) - 1)
        if hmac.compare_digest(codes[i], code1) and hmac.compare_digest(codes[i + 1], code2)
    ]


def resync_totp(
    token: Token, code1: str, code2: str, now: float, window: float
) -> TotpMatch | None:
    """Re-align a drifted TOTP token from two consecutive codes.

    Finds steps s, s+1 both within ±window seconds of `now` (ignoring the remembered
    drift and last_step for the search) whose codes are code1, code2, and returns the
    step of code2 with its drift; None if there is none or if code1's step is not after
    last_step (RFC 6238 §5.2: a code at or before the last accepted step was used).
    The token's status is not checked: an operator may resync a disabled token.
    """
    if token.type != TokenType.TOTP or not token.seed:
        return None
    if not (is_code_shaped(code1, token.digits) and is_code_shaped(code2, token.digits)):
        return None
    if window < 0 or not math.isfinite(window):
        raise InvalidInput("window must be a finite, non-negative number of seconds")
    current = time_step(now, token.period)
    reach = math.ceil(window / token.period)
    first = max(0, current - reach)
    last = max(0, current + reach)
    gen = _Generator(token.seed, token.digits, token.algorithm)
    codes = gen.codes(range(first, last + 1))
    found = [s + 1 for s in _consecutive(codes, first, code1, code2) if s > token.last_step]
    if not found:
        return None
    step = found[-1]
    return TotpMatch(step=step, drift=step - current)


def resync_hotp(token: Token, code1: str, code2: str, window: int) -> int | None:
    """Re-align an HOTP token from two consecutive codes: counters c, c+1 in
    [token.counter, token.counter + window]; returns c+1 (the counter of code2), so the
    caller stores c+2 as the next expected counter. Never moves the counter backward."""
    if token.type != TokenType.HOTP or not token.seed:
        return None
    if not (is_code_shaped(code1, token.digits) and is_code_shaped(code2, token.digits)):
        return None
    if window < 0:
        raise InvalidInput("window must not be negative")
    start = max(0, token.counter)
    gen = _Generator(token.seed, token.digits, token.algorithm)
    codes = gen.codes(range(start, start + window + 1))
    found = _consecutive(codes, start, code1, code2)
    return found[-1] + 1 if found else None


def generate_seed(algorithm: Algorithm) -> bytes:
    """A fresh random seed as long as the hash output (RFC 4226 §4 R6: >= 128 bits)."""
    try:
        size = SEED_BYTES[Algorithm(algorithm)]
    except ValueError:
        raise InvalidInput("algorithm must be SHA1, SHA256 or SHA512") from None
    return secrets.token_bytes(size)


def _b32(seed: bytes) -> str:
    return base64.b32encode(seed).decode("ascii").rstrip("=")


def otpauth_uri(token: Token, account: str, issuer: str) -> str:
    """The Key URI Format (Google Authenticator wiki) an authenticator app scans.

    `otpauth://TYPE/ISSUER:ACCOUNT?secret=...&issuer=...&algorithm=...&digits=...`
    plus `period` (TOTP) or `counter` (HOTP). The result holds the seed: show it once,
    never log it. Neither issuer nor account may contain a colon (the label separator).
    """
    if not account:
        raise InvalidInput("account name is empty")
    if ":" in account or ":" in issuer:
        raise InvalidInput("issuer and account name must not contain ':'")
    label = (
        f"{quote(issuer, safe='')}:{quote(account, safe='')}" if issuer else quote(account, safe="")
    )
    params = [("secret", _b32(token.seed))]
    if issuer:
        params.append(("issuer", issuer))
    params += [
        ("algorithm", Algorithm(token.algorithm).value),
        ("digits", str(token.digits)),
    ]
    if token.type == TokenType.TOTP:
        params.append(("period", str(token.period)))
    else:
        params.append(("counter", str(token.counter)))
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params)
    return f"otpauth://{TokenType(token.type).value}/{label}?{query}"


def parse_base32_secret(text: str) -> bytes:
    """Decode a base32 seed as people type or print it: spaces, dashes, lower case and
    missing `=` padding are fine. Errors never repeat the text (it is a secret)."""
    cleaned = "".join(ch for ch in text if not ch.isspace() and ch != "-").upper().rstrip("=")
    if not cleaned:
        raise InvalidInput("secret is empty")
    if not set(cleaned) <= _BASE32_ALPHABET or len(cleaned) % 8 not in _BASE32_VALID_TAILS:
        raise InvalidInput("secret is not valid base32")
    padded = cleaned + "=" * (-len(cleaned) % 8)
    try:
        return base64.b32decode(padded)
    except (binascii.Error, ValueError):
        raise InvalidInput("secret is not valid base32") from None
