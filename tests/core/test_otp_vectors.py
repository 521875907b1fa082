"""HOTP/TOTP against the published test vectors (RFC 4226 Appendix D, RFC 6238 Appendix B)."""

from __future__ import annotations

import pytest

from authd.core.errors import InvalidInput
from authd.core.model import Algorithm
from authd.core.otp import hotp, time_step, totp

RFC4226_SEED = b"12345678901234567890"
# RFC 4226 Appendix D: the truncated 31-bit values, and their 6-digit codes.
RFC4226_TRUNCATED = [
    1284755224, 1094287082, 137359152, 1726969429, 1640338314,
    868254676, 1918287922, 82162583, 673399871, 645520489,
]  # fmt: skip
RFC4226_CODES = [
    "755224", "287082", "359152", "969429", "338314",
    "254676", "287922", "162583", "399871", "520489",
]  # fmt: skip

# RFC 6238 Appendix B: each algorithm has its own seed, as long as the hash output.
RFC6238_SEEDS = {
    Algorithm.SHA1: b"12345678901234567890",
    Algorithm.SHA256: b"12345678901234567890123456789012",
    Algorithm.SHA512: b"1234567890123456789012345678901234567890123456789012345678901234",
}
RFC6238_ROWS = [
    (59, "0000000000000001", "94287082", Algorithm.SHA1),
    (59, "0000000000000001", "46119246", Algorithm.SHA256),
    (59, "0000000000000001", "90693936", Algorithm.SHA512),
    (1111111109, "00000000023523EC", "07081804", Algorithm.SHA1),
    (1111111109, "00000000023523EC", "68084774", Algorithm.SHA256),
    (1111111109, "00000000023523EC", "25091201", Algorithm.SHA512),
    (1111111111, "00000000023523ED", "14050471", Algorithm.SHA1),
    (1111111111, "00000000023523ED", "67062674", Algorithm.SHA256),
    (1111111111, "00000000023523ED", "99943326", Algorithm.SHA512),
    (1234567890, "000000000273EF07", "89005924", Algorithm.SHA1),
    (1234567890, "000000000273EF07", "91819424", Algorithm.SHA256),
    (1234567890, "000000000273EF07", "93441116", Algorithm.SHA512),
    (2000000000, "0000000003F940AA", "69279037", Algorithm.SHA1),
    (2000000000, "0000000003F940AA", "90698825", Algorithm.SHA256),
    (2000000000, "0000000003F940AA", "38618901", Algorithm.SHA512),
    (20000000000, "0000000027BC86AA", "65353130", Algorithm.SHA1),
    (20000000000, "0000000027BC86AA", "77737706", Algorithm.SHA256),
    (20000000000, "0000000027BC86AA", "47863826", Algorithm.SHA512),
]


@pytest.mark.parametrize("counter", range(10))
def test_rfc4226_appendix_d(counter: int) -> None:
    """Every HOTP value of RFC 4226 Appendix D, as 6 digits and as the full 10 digits."""
    assert hotp(RFC4226_SEED, counter) == RFC4226_CODES[counter]
    assert hotp(RFC4226_SEED, counter, digits=10) == f"{RFC4226_TRUNCATED[counter]:010d}"


@pytest.mark.parametrize(("now", "step_hex", "code", "algorithm"), RFC6238_ROWS)
def test_rfc6238_appendix_b(now: int, step_hex: str, code: str, algorithm: Algorithm) -> None:
    """Every row of RFC 6238 Appendix B: the time step T and the 8-digit TOTP."""
    assert time_step(now, 30) == int(step_hex, 16)
    assert totp(RFC6238_SEEDS[algorithm], now, 30, 8, algorithm) == code
    assert hotp(RFC6238_SEEDS[algorithm], int(step_hex, 16), 8, algorithm) == code


def test_time_step_floors_fractional_and_boundary_times() -> None:
    """A step starts exactly at a multiple of the period and fractions never round up."""
    assert time_step(29.999, 30) == 0
    assert time_step(30.0, 30) == 1
    assert time_step(59.999999, 60) == 0
    assert time_step(1_767_225_600.0, 30) == 58_907_520


def test_codes_keep_leading_zeros() -> None:
    """A code is a string of exactly `digits` characters, zero-padded (RFC 4226 §5.3)."""
    assert totp(RFC6238_SEEDS[Algorithm.SHA1], 1111111109, 30, 8) == "07081804"
    assert hotp(RFC4226_SEED, 7, digits=10) == "0082162583"


@pytest.mark.parametrize("digits", [0, 11, -1])
def test_digits_out_of_range_refused(digits: int) -> None:
    """More than 10 digits would be padding, not information; 0 would be no code at all."""
    with pytest.raises(InvalidInput):
        hotp(RFC4226_SEED, 0, digits=digits)


def test_bad_counter_period_and_algorithm_refused() -> None:
    """Inputs RFC 4226 cannot encode (negative or >64-bit counters, a zero period, an
    unknown hash) raise InvalidInput rather than produce a code."""
    with pytest.raises(InvalidInput):
        hotp(RFC4226_SEED, -1)
    with pytest.raises(InvalidInput):
        hotp(RFC4226_SEED, 1 << 64)
    with pytest.raises(InvalidInput):
        time_step(100.0, 0)
    # Compiled (setup.py), a str where an Algorithm belongs is refused at the call.
    with pytest.raises((InvalidInput, TypeError)):
        hotp(RFC4226_SEED, 0, algorithm="MD5")  # type: ignore[arg-type]
