"""Seeds, base32 secrets, the otpauth:// Key URI, and the code-shape check."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from authd.core.errors import InvalidInput
from authd.core.model import Algorithm, Token, TokenType
from authd.core.otp import (
    generate_seed,
    hotp,
    is_code_shaped,
    otpauth_uri,
    parse_base32_secret,
    totp,
)

SEED = b"12345678901234567890"
B32 = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"


@pytest.mark.parametrize(
    ("algorithm", "size"), [(Algorithm.SHA1, 20), (Algorithm.SHA256, 32), (Algorithm.SHA512, 64)]
)
def test_generate_seed_length_and_freshness(algorithm: Algorithm, size: int) -> None:
    """A seed is as long as the hash output and never repeats."""
    seeds = {generate_seed(algorithm) for _ in range(50)}
    assert len(seeds) == 50
    assert {len(s) for s in seeds} == {size}


def test_totp_uri_fields() -> None:
    """A TOTP URI carries type, issuer:account label, unpadded base32 secret, issuer,
    algorithm, digits and period (Key URI Format)."""
    token = Token(serial="S1", type=TokenType.TOTP, seed=b"\x01" * 32,
                  algorithm=Algorithm.SHA256, digits=8, period=60)  # fmt: skip
    uri = otpauth_uri(token, "alice@example.com", "ACME Co")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert parts.path == "/ACME%20Co:alice%40example.com"
    query = parse_qs(parts.query, strict_parsing=True)
    assert query == {
        "secret": [base64.b32encode(b"\x01" * 32).decode().rstrip("=")],
        "issuer": ["ACME Co"],
        "algorithm": ["SHA256"],
        "digits": ["8"],
        "period": ["60"],
    }
    assert "=" not in query["secret"][0]


def test_hotp_uri_has_counter_and_pyotp_agrees() -> None:
    """An HOTP URI carries the counter; pyotp (what many apps mirror) parses it back to a
    generator that starts at that counter and yields our codes."""
    token = Token(serial="S2", type=TokenType.HOTP, seed=SEED, counter=7)
    uri = otpauth_uri(token, "bob", "authd")
    assert "counter=7" in uri and "period=" not in uri
    parsed = pyotp.parse_uri(uri)
    assert isinstance(parsed, pyotp.HOTP)
    assert parsed.initial_count == 7
    assert parsed.at(0) == hotp(SEED, 7)  # pyotp counts from initial_count
    assert parsed.issuer == "authd" and parsed.name == "bob"


def test_totp_uri_round_trips_through_pyotp() -> None:
    """pyotp reads issuer, account, digits, period and algorithm from our TOTP URI."""
    token = Token(serial="S3", type=TokenType.TOTP, seed=bytes(range(64)),
                  algorithm=Algorithm.SHA512, digits=8, period=30)  # fmt: skip
    parsed = pyotp.parse_uri(otpauth_uri(token, "carol", "Ex ample"))
    assert isinstance(parsed, pyotp.TOTP)
    assert parsed.at(1_767_225_600) == totp(bytes(range(64)), 1_767_225_600, 30, 8,
                                            Algorithm.SHA512)  # fmt: skip
    assert (parsed.name, parsed.issuer) == ("carol", "Ex ample")


def test_uri_without_issuer_and_with_reserved_characters() -> None:
    """Without an issuer the label is the account alone; '/', '?', '&', '#' and non-ASCII
    in names are percent-encoded so they cannot break the URI apart."""
    token = Token(serial="S4", type=TokenType.TOTP, seed=SEED)
    uri = otpauth_uri(token, "ä/b?c&d#e", "")
    parts = urlsplit(uri)
    assert unquote(parts.path) == "/ä/b?c&d#e"
    assert parts.fragment == "" and "issuer" not in parse_qs(parts.query)
    uri2 = otpauth_uri(token, "x", "I&ssuer=evil")
    assert parse_qs(urlsplit(uri2).query)["issuer"] == ["I&ssuer=evil"]


@pytest.mark.parametrize(("account", "issuer"), [("a:b", "x"), ("a", "x:y"), ("", "x")])
def test_uri_refuses_colons_and_empty_account(account: str, issuer: str) -> None:
    """A colon is the label separator and may appear in neither part; an account is required."""
    token = Token(serial="S5", type=TokenType.TOTP, seed=SEED)
    with pytest.raises(InvalidInput):
        otpauth_uri(token, account, issuer)


@pytest.mark.parametrize(
    "text",
    [B32, B32.lower(), "gezd gnbv gy3t qojq gezd gnbv gy3t qojq", f"{B32}====", " GEZD-GNBV\tGY3T"
     "QOJQGEZDGNBVGY3TQOJQ\n"],
)  # fmt: skip
def test_parse_base32_tolerant(text: str) -> None:
    """Spaces, dashes, tabs, lower case and missing/extra padding all decode the same seed."""
    assert parse_base32_secret(text) == SEED


def test_parse_base32_unpadded_odd_lengths() -> None:
    """Seeds whose base32 needs padding (10, 16, 33 bytes) parse without it."""
    for size in (10, 16, 33):
        seed = bytes(range(size))
        assert parse_base32_secret(base64.b32encode(seed).decode().rstrip("=")) == seed


@pytest.mark.parametrize("text", ["", "   ", "GEZDGNB1", "GEZDGNBVG", "GEZ", "Ü" * 8, "====",
                                  "GE=ZDGNBV"])  # fmt: skip
def test_parse_base32_rejects_without_echo(text: str) -> None:
    """Bad secrets raise InvalidInput whose message never repeats the input."""
    with pytest.raises(InvalidInput) as info:
        parse_base32_secret(text)
    message = str(info.value)
    assert message in ("secret is empty", "secret is not valid base32")
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


@given(st.binary(min_size=1, max_size=80))
def test_prop_base32_round_trip(seed: bytes) -> None:
    """Any seed survives encode (unpadded, lower case, grouped) -> parse."""
    text = base64.b32encode(seed).decode().rstrip("=").lower()
    grouped = " ".join(text[i : i + 4] for i in range(0, len(text), 4))
    assert parse_base32_secret(grouped) == seed


@pytest.mark.parametrize(
    ("text", "digits", "expected"),
    [("123456", 6, True), ("00000000", 8, True), ("12345", 6, False), ("1234567", 6, False),
     ("12345a", 6, False), ("١٢٣٤٥٦", 6, False), ("12345²", 6, False), ("", 6, False)],
)  # fmt: skip
def test_is_code_shaped(text: str, digits: int, expected: bool) -> None:
    """Exactly `digits` ASCII digits; Unicode digits and superscripts do not count."""
    assert is_code_shaped(text, digits) is expected


def test_token_repr_hides_seed() -> None:
    """The seed never shows in a Token repr, hex or base32 alike (DESIGN: Secrets)."""
    token = Token(serial="S6", type=TokenType.TOTP, seed=SEED)
    text = repr(token)
    assert SEED.hex() not in text and B32 not in text and "1234567890" not in text
