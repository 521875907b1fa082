"""Hand-written fakes (STYLE pattern 9): small, honest, inspectable; no Mock().

`FakeStore` keeps the `Store` Protocol's promises in memory (compare-and-set on steps and
counters, single-use backup codes and challenges, lockout by `core.lockout`), so engine
and AdminOps tests read like the real thing; given a `FakeKeyring`, `rotate_key` rotates it
first, as SqlStore rotates its key file before re-encrypting. `FakeBackend` is a
first-factor source that counts calls. `FakeReactor` runs `callFromThread` work when a test
drains it. Others may reuse these.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import queue
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from authd.auth.interfaces import (
    AuditFilter,
    Challenge,
    DecisionCommit,
    DecisionWrite,
    LockState,
    PasswordFor,
    PrimaryResult,
    UserOverview,
    commit_decision_in_steps,
    get_user_tokens_codes_in_steps,
)
from authd.core import otp
from authd.core.errors import AlreadyExists, StoreUnavailable
from authd.core.lockout import after_failure
from authd.core.model import AuditEvent, LastSeen, Token, TokenStatus, User


class FakeKeyring:
    """What AdminOps needs of `authd.crypto.Keyring`: a fixed hash key and a key id that
    each rotation advances (`rotated` counts them)."""

    def __init__(self) -> None:
        self.hash_key = secrets.token_bytes(32)
        self.rotated = 0
        self.current_key_id = "k0"

    def __repr__(self) -> str:
        return f"FakeKeyring(current_key_id={self.current_key_id!r})"  # never the key

    def rotate(self) -> str:
        self.rotated += 1
        self.current_key_id = f"k{self.rotated}"
        return self.current_key_id


class FakeStore:
    """An in-memory `Store`. One lock makes each method atomic, as the real one is."""

    def __init__(self, keyring: FakeKeyring | None = None) -> None:
        self._lock = threading.Lock()
        self.keyring = keyring  # rotated by rotate_key, like SqlStore's keyring
        self.rotations = 0
        self.users: dict[str, User] = {}
        self.tokens: dict[str, Token] = {}
        self.backup_codes: dict[str, list[str]] = {}  # in the order they were given
        self.challenges: dict[str, Challenge] = {}
        self.audit: list[AuditEvent] = []
        self.down = False  # True: every call raises StoreUnavailable
        self.calls: list[str] = []

    def _enter(self, name: str) -> None:
        self.calls.append(name)
        if self.down:
            raise StoreUnavailable("fake store is down")

    # users
    def get_user(self, name: str) -> User | None:
        self._enter("get_user")
        return self.users.get(name)

    def get_user_with_tokens(self, name: str) -> tuple[User | None, list[Token]]:
        self._enter("get_user_with_tokens")
        user = self.users.get(name)
        return user, [t for t in self.tokens.values() if user is not None and t.user == name]

    def get_user_tokens_codes(self, name: str) -> tuple[User | None, list[Token], int]:
        self._enter("get_user_tokens_codes")
        return get_user_tokens_codes_in_steps(self, name)

    def add_user(self, user: User) -> None:
        self._enter("add_user")
        with self._lock:
            if user.name in self.users:
                raise AlreadyExists(f"user {user.name} exists")
            self.users[user.name] = user

    def ensure_user(
        self,
        name: str,
        source: str,
        now: float,
        profile: dict[str, str] | None = None,
        groups: Sequence[str] = (),
    ) -> User:
        self._enter("ensure_user")
        # Like SqlStore: created on first sight, an existing row is returned unchanged.
        with self._lock:
            known = self.users.get(name)
            if known is None:
                p = profile or {}
                known = User(
                    name=name,
                    source=source,
                    groups=tuple(groups),
                    created_at=now,
                    email=p.get("email", ""),
                    phone=p.get("phone", ""),
                    first_name=p.get("first_name", ""),
                    last_name=p.get("last_name", ""),
                )
                self.users[name] = known
            return known

    def list_users(
        self, pattern: str | None = None, limit: int | None = None
    ) -> list[UserOverview]:
        self._enter("list_users")
        out = []
        for user in sorted(self.users.values(), key=lambda u: u.name):
            if pattern is not None and not fnmatch.fnmatchcase(user.name, pattern):
                continue
            active = sum(
                1
                for t in self.tokens.values()
                if t.user == user.name and t.status == TokenStatus.ACTIVE
            )
            registered = (
                any(t.user == user.name for t in self.tokens.values())
                or bool(self.backup_codes.get(user.name))
                or user.pin_hash is not None
            )
            out.append(UserOverview(user, active, registered))
        return out[:limit] if limit is not None else out

    def _update(self, name: str, **changes: Any) -> bool:
        with self._lock:
            user = self.users.get(name)
            if user is None:
                return False
            self.users[name] = dataclasses.replace(user, **changes)
            return True

    def set_password_hash(self, name: str, password_hash: str | None) -> bool:
        self._enter("set_password_hash")
        return self._update(name, password_hash=password_hash)

    def set_disabled(self, name: str, disabled: bool) -> bool:
        self._enter("set_disabled")
        return self._update(name, disabled=disabled)

    def set_pin_hash(self, name: str, pin_hash: str | None) -> bool:
        self._enter("set_pin_hash")
        return self._update(name, pin_hash=pin_hash)

    def unlock_user(self, name: str) -> bool:
        self._enter("unlock_user")
        return self._update(name, failures=0, locked_until=None)

    def reset_user(self, name: str) -> bool:
        self._enter("reset_user")
        with self._lock:
            for serial in [s for s, t in self.tokens.items() if t.user == name]:
                del self.tokens[serial]
            self.backup_codes.pop(name, None)
        return self._update(name, pin_hash=None)

    def set_profile(
        self, name: str, profile: Mapping[str, str], groups: Sequence[str] | None = None
    ) -> bool:
        self._enter("set_profile")
        changes: dict[str, Any] = dict(profile)
        if groups is not None:
            changes["groups"] = tuple(groups)
        return self._update(name, **changes)

    def delete_user(self, name: str) -> bool:
        self._enter("delete_user")
        with self._lock:
            for serial, t in list(self.tokens.items()):
                if t.user == name:
                    self.tokens[serial] = dataclasses.replace(
                        t, user=None, status=TokenStatus.REVOKED
                    )
            self.backup_codes.pop(name, None)
            return self.users.pop(name, None) is not None

    def record_failure(
        self, name: str, now: float, max_attempts: int, lock_seconds: float | None
    ) -> LockState:
        self._enter("record_failure")
        with self._lock:
            user = self.users[name]
            update = after_failure(
                user.failures, user.locked_until, now, max_attempts, lock_seconds
            )
            self.users[name] = dataclasses.replace(
                user, failures=update.failures, locked_until=update.locked_until
            )
            return LockState(update.failures, update.locked_until)

    def record_attempt(
        self, name: str, now: float, source: str, client: str, success: bool
    ) -> None:
        self._enter("record_attempt")
        seen = LastSeen(now, source, client)
        if success:
            self._update(name, last_attempt=seen, last_success=seen, failures=0, locked_until=None)
        else:
            self._update(name, last_attempt=seen)

    # tokens
    def add_token(self, token: Token) -> None:
        self._enter("add_token")
        with self._lock:
            if token.serial in self.tokens:
                raise AlreadyExists(f"token {token.serial} exists")
            self.tokens[token.serial] = token

    def get_token(self, serial: str) -> Token | None:
        self._enter("get_token")
        return self.tokens.get(serial)

    def list_tokens(self, user: str | None = None) -> list[Token]:
        self._enter("list_tokens")
        # Ordered by serial, as SqlStore's query is.
        return sorted(
            (t for t in self.tokens.values() if user is None or t.user == user),
            key=lambda t: t.serial,
        )

    def _update_token(self, serial: str, when: Callable[[Token], bool], **changes: Any) -> bool:
        with self._lock:
            token = self.tokens.get(serial)
            if token is None or not when(token):
                return False
            self.tokens[serial] = dataclasses.replace(token, **changes)
            return True

    def set_token_status(self, serial: str, status: TokenStatus) -> bool:
        self._enter("set_token_status")
        return self._update_token(serial, lambda t: True, status=status)

    def assign_token(self, serial: str, user: str | None) -> bool:
        self._enter("assign_token")
        return self._update_token(serial, lambda t: True, user=user)

    def accept_totp_step(self, serial: str, step: int, drift: int) -> bool:
        self._enter("accept_totp_step")
        return self._update_token(serial, lambda t: t.last_step < step, last_step=step, drift=drift)

    def accept_hotp_counter(self, serial: str, counter: int) -> bool:
        self._enter("accept_hotp_counter")
        return self._update_token(serial, lambda t: t.counter <= counter, counter=counter + 1)

    def resync_token(
        self,
        serial: str,
        *,
        counter: int | None = None,
        last_step: int | None = None,
        drift: int | None = None,
    ) -> bool:
        self._enter("resync_token")
        guard = otp.resync_write(counter, last_step)
        changes = {guard.field: guard.value}
        if drift is not None:
            changes["drift"] = drift
        return self._update_token(serial, guard.allows, **changes)

    # backup codes
    def replace_backup_codes(self, user: str, code_hashes: Sequence[str], now: float) -> None:
        self._enter("replace_backup_codes")
        with self._lock:
            self.backup_codes[user] = list(code_hashes)

    def consume_backup_code(self, user: str, code_hash: str) -> bool:
        self._enter("consume_backup_code")
        with self._lock:
            codes = self.backup_codes.get(user, [])
            if code_hash not in codes:
                return False
            codes.remove(code_hash)
            return True

    def backup_codes_left(self, user: str) -> int:
        self._enter("backup_codes_left")
        return len(self.backup_codes.get(user, ()))

    # challenges
    def put_challenge(self, state_hash: str, challenge: Challenge) -> None:
        self._enter("put_challenge")
        with self._lock:
            self.challenges[state_hash] = challenge

    def take_challenge(self, state_hash: str, now: float) -> Challenge | None:
        self._enter("take_challenge")
        with self._lock:
            challenge = self.challenges.pop(state_hash, None)
        if challenge is None or challenge.expires_at <= now:
            return None
        return challenge

    # a decision's write phase
    def commit_decision(self, write: DecisionWrite) -> DecisionCommit:
        self._enter("commit_decision")
        # The Protocol's reference meaning, step by step (each step atomic on its own).
        return commit_decision_in_steps(self, write)

    # audit, keys, health
    def append_audit(self, event: AuditEvent) -> None:
        self._enter("append_audit")
        with self._lock:
            last = self.audit[-1].id or 0 if self.audit else 0  # ids never reused
            self.audit.append(dataclasses.replace(event, id=last + 1))

    def query_audit(
        self,
        user: str | None = None,
        since: float | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[AuditEvent]:
        self._enter("query_audit")
        events = [
            e
            for e in reversed(self.audit)
            if (user is None or e.user == user)
            and (since is None or e.at >= since)
            and (before_id is None or (e.id or 0) < before_id)
        ]
        return events[:limit]

    def export_audit(
        self, where: AuditFilter, after_id: int = 0, limit: int = 1000
    ) -> list[AuditEvent]:
        self._enter("export_audit")
        wanted = {"user": where.user, "action": where.action, "result": where.result}
        wanted["client"] = where.client
        events = [
            e
            for e in self.audit
            if (e.id or 0) > after_id
            and all(v is None or getattr(e, k) == v for k, v in wanted.items())
            and (where.since is None or e.at >= where.since)
            and (where.until is None or e.at < where.until)
        ]
        return events[:limit]

    def prune_audit(self, before: float, batch: int) -> int:
        self._enter("prune_audit")
        with self._lock:
            doomed = [e for e in self.audit if e.at < before][:batch]
            self.audit = [e for e in self.audit if e not in doomed]
            return len(doomed)

    def rotate_key(self) -> int:
        self._enter("rotate_key")
        # Like SqlStore: the key file gets the new key first, then seeds move to it.
        with self._lock:
            if self.keyring is not None:
                self.keyring.rotate()
            self.rotations += 1
            return len(self.tokens)

    def ping(self) -> None:
        self._enter("ping")

    def close(self) -> None:
        pass

    def decision_scope(self) -> AbstractContextManager[None]:
        return nullcontext()


@dataclass
class FakeDirectoryUser:
    password: str = field(repr=False)
    groups: tuple[str, ...] = ()
    profile: dict[str, str] = field(default_factory=dict)


class FakeBackend:
    """A first-factor backend over a dict; counts every call so tests can assert that a
    request costs at most one password check. `unreachable` simulates a dead directory.
    `ignore_case`: names match as a directory's do (case and surrounding spaces
    ignored), and the user is the dict's key, as a directory entry's name attribute."""

    def __init__(
        self,
        name: str,
        users: dict[str, FakeDirectoryUser] | None = None,
        unreachable: bool = False,
        ignore_case: bool = False,
    ) -> None:
        self.name = name
        self.users = dict(users or {})
        self.unreachable = unreachable
        self.ignore_case = ignore_case
        self.authenticate_calls: list[tuple[str, str]] = []  # (user, password): test-only
        self.lookup_calls: list[str] = []
        self.broken: Exception | None = None  # raised by authenticate when set

    def _find(self, user: str) -> tuple[str, FakeDirectoryUser] | None:
        if not self.ignore_case:
            entry = self.users.get(user)
            return None if entry is None else (user, entry)
        wanted = user.strip().casefold()
        for name, entry in self.users.items():
            if name.casefold() == wanted:
                return name, entry
        return None

    def authenticate(self, user: str, password: str | PasswordFor) -> PrimaryResult:
        working = self.broken is None and not self.unreachable
        found = self._find(user) if working else None
        if found is not None and not isinstance(password, str):
            password = password(found[0])
        self.authenticate_calls.append((user, password if isinstance(password, str) else ""))
        if self.broken is not None:
            raise self.broken
        if self.unreachable:
            return PrimaryResult(known=False, ok=False, unreachable=True)
        if found is None:
            return PrimaryResult(known=False, ok=False)
        name, entry = found
        ok = bool(password) and password == entry.password
        return PrimaryResult(
            known=True, ok=ok, groups=entry.groups, profile=dict(entry.profile), name=name
        )

    def lookup(self, user: str) -> PrimaryResult:
        self.lookup_calls.append(user)
        if self.unreachable:
            return PrimaryResult(known=False, ok=False, unreachable=True)
        found = self._find(user)
        if found is None:
            return PrimaryResult(known=False, ok=False)
        name, entry = found
        return PrimaryResult(
            known=True, ok=False, groups=entry.groups, profile=dict(entry.profile), name=name
        )

    def ping(self) -> None:
        if self.unreachable:
            raise ConnectionError(f"{self.name} unreachable")


class FakeReactor:
    """Just enough reactor for `deferToThreadPool`: `seconds()` from a settable clock and
    `callFromThread` into a queue that the test drains with a deadline (no sleeping)."""

    def __init__(self, now: float) -> None:
        self.now = now
        self._calls: queue.Queue[tuple[Callable[..., object], tuple[object, ...]]] = queue.Queue()

    def seconds(self) -> float:
        return self.now

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:  # noqa: N802
        self._calls.put((f, args))

    def run_until(self, done: Callable[[], bool], timeout: float = 5.0) -> None:
        """Run calls handed over by worker threads until `done()`; fail after `timeout`."""
        while not done():
            try:
                f, args = self._calls.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"nothing arrived from the pool within {timeout}s") from None
            f(*args)


class WrappedStore:
    """A store with some methods replaced; everything else (decision_reads and
    commit_decisions included, when the real store has them) passes through."""

    def __init__(self, store: Any, **replaced: Any) -> None:
        self._store = store
        self._replaced = replaced

    @property
    def wrapped(self) -> Any:
        """The store behind it (a batching one stays batching)."""
        return self._store

    def __getattr__(self, name: str) -> Any:
        if name in self._replaced:
            return self._replaced[name]
        return getattr(self._store, name)
