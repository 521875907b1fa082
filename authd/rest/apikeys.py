"""API keys: bearer keys known only by their SHA-256, checked in constant time.

The config holds `key_sha256` (hex) or `key_file` (the key itself, read once at start
or reload); either way only the digest stays in memory. A presented key is hashed and
compared with every configured digest by `hmac.compare_digest`, all of them every time,
so neither timing nor an early exit tells how close a guess came or which key exists.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from authd.config.model import ApiKey

SCOPES = ("validate", "admin", "selfservice-admin")


class ApiKeyConfigError(ValueError):
    """A configured key cannot be used (bad hash, unreadable file); names the key only."""


@dataclass(frozen=True)
class KeyIdentity:
    """Who called: the key's name (the audit actor is `http:<name>`) and its scopes."""

    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        # `admin` holds every power `selfservice-admin` has (the access-recovery queue).
        return scope in self.scopes or (scope == "selfservice-admin" and "admin" in self.scopes)


@dataclass(frozen=True)
class _Entry:
    identity: KeyIdentity
    digest: bytes = field(repr=False)


def _digest_of(key: ApiKey) -> bytes:
    if key.key_sha256 and key.key_file:
        raise ApiKeyConfigError(f"api key {key.name!r}: give key_sha256 or key_file, not both")
    if key.key_sha256:
        try:
            digest = bytes.fromhex(key.key_sha256.strip())
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise ApiKeyConfigError(f"api key {key.name!r}: key_sha256 is not 64 hex digits")
        return digest
    if key.key_file:
        try:
            with open(key.key_file, "rb") as fh:
                raw = fh.read(4096).strip()
        except OSError as exc:
            raise ApiKeyConfigError(
                f"api key {key.name!r}: cannot read {key.key_file}: {exc.strerror}"
            ) from None
        if len(raw) < 16:
            raise ApiKeyConfigError(f"api key {key.name!r}: {key.key_file} holds too short a key")
        return hashlib.sha256(raw).digest()
    raise ApiKeyConfigError(f"api key {key.name!r}: key_sha256 or key_file is required")


class ApiKeyRing:
    """The configured keys; immutable, so a reload swaps the whole ring at once."""

    def __init__(self, entries: Iterable[_Entry] = ()) -> None:
        self._entries = tuple(entries)

    @classmethod
    def from_config(cls, keys: Iterable[ApiKey]) -> ApiKeyRing:
        """Build the ring; raises ApiKeyConfigError naming the first unusable key."""
        entries = []
        for key in keys:
            unknown = sorted(set(key.scopes) - set(SCOPES))
            if unknown:
                raise ApiKeyConfigError(f"api key {key.name!r}: unknown scope(s) {unknown}")
            entries.append(_Entry(KeyIdentity(key.name, frozenset(key.scopes)), _digest_of(key)))
        return cls(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"ApiKeyRing({[e.identity.name for e in self._entries]})"

    def identify(self, authorization: bytes | None) -> KeyIdentity | None:
        """The caller's key from an `Authorization: Bearer KEY` header, or None."""
        if authorization is None:
            return None
        scheme, _, token = authorization.strip().partition(b" ")
        # RFC 6750 §2.1: the scheme is case-insensitive; the key itself is opaque.
        if scheme.lower() != b"bearer" or not token.strip():
            return None
        presented = hashlib.sha256(token.strip()).digest()
        found: KeyIdentity | None = None
        for entry in self._entries:
            if hmac.compare_digest(presented, entry.digest) and found is None:
                found = entry.identity
        return found


# ------------------------------------------------------------------ issuing keys
# A key name becomes the audit actor `http:<name>` and a YAML scalar: keep it plain.
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# 256 bits from the OS CSPRNG, URL-safe so it survives headers and shells unquoted.
_KEY_BYTES = 32


@dataclass(frozen=True)
class NewApiKey:
    """A freshly drawn key and the `http.api_keys` entry that admits it.

    The key is shown once and never stored by authd: the config keeps its SHA-256, or
    the key sits in `key_file` (0600) when one was asked for.
    """

    name: str
    scopes: tuple[str, ...]
    key: str = field(repr=False)
    key_file: str = ""

    @property
    def key_sha256(self) -> str:
        return hashlib.sha256(self.key.encode()).hexdigest()

    def config_lines(self) -> str:
        """The YAML list item to paste under `http: api_keys:`."""
        where = (
            f"key_file: {self.key_file}" if self.key_file else f'key_sha256: "{self.key_sha256}"'
        )
        return f"    - name: {self.name}\n      {where}\n      scopes: [{', '.join(self.scopes)}]"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scopes": list(self.scopes),
            "key": self.key,
            "key_sha256": self.key_sha256,
            "key_file": self.key_file or None,
            "config": self.config_lines(),
        }


def new_api_key(name: str, scopes: Sequence[str], key_file: str = "") -> NewApiKey:
    """Draw a key for `name` with `scopes`; with `key_file`, write it there (created
    0600, never over an existing file). Raises ValueError on a bad name, scope or file."""
    if not _NAME_RE.match(name):
        raise ValueError("a key name is 1-64 of A-Z a-z 0-9 . _ -")
    wanted = tuple(dict.fromkeys(scopes))
    unknown = sorted(set(wanted) - set(SCOPES))
    if not wanted or unknown:
        raise ValueError(f"give one or more scopes of {', '.join(SCOPES)}")
    created = NewApiKey(name, wanted, secrets.token_urlsafe(_KEY_BYTES), key_file)
    if key_file:
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise ValueError(f"cannot create {key_file}: {exc.strerror}") from None
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)  # whatever the umask
            fh.write(created.key + "\n")
    return created
