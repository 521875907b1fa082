"""The simple CSV format: `serial,secret,type,digits,period/counter`, one token a line.

The secret is hex or base32 (a secret made only of hex digits is read as hex); digits
default to 6, the last column is the TOTP period (default 30) or the HOTP counter
(default 0). A first line starting with `serial` is a header. Blank lines and lines
starting with `#` are skipped.
"""

from __future__ import annotations

import binascii
import csv
import io
import string
from collections.abc import Iterator

from authd.core import otp
from authd.core.errors import InvalidInput
from authd.core.model import Token
from authd.token_import.fields import TokenFileError, check_unique, make_token

_HEX = frozenset(string.hexdigits)


def parse_secret(text: str) -> bytes:
    cleaned = "".join(text.split())
    if cleaned and set(cleaned) <= _HEX and len(cleaned) % 2 == 0:
        return binascii.unhexlify(cleaned)
    try:
        return otp.parse_base32_secret(cleaned)
    except InvalidInput:
        # Never repeat the secret, not even a part of it.
        raise ValueError("secret is neither hex nor base32") from None


def _int(text: str, default: int, what: str) -> int:
    text = text.strip()
    if not text:
        return default
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{what} must be a whole number")
    return int(text)


def _row(fields: list[str], now: float) -> Token:
    if len(fields) < 3 or len(fields) > 5:
        raise ValueError("expected serial,secret,type[,digits[,period/counter]]")
    serial, secret, kind = (f.strip() for f in fields[:3])
    digits = _int(fields[3], 6, "digits") if len(fields) > 3 else 6
    last = fields[4] if len(fields) > 4 else ""
    hotp = kind.strip().lower() == "hotp"
    return make_token(
        serial,
        parse_secret(secret),
        kind,
        digits=digits,
        period=30 if hotp else _int(last, 30, "period"),
        counter=_int(last, 0, "counter") if hotp else 0,
        now=now,
    )


def csv_lines(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each line that is not blank or a `#` comment;
    ValueError naming the line where the text stops being CSV."""
    reader = csv.reader(io.StringIO(text))
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise ValueError(f"line {reader.line_num}: not CSV ({e})") from None
        if fields and "".join(fields).strip() and not fields[0].lstrip().startswith("#"):
            yield reader.line_num, fields


def parse_csv(text: str, now: float) -> list[Token]:
    """Every token of the file, or TokenFileError listing each bad line."""
    tokens: list[tuple[str, Token]] = []
    problems: list[str] = []
    try:
        lines = list(csv_lines(text))
    except ValueError as e:
        raise TokenFileError([str(e)]) from None
    for number, fields in lines:
        if not tokens and not problems and fields[0].strip().lower() == "serial":
            continue  # the header
        try:
            tokens.append((f"line {number}", _row(fields, now)))
        except ValueError as e:
            problems.append(f"line {number}: {e}")
    problems += check_unique(tokens)
    if problems:
        raise TokenFileError(problems)
    return [t for _, t in tokens]
