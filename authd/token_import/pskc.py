"""RFC 6030 Portable Symmetric Key Container: HOTP and TOTP keys, plain or encrypted.

Protection (RFC 6030 §6): none (PlainValue), a pre-shared AES key (§6.1, `ds:KeyName`)
or a key derived from a password with PBKDF2 (§6.2, `xenc11:DerivedKey`). Encrypted
values are AES-CBC with the IV in front (XML Encryption); CBC has no integrity, so an
encrypted file must carry a MACMethod and every encrypted value a ValueMAC (§6.1.1),
HMAC over IV and ciphertext with the MAC key the file holds encrypted. XML is parsed
with defusedxml: no DTDs, entities or external references.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import xml.etree.ElementTree as ET  # noqa: S405 - types only; parsing goes through defusedxml
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from authd.core.errors import InvalidInput
from authd.core.model import Token
from authd.token_import.fields import TokenFileError, check_unique, make_token

PSKC = "urn:ietf:params:xml:ns:keyprov:pskc"
DS = "http://www.w3.org/2000/09/xmldsig#"
XENC = "http://www.w3.org/2001/04/xmlenc#"
XENC11 = "http://www.w3.org/2009/xmlenc11#"
PKCS5 = "http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#"
XMLDSIG_MORE = "http://www.w3.org/2001/04/xmldsig-more#"

_ALGORITHMS = {
    "urn:ietf:params:xml:ns:keyprov:pskc:hotp": "hotp",
    "urn:ietf:params:xml:ns:keyprov:pskc:totp": "totp",
}
_CBC_KEY_BYTES = {f"{XENC}aes128-cbc": 16, f"{XENC}aes192-cbc": 24, f"{XENC}aes256-cbc": 32}
_MACS: dict[str, Callable[[], object]] = {
    f"{DS}hmac-sha1": hashlib.sha1,
    f"{XMLDSIG_MORE}hmac-sha256": hashlib.sha256,
    f"{XMLDSIG_MORE}hmac-sha512": hashlib.sha512,
}
_PRFS = {
    f"{DS}hmac-sha1": "sha1",
    f"{XMLDSIG_MORE}hmac-sha256": "sha256",
    f"{XMLDSIG_MORE}hmac-sha512": "sha512",
}
MAX_PBKDF2_ITERATIONS = 10_000_000


@dataclass(frozen=True)
class Protection:
    """What the operator supplied to open a protected file (either, or neither)."""

    key: bytes | None = None  # pre-shared key, from --key-file
    password: str | None = None  # for PBKDF2, from --password-stdin / a file


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def _b64(text: str | None, what: str) -> bytes:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except binascii.Error:
        raise ValueError(f"{what} is not base64") from None


class _Opener:
    """Decrypts and authenticates the file's encrypted values."""

    def __init__(self, root: ET.Element, protection: Protection) -> None:
        self._key = self._encryption_key(root, protection)
        self._mac_key: bytes | None = None
        self._mac: Callable[[], object] | None = None
        method = root.find(_q(PSKC, "MACMethod"))
        if method is not None:
            self._mac = _MACS.get(method.get("Algorithm", ""))
            if self._mac is None:
                raise ValueError("MACMethod: unsupported algorithm")
            mac_key = method.find(_q(PSKC, "MACKey"))
            if mac_key is None:
                raise ValueError("MACMethod has no MACKey")
            # The MAC key has no MAC of its own: a wrong one fails every ValueMAC.
            self._mac_key = self._decrypt(mac_key, None)

    @staticmethod
    def _encryption_key(root: ET.Element, protection: Protection) -> bytes | None:
        enc = root.find(_q(PSKC, "EncryptionKey"))
        if enc is None:
            return None
        derived = enc.find(_q(XENC11, "DerivedKey"))
        if derived is not None:
            if protection.password is None:
                raise ValueError("the file is protected by a password (give --password-stdin)")
            return _pbkdf2(derived, protection.password)
        if protection.key is None:
            raise ValueError("the file is protected by a pre-shared key (give --key-file)")
        return protection.key

    def _decrypt(self, encrypted: ET.Element, mac_holder: ET.Element | None) -> bytes:
        """AES-CBC, IV first, PKCS#7 padding (XML Encryption §5.2.1)."""
        if self._key is None:
            raise ValueError("an encrypted value, but the file has no EncryptionKey")
        method = encrypted.find(_q(XENC, "EncryptionMethod"))
        size = _CBC_KEY_BYTES.get(method.get("Algorithm", "") if method is not None else "")
        if size is None:
            raise ValueError("unsupported encryption method (AES-CBC only)")
        if len(self._key) != size:
            raise ValueError(f"the key must be {size} bytes for this encryption method")
        raw = _b64(encrypted.findtext(f"{_q(XENC, 'CipherData')}/{_q(XENC, 'CipherValue')}"),
                   "CipherValue")  # fmt: skip
        if len(raw) < 32 or len(raw) % 16:
            raise ValueError("CipherValue has a wrong length")
        if mac_holder is not None:
            self._check_mac(mac_holder, raw)
        decryptor = Cipher(algorithms.AES(self._key), modes.CBC(raw[:16])).decryptor()
        padded = decryptor.update(raw[16:]) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            return unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            raise ValueError("cannot decrypt (wrong key or password?)") from None

    def _check_mac(self, holder: ET.Element, raw: bytes) -> None:
        """RFC 6030 §6.1.1: the MAC covers IV and ciphertext of each encrypted value."""
        if self._mac is None or self._mac_key is None:
            raise ValueError("encrypted values without a MACMethod cannot be trusted")
        given = holder.findtext(_q(PSKC, "ValueMAC"))
        if given is None:
            raise ValueError("an encrypted value has no ValueMAC")
        expected = hmac.new(self._mac_key, raw, self._mac).digest()  # type: ignore[arg-type]
        if not hmac.compare_digest(expected, _b64(given, "ValueMAC")):
            raise ValueError("ValueMAC does not match (wrong key, or the file was altered)")

    def value(self, parent: ET.Element | None) -> bytes | None:
        """The PlainValue (base64 for secrets) or decrypted EncryptedValue of `parent`."""
        if parent is None:
            return None
        plain = parent.find(_q(PSKC, "PlainValue"))
        if plain is not None:
            return (plain.text or "").strip().encode("ascii")
        encrypted = parent.find(_q(PSKC, "EncryptedValue"))
        if encrypted is None:
            raise ValueError(f"{parent.tag.split('}')[-1]} has no value")
        return self._decrypt(encrypted, parent)


def _local(parent: ET.Element | None, name: str) -> ET.Element | None:
    """The child called `name` in any namespace: producers differ on whether the
    PBKDF2-params children are qualified (RFC 6030 figure 7 leaves them unqualified)."""
    if parent is None:
        return None
    for child in parent:
        if child.tag == name or child.tag.endswith("}" + name):
            return child
    return None


def _local_text(parent: ET.Element | None, name: str) -> str | None:
    child = _local(parent, name)
    return None if child is None else (child.text or "").strip()


def _pbkdf2(derived: ET.Element, password: str) -> bytes:
    """RFC 6030 §6.2 with PKCS #5 v2.0 PBKDF2 (RFC 8018 §5.2)."""
    method = derived.find(_q(XENC11, "KeyDerivationMethod"))
    if method is None or method.get("Algorithm") != f"{PKCS5}pbkdf2":
        raise ValueError("DerivedKey: only PBKDF2 is supported")
    params = method.find(_q(PKCS5, "PBKDF2-params"))
    if params is None:
        raise ValueError("DerivedKey: PBKDF2-params missing")
    salt_el = _local(params, "Salt")
    salt = _b64(_local_text(salt_el, "Specified"), "PBKDF2 salt")
    try:
        iterations = int(_local_text(params, "IterationCount") or "")
        length = int(_local_text(params, "KeyLength") or "")
    except ValueError:
        raise ValueError("DerivedKey: IterationCount and KeyLength must be numbers") from None
    if not 1 <= iterations <= MAX_PBKDF2_ITERATIONS or length not in (16, 24, 32):
        raise ValueError("DerivedKey: IterationCount or KeyLength out of range")
    prf = _local(params, "PRF")
    default_prf = f"{DS}hmac-sha1"
    # RFC 8018 appendix A.2: the PRF defaults to HMAC-SHA1.
    prf_name = _PRFS.get(prf.get("Algorithm", default_prf) if prf is not None else default_prf)
    if prf_name is None:
        raise ValueError("DerivedKey: unsupported PRF")
    return hashlib.pbkdf2_hmac(prf_name, password.encode("utf-8"), salt, iterations, length)


def _int_value(opener: _Opener, parent: ET.Element | None, default: int) -> int:
    """RFC 6030 §4.3.4: plain integers are decimal text, encrypted ones big-endian."""
    if parent is None:
        return default
    plain = parent.find(_q(PSKC, "PlainValue"))
    raw = opener.value(parent) or b""
    if plain is not None:
        if not raw.isdigit():
            raise ValueError(f"{parent.tag.split('}')[-1]} is not a whole number")
        return int(raw)
    return int.from_bytes(raw, "big")


def _key(package: ET.Element, opener: _Opener, now: float) -> Token:
    key = package.find(_q(PSKC, "Key"))
    if key is None:
        raise ValueError("no Key")
    kind = _ALGORITHMS.get(key.get("Algorithm", ""))
    if kind is None:
        raise ValueError("Key Algorithm must be the pskc:hotp or pskc:totp URN")
    serial = (package.findtext(f"{_q(PSKC, 'DeviceInfo')}/{_q(PSKC, 'SerialNo')}") or "").strip()
    serial = serial or (key.get("Id") or "").strip()
    fmt = key.find(f"{_q(PSKC, 'AlgorithmParameters')}/{_q(PSKC, 'ResponseFormat')}")
    if fmt is not None and fmt.get("Encoding", "DECIMAL").upper() != "DECIMAL":
        raise ValueError("ResponseFormat Encoding must be DECIMAL")
    try:
        digits = int(fmt.get("Length", "6")) if fmt is not None else 6
    except ValueError:
        raise ValueError("ResponseFormat Length is not a number") from None
    suite = key.findtext(f"{_q(PSKC, 'AlgorithmParameters')}/{_q(PSKC, 'Suite')}") or "SHA1"
    data = key.find(_q(PSKC, "Data"))
    if data is None:
        raise ValueError("Key has no Data")
    secret_el = data.find(_q(PSKC, "Secret"))
    secret = opener.value(secret_el)
    if secret is None:
        raise ValueError("Key has no Secret")
    if secret_el is not None and secret_el.find(_q(PSKC, "PlainValue")) is not None:
        secret = _b64(secret.decode("ascii"), "Secret PlainValue")
    if _int_value(opener, data.find(_q(PSKC, "Time")), 0) != 0:
        raise ValueError("Time (T0) other than 0 is not supported")
    return make_token(
        serial,
        secret,
        kind,
        digits=digits,
        period=_int_value(opener, data.find(_q(PSKC, "TimeInterval")), 30),
        counter=_int_value(opener, data.find(_q(PSKC, "Counter")), 0),
        drift=_int_value(opener, data.find(_q(PSKC, "TimeDrift")), 0),
        algorithm=suite.strip().upper().replace("HMAC-", "").replace("-", ""),
        now=now,
    )


def parse_pskc(data: bytes, protection: Protection, now: float) -> list[Token]:
    """Every key of the container, or TokenFileError naming each bad key package."""
    try:
        root = fromstring(data, forbid_dtd=True)
    except (ParseError, DefusedXmlException) as e:
        raise TokenFileError([f"not a usable XML document ({type(e).__name__})"]) from None
    if root.tag != _q(PSKC, "KeyContainer"):
        raise TokenFileError(["the document is not an RFC 6030 KeyContainer"])
    if root.get("Version") != "1.0":
        raise TokenFileError(["KeyContainer Version must be 1.0"])
    try:
        opener = _Opener(root, protection)
    except (ValueError, InvalidInput) as e:
        raise TokenFileError([f"KeyContainer: {e}"]) from None
    tokens: list[tuple[str, Token]] = []
    problems: list[str] = []
    for number, package in enumerate(root.iter(_q(PSKC, "KeyPackage")), start=1):
        where = f"KeyPackage {number}"
        try:
            tokens.append((where, _key(package, opener, now)))
        except (ValueError, InvalidInput) as e:
            problems.append(f"{where}: {e}")
    if not tokens and not problems:
        problems.append("the container holds no KeyPackage")
    problems += check_unique(tokens)
    if problems:
        raise TokenFileError(problems)
    return [t for _, t in tokens]
