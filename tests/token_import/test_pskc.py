"""RFC 6030 PSKC: the RFC's own encrypted figures, and built containers in all three
protection modes; codes of imported keys cross-checked with oathtool."""

from __future__ import annotations

import secrets
import shutil
import subprocess

import pytest

from authd.core import otp
from authd.core.model import TokenType
from authd.token_import.fields import TokenFileError
from authd.token_import.pskc import Protection, parse_pskc
from tests.fixtures.clock import EPOCH
from tests.token_import.pskc_samples import (
    FIGURE6,
    FIGURE6_KEY,
    FIGURE7,
    FIGURE7_PASSWORD,
    RFC_SECRET,
    container,
    key_package,
    pbkdf2_container,
)

SEED = secrets.token_bytes(20)


def oathtool(*args: str) -> str:
    exe = shutil.which("oathtool")
    assert exe, "oathtool is missing: apt-get install -y oathtool"
    return subprocess.run([exe, *args], capture_output=True, text=True, check=True).stdout.strip()


def test_rfc6030_figure6_pre_shared_key() -> None:
    """Figure 6 decrypts with its pre-shared key, its ValueMAC verifies, and the key is
    the RFC 4226 test secret (8-digit HOTP, counter 0, serial from DeviceInfo)."""
    [token] = parse_pskc(FIGURE6, Protection(key=FIGURE6_KEY), EPOCH)
    assert (token.serial, token.type, token.digits, token.counter) == (
        "987654321", TokenType.HOTP, 8, 0,
    )  # fmt: skip
    assert token.seed == RFC_SECRET and token.user is None
    # RFC 4226 appendix D: counter 0 gives 755224 (6 digits), 84755224 with 8.
    assert otp.hotp(token.seed, 0, 8) == "84755224"


def test_rfc6030_figure7_pbkdf2_password() -> None:
    """Figure 7 opens with the password "qwerty" (PBKDF2, 1000 rounds) and holds the
    same RFC 4226 secret."""
    [token] = parse_pskc(FIGURE7, Protection(password=FIGURE7_PASSWORD), EPOCH)
    assert token.serial == "987654321" and token.seed == RFC_SECRET and token.digits == 8


def test_wrong_key_or_password_is_refused_without_secret() -> None:
    """A wrong pre-shared key or password fails the MAC check (or the padding), and
    the error says so without any key material."""
    with pytest.raises(TokenFileError, match="wrong key") as e:
        parse_pskc(FIGURE6, Protection(key=bytes(16)), EPOCH)
    assert RFC_SECRET.decode() not in str(e.value) and FIGURE6_KEY.hex() not in str(e.value)
    with pytest.raises(TokenFileError):
        parse_pskc(FIGURE7, Protection(password="qwertz"), EPOCH)
    with pytest.raises(TokenFileError, match="pre-shared key"):
        parse_pskc(FIGURE6, Protection(), EPOCH)


def test_plain_container_hotp_and_totp_with_parameters() -> None:
    """PlainValue secrets (§ 5): HOTP with its counter, TOTP with period and drift,
    digits from ResponseFormat; codes agree with oathtool."""
    doc = container([
        key_package("HW-1", SEED, "hotp", digits=6,
                    data="<Counter><PlainValue>42</PlainValue></Counter>"),
        key_package("HW-2", SEED, "totp", digits=8,
                    data="<TimeInterval><PlainValue>60</PlainValue></TimeInterval>"),
    ])  # fmt: skip
    hotp, totp = parse_pskc(doc, Protection(), EPOCH)
    assert (hotp.serial, hotp.type, hotp.counter, hotp.digits) == ("HW-1", TokenType.HOTP, 42, 6)
    assert (totp.serial, totp.type, totp.period, totp.digits) == ("HW-2", TokenType.TOTP, 60, 8)
    hexseed = SEED.hex()
    assert otp.hotp(hotp.seed, 42, 6) == oathtool("--hotp", "-c", "42", hexseed)
    stamp = "2026-01-01 00:00:00 UTC"
    assert otp.totp(totp.seed, EPOCH, 60, 8) == oathtool(
        "--totp", "-s", "60s", "-d", "8", "-N", stamp, hexseed
    )


def test_pre_shared_key_container_built_per_rfc() -> None:
    """§ 6.1 with a fresh AES-128 key and MAC key: every package opens; a flipped
    byte of one ciphertext fails its ValueMAC and nothing is returned."""
    key, mac = secrets.token_bytes(16), secrets.token_bytes(20)
    packages = [key_package(f"P{i}", SEED, "totp", enc_key=key, mac_key=mac) for i in range(3)]
    tokens = parse_pskc(container(packages, enc_key=key, mac_key=mac), Protection(key=key), EPOCH)
    assert [t.serial for t in tokens] == ["P0", "P1", "P2"] and all(t.seed == SEED for t in tokens)
    doc = container(packages, enc_key=key, mac_key=mac)
    # The serial's element, not the bare text: base64 ciphertext may contain "P1" too.
    start = doc.index(b"<EncryptedValue>", doc.index(b"<SerialNo>P1</SerialNo>"))
    at = doc.index(b"CipherValue>", start) + len(b"CipherValue>") + 30
    flipped = doc[:at] + (b"A" if doc[at : at + 1] != b"A" else b"B") + doc[at + 1 :]
    with pytest.raises(TokenFileError, match="KeyPackage 2: ValueMAC does not match"):
        parse_pskc(flipped, Protection(key=key), EPOCH)


def test_pbkdf2_container_built_per_rfc() -> None:
    """§ 6.2 with a fresh salt: the password opens it, HOTP counter kept."""
    doc = pbkdf2_container(
        lambda k, m: [key_package("PW1", SEED, "hotp", enc_key=k, mac_key=m,
                                  data="<Counter><PlainValue>7</PlainValue></Counter>")],
        "correct horse",
    )  # fmt: skip
    [token] = parse_pskc(doc, Protection(password="correct horse"), EPOCH)
    assert token.seed == SEED and token.counter == 7


def test_encrypted_value_without_mac_method_is_refused() -> None:
    """CBC has no integrity: an encrypted container without MACMethod is refused."""
    key = secrets.token_bytes(16)
    doc = container([key_package("X1", SEED, "totp", enc_key=key, mac_key=b"m" * 20)],
                    enc_key=key, mac_key=b"m" * 20)  # fmt: skip
    start, end = doc.index(b"<MACMethod"), doc.index(b"</MACMethod>") + len(b"</MACMethod>")
    with pytest.raises(TokenFileError, match="without a MACMethod"):
        parse_pskc(doc[:start] + doc[end:], Protection(key=key), EPOCH)


def test_bad_packages_reported_each_and_nothing_returned() -> None:
    """Every bad package is named (short seed, unknown algorithm, duplicate serial),
    and no token comes back."""
    doc = container([
        key_package("OK1", SEED, "totp"),
        key_package("SHORT", b"x" * 8, "totp"),
        key_package("OK1", SEED, "hotp"),
        key_package("OCRA", SEED, "totp").replace("pskc:totp", "pskc:ocra"),
    ])  # fmt: skip
    with pytest.raises(TokenFileError) as e:
        parse_pskc(doc, Protection(), EPOCH)
    problems = e.value.problems
    assert any(p.startswith("KeyPackage 2: secret must be") for p in problems)
    assert any(p.startswith("KeyPackage 4: Key Algorithm") for p in problems)
    assert "KeyPackage 3: serial OK1 also at KeyPackage 1" in problems


def test_entities_and_dtds_are_refused() -> None:
    """defusedxml: a DTD (billion laughs, external entities) is never expanded."""
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;">]><KeyContainer>&lol2;</KeyContainer>'
    )
    with pytest.raises(TokenFileError, match="not a usable XML document"):
        parse_pskc(bomb, Protection(), EPOCH)
