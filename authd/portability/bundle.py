"""The bundle file: versioned, encrypted and authenticated under a passphrase or a key.

Layout (docs/BUNDLE.md)::

    authd-bundle\n
    <header: one line of JSON>\n
    <AES-256-GCM ciphertext of the zlib-compressed JSON payload, tag last>

The header (format version, KDF and its parameters, nonce) is the associated data, so
a changed header, a flipped bit or a cut-off file fails authentication before anything
is read. Inside the payload every seed is wrapped once more under its own subkey with
the serial as associated data: opening the bundle does not put seeds in clear, each is
unwrapped only when its token is written.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import stat
import zlib
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from authd.core.errors import InvalidInput

MAGIC = b"authd-bundle\n"
FORMAT_VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
MIN_PASSPHRASE = 12
# scrypt (RFC 7914) at ~2^15 x 8 x 128 B = 32 MiB, ~0.1 s: costly to guess offline.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
# A header may ask for more (a future default), never for this much: a crafted file
# must not make import allocate gigabytes.
SCRYPT_MAX_N, SCRYPT_MAX_R, SCRYPT_MAX_P = 2**20, 16, 4
MAX_PAYLOAD = 2**31  # bytes after decompression


class BundleError(InvalidInput):
    """A bundle that cannot be opened: wrong passphrase or key, tampered, truncated,
    or of an unknown version. Nothing was imported."""


@dataclass(frozen=True)
class Protector:
    """How the bundle is protected: a passphrase, or a 32-byte key from a file."""

    passphrase: str | None = None
    key: bytes | None = None

    def __repr__(self) -> str:
        return "Protector(passphrase)" if self.passphrase is not None else "Protector(key)"

    @classmethod
    def from_passphrase(cls, passphrase: str) -> Protector:
        if len(passphrase) < MIN_PASSPHRASE:
            raise InvalidInput(
                f"the bundle passphrase must have at least {MIN_PASSPHRASE} characters"
            )
        return cls(passphrase=passphrase)

    @classmethod
    def from_key_file(cls, path: str) -> Protector:
        """32 bytes, raw, hex or base64 (e.g. `head -c 32 /dev/urandom > bundle.key`),
        in a file only its owner can read."""
        try:
            with open(path, "rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                raw = f.read(4096)
        except OSError as e:
            raise InvalidInput(f"{path}: cannot read the key file: {e.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InvalidInput(f"{path}: key file is accessible by group or others; chmod 600 it")
        return cls(key=_key_bytes(raw, path))


def _key_bytes(raw: bytes, path: str) -> bytes:
    if len(raw) == KEY_BYTES:
        return raw
    text = raw.strip()
    for decode in (binascii.unhexlify, lambda t: base64.b64decode(t, validate=True)):
        try:
            key = decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(key) == KEY_BYTES:
            return key
    raise InvalidInput(f"{path}: a bundle key is {KEY_BYTES} bytes (raw, hex or base64)")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise BundleError("bundle header is malformed")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise BundleError("bundle header is malformed") from None


def _subkey(master: bytes, purpose: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=purpose)
    return AESGCM(hkdf.derive(master))


def _kdf_header(protector: Protector) -> tuple[dict[str, Any], bytes]:
    if protector.key is not None:
        # A fingerprint, so a wrong key file is named as such (it says nothing of the key).
        fingerprint = hashlib.sha256(b"authd-bundle key id" + protector.key).hexdigest()[:16]
        return {"kdf": "key", "key_id": fingerprint}, protector.key
    assert protector.passphrase is not None
    salt = secrets.token_bytes(16)
    params = {"kdf": "scrypt", "salt": _b64(salt), "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}
    return params, _scrypt(protector.passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)


def _scrypt(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=KEY_BYTES, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _master_key(header: dict[str, Any], protector: Protector) -> bytes:
    kdf = header.get("kdf")
    if kdf == "key":
        if protector.key is None:
            raise BundleError("this bundle is protected by a key file (give --key-file)")
        expected, _ = _kdf_header(protector)
        if not secrets.compare_digest(str(header.get("key_id")), expected["key_id"]):
            raise BundleError("this bundle was sealed with another key file")
        return protector.key
    if kdf == "scrypt":
        if protector.passphrase is None:
            raise BundleError("this bundle is protected by a passphrase")
        n, r, p = header.get("n"), header.get("r"), header.get("p")
        if not (
            isinstance(n, int) and isinstance(r, int) and isinstance(p, int)
            and 2 <= n <= SCRYPT_MAX_N and n & (n - 1) == 0
            and 1 <= r <= SCRYPT_MAX_R and 1 <= p <= SCRYPT_MAX_P
        ):  # fmt: skip
            raise BundleError("bundle header: scrypt parameters out of range")
        return _scrypt(protector.passphrase, _unb64(header.get("salt")), n, r, p)
    raise BundleError("bundle header: unknown key derivation")


class SeedWrapper:
    """Seeds inside the payload: AES-256-GCM under their own subkey, bound to the serial."""

    def __init__(self, master: bytes) -> None:
        self._aead = _subkey(master, b"authd-bundle v1 seeds")

    def wrap(self, serial: str, seed: bytes) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return _b64(nonce + self._aead.encrypt(nonce, seed, b"seed|" + serial.encode()))

    def unwrap(self, serial: str, blob: str) -> bytes:
        raw = _unb64(blob)
        try:
            return self._aead.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], b"seed|" + serial.encode()
            )
        except (InvalidTag, ValueError):
            raise BundleError(f"token {serial}: wrapped seed fails authentication") from None


@dataclass
class Sealer:
    """One bundle being written: its header, master key and seed wrapper."""

    header: dict[str, Any]
    master: bytes
    seeds: SeedWrapper

    @classmethod
    def new(cls, protector: Protector) -> Sealer:
        kdf, master = _kdf_header(protector)
        header = {"format": "authd-bundle", "version": FORMAT_VERSION, **kdf,
                  "nonce": _b64(secrets.token_bytes(NONCE_BYTES))}  # fmt: skip
        return cls(header, master, SeedWrapper(master))

    def seal(self, payload: dict[str, Any]) -> bytes:
        head = json.dumps(self.header, sort_keys=True, separators=(",", ":")).encode("ascii")
        plain = zlib.compress(json.dumps(payload, separators=(",", ":")).encode("utf-8"), 6)
        aad = MAGIC + head + b"\n"
        body = _subkey(self.master, b"authd-bundle v1 payload").encrypt(
            _unb64(self.header["nonce"]), plain, aad
        )
        return aad + body


def open_bundle(data: bytes, protector: Protector) -> tuple[dict[str, Any], SeedWrapper]:
    """The payload and the wrapper that unwraps its seeds, or BundleError."""
    if not data.startswith(MAGIC):
        raise BundleError("not an authd bundle")
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        raise BundleError("bundle is truncated")
    try:
        header = json.loads(data[len(MAGIC) : end])
    except ValueError:
        raise BundleError("bundle header is malformed") from None
    if not isinstance(header, dict) or header.get("format") != "authd-bundle":
        raise BundleError("bundle header is malformed")
    if header.get("version") != FORMAT_VERSION:
        raise BundleError(f"bundle version {header.get('version')!r} is not supported "
                          f"(this authd reads version {FORMAT_VERSION})")  # fmt: skip
    master = _master_key(header, protector)
    nonce = _unb64(header.get("nonce"))
    if len(nonce) != NONCE_BYTES:
        raise BundleError("bundle header is malformed")
    try:
        plain = _subkey(master, b"authd-bundle v1 payload").decrypt(
            nonce, data[end + 1 :], data[: end + 1]
        )
    except InvalidTag:
        raise BundleError(
            "bundle fails authentication: wrong passphrase or key, or the file was "
            "altered or cut short"
        ) from None
    inflater = zlib.decompressobj()
    raw = inflater.decompress(plain, MAX_PAYLOAD)
    if inflater.unconsumed_tail or not inflater.eof:
        raise BundleError("bundle payload is too large or incomplete")
    try:
        payload = json.loads(raw)
    except ValueError:
        raise BundleError("bundle payload is malformed") from None
    if not isinstance(payload, dict):
        raise BundleError("bundle payload is malformed")
    return payload, SeedWrapper(master)
