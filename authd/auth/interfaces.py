"""What the decision engine asks for and answers: requests, decisions, and the
Protocols its collaborators (first-factor backends, the store) implement.

The engine is synchronous and runs in a bounded worker pool (one hop per request);
front-ends call it through `authd.auth.threaded.ThreadedEngine`. Everything here is
plain data so it crosses threads safely.

Records built for every request (AuthRequest, Decision, PrimaryResult, the write
phase, AuditEvent, the User and Token rows read, a match) are `slots=True` dataclasses,
not frozen ones: a frozen __init__ sets each field through object.__setattr__, several
times the cost of a plain slot store (callgrind, Token/User/AuthRequest alone: 470k ->
433k instructions a decision). Nothing changes them after construction
(dataclasses.replace makes a new one); configuration stays frozen.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from authd.core.model import AuditEvent, Token, TokenStatus, User


class Outcome(enum.StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    CHALLENGE = "challenge"


class Reason(enum.StrEnum):
    """Internal reason, for audit and metrics only: never sent to a client."""

    OK = "ok"
    OK_BACKUP_CODE = "ok_backup_code"
    OK_NO_TOKEN = "ok_no_token"  # policy optional, user has no active token
    CHALLENGE_ISSUED = "challenge_issued"
    BAD_PASSWORD = "bad_password"
    UNKNOWN_USER = "unknown_user"
    BAD_OTP = "bad_otp"
    REPLAY = "replay"
    BAD_PIN = "bad_pin"
    LOCKED = "locked"
    DISABLED = "disabled"
    NO_TOKEN = "no_token"  # policy required, user has no active token
    BAD_STATE = "bad_state"
    BACKEND_DOWN = "backend_down"
    BAD_REQUEST = "bad_request"


@dataclass(slots=True)  # not frozen: see the module docstring
class AuthRequest:
    """One authentication attempt as both front-ends hand it over.

    password: what the user typed; with otp_mode inline/auto it may end with the OTP
    (and PIN). With first_factor `none` it carries only the second factor.
    otp: a second factor given separately (HTTP `otp`, or the answer to a challenge).
    state: the challenge State being answered, if any.
    """

    user: str
    password: str = field(repr=False)
    frontend: str  # "radius" | "http" | "authctl"
    client: str  # RADIUS client name or HTTP API key name
    source: str  # source IP address
    otp: str | None = field(default=None, repr=False)
    state: bytes | None = field(default=None, repr=False)
    first_factor: str = "chain"  # "chain" | "none"
    otp_mode: str = "inline"  # "inline" | "challenge" | "auto"


@dataclass(slots=True)  # not frozen: see authd.auth.interfaces
class Decision:
    """The engine's answer. `message` is safe to show (generic on reject)."""

    outcome: Outcome
    reason: Reason
    user: str
    message: str = ""
    state: bytes | None = field(default=None, repr=False)
    groups: tuple[str, ...] = ()


@dataclass(slots=True)  # not frozen: see the module docstring
class PrimaryResult:
    """A first-factor backend's verdict on (user, password).

    known: the backend has this user (the first backend that knows a user decides).
    ok: the password is right. unreachable: the backend could not be asked.
    """

    known: bool
    ok: bool
    groups: tuple[str, ...] = ()
    profile: dict[str, str] = field(default_factory=dict)
    unreachable: bool = False


class FirstFactorBackend(Protocol):
    """A first-factor source (local users, LDAP). Blocking; called from worker threads."""

    name: str

    def authenticate(self, user: str, password: str) -> PrimaryResult:
        """Check the password. An empty password never authenticates."""
        ...

    def lookup(self, user: str) -> PrimaryResult:
        """Find the user without a password (first_factor none); ok is always False."""
        ...

    def ping(self) -> None:
        """Raise if the backend cannot be reached (for /readyz)."""
        ...


@dataclass(slots=True)  # not frozen: see authd.auth.interfaces
class LockState:
    failures: int
    locked_until: float | None


@dataclass(frozen=True)
class UserOverview:
    user: User
    active_tokens: int
    registered: bool  # any token, backup codes or PIN


@dataclass(frozen=True)
class Challenge:
    user: str
    client: str
    expires_at: float
    data: str = ""


@dataclass(slots=True)  # not frozen: see authd.auth.interfaces
class UseTotpStep:
    """Single use of a TOTP step: compare-and-set as in `Store.accept_totp_step`."""

    serial: str
    step: int
    drift: int


@dataclass(slots=True)  # not frozen: see authd.auth.interfaces
class UseHotpCounter:
    """Single use of an HOTP counter: compare-and-set as in `Store.accept_hotp_counter`."""

    serial: str
    counter: int


@dataclass(slots=True)  # not frozen: see authd.auth.interfaces
class UseBackupCode:
    """Single use of a backup code: conditional DELETE as in `Store.consume_backup_code`."""

    user: str
    code_hash: str = field(repr=False)


SingleUse = UseTotpStep | UseHotpCounter | UseBackupCode


@dataclass(slots=True)  # not frozen: see authd.auth.interfaces
class AttemptRecord:
    """What one outcome of a decision writes: the user's last attempt (`success` also
    zeroes failures), optionally one counted failure (lockout), and one audit event."""

    success: bool
    count_failure: bool
    audit: AuditEvent


@dataclass(slots=True)  # not frozen: see authd.auth.interfaces
class DecisionWrite:
    """The whole write phase of one decision, applied by `Store.commit_decision` as ONE
    transaction: `use` (if any) first; `won` is applied when it succeeded (or there is
    none), `lost` when another request had used it already. `user` None: no user row to
    touch (only the audit event is written). `challenge` (state hash, Challenge) is
    stored with a `won` outcome."""

    user: str | None
    now: float
    source: str
    client: str
    max_attempts: int
    lock_seconds: float | None
    won: AttemptRecord
    use: SingleUse | None = None
    lost: AttemptRecord | None = None
    challenge: tuple[str, Challenge] | None = None


@dataclass(slots=True)  # not frozen: see authd.auth.interfaces
class DecisionCommit:
    """What the committed write phase tells the engine: whether the single use was won,
    and the lock state after a counted failure (None when none was counted)."""

    won: bool
    lock: LockState | None = None


class SigninObserver(Protocol):
    """Remembers users' usual networks, clients and hours (authd/core/habits.py)."""

    def observe(
        self, user: str, source: str, client: str, now: float, learn: int
    ) -> tuple[str, ...]: ...  # the ways this success is unusual; empty: usual


@dataclass(frozen=True)
class AuditFilter:
    """Which audit rows `Store.export_audit` returns; None matches anything. `since` is
    inclusive, `until` exclusive (POSIX seconds)."""

    user: str | None = None
    action: str | None = None
    result: str | None = None
    client: str | None = None
    since: float | None = None
    until: float | None = None


class Store(Protocol):
    """Durable state. Blocking; every method is atomic on its own, and the methods that
    must stay exact across nodes (failures, OTP steps, counters, backup codes, challenge
    states) are single conditional statements in the database, never read-modify-write
    in Python. Seeds are given and returned in clear; the store encrypts them at rest.
    """

    # users
    def get_user(self, name: str) -> User | None: ...
    def get_user_with_tokens(self, name: str) -> tuple[User | None, list[Token]]: ...
    # ^ the user and all their tokens in one round trip; (None, []) when unknown
    def get_user_tokens_codes(self, name: str) -> tuple[User | None, list[Token], int]: ...
    # ^ the same, plus backup_codes_left (0 for an unknown user), still one round trip:
    #   what a decision reads (see get_user_tokens_codes_in_steps for its meaning)
    def add_user(self, user: User) -> None: ...  # raises AlreadyExists
    def ensure_user(
        self,
        name: str,
        source: str,
        now: float,
        profile: dict[str, str] | None = None,
        groups: Sequence[str] = (),
    ) -> User: ...
    def list_users(
        self, pattern: str | None = None, limit: int | None = None
    ) -> list[UserOverview]: ...
    def set_password_hash(self, name: str, password_hash: str | None) -> bool: ...
    def set_disabled(self, name: str, disabled: bool) -> bool: ...
    def set_pin_hash(self, name: str, pin_hash: str | None) -> bool: ...
    def unlock_user(self, name: str) -> bool: ...
    def reset_user(self, name: str) -> bool: ...  # drop tokens, backup codes, PIN
    def set_profile(
        self, name: str, profile: Mapping[str, str], groups: Sequence[str] | None = None
    ) -> bool: ...  # profile keys: email, phone, first_name, last_name; groups: None keeps
    def delete_user(self, name: str) -> bool: ...
    # ^ tokens revoked and unassigned (serials stay taken), backup codes, PIN and row gone
    def record_failure(
        self, name: str, now: float, max_attempts: int, lock_seconds: float | None
    ) -> LockState: ...
    def record_attempt(
        self, name: str, now: float, source: str, client: str, success: bool
    ) -> None: ...  # success also zeroes failures

    # tokens
    def add_token(self, token: Token) -> None: ...  # raises AlreadyExists
    def get_token(self, serial: str) -> Token | None: ...
    def list_tokens(self, user: str | None = None) -> list[Token]: ...
    def set_token_status(self, serial: str, status: TokenStatus) -> bool: ...
    def assign_token(self, serial: str, user: str | None) -> bool: ...
    def accept_totp_step(self, serial: str, step: int, drift: int) -> bool: ...
    def accept_hotp_counter(self, serial: str, counter: int) -> bool: ...
    def resync_token(
        self,
        serial: str,
        *,
        counter: int | None = None,
        last_step: int | None = None,
        drift: int | None = None,
    ) -> bool: ...

    # backup codes (hashes only)
    def replace_backup_codes(self, user: str, code_hashes: Sequence[str], now: float) -> None: ...
    def consume_backup_code(self, user: str, code_hash: str) -> bool: ...
    def backup_codes_left(self, user: str) -> int: ...

    # challenge states (by hash of the State value)
    def put_challenge(self, state_hash: str, challenge: Challenge) -> None: ...
    def take_challenge(self, state_hash: str, now: float) -> Challenge | None: ...

    # the write phase of one decision (see DecisionWrite; `commit_decision_in_steps`
    # gives its meaning as calls of the methods above)
    def commit_decision(self, write: DecisionWrite) -> DecisionCommit: ...

    # audit, keys, health
    def append_audit(self, event: AuditEvent) -> None: ...
    def query_audit(
        self,
        user: str | None = None,
        since: float | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[AuditEvent]: ...
    def export_audit(
        self, where: AuditFilter, after_id: int = 0, limit: int = 1000
    ) -> list[AuditEvent]: ...  # oldest first, ids above after_id: page on with the last id
    def prune_audit(self, before: float, batch: int) -> int: ...
    # ^ deletes up to `batch` rows older than `before` (one short transaction); how many
    def rotate_key(self) -> int: ...  # re-encrypts every seed, returns how many
    def ping(self) -> None: ...
    def close(self) -> None: ...


def get_user_tokens_codes_in_steps(store: Store, name: str) -> tuple[User | None, list[Token], int]:
    """`Store.get_user_tokens_codes` as two reads, for stores that cannot do it in one."""
    user, tokens = store.get_user_with_tokens(name)
    return user, tokens, store.backup_codes_left(name) if user is not None else 0


def commit_decision_in_steps(store: Store, write: DecisionWrite) -> DecisionCommit:
    """`Store.commit_decision` as a sequence of the single-statement methods: what it
    means, and a correct implementation for stores that cannot group the writes into
    one transaction (each step stays exact on its own; only atomicity of the group is
    lost, and nothing here is ever a read-modify-write)."""
    won = True
    use = write.use
    if isinstance(use, UseTotpStep):
        won = store.accept_totp_step(use.serial, use.step, use.drift)
    elif isinstance(use, UseHotpCounter):
        won = store.accept_hotp_counter(use.serial, use.counter)
    elif isinstance(use, UseBackupCode):
        won = store.consume_backup_code(use.user, use.code_hash)
    record = write.won if won else write.lost
    if record is None:
        raise ValueError("DecisionWrite.lost is required when a single use can be lost")
    lock: LockState | None = None
    if won and write.challenge is not None:
        store.put_challenge(*write.challenge)
    if write.user is not None:
        if record.count_failure:
            lock = store.record_failure(
                write.user, write.now, write.max_attempts, write.lock_seconds
            )
        store.record_attempt(write.user, write.now, write.source, write.client, record.success)
    store.append_audit(record.audit)
    return DecisionCommit(won, lock)
