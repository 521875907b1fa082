"""Operator actions, one implementation shared by `authctl` and the HTTP admin API.

Synchronous (blocking store calls): authctl calls it directly, the HTTP front-end runs it
in the auth thread pool. Every action that changes state appends an audit event with
the caller's `actor` ("authctl:<unix user>", "http:<api key name>"), result `ok` or
`error`; read-only actions (list, show, audit) take `actor` too but leave no trace, so
that looking at the trail does not flood it. `test_auth` is audited by the engine itself
(action `auth`), exactly as a RADIUS or HTTP attempt would be.

Results are frozen dataclasses with `to_json()`; nothing returned holds a seed or a
hash, except the one-time `otpauth://` URI of `add_token` and the codes of
`generate_backup_codes`, which the caller shows once (both are hidden from repr).

Errors: `NotFound`, `AlreadyExists`, `Conflict`, `InvalidInput` from authd/core/errors.py (plus
`StoreUnavailable` from the store); callers map them to exit codes / HTTP statuses.
Error messages name users and serials, never a secret.
"""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar, runtime_checkable

from authd.auth.interfaces import (
    AuditFilter,
    AuthRequest,
    Decision,
    FirstFactorBackend,
    Reason,
    Store,
)
from authd.auth.local import LOCAL_SOURCE, LocalUsers, hash_password, make_password_hasher
from authd.config.model import Config
from authd.core import backup_codes, otp, pin
from authd.core.errors import AlreadyExists, AuthdError, Conflict, InvalidInput, NotFound
from authd.core.model import (
    Algorithm,
    AuditEvent,
    LastSeen,
    Token,
    TokenStatus,
    TokenType,
    User,
    is_locked,
    user_status,
)
from authd.rest.apikeys import NewApiKey, new_api_key
from authd.storage.audit_chain import Verdict as ChainVerdict
from authd.storage.recovery import (
    APPROVED,
    OPEN,
    PROOF_ACTOR,
    REJECTED,
    SUPERSEDED,
    Issue,
    SqlIssues,
)

# A user name is what a RADIUS User-Name or an LDAP uid can carry: printable, no
# whitespace or control characters (they would break audit lines and list columns).
_USER_RE = re.compile(r"^[^\s\x00-\x1f\x7f*]{1,255}$")
# Serials travel in URIs, CLI arguments and audit lines: keep them plain.
_SERIAL_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Bounds for TOTP periods any authenticator app handles.
_PERIOD_RANGE = (10, 300)
_SERIAL_ATTEMPTS = 5
# Audit rows per export page (one indexed range read each).
EXPORT_PAGE = 1000
# RFC 4226 §4 R6: a shared secret of at least 128 bits.
_MIN_SEED_BYTES = 16


class KeyringLike(Protocol):
    """What AdminOps needs of `authd.crypto.Keyring`."""

    @property
    def hash_key(self) -> bytes: ...

    @property
    def current_key_id(self) -> str: ...


class Decider(Protocol):
    """`authd.decision.engine.Engine` as `test_auth` uses it (synchronous, explicit now)."""

    def decide(self, req: AuthRequest, now: float) -> Decision: ...


HashPassword = Callable[[str], str]


# ---------------------------------------------------------------- results
def _seen(seen: LastSeen | None) -> dict[str, Any] | None:
    if seen is None:
        return None
    return {"at": seen.at, "source": seen.source, "client": seen.client}


@dataclass(frozen=True)
class UserSummary:
    """One row of `user list`."""

    user: str
    status: str
    source: str
    tokens: int  # active tokens
    last_attempt: LastSeen | None
    last_success: LastSeen | None

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "status": self.status,
            "source": self.source,
            "tokens": self.tokens,
            "last_attempt": _seen(self.last_attempt),
            "last_success": _seen(self.last_success),
        }


@dataclass(frozen=True)
class TokenInfo:
    """A token without its seed."""

    serial: str
    type: str
    user: str | None
    status: str
    algorithm: str
    digits: int
    period: int | None  # TOTP only
    counter: int | None  # HOTP only: the next expected counter value
    drift: int | None  # TOTP only: remembered clock drift, in steps
    description: str
    created_at: float

    @classmethod
    def of(cls, token: Token) -> TokenInfo:
        totp = token.type is TokenType.TOTP
        return cls(
            serial=token.serial,
            type=str(token.type),
            user=token.user,
            status=str(token.status),
            algorithm=str(token.algorithm),
            digits=token.digits,
            period=token.period if totp else None,
            counter=None if totp else token.counter,
            drift=token.drift if totp else None,
            description=token.description,
            created_at=token.created_at,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "type": self.type,
            "user": self.user,
            "status": self.status,
            "algorithm": self.algorithm,
            "digits": self.digits,
            "period": self.period,
            "counter": self.counter,
            "drift": self.drift,
            "description": self.description,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class UserDetail:
    """Everything `user show` prints: profile, lock state, registration, last seen."""

    user: str
    source: str
    status: str
    disabled: bool
    locked: bool
    locked_until: float | None  # math.inf: until an operator unlocks
    failures: int
    has_password: bool
    has_pin: bool
    backup_codes_left: int
    email: str
    phone: str
    first_name: str
    last_name: str
    groups: tuple[str, ...]
    tokens: tuple[TokenInfo, ...]
    last_attempt: LastSeen | None
    last_success: LastSeen | None
    created_at: float

    def to_json(self) -> dict[str, Any]:
        locked_until: float | str | None = self.locked_until
        if locked_until is not None and locked_until == float("inf"):
            locked_until = "never"  # JSON has no infinity
        return {
            "user": self.user,
            "source": self.source,
            "status": self.status,
            "disabled": self.disabled,
            "locked": self.locked,
            "locked_until": locked_until,
            "failures": self.failures,
            "has_password": self.has_password,
            "has_pin": self.has_pin,
            "backup_codes_left": self.backup_codes_left,
            "email": self.email,
            "phone": self.phone,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "groups": list(self.groups),
            "tokens": [t.to_json() for t in self.tokens],
            "last_attempt": _seen(self.last_attempt),
            "last_success": _seen(self.last_success),
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class Reminders:
    """Who `user remind` mailed (or, on a dry run, would mail)."""

    users: tuple[tuple[str, str], ...]  # (user, e-mail address)
    sent: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "users": [{"user": u, "email": e} for u, e in self.users],
        }


@dataclass(frozen=True)
class TokenAdded:
    """A new token and its `otpauth://` URI: the URI holds the seed, show it once."""

    token: TokenInfo
    uri: str = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"token": self.token.to_json(), "otpauth_uri": self.uri}


@dataclass(frozen=True)
class BackupCodeSet:
    """A fresh set of backup codes, in clear this one time only."""

    user: str
    codes: tuple[str, ...] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"user": self.user, "codes": list(self.codes)}


@dataclass(frozen=True)
class Done:
    """An action with nothing to return but its name and subject."""

    action: str
    subject: str

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "subject": self.subject, "result": "ok"}


@dataclass(frozen=True)
class KeyRotation:
    """`key rotate`: how many seeds were re-encrypted under the new data key."""

    key_id: str
    reencrypted: int

    def to_json(self) -> dict[str, Any]:
        return {"action": "key.rotate", "key_id": self.key_id, "reencrypted": self.reencrypted}


@dataclass(frozen=True)
class AuditPage:
    """Audit events, newest first; `next_before_id` fetches the page after this one."""

    events: tuple[AuditEvent, ...]
    next_before_id: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "events": [audit_json(e) for e in self.events],
            "next_before_id": self.next_before_id,
        }


def audit_json(e: AuditEvent) -> dict[str, Any]:
    """One audit row as a JSON object (a line of `audit --export`)."""
    return {
        "id": e.id,
        "at": e.at,
        "actor": e.actor,
        "action": e.action,
        "result": e.result,
        "user": e.user,
        "client": e.client,
        "source": e.source,
        "reason": e.reason,
        "detail": e.detail,
    }


@dataclass(frozen=True)
class AuditExport:
    """One page of `export_audit`, oldest first; `next_after_id` continues it."""

    events: tuple[AuditEvent, ...]
    next_after_id: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "events": [audit_json(e) for e in self.events],
            "next_after_id": self.next_after_id,
        }


@dataclass(frozen=True)
class TestResult:
    """`authctl test`: the engine's decision, with the internal reason (operator only)."""

    __test__ = False  # not a pytest class, despite the name

    user: str
    outcome: str
    reason: str
    message: str
    groups: tuple[str, ...]
    # "<backend> <url>: <why>" for each directory server that failed (status's reasons)
    directory_problems: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.outcome == "accept"

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "result": self.outcome,
            "reason": self.reason,
            "message": self.message,
            "groups": list(self.groups),
            "directory_problems": list(self.directory_problems),
        }


@dataclass(frozen=True)
class ComponentStatus:
    """One line of `authctl status`: a store, a first-factor backend or one LDAP server.

    `state` is "ok" or "error: <what>", where <what> is an exception type name or a fixed
    word, never an exception message (which could quote a DN, a URL password, a secret).
    """

    component: str
    kind: str  # "store", "backend" or "server"
    state: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "kind": self.kind,
            "state": self.state,
            "detail": self.detail,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class StatusReport:
    """`authctl status`: can this node reach its store and every first-factor backend?"""

    components: tuple[ComponentStatus, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.components)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "components": [c.to_json() for c in self.components]}


@runtime_checkable
class _DirectoryStatus(Protocol):
    def status(self) -> list[tuple[str, bool]]: ...


@runtime_checkable
class _DirectoryFailures(Protocol):
    def failures(self) -> dict[str, str]: ...


def _probe(ping: Callable[[], None]) -> str:
    """ "ok", or "error: <exception type>": any failure means unreachable; report it,
    never raise it, and never carry its message (it may quote a URL with a password)."""
    try:
        ping()
    except Exception as e:  # every failure is a state to report
        return f"error: {type(e).__name__}"
    return "ok"


# ---------------------------------------------------------------- the actions
@dataclass
class AuditNote:
    """What an audited action learns on the way (mutable on purpose)."""

    detail: str = ""


class AuditSink(Protocol):
    """Where `audited` appends: any store (the SQL store, the LDAP-attribute one)."""

    def append_audit(self, event: AuditEvent) -> None: ...


@contextmanager
def audited(
    store: AuditSink,
    clock: Callable[[], float],
    actor: str,
    action: str,
    user: str = "",
    detail: str = "",
    source: str = "",
) -> Iterator[AuditNote]:
    """Append one audit event for an operator action: `ok`, or `error` with the error
    class. The reason is the exception's class name, not its message, so that nothing an
    operator typed can reach the trail by way of an error. The body may fill in
    `note.detail` once it knows it (a generated serial, a new key id)."""
    note = AuditNote(detail)

    def append(result: str, reason: str) -> None:
        store.append_audit(
            AuditEvent(
                at=clock(),
                actor=actor,
                action=action,
                result=result,
                user=user,
                client="authctl" if actor.startswith("authctl:") else "",
                source=source,
                reason=reason,
                detail=note.detail,
            )
        )

    try:
        yield note
    except AuthdError as exc:
        # If the store is down this append fails too: raise the original error.
        with suppress(AuthdError):
            append("error", type(exc).__name__)
        raise
    append("ok", "")


# Why a forgotten-password request of a directory user is refused (shown to the user).
DIRECTORY_PASSWORD = "Your password is kept in your organisation's directory: ask the help desk."


class AdminOps:
    """Every operator action, synchronous, each atomic in the store.

    `clock` returns POSIX seconds (`reactor.seconds` in the daemon, `time.time` in
    authctl, a Clock in tests). `engine` is needed only by `test_auth`; `backends` (the
    first-factor chain) lets token/PIN actions find directory users not yet in the store;
    `password_hasher` hashes local passwords (default: argon2id with the config's cost).
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        keyring: KeyringLike,
        clock: Callable[[], float],
        *,
        engine: Decider | None = None,
        backends: Sequence[FirstFactorBackend] = (),
        password_hasher: HashPassword | None = None,
        verify_audit: Callable[[], ChainVerdict] | None = None,
        issues: SqlIssues | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._keyring = keyring
        self._clock = clock
        self._engine = engine
        self._backends = tuple(backends)
        self._password_hasher = password_hasher
        self._verify_audit = verify_audit
        self._issues = issues
        self._source = ""  # the client address audit rows name (see `from_source`)

    def _mail(self, to: str, subject: str, body: str) -> None:
        from authd.mail import send_mail  # only reminders pay for the import

        send_mail(self._config.smtp, to, subject, body)

    def from_source(self, source: str) -> AdminOps:
        """These operations for a caller at `source` (the portal's user): their audit
        rows name that address. The store and settings are shared."""
        ops = copy.copy(self)
        ops._source = source
        return ops

    # ------------------------------------------------------------ audit plumbing
    def _audited(
        self, actor: str, action: str, user: str = "", detail: str = ""
    ) -> AbstractContextManager[AuditNote]:
        """`audited` on this store and clock, naming the caller's address (`from_source`)."""
        return audited(self._store, self._clock, actor, action, user, detail, self._source)

    def _audit(
        self, actor: str, action: str, result: str, user: str, reason: str, detail: str
    ) -> None:
        self._store.append_audit(
            AuditEvent(
                at=self._clock(),
                actor=actor,
                action=action,
                result=result,
                user=user,
                client="authctl" if actor.startswith("authctl:") else "",
                source=self._source,
                reason=reason,
                detail=detail,
            )
        )

    # ------------------------------------------------------------ helpers
    def _hash_password(self, password: str) -> str:
        if self._password_hasher is None:
            hasher = make_password_hasher(self._config.local_users.password_hash)
            self._password_hasher = lambda pw: hash_password(hasher, pw)
        return self._password_hasher(password)

    def _user(self, name: str) -> User:
        user = self._store.get_user(name)
        if user is None:
            raise NotFound(f"no user {name!r}")
        return user

    def _known_user(self, name: str) -> User:
        """The user from the store, or a directory user recorded now (source: the name of
        the backend that knows them, as on a first login).

        Directory users appear in the store only once they authenticate; an operator
        enrolling one before that must not have to wait. The first backend that knows
        the name decides (as in the auth chain); a name no backend knows is NotFound, and
        an unreachable directory is NotFound too (fail closed: never invent a user).
        """
        check_user_name(name)
        user = self._store.get_user(name)
        if user is not None:
            return user
        for backend in self._backends:
            found = backend.lookup(name)
            if found.unreachable:
                raise NotFound(f"no user {name!r} in the store, and {backend.name} is unreachable")
            if found.known:
                # The user is who the backend says (the entry's own name, as on a login):
                # `ADBOB` is adbob, never a second record.
                canonical = found.name or name
                known = self._store.get_user(canonical)
                if known is not None:
                    return known
                # Source = the backend's name, as the engine records it on first login.
                return self._store.ensure_user(
                    canonical,
                    backend.name,
                    self._clock(),
                    profile=found.profile or None,
                    groups=found.groups,
                )
        raise NotFound(f"no user {name!r}")

    def _token(self, serial: str) -> Token:
        token = self._store.get_token(serial)
        if token is None:
            raise NotFound(f"no token {serial!r}")
        return token

    # ------------------------------------------------------------ users
    def add_user(
        self,
        actor: str,
        name: str,
        *,
        password: str | None = None,
        email: str = "",
        phone: str = "",
        first_name: str = "",
        last_name: str = "",
        groups: Sequence[str] = (),
    ) -> UserDetail:
        """Create a local user; without a password only a directory can vouch for them."""
        with self._audited(actor, "user.add", name):
            check_user_name(name)
            if password is not None and password == "":
                # An empty password must never authenticate: refuse to store one.
                raise InvalidInput("the password is empty")
            check_groups(groups)
            password_hash = self._hash_password(password) if password is not None else None
            self._store.add_user(
                User(
                    name=name,
                    source="local",
                    password_hash=password_hash,
                    email=email,
                    phone=phone,
                    first_name=first_name,
                    last_name=last_name,
                    groups=tuple(dict.fromkeys(groups)),
                    created_at=self._clock(),
                )
            )
        return self.show_user(actor, name)

    def list_users(
        self, actor: str, pattern: str | None = None, limit: int | None = None
    ) -> list[UserSummary]:
        """Users whose name matches `pattern` (`*` wildcard, case-sensitive), by name."""
        if limit is not None and limit < 1:
            raise InvalidInput("limit must be at least 1")
        now = self._clock()
        rows = []
        for ov in self._store.list_users(pattern, limit):
            rows.append(
                UserSummary(
                    user=ov.user.name,
                    status=str(user_status(ov.user, ov.active_tokens, ov.registered, now)),
                    source=ov.user.source,
                    tokens=ov.active_tokens,
                    last_attempt=ov.user.last_attempt,
                    last_success=ov.user.last_success,
                )
            )
        return rows

    def show_user(self, actor: str, name: str) -> UserDetail:
        """One user in full (no hashes: only whether a password/PIN is set)."""
        user = self._user(name)
        tokens = self._store.list_tokens(name)
        codes_left = self._store.backup_codes_left(name)
        active = sum(1 for t in tokens if t.status is TokenStatus.ACTIVE)
        registered = bool(tokens) or codes_left > 0 or user.pin_hash is not None
        now = self._clock()
        return UserDetail(
            user=user.name,
            source=user.source,
            status=str(user_status(user, active, registered, now)),
            disabled=user.disabled,
            locked=is_locked(user, now),
            locked_until=user.locked_until if is_locked(user, now) else None,
            failures=user.failures,
            has_password=user.password_hash is not None,
            has_pin=user.pin_hash is not None,
            backup_codes_left=codes_left,
            email=user.email,
            phone=user.phone,
            first_name=user.first_name,
            last_name=user.last_name,
            groups=user.groups,
            tokens=tuple(TokenInfo.of(t) for t in tokens),
            last_attempt=user.last_attempt,
            last_success=user.last_success,
            created_at=user.created_at,
        )

    def set_user(
        self,
        actor: str,
        name: str,
        *,
        email: str | None = None,
        phone: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
        groups: Sequence[str] | None = None,
    ) -> UserDetail:
        """Change the given profile fields; None leaves a field as it is, and a given
        group list replaces the old one (empty: no groups)."""
        with self._audited(actor, "user.set", name) as note:
            if groups is not None:
                check_groups(groups)
            given = {
                "email": email,
                "phone": phone,
                "first_name": first_name,
                "last_name": last_name,
            }
            profile = {k: v for k, v in given.items() if v is not None}
            # The trail names what changed, never the values (personal data).
            note.detail = ",".join([*profile, *(["groups"] if groups is not None else [])])
            uniq = None if groups is None else list(dict.fromkeys(groups))
            if not self._store.set_profile(name, profile, uniq):
                raise NotFound(f"no user {name!r}")
        return self.show_user(actor, name)

    def set_password(self, actor: str, name: str, password: str) -> Done:
        """A new local password (argon2id); a user without one gets one."""
        with self._audited(actor, "user.passwd", name):
            if password == "":
                # An empty password must never authenticate: refuse to store one.
                raise InvalidInput("the password is empty")
            if not self._store.set_password_hash(name, self._hash_password(password)):
                raise NotFound(f"no user {name!r}")
        return Done("user.passwd", name)

    def check_password(self, name: str, password: str) -> bool:
        """Whether `password` is the local user's current one (argon2 verify, fail
        closed); a portal user proves it before changing it."""
        hasher = make_password_hasher(self._config.local_users.password_hash)
        return LocalUsers(self._store, hasher).authenticate(name, password).ok

    def mail_code_address(self, name: str) -> str:
        """Where a one-time log-in code may be mailed: the address of a local user who
        has no password and no active token, neither disabled nor locked; else ""."""
        user = self._store.get_user(name)
        if (user is None or user.source != LOCAL_SOURCE or user.password_hash is not None
                or user.disabled or not user.email or is_locked(user, self._clock())):
            return ""
        tokens = self._store.list_tokens(user.name)
        if any(t.status is TokenStatus.ACTIVE for t in tokens):
            return ""  # the mailed code stands for the password, never for the token
        return user.email

    def record_code_login(
        self, actor: str, name: str, client: str, right: bool
    ) -> tuple[str, ...] | None:
        """One log-in by mailed code, counted like any other attempt: a wrong code
        counts towards the lockout, and a user locked or disabled meanwhile stays out.
        Audited as `auth`. The user's groups when let in, else None."""
        now = self._clock()
        user = self._store.get_user(name)
        reason = Reason.OK if right else Reason.BAD_PASSWORD
        if user is None:
            reason = Reason.UNKNOWN_USER
        elif user.disabled:
            reason = Reason.DISABLED
        elif is_locked(user, now):
            reason = Reason.LOCKED
        ok = reason is Reason.OK
        if user is not None:
            if not ok:
                lock = self._config.otp.lockout
                self._store.record_failure(name, now, lock.max_attempts, lock.auto_unlock_after)
            self._store.record_attempt(name, now, self._source, client, ok)
        self._audit(actor, "auth", "accept" if ok else "reject", name,
                    "" if ok else reason.value, "mailed code")
        return user.groups if ok and user is not None else None

    def rename_user(self, actor: str, name: str, new_name: str) -> Done:
        """A local user's new login name; tokens, codes, PIN and sessions go with it.
        Audited under the old name, the new one in the detail."""
        with self._audited(actor, "user.rename", name, new_name):
            check_user_name(new_name)
            if self._user(name).source != LOCAL_SOURCE:
                raise InvalidInput("only a local user's name can change here")
            if not self._store.rename_user(name, new_name):
                raise NotFound(f"no user {name!r}")
        return Done("user.rename", new_name)

    def delete_user(self, actor: str, name: str) -> Done:
        """Remove the user: tokens revoked (serials stay taken), backup codes, PIN and
        the record gone. A directory user reappears, unregistered, on next sight."""
        with self._audited(actor, "user.delete", name):
            if not self._store.delete_user(name):
                raise NotFound(f"no user {name!r}")
        return Done("user.delete", name)

    def unlock_user(self, actor: str, name: str) -> Done:
        """Clear the failure count and any lock (also a lock that never expires)."""
        with self._audited(actor, "user.unlock", name):
            if not self._store.unlock_user(name):
                raise NotFound(f"no user {name!r}")
        return Done("user.unlock", name)

    def reset_user(self, actor: str, name: str) -> Done:
        """Remove the user's OTP registration: tokens, backup codes and PIN."""
        with self._audited(actor, "user.reset", name):
            if not self._store.reset_user(name):
                raise NotFound(f"no user {name!r}")
        return Done("user.reset", name)

    def disable_user(self, actor: str, name: str) -> Done:
        """A disabled user is rejected whatever they type, until enabled again."""
        with self._audited(actor, "user.disable", name):
            if not self._store.set_disabled(name, True):
                raise NotFound(f"no user {name!r}")
        return Done("user.disable", name)

    def enable_user(self, actor: str, name: str) -> Done:
        with self._audited(actor, "user.enable", name):
            if not self._store.set_disabled(name, False):
                raise NotFound(f"no user {name!r}")
        return Done("user.enable", name)

    # ------------------------------------------------------------ tokens
    def add_token(
        self,
        actor: str,
        user: str,
        type: str = "totp",  # the contract's option name
        *,
        secret_b32: str | None = None,
        digits: int | None = None,
        period: int = 30,
        algorithm: str = "SHA1",
        serial: str | None = None,
        status: TokenStatus = TokenStatus.ACTIVE,
    ) -> TokenAdded:
        """Enroll a token for `user`; generates the seed (and serial) unless given.

        Returns the `otpauth://` URI (Key URI Format) holding the seed: show it once.
        A directory user not yet in the store is recorded first (see `_known_user`).
        `status` PENDING: the token counts for nothing until `confirm_token`.
        """
        with self._audited(actor, "token.add", user, detail=serial or "") as note:
            token_type = _enum(TokenType, type.lower(), "token type")
            alg = _enum(Algorithm, algorithm.upper(), "algorithm")
            digits = self._config.otp.default_digits if digits is None else digits
            if digits not in (6, 8):
                raise InvalidInput("digits must be 6 or 8")
            if token_type is TokenType.TOTP and not (
                _PERIOD_RANGE[0] <= period <= _PERIOD_RANGE[1]
            ):
                raise InvalidInput(
                    f"period must be between {_PERIOD_RANGE[0]} and {_PERIOD_RANGE[1]} s"
                )
            if serial is not None:
                _check_serial(serial)
            if secret_b32 is not None:
                try:
                    seed = otp.parse_base32_secret(secret_b32)
                except (ValueError, InvalidInput):
                    # Never echo the secret, not even a part of it.
                    raise InvalidInput(
                        "the secret is not valid base32 of at least 128 bits"
                    ) from None
                if len(seed) < _MIN_SEED_BYTES:
                    raise InvalidInput("the secret is shorter than 128 bits (RFC 4226 R6)")
            else:
                seed = otp.generate_seed(alg)
            owner = self._known_user(user)
            token = self._store_new_token(
                Token(
                    serial=serial or _new_serial(token_type),
                    type=token_type,
                    seed=seed,
                    user=owner.name,
                    algorithm=alg,
                    digits=digits,
                    period=period if token_type is TokenType.TOTP else 30,
                    status=status,
                    created_at=self._clock(),
                ),
                generated=serial is None,
            )
            note.detail = token.serial
        uri = otp.otpauth_uri(token, owner.name, self._config.otp.issuer)
        return TokenAdded(TokenInfo.of(token), uri)

    def _store_new_token(self, token: Token, generated: bool) -> Token:
        """Insert; a generated serial that collides is drawn again (the DB decides)."""
        for _ in range(_SERIAL_ATTEMPTS):
            try:
                self._store.add_token(token)
                return token
            except AlreadyExists:
                if not generated:
                    raise AlreadyExists(f"token {token.serial!r} exists") from None
                token = _with_serial(token, _new_serial(token.type))
        raise AlreadyExists("could not draw an unused serial")

    def list_tokens(self, actor: str, user: str | None = None) -> list[TokenInfo]:
        """All tokens, or those of one user (NotFound when the user does not exist)."""
        if user is not None:
            self._user(user)
        return [TokenInfo.of(t) for t in self._store.list_tokens(user)]

    def show_token(self, actor: str, serial: str) -> TokenInfo:
        return TokenInfo.of(self._token(serial))

    def enable_token(self, actor: str, serial: str) -> Done:
        return self._set_status(actor, serial, TokenStatus.ACTIVE, "token.enable")

    def disable_token(self, actor: str, serial: str) -> Done:
        return self._set_status(actor, serial, TokenStatus.DISABLED, "token.disable")

    def revoke_token(self, actor: str, serial: str) -> Done:
        """Revocation is final: a revoked token can be neither enabled nor disabled."""
        return self._set_status(actor, serial, TokenStatus.REVOKED, "token.revoke")

    def _set_status(self, actor: str, serial: str, status: TokenStatus, action: str) -> Done:
        token = self._store.get_token(serial)
        with self._audited(actor, action, _owner(token), serial):
            if token is None:
                raise NotFound(f"no token {serial!r}")
            if token.status is TokenStatus.REVOKED and status is not TokenStatus.REVOKED:
                raise InvalidInput(f"token {serial!r} is revoked")
            if not self._store.set_token_status(serial, status):
                raise NotFound(f"no token {serial!r}")
        return Done(action, serial)

    def resync_token(self, actor: str, serial: str, otp1: str, otp2: str) -> TokenInfo:
        """Re-align a drifted token from two consecutive codes.

        TOTP searches `otp.totp.resync_window` seconds around now and remembers the
        drift and the step of `otp2` (so neither code can be replayed); HOTP searches
        `otp.hotp.resync_window` counter values ahead and expects the code after `otp2`.
        Codes already used never count, and the write only moves the token forward:
        Conflict when a login or another resync got there first.
        """
        token = self._store.get_token(serial)
        with self._audited(actor, "token.resync", _owner(token), serial):
            if token is None:
                raise NotFound(f"no token {serial!r}")
            if token.status is TokenStatus.REVOKED:
                raise InvalidInput(f"token {serial!r} is revoked")
            for code in (otp1, otp2):
                if not (code.isascii() and code.isdigit() and len(code) == token.digits):
                    raise InvalidInput(f"each code must be {token.digits} digits")
            if otp1 == otp2:
                raise InvalidInput("the two codes must be consecutive, not the same")
            if token.type is TokenType.TOTP:
                match = otp.resync_totp(
                    token, otp1, otp2, self._clock(), self._config.otp.totp.resync_window
                )
                if match is None:
                    raise InvalidInput(
                        "the codes are not consecutive codes of this token within the resync window"
                    )
                ok = self._store.resync_token(serial, last_step=match.step, drift=match.drift)
            else:
                counter = otp.resync_hotp(token, otp1, otp2, self._config.otp.hotp.resync_window)
                if counter is None:
                    raise InvalidInput(
                        "the codes are not consecutive codes of this token within the resync window"
                    )
                ok = self._store.resync_token(serial, counter=counter + 1)
            if not ok:
                if self._store.get_token(serial) is None:
                    raise NotFound(f"no token {serial!r}")
                raise Conflict(
                    f"token {serial!r} moved on while resyncing (a newer code was accepted); "
                    "nothing was written: resync again with the next two codes"
                )
        return TokenInfo.of(self._token(serial))

    def pending_token(self, user: str, serial: str) -> Token | None:
        """`user`'s pending token `serial`, seed included (the portal shows it again
        until it is confirmed); None when there is no such pending token of theirs."""
        token = self._store.get_token(serial)
        if token is None or token.user != user or token.status is not TokenStatus.PENDING:
            return None
        return token

    def expire_pending(self, actor: str, user: str, ttl: float, now: float) -> int:
        """Revoke `user`'s pending tokens older than `ttl` at `now` (never confirmed, so
        they never counted); returns how many younger ones are still pending."""
        live = 0
        for token in self._store.list_tokens(user):
            if token.status is not TokenStatus.PENDING:
                continue
            if now - token.created_at <= ttl:
                live += 1
                continue
            with self._audited(actor, "token.expire", user, token.serial):
                self._store.set_token_status(token.serial, TokenStatus.REVOKED)
        return live

    def active_token_of(self, user: str, serial: str) -> Token | None:
        """`user`'s active token `serial`, or None."""
        token = self._store.get_token(serial)
        if token is None or token.user != user or token.status is not TokenStatus.ACTIVE:
            return None
        return token

    def owns_token(self, user: str, serial: str) -> bool:
        """Whether `serial` is assigned to `user` (the portal acts on own tokens only)."""
        token = self._store.get_token(serial)
        return token is not None and token.user == user

    def confirm_token(self, actor: str, user: str, serial: str, code: str, ttl: float) -> Done:
        """Activate `user`'s pending token once they type a current code of it.

        A pending token older than `ttl` is revoked instead (it was never confirmed, so
        it never counted). The confirming code's step or counter is used up, so it
        cannot be replayed afterwards (RFC 6238 §5.2, RFC 4226 §7.2).
        """
        with self._audited(actor, "token.confirm", user, serial):
            token = self._store.get_token(serial)
            if token is None or token.user != user or token.status is not TokenStatus.PENDING:
                raise NotFound(f"no pending token {serial!r}")
            now = self._clock()
            if now - token.created_at > ttl:
                self._store.set_token_status(serial, TokenStatus.REVOKED)
                raise InvalidInput("this enrollment expired; start again")
            # Matched as the active token it is about to become (otp matches only those).
            candidate = replace(token, status=TokenStatus.ACTIVE)
            cfg = self._config.otp
            if token.type is TokenType.TOTP:
                match = otp.match_totp(candidate, code, now, cfg.totp.skew)
                if match is None:
                    raise InvalidInput("the code is not right")
                self._store.set_token_status(serial, TokenStatus.ACTIVE)
                used = self._store.accept_totp_step(serial, match.step, match.drift)
            else:
                counter = otp.match_hotp(candidate, code, cfg.hotp.look_ahead)
                if counter is None:
                    raise InvalidInput("the code is not right")
                self._store.set_token_status(serial, TokenStatus.ACTIVE)
                used = self._store.accept_hotp_counter(serial, counter)
            if not used:
                # The compare-and-set lost: this code was used meanwhile (a second
                # confirmation, or a sign-in with it). A code confirms once, never twice;
                # the portal answers it as a wrong code: type the next one.
                raise InvalidInput("that code was used already; type the next one")
        return Done("token.confirm", serial)

    def register_token(self, actor: str, user: str, serial: str, code: str) -> Done:
        """`user` claims the unassigned (imported) token `serial` with a current code of
        it (`Registration.register_by_serial`); every refusal reads the same."""
        from authd.token_import.register import Registration

        with self._audited(actor, "token.register", user, serial):
            owner = self._known_user(user)
            Registration(self._store, self._config.otp).register_by_serial(
                owner.name, serial, code, self._clock()
            )
        return Done("token.register", serial)

    def assign_token(self, actor: str, serial: str, user: str) -> Done:
        """Give an (imported, unassigned or someone else's) token to `user`."""
        with self._audited(actor, "token.assign", user, serial):
            owner = self._known_user(user)
            token = self._token(serial)
            if token.status is TokenStatus.REVOKED:
                raise InvalidInput(f"token {serial!r} is revoked")
            if not self._store.assign_token(serial, owner.name):
                raise NotFound(f"no token {serial!r}")
        return Done("token.assign", serial)

    def unassign_token(self, actor: str, serial: str) -> Done:
        token = self._store.get_token(serial)
        with self._audited(actor, "token.unassign", _owner(token), serial):
            if token is None or not self._store.assign_token(serial, None):
                raise NotFound(f"no token {serial!r}")
        return Done("token.unassign", serial)

    # ------------------------------------------------------------ reminders
    def remind(self, actor: str, dry_run: bool = False) -> Reminders:
        """Users with an e-mail address, not disabled, and no active token: each is mailed
        a pointer to the portal (`smtp` config); a dry run only lists them. Each sent
        reminder is audited."""
        send = None if dry_run else self._mail
        portal = self._config.selfservice
        where = portal.public_url or f"/selfservice/{portal.alias}/"
        body = (
            "Your account has no second factor yet. Please enroll a token at\n"
            f"{where}\n"
        )
        users = tuple(
            (ov.user.name, ov.user.email)
            for ov in self._store.list_users(None, None)
            if ov.active_tokens == 0 and ov.user.email and not ov.user.disabled
        )
        if send is not None:
            for name, email in users:
                with self._audited(actor, "user.remind", name):
                    send(email, "Enroll your second factor", body)
        return Reminders(users, sent=send is not None)

    # ------------------------------------------------------------ PIN, backup codes
    def set_pin(self, actor: str, user: str, pin_value: str) -> Done:
        """Set the server-side PIN after the policy (`otp.pin`) accepts it."""
        with self._audited(actor, "pin.set", user):
            owner = self._known_user(user)
            problem = pin.check_pin_policy(pin_value, self._config.otp.pin)
            if problem is not None:
                raise InvalidInput(problem)
            pin_hash = pin.hash_pin(pin_value, self._keyring.hash_key, owner.name)
            if not self._store.set_pin_hash(owner.name, pin_hash):
                raise NotFound(f"no user {user!r}")
        return Done("pin.set", user)

    def remove_pin(self, actor: str, user: str) -> Done:
        with self._audited(actor, "pin.remove", user):
            if not self._store.set_pin_hash(user, None):
                raise NotFound(f"no user {user!r}")
        return Done("pin.remove", user)

    def generate_backup_codes(self, actor: str, user: str) -> BackupCodeSet:
        """A new set of `otp.backup_codes.count` codes; the previous set stops working."""
        with self._audited(actor, "backup_codes.generate", user):
            owner = self._known_user(user)
            codes = tuple(backup_codes.generate_codes(self._config.otp.backup_codes.count))
            key = self._keyring.hash_key
            hashes = [backup_codes.hash_code(c, key) for c in codes]
            self._store.replace_backup_codes(owner.name, hashes, self._clock())
        return BackupCodeSet(owner.name, codes)

    # ------------------------------------------------------------ audit, keys, test
    def audit(
        self,
        actor: str,
        user: str | None = None,
        since: float | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> AuditPage:
        """Audit events newest first; page on with `before_id=page.next_before_id`."""
        if limit < 1:
            raise InvalidInput("limit must be at least 1")
        events = self._store.query_audit(user=user, since=since, limit=limit, before_id=before_id)
        last_id = events[-1].id if len(events) == limit and events else None
        return AuditPage(tuple(events), last_id)

    def export_audit(
        self, actor: str, where: AuditFilter, after_id: int = 0, limit: int = EXPORT_PAGE
    ) -> AuditExport:
        """Rows matching `where`, oldest first, after `after_id`; a full page names the
        id to continue from. A read: not audited."""
        if limit < 1:
            raise InvalidInput("limit must be at least 1")
        events = self._store.export_audit(where, after_id, limit)
        last = events[-1].id if len(events) == limit and events else None
        return AuditExport(tuple(events), last)

    def verify_audit(self, actor: str) -> ChainVerdict:
        """Check the audit hash chain (`audit.hash_chain`); a read, not audited."""
        if not self._config.audit.hash_chain:
            raise InvalidInput("audit.hash_chain is off: there is no chain to verify")
        if self._verify_audit is None:
            raise InvalidInput("this store keeps no audit hash chain")
        return self._verify_audit()

    def iter_audit(self, actor: str, where: AuditFilter) -> Iterator[AuditEvent]:
        """Every matching row, oldest first, a page at a time (constant memory)."""
        after = 0
        while True:
            page = self.export_audit(actor, where, after)
            yield from page.events
            if page.next_after_id is None:
                return
            after = page.next_after_id

    def status(self, actor: str) -> StatusReport:
        """Ping the store and every configured first-factor backend, in config order, and
        list each LDAP server as usable or backed off. A read: not audited.

        A server is "ok" unless its last attempt failed: with failover, the ping may
        succeed on the first server and never try the others. A local backend keeps its
        users in the store, so it reports the store's state without a second ping.
        """
        store_state = _probe(self._store.ping)
        scheme = self._config.store.url.partition(":")[0]  # never the URL: it may hold a password
        rows = [ComponentStatus("store", "store", store_state, scheme)]
        by_name = {b.name: b for b in self._backends}
        for cfg in self._config.primary.backends:
            name = cfg.name or cfg.type  # the default names app.py gives backends
            backend = by_name.get(name)
            if cfg.type == "local" or backend is None:
                detail = "local users, kept in the store"
                state = store_state if cfg.type == "local" else "error: NotConfigured"
                rows.append(ComponentStatus(name, "backend", state, detail))
                continue
            state = _probe(backend.ping)
            directory = getattr(backend, "directory", None)
            servers = directory.status() if isinstance(directory, _DirectoryStatus) else []
            rows.append(
                ComponentStatus(name, "backend", state, f"{cfg.type}, {len(servers)} server(s)")
            )
            # Why a backed-off server failed (TLS trust, host name, service bind, ...):
            # fixed phrases from the directory client, never a configured secret.
            why = directory.failures() if isinstance(directory, _DirectoryFailures) else {}
            rows.extend(
                ComponentStatus(
                    f"{name} server", "server",
                    "ok" if usable else f"error: {why.get(url) or 'unreachable'}", url,
                )
                for url, usable in servers
            )
        return StatusReport(tuple(rows))

    def rotate_key(self, actor: str) -> KeyRotation:
        """A new data key for new seeds; every stored seed is re-encrypted under it."""
        # The store rotates the keyring itself (key file first, then seeds in one
        # transaction), so that every Store implementation keeps the order right.
        with self._audited(actor, "key.rotate") as note:
            count = self._store.rotate_key()
            key_id = self._keyring.current_key_id
            note.detail = f"key {key_id}, {count} seeds"
        return KeyRotation(key_id, count)

    def new_api_key(
        self, actor: str, name: str, scopes: Sequence[str], key_file: str = ""
    ) -> NewApiKey:
        """A fresh HTTP API key and its config lines; authd keeps no copy, the trail
        records who drew a key for which name and scopes (never the key)."""
        with self._audited(actor, "apikey.new", detail=name) as note:
            try:
                created = new_api_key(name, scopes, key_file)
            except ValueError as exc:
                raise InvalidInput(str(exc)) from None
            note.detail = f"{name} [{' '.join(created.scopes)}]"
        return created

    def test_auth(self, actor: str, user: str, password: str, otp_code: str | None) -> TestResult:
        """Run the daemon's decision for (user, password, otp) and return it with its
        internal reason. The engine records the attempt (lockout, last seen, audit
        action `auth`) exactly as for a real login: a test is a real attempt.
        """
        if self._engine is None:
            raise InvalidInput("no decision engine wired in for test_auth")
        request = AuthRequest(
            user=user,
            password=password,
            frontend="authctl",
            # The engine audits as `<frontend>:<client>`: authctl:<unix user>.
            client=actor.partition(":")[2] or actor,
            source="",
            otp=otp_code or None,
        )
        decision = self._engine.decide(request, self._clock())
        return TestResult(
            user=decision.user or user,
            outcome=str(decision.outcome),
            reason=str(decision.reason),
            message=decision.message,
            groups=decision.groups,
            directory_problems=self._directory_problems(),
        )

    # ------------------------------------------------------------ restore access
    @property
    def _issue_store(self) -> SqlIssues:
        if self._issues is None:
            raise InvalidInput("access-recovery requests need the SQL store")
        return self._issues

    def open_issue(self, actor: str, user: str, kind: str) -> Issue:
        """Queue a request the user proved with what remains. A forgotten password is a
        request only for local users: a directory's password is reset in the directory."""
        with self._audited(actor, "issue.open", user, kind) as note:
            if kind == "password" and self._user(user).source != "local":
                raise InvalidInput(DIRECTORY_PASSWORD)
            issue = self._issue_store.open(user, kind, self._source, self._clock())
            note.detail = f"{kind} #{issue.id}"
        return issue

    def notify_issue(self, actor: str, issue: Issue) -> bool:
        """Mail the operator address (`selfservice.recovery_notify`) about a new request,
        never with a secret; False when no address or mail server is set. A failed send
        is audited; the request stands without its notice."""
        notify = self._config.selfservice.recovery_notify
        if not notify or not self._config.smtp.host:
            return False
        body = (
            f"Access-recovery request #{issue.id}: user {issue.user} lost their "
            f"{issue.kind}.\nReview it with: authctl issue show {issue.id}\n"
        )
        try:
            self._mail(notify, f"authd: access-recovery request #{issue.id}", body)
        except (OSError, AuthdError) as exc:
            self._audit(actor, "issue.notify", "error", issue.user, type(exc).__name__, "")
            return False
        return True

    def _signed_in_since(self, issue: Issue) -> bool:
        """Whether the user has been accepted (any front-end, a recovery proof aside)
        after asking."""
        events = self._store.query_audit(user=issue.user, since=issue.created_at, limit=200)
        return any(
            e.action == "auth" and e.result == "accept" and e.at > issue.created_at
            and e.actor != PROOF_ACTOR
            for e in events
        )

    def _settle(self, actor: str, issue: Issue) -> Issue:
        """An open request whose user signed in normally since is superseded: the
        defence against a request someone else made."""
        if issue.status != OPEN or not self._signed_in_since(issue):
            return issue
        if self._issue_store.decide(issue.id, SUPERSEDED, actor, self._clock()):
            self._audit(actor, "issue.superseded", "ok", issue.user, "", f"#{issue.id}")
        return self._issue_store.get(issue.id) or issue

    def list_issues(self, actor: str, status: str | None = None) -> list[Issue]:
        return [
            i for i in (self._settle(actor, i) for i in self._issue_store.all())
            if status is None or i.status == status
        ]

    def show_issue(self, actor: str, issue_id: int) -> Issue:
        issue = self._issue_store.get(issue_id)
        if issue is None:
            raise NotFound(f"no issue {issue_id}")
        return self._settle(actor, issue)

    def approve_issue(self, actor: str, issue_id: int) -> Issue:
        """Approve an open request. Lost token: every active token of the user is
        disabled and the user may enter the portal once with the password, until
        `selfservice.recovery_grant_ttl` ends, to enroll anew."""
        return self._decide(actor, issue_id, APPROVED)

    def reject_issue(self, actor: str, issue_id: int) -> Issue:
        return self._decide(actor, issue_id, REJECTED)

    def _decide(self, actor: str, issue_id: int, status: str) -> Issue:
        verb = "approve" if status == APPROVED else "reject"
        issue = self._issue_store.get(issue_id)
        with self._audited(actor, f"issue.{verb}", issue.user if issue else "", f"#{issue_id}"):
            if issue is None:
                raise NotFound(f"no issue {issue_id}")
            issue = self._settle(actor, issue)
            if issue.status != OPEN:
                raise Conflict(f"issue {issue_id} is {issue.status}, not open")
            now = self._clock()
            grant = None
            if status == APPROVED and issue.kind == "token":
                grant = now + self._config.selfservice.recovery_grant_ttl
            if not self._issue_store.decide(issue_id, status, actor, now, grant):
                raise Conflict(f"issue {issue_id} is no longer open")
            if grant is not None:
                for token in self._store.list_tokens(issue.user):
                    if token.status is TokenStatus.ACTIVE:
                        self.disable_token(actor, token.serial)
        return self._issue_store.get(issue_id) or issue

    def supersede_issues(self, actor: str, user: str) -> None:
        """The user signed in normally: their open requests close."""
        for issue_id in self._issue_store.supersede(user, self._clock()):
            self._audit(actor, "issue.superseded", "ok", user, "", f"#{issue_id}")

    def take_grant(self, actor: str, user: str) -> bool:
        """Use the user's one-time way into the portal after an approved lost-token
        request; False when there is none (or it expired)."""
        taken = self._issue_store.take_grant(user, self._clock())
        if taken is not None:
            self._audit(actor, "issue.grant_used", "ok", user, "", f"#{taken}")
        return taken is not None

    def has_disabled_tokens(self, user: str) -> bool:
        return any(t.status is TokenStatus.DISABLED for t in self._store.list_tokens(user))

    def _directory_problems(self) -> tuple[str, ...]:
        problems: list[str] = []
        for backend in self._backends:
            directory = getattr(backend, "directory", None)
            if isinstance(directory, _DirectoryFailures):
                problems += [f"{backend.name} {url}: {why}"
                             for url, why in directory.failures().items()]
        return tuple(problems)


# ---------------------------------------------------------------- module helpers
def _owner(token: Token | None) -> str:
    return (token.user or "") if token is not None else ""


def check_user_name(name: str) -> None:
    if not _USER_RE.match(name):
        raise InvalidInput("a user name is 1-255 printable characters without spaces or '*'")


def check_groups(groups: Sequence[str]) -> None:
    for group in groups:
        if not group or any(c.isspace() or ord(c) < 32 for c in group):
            raise InvalidInput(f"bad group name {group!r}")


def _check_serial(serial: str) -> None:
    if not _SERIAL_RE.match(serial):
        raise InvalidInput("a serial is 1-64 of A-Z a-z 0-9 . _ : -")


def _new_serial(token_type: TokenType) -> str:
    """`TOTP` or `HOTP` and 8 random upper-case hex digits, e.g. TOTP1A2B3C4D."""
    return f"{token_type.value.upper()}{secrets.token_hex(4).upper()}"


def _with_serial(token: Token, serial: str) -> Token:
    return replace(token, serial=serial)


_E = TypeVar("_E", TokenType, Algorithm)


def _enum(kind: type[_E], value: str, what: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(m.value for m in kind)
        raise InvalidInput(f"unknown {what} {value!r}; one of {choices}") from None
