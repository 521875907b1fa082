"""What a bundle carries, as plain records, and their JSON form."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from authd.core.model import Algorithm, LastSeen, Token, TokenStatus, TokenType, User


@dataclass(frozen=True)
class BackupCode:
    hash: str = field(repr=False)  # HMAC under the site's hash key, never the code
    created_at: float


@dataclass
class UserRecord:
    user: User
    backup: tuple[BackupCode, ...] = ()


@dataclass
class Records:
    """Users (with lock state, PIN and backup-code hashes) and tokens (with seeds in
    clear: held only while a bundle is written or read)."""

    users: list[UserRecord] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)


def _seen(value: LastSeen | None) -> dict[str, Any] | None:
    return (
        None if value is None else {"at": value.at, "source": value.source, "client": value.client}
    )


def _unseen(value: Any) -> LastSeen | None:
    if value is None:
        return None
    return LastSeen(float(value["at"]), str(value["source"]), str(value["client"]))


def _deadline(value: float | None) -> float | str | None:
    return "inf" if value is not None and math.isinf(value) else value


def _undeadline(value: Any) -> float | None:
    if value is None:
        return None
    return math.inf if value == "inf" else float(value)


def user_to_json(record: UserRecord) -> dict[str, Any]:
    u = record.user
    return {
        "name": u.name,
        "source": u.source,
        "password_hash": u.password_hash,
        "pin_hash": u.pin_hash,
        "disabled": u.disabled,
        "failures": u.failures,
        "locked_until": _deadline(u.locked_until),
        "email": u.email,
        "phone": u.phone,
        "first_name": u.first_name,
        "last_name": u.last_name,
        "groups": list(u.groups),
        "last_attempt": _seen(u.last_attempt),
        "last_success": _seen(u.last_success),
        "created_at": u.created_at,
        "backup_codes": [{"hash": c.hash, "created_at": c.created_at} for c in record.backup],
    }


def user_from_json(d: dict[str, Any]) -> UserRecord:
    """Raises KeyError, TypeError or ValueError on a malformed record."""
    user = User(
        name=str(d["name"]),
        source=str(d["source"]),
        password_hash=None if d["password_hash"] is None else str(d["password_hash"]),
        pin_hash=None if d["pin_hash"] is None else str(d["pin_hash"]),
        disabled=bool(d["disabled"]),
        failures=int(d["failures"]),
        locked_until=_undeadline(d["locked_until"]),
        email=str(d["email"]),
        phone=str(d["phone"]),
        first_name=str(d["first_name"]),
        last_name=str(d["last_name"]),
        groups=tuple(str(g) for g in d["groups"]),
        last_attempt=_unseen(d["last_attempt"]),
        last_success=_unseen(d["last_success"]),
        created_at=float(d["created_at"]),
    )
    codes = tuple(BackupCode(str(c["hash"]), float(c["created_at"])) for c in d["backup_codes"])
    return UserRecord(user, codes)


def token_columns(token: Token) -> dict[str, Any]:
    """A token's fields by column name, all but the seed (each place seals it its way)."""
    return {
        "serial": token.serial,
        "user": token.user,
        "type": token.type.value,
        "algorithm": token.algorithm.value,
        "digits": token.digits,
        "period": token.period,
        "counter": token.counter,
        "last_step": token.last_step,
        "drift": token.drift,
        "status": token.status.value,
        "description": token.description,
        "created_at": token.created_at,
    }


def token_to_json(token: Token, wrap: Callable[[str, bytes], str]) -> dict[str, Any]:
    """The seed leaves only wrapped for the bundle (`wrap(serial, seed)`)."""
    return {**token_columns(token), "seed": wrap(token.serial, token.seed)}


def token_from_json(d: dict[str, Any], unwrap: Callable[[str, str], bytes]) -> Token:
    serial = str(d["serial"])
    return Token(
        serial=serial,
        type=TokenType(d["type"]),
        seed=unwrap(serial, str(d["seed"])),
        user=None if d["user"] is None else str(d["user"]),
        algorithm=Algorithm(d["algorithm"]),
        digits=int(d["digits"]),
        period=int(d["period"]),
        counter=int(d["counter"]),
        last_step=int(d["last_step"]),
        drift=int(d["drift"]),
        status=TokenStatus(d["status"]),
        description=str(d["description"]),
        created_at=float(d["created_at"]),
    )
