"""Hand-written fakes for AdminOps unit tests (STYLE pattern 9): an in-memory Store
with the same observable behaviour as SqlStore for the operator actions, a keyring and a
first-factor backend. The SQL store itself is exercised by the authctl end-to-end tests.
"""

from __future__ import annotations

import fnmatch
import secrets
from collections.abc import Sequence
from dataclasses import replace

from authd.auth.interfaces import Challenge, LockState, PrimaryResult, UserOverview
from authd.core.errors import AlreadyExists
from authd.core.model import AuditEvent, LastSeen, Token, TokenStatus, User


class FakeStore:
    """The Store protocol in dicts; single-threaded, so atomicity is free."""

    def __init__(self, keyring: FakeKeyring | None = None) -> None:
        self.keyring = keyring
        self.users: dict[str, User] = {}
        self.tokens: dict[str, Token] = {}
        self.codes: dict[str, list[str]] = {}
        self.audit: list[AuditEvent] = []
        self.challenges: dict[str, Challenge] = {}
        self.rotations = 0

    # users
    def get_user(self, name: str) -> User | None:
        return self.users.get(name)

    def add_user(self, user: User) -> None:
        if user.name in self.users:
            raise AlreadyExists(f"user {user.name!r} exists")
        self.users[user.name] = user

    def ensure_user(
        self,
        name: str,
        source: str,
        now: float,
        profile: dict[str, str] | None = None,
        groups: Sequence[str] = (),
    ) -> User:
        if name not in self.users:
            self.users[name] = User(
                name=name, source=source, created_at=now, groups=tuple(groups), **(profile or {})
            )
        return self.users[name]

    def list_users(
        self, pattern: str | None = None, limit: int | None = None
    ) -> list[UserOverview]:
        names = sorted(n for n in self.users if pattern is None or fnmatch.fnmatchcase(n, pattern))
        out = []
        for n in names[:limit]:
            toks = [t for t in self.tokens.values() if t.user == n]
            active = sum(1 for t in toks if t.status is TokenStatus.ACTIVE)
            registered = bool(toks) or bool(self.codes.get(n)) or self.users[n].pin_hash is not None
            out.append(UserOverview(self.users[n], active, registered))
        return out

    def _update(self, name: str, **changes: object) -> bool:
        if name not in self.users:
            return False
        self.users[name] = replace(self.users[name], **changes)  # type: ignore[arg-type]
        return True

    def set_password_hash(self, name: str, password_hash: str | None) -> bool:
        return self._update(name, password_hash=password_hash)

    def set_disabled(self, name: str, disabled: bool) -> bool:
        return self._update(name, disabled=disabled)

    def set_pin_hash(self, name: str, pin_hash: str | None) -> bool:
        return self._update(name, pin_hash=pin_hash)

    def unlock_user(self, name: str) -> bool:
        return self._update(name, failures=0, locked_until=None)

    def reset_user(self, name: str) -> bool:
        if name not in self.users:
            return False
        self.tokens = {s: t for s, t in self.tokens.items() if t.user != name}
        self.codes.pop(name, None)
        return self._update(name, pin_hash=None)

    def record_failure(
        self, name: str, now: float, max_attempts: int, lock_seconds: float | None
    ) -> LockState:
        user = self.users[name]
        failures = user.failures + 1
        locked = user.locked_until
        if failures >= max_attempts:
            locked = now + lock_seconds if lock_seconds is not None else float("inf")
        self._update(name, failures=failures, locked_until=locked)
        return LockState(failures, locked)

    def record_attempt(
        self, name: str, now: float, source: str, client: str, success: bool
    ) -> None:
        seen = LastSeen(now, source, client)
        if success:
            self._update(name, last_attempt=seen, last_success=seen, failures=0)
        else:
            self._update(name, last_attempt=seen)

    # tokens
    def add_token(self, token: Token) -> None:
        if token.serial in self.tokens:
            raise AlreadyExists(f"token {token.serial!r} exists")
        self.tokens[token.serial] = token

    def get_token(self, serial: str) -> Token | None:
        return self.tokens.get(serial)

    def list_tokens(self, user: str | None = None) -> list[Token]:
        return sorted(
            (t for t in self.tokens.values() if user is None or t.user == user),
            key=lambda t: t.serial,
        )

    def _update_token(self, serial: str, **changes: object) -> bool:
        if serial not in self.tokens:
            return False
        self.tokens[serial] = replace(self.tokens[serial], **changes)  # type: ignore[arg-type]
        return True

    def set_token_status(self, serial: str, status: TokenStatus) -> bool:
        return self._update_token(serial, status=status)

    def assign_token(self, serial: str, user: str | None) -> bool:
        return self._update_token(serial, user=user)

    def accept_totp_step(self, serial: str, step: int, drift: int) -> bool:
        if self.tokens[serial].last_step >= step:
            return False
        return self._update_token(serial, last_step=step, drift=drift)

    def accept_hotp_counter(self, serial: str, counter: int) -> bool:
        if self.tokens[serial].counter > counter:
            return False
        return self._update_token(serial, counter=counter + 1)

    def resync_token(
        self,
        serial: str,
        *,
        counter: int | None = None,
        last_step: int | None = None,
        drift: int | None = None,
    ) -> bool:
        changes = {
            k: v
            for k, v in (("counter", counter), ("last_step", last_step), ("drift", drift))
            if v is not None
        }
        return self._update_token(serial, **changes)

    # backup codes
    def replace_backup_codes(self, user: str, code_hashes: Sequence[str], now: float) -> None:
        self.codes[user] = list(code_hashes)

    def consume_backup_code(self, user: str, code_hash: str) -> bool:
        left = self.codes.get(user, [])
        if code_hash in left:
            left.remove(code_hash)
            return True
        return False

    def backup_codes_left(self, user: str) -> int:
        return len(self.codes.get(user, []))

    # challenges
    def put_challenge(self, state_hash: str, challenge: Challenge) -> None:
        self.challenges[state_hash] = challenge

    def take_challenge(self, state_hash: str, now: float) -> Challenge | None:
        ch = self.challenges.pop(state_hash, None)
        return ch if ch is not None and ch.expires_at > now else None

    # audit, keys, health
    def append_audit(self, event: AuditEvent) -> None:
        self.audit.append(replace(event, id=len(self.audit) + 1))

    def query_audit(
        self,
        user: str | None = None,
        since: float | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[AuditEvent]:
        events = [
            e
            for e in reversed(self.audit)
            if (user is None or e.user == user)
            and (since is None or e.at >= since)
            and (before_id is None or (e.id or 0) < before_id)
        ]
        return events[:limit]

    def rotate_key(self) -> int:
        # Like SqlStore: the key file gets the new key first, then seeds move to it.
        if self.keyring is not None:
            self.keyring.rotate()
        self.rotations += 1
        return len(self.tokens)

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None


class FakeKeyring:
    """A fixed hash key and a rotation counter."""

    def __init__(self) -> None:
        self.hash_key = secrets.token_bytes(32)
        self.rotated = 0
        self.current_key_id = "k0"

    def rotate(self) -> str:
        self.rotated += 1
        self.current_key_id = f"k{self.rotated}"
        return self.current_key_id


class FakeDirectory:
    """A first-factor backend that knows a fixed set of users (for directory enrolment)."""

    name = "fake-ldap"

    def __init__(self, users: dict[str, tuple[str, ...]], unreachable: bool = False) -> None:
        self.users = users
        self.unreachable = unreachable
        self.lookups: list[str] = []

    def authenticate(self, user: str, password: str) -> PrimaryResult:
        return PrimaryResult(known=user in self.users, ok=False)

    def lookup(self, user: str) -> PrimaryResult:
        self.lookups.append(user)
        if self.unreachable:
            return PrimaryResult(known=False, ok=False, unreachable=True)
        if user not in self.users:
            return PrimaryResult(known=False, ok=False)
        return PrimaryResult(
            known=True, ok=False, groups=self.users[user], profile={"email": f"{user}@example.org"}
        )

    def ping(self) -> None:
        return None
