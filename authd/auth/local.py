"""Local users as a first-factor backend: argon2id hashes kept in the store.

A local user's name is the store's, matched exactly (case included) after the engine
dropped surrounding white space and configured realms: `Alice` is not `alice`.

Timing must not tell whether a user exists (CONTRACT), so an unknown user, a user
without a password and an empty password all cost one argon2 verification, against a
dummy hash made with the same parameters.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from authd.auth.interfaces import PasswordFor, PrimaryResult, Store
from authd.config.model import PasswordHashConfig
from authd.core.errors import InvalidInput
from authd.core.model import User

LOCAL_SOURCE = "local"


def make_password_hasher(cfg: PasswordHashConfig) -> PasswordHasher:
    """An argon2id hasher with the configured cost (RFC 9106 defaults in the config)."""
    return PasswordHasher(
        time_cost=cfg.time_cost,
        memory_cost=cfg.memory_cost_kib,
        parallelism=cfg.parallelism,
        hash_len=32,
        salt_len=16,
        type=Type.ID,
    )


def hash_password(hasher: PasswordHasher, password: str) -> str:
    """The hash `authctl user add --password-stdin` stores. The error never quotes it."""
    if not password:
        raise InvalidInput("password is empty")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("password is not valid text") from None
    return hasher.hash(password)


class LocalUsers:
    """`FirstFactorBackend` over store users whose source is `local`."""

    def __init__(self, store: Store, hasher: PasswordHasher, name: str = LOCAL_SOURCE) -> None:
        self.name = name
        self._store = store
        self._hasher = hasher
        self._dummy_hash: str | None = None

    @property
    def _dummy(self) -> str:
        """A hash with the same parameters as real ones, so a dummy verify costs what a
        real one does. Made on first use: `authctl` commands that never verify skip it."""
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(24))
        return self._dummy_hash

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError, UnicodeEncodeError):
            return False

    def authenticate(self, user: str, password: str | PasswordFor) -> PrimaryResult:
        """Check `password` against the user's argon2id hash; fail closed on anything odd."""
        record = self._store.get_user(user)
        if record is None or record.source != LOCAL_SOURCE:
            self._verify(self._dummy, password if isinstance(password, str) and password else "x")
            return PrimaryResult(known=False, ok=False)
        if not isinstance(password, str):
            password = password(record.name)
        stored = record.password_hash
        if not password or not stored:
            # An empty password never authenticates; a user without a password cannot
            # log in with one. Same cost as a real check either way.
            self._verify(self._dummy, password or "x")
            return PrimaryResult(known=True, ok=False, groups=record.groups, name=record.name)
        ok = self._verify(stored, password)
        if ok and self._needs_rehash(stored):
            # The config's argon2 cost went up: upgrade this hash while we hold the password.
            self._store.set_password_hash(user, self._hasher.hash(password))
        return PrimaryResult(
            known=True, ok=ok, groups=record.groups, profile=_profile(record), name=record.name
        )

    def _needs_rehash(self, stored: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored)
        except (InvalidHashError, ValueError):
            return False

    def lookup(self, user: str) -> PrimaryResult:
        record = self._store.get_user(user)
        if record is None or record.source != LOCAL_SOURCE:
            return PrimaryResult(known=False, ok=False)
        return PrimaryResult(
            known=True, ok=False, groups=record.groups, profile=_profile(record), name=record.name
        )

    def ping(self) -> None:
        self._store.ping()


def _profile(record: User) -> dict[str, str]:
    values = {
        "email": record.email,
        "phone": record.phone,
        "first_name": record.first_name,
        "last_name": record.last_name,
    }
    return {k: v for k, v in values.items() if v}
