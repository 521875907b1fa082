"""Plain records shared by core, storage and the front-ends. No I/O, no Twisted."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class TokenType(enum.StrEnum):
    TOTP = "totp"
    HOTP = "hotp"


class Algorithm(enum.StrEnum):
    SHA1 = "SHA1"
    SHA256 = "SHA256"
    SHA512 = "SHA512"


class TokenStatus(enum.StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"
    REVOKED = "revoked"
    # Enrolled in the portal, not yet confirmed with a code: takes part in no decision.
    PENDING = "pending"


class UserStatus(enum.StrEnum):
    """As `authctl user list` shows it (derived, see `user_status`)."""

    ACTIVE = "active"
    LOCKED = "locked"
    UNREGISTERED = "unregistered"
    NO_TOKEN = "no-token"  # noqa: S105 (a status name, not a password)
    DISABLED = "disabled"


@dataclass(slots=True)  # not frozen: see authd.auth.interfaces
class Token:
    """An OATH token with its seed in clear: lives in memory only, never logged.

    `counter` (HOTP) is the next counter value the token is expected to show.
    `last_step` (TOTP) is the highest time step accepted so far (-1: none); RFC 6238
    §5.2 refuses that step and every earlier one. `drift` is in steps (TOTP) and is
    remembered on success so a drifting clock keeps working.
    """

    serial: str
    type: TokenType
    seed: bytes = field(repr=False)
    user: str | None = None
    algorithm: Algorithm = Algorithm.SHA1
    digits: int = 6
    period: int = 30
    counter: int = 0
    last_step: int = -1
    drift: int = 0
    status: TokenStatus = TokenStatus.ACTIVE
    description: str = ""
    created_at: float = 0.0


@dataclass(slots=True)  # not frozen: see authd.auth.interfaces
class LastSeen:
    """Where and when a user last tried or succeeded."""

    at: float
    source: str = ""
    client: str = ""


@dataclass(slots=True)  # not frozen: see authd.auth.interfaces
class User:
    """A user as the store knows it. `source` is `local` or the backend that found it."""

    name: str
    source: str = "local"
    password_hash: str | None = field(default=None, repr=False)
    pin_hash: str | None = field(default=None, repr=False)
    disabled: bool = False
    failures: int = 0
    locked_until: float | None = None  # math.inf when locked until an operator unlocks
    email: str = ""
    phone: str = ""
    first_name: str = ""
    last_name: str = ""
    groups: tuple[str, ...] = ()
    last_attempt: LastSeen | None = None
    last_success: LastSeen | None = None
    created_at: float = 0.0


def is_locked(user: User, now: float) -> bool:
    """Locked while `locked_until` lies in the future (auto-unlock needs no timer)."""
    return user.locked_until is not None and now < user.locked_until


def user_status(user: User, active_tokens: int, registered: bool, now: float) -> UserStatus:
    """The status column of `authctl user list`.

    registered: the user has any OTP registration at all (token, backup codes or PIN).
    """
    if user.disabled:
        return UserStatus.DISABLED
    if is_locked(user, now):
        return UserStatus.LOCKED
    if active_tokens:
        return UserStatus.ACTIVE
    if registered:
        return UserStatus.NO_TOKEN
    return UserStatus.UNREGISTERED


@dataclass(slots=True)  # not frozen: see authd.auth.interfaces
class AuditEvent:
    """One line of the append-only audit trail. Never holds a secret, code or PIN."""

    at: float
    actor: str  # "radius:<client>", "http:<key name>", "authctl:<unix user>", ...
    action: str  # "auth", "user.add", "token.revoke", ...
    result: str  # "accept", "reject", "challenge", "ok", "error"
    user: str = ""
    client: str = ""
    source: str = ""
    reason: str = ""
    detail: str = ""
    id: int | None = None
