"""What the decision engine asks for and answers: requests, decisions, and the
Protocols its collaborators (first-factor backends, the store) implement.

The engine is synchronous and runs in a bounded worker pool (one hop per request);
front-ends call it through `authd.batching.threaded.ThreadedEngine`. Everything here is
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
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from authd.core.model import AuditEvent, Token, TokenStatus, User, is_locked


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
    UNAVAILABLE = "unavailable"  # the decision failed: a store or directory call raised
    BAD_REQUEST = "bad_request"


@dataclass(slots=True)  # not frozen: see the module docstring
class AuthRequest:
    """One authentication attempt as both front-ends hand it over.

    password: what the user typed; with otp_mode inline/auto it may end with the OTP
    (and PIN). With first_factor `none` it carries only the second factor.
    otp: a second factor given separately (HTTP `otp`, or the answer to a challenge).
    state: the challenge State being answered, if any.
    user: the name as the front-end received it; realms (from `core.username.realm_set`)
    are the ones its client strips from it. The engine decides who that is.
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
    realms: frozenset[str] = frozenset()


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
    name: who the user is, in the backend's own words (a directory entry's name
    attribute, a local user's stored name), whatever case or spacing was typed; every
    store record, token, lock and audit row is keyed on it. Empty when not known.
    """

    known: bool
    ok: bool
    groups: tuple[str, ...] = ()
    profile: dict[str, str] = field(default_factory=dict)
    unreachable: bool = False
    name: str = ""


# The password to check for the user named so (the engine splits the typed string by
# that user's tokens and PIN).
PasswordFor = Callable[[str], str]


class FirstFactorBackend(Protocol):
    """A first-factor source (local users, LDAP). Blocking; called from worker threads."""

    name: str

    def authenticate(self, user: str, password: str | PasswordFor) -> PrimaryResult:
        """Check the password. An empty password never authenticates. `password` may be
        a function of who the user turned out to be (the result's `name`), called at
        most once, only for a user the backend knows, before the check."""
        ...

    def lookup(self, user: str) -> PrimaryResult:
        """Find the user without a password; ok is always False. Its `name` is who the
        user is: the engine keys the store on it before the password is checked."""
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
    stored with a `won` outcome.

    `locked`: the decision's reads found the user not locked, and the write must not
    trust that read (a parallel guess may have locked the user since). The write then
    checks the lock in the same transaction as the single use and the failure count
    (the user row locked, `SELECT ... FOR UPDATE`), and if the user is locked at `now`
    writes this ending instead: nothing used, no failure counted, no challenge stored.
    None: an ending that does not depend on the lock (a reject before the lock check)."""

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
    locked: AttemptRecord | None = None


@dataclass(slots=True)  # not frozen: see authd.auth.interfaces
class DecisionCommit:
    """What the committed write phase tells the engine: whether the single use was won,
    the lock state after a counted failure (None when none was counted), and whether
    the user was locked when the write came (`DecisionWrite.locked` was written)."""

    won: bool
    lock: LockState | None = None
    locked: bool = False


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
    def rename_user(self, name: str, new_name: str) -> bool: ...  # AlreadyExists if taken
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
    def claim_token(
        self, serial: str, user: str, *, step: int | None, drift: int, counter: int | None
    ) -> bool: ...
    def accept_totp_step(self, serial: str, step: int, drift: int) -> bool: ...
    def accept_hotp_counter(self, serial: str, counter: int) -> bool: ...
    def resync_token(
        self,
        serial: str,
        *,
        counter: int | None = None,
        last_step: int | None = None,
        drift: int | None = None,
    ) -> bool: ...  # forward-only compare-and-set (otp.resync_write); False: missing or moved on

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

    # what bounds one whole decision (its reads, first factor and write): tokens held in
    # a directory share one request_timeout; a SQL store bounds each wait on its own
    def decision_scope(self) -> AbstractContextManager[None]: ...


class BatchingStore(Store, Protocol):
    """A store that reads and writes for many decisions at once (SqlStore, on SQLite and
    PostgreSQL): what the batching layer (authd/batching) uses, and all it uses."""

    def decision_reads(self, names: Sequence[str]) -> AbstractContextManager[None]:
        """A block in which this thread's `get_user_tokens_codes` calls for `names` (the
        users about to be decided) are answered from one read of all of them, taking no
        write lock (the writes are compare-and-set: nothing read is trusted by them).
        No write is made inside it."""
        ...

    def commit_decisions(self, writes: Sequence[DecisionWrite]) -> list[DecisionCommit]:
        """Each write phase's result (as `commit_decision`), in order, returned only once
        all of them committed; a failure rolls back all of them and raises. A user
        appears at most once among `writes`."""
        ...

    def time_budget(self, seconds: float) -> AbstractContextManager[None]:
        """Within the block, this thread's waits for the database together take at most
        `seconds`, and nothing commits past it."""
        ...


def get_user_tokens_codes_in_steps(store: Store, name: str) -> tuple[User | None, list[Token], int]:
    """`Store.get_user_tokens_codes` as two reads, for stores that cannot do it in one."""
    user, tokens = store.get_user_with_tokens(name)
    return user, tokens, store.backup_codes_left(name) if user is not None else 0


def commit_decision_in_steps(store: Store, write: DecisionWrite) -> DecisionCommit:
    """`Store.commit_decision` as a sequence of the single-statement methods: what it
    means, and a correct implementation for stores that cannot group the writes into
    one transaction (each step stays exact on its own; only atomicity of the group is
    lost, and nothing here is ever a read-modify-write). The lock check of
    `write.locked` is a read before the steps here: a store that must stay exact under
    parallel guesses makes it part of its atomic writes (SqlStore: one transaction, the
    user row locked; LdapTokenStore: each directory compare-and-set)."""
    if write.locked is not None and write.user is not None:
        user = store.get_user(write.user)
        if user is not None and is_locked(user, write.now):
            store.record_attempt(write.user, write.now, write.source, write.client, False)
            store.append_audit(write.locked.audit)
            return DecisionCommit(False, None, locked=True)
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
