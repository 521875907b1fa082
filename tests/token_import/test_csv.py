"""The CSV token format: hex and base32 secrets, defaults, header, bad rows by line."""

from __future__ import annotations

import base64
import secrets

import pytest

from authd.core import otp
from authd.core.model import TokenType
from authd.token_import.csv_rows import parse_csv
from authd.token_import.fields import TokenFileError
from tests.fixtures.clock import EPOCH
from tests.token_import.test_pskc import oathtool

SEED = secrets.token_bytes(20)
B32 = base64.b32encode(SEED).decode().rstrip("=")


def test_rows_with_header_hex_and_base32() -> None:
    """Header skipped; hex and base32 give the same seed; HOTP counter and TOTP period
    from the last column; codes agree with oathtool."""
    text = (
        "serial,secret,type,digits,period/counter\n"
        f"H1,{SEED.hex()},hotp,6,5\n"
        f"T1,{B32.lower()},TOTP,8,60\n"
        f"T2,{B32},totp\n"
    )
    h1, t1, t2 = parse_csv(text, EPOCH)
    assert (h1.type, h1.counter, h1.digits, h1.user) == (TokenType.HOTP, 5, 6, None)
    assert (t1.type, t1.period, t1.digits) == (TokenType.TOTP, 60, 8)
    assert (t2.period, t2.digits) == (30, 6)
    assert h1.seed == t1.seed == t2.seed == SEED
    assert otp.hotp(h1.seed, 5) == oathtool("--hotp", "-c", "5", SEED.hex())
    assert otp.totp(t2.seed, EPOCH) == oathtool(
        "--totp", "-N", "2026-01-01 00:00:00 UTC", SEED.hex()
    )


def test_without_header_and_with_comments() -> None:
    """The header is optional; blank and # lines are skipped."""
    tokens = parse_csv(f"# box 7\n\nA1,{SEED.hex()},totp,6,30\n", EPOCH)
    assert [t.serial for t in tokens] == ["A1"]


def test_bad_rows_reported_by_line_and_none_returned() -> None:
    """Each bad line is named with its number and reason; secrets are not repeated;
    a duplicate serial names both lines."""
    text = (
        "serial,secret,type,digits,period/counter\n"
        f"OK,{SEED.hex()},totp,6,30\n"  # line 2
        "SHORT,00112233,totp,6,30\n"  # line 3
        f"BADTYPE,{SEED.hex()},sms,6,30\n"  # line 4
        f"BADDIGITS,{SEED.hex()},totp,7,30\n"  # line 5
        "NOTB32,this-is-not-base32!,totp\n"  # line 6
        f"OK,{SEED.hex()},hotp,6,0\n"  # line 7
        f"bad serial,{SEED.hex()},totp\n"  # line 8
        f"P,{SEED.hex()},totp,6,5\n"  # line 9: period out of range
    )
    with pytest.raises(TokenFileError) as e:
        parse_csv(text, EPOCH)
    lines = {p.split(":")[0] for p in e.value.problems}
    assert lines == {f"line {n}" for n in (3, 4, 5, 6, 7, 8, 9)}
    assert "line 7: serial OK also at line 2" in e.value.problems
    assert SEED.hex() not in str(e.value) and "this-is-not" not in str(e.value)
