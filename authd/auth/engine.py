"""The decision engine: one synchronous `decide(req, now)` per authentication attempt.

Order of work (CONTRACT: a reject tells nothing, timing neither): validate the request,
read the user's second-factor registration, pick the reading of the typed string whose
second factor matches *without consuming it*, run the first factor exactly once, then
apply disabled/lockout/policy, and only then consume the code with the store's
compare-and-set. Every decision is recorded (last attempt, failures, one audit event).
Runs in a worker thread (`ThreadedEngine`); tested without a reactor.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from twisted.logger import Logger

from authd.auth.interfaces import (
    AttemptRecord,
    AuthRequest,
    Challenge,
    Decision,
    DecisionCommit,
    DecisionWrite,
    FirstFactorBackend,
    Outcome,
    PrimaryResult,
    Reason,
    SigninObserver,
    SingleUse,
    Store,
    UseBackupCode,
    UseHotpCounter,
    UseTotpStep,
)
from authd.config.model import Config
from authd.core.backup_codes import hash_code, normalize_code
from authd.core.errors import StoreUnavailable
from authd.core.model import AuditEvent, Token, TokenStatus, TokenType, User, is_locked
from authd.core.otp import TotpMatch, match_hotp, match_totp
from authd.core.pin import verify_pin
from authd.core.split import Candidate, PinRule, SecondKind, default_password, split_candidates
from authd.core.username import map_user_name
from authd.metrics import Metrics

log = Logger(namespace="authd.auth.engine")

GENERIC_REJECT = "Authentication failed"
MAX_USER_LENGTH = 256
# RADIUS User-Password is at most 128 octets; HTTP bodies are bigger: refuse early
# anything no real password + PIN + code reaches, before it costs an argon2 or a bind.
MAX_SECRET_LENGTH = 1024
MAX_STATE_LENGTH = 256
# Unicode category Cc is exactly these 65 code points; one regex scan instead of a
# unicodedata lookup per character (request_problem runs on every request).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_FIRST_FACTORS = frozenset({"chain", "none"})
_OTP_MODES = frozenset({"inline", "challenge", "auto"})

P = ParamSpec("P")
R = TypeVar("R")


# What a batched decision returns while its write is held: fails closed if it escaped.
_HELD = Decision(Outcome.REJECT, Reason.BACKEND_DOWN, "", GENERIC_REJECT)


class _Held:
    """A batched decision between its two phases: its write and both possible answers,
    plain data only. The attempt itself (user, tokens, candidates) is dropped after
    phase 1, so a batch keeps few objects alive across the allocations of phase 1:
    fewer are promoted to the old GC generations, whose full passes over the daemon's
    heap took tens of ms (measured as p99 latency, gone with these)."""

    __slots__ = ("if_locked", "if_lost", "if_won", "now", "store_seconds", "write")

    def __init__(
        self,
        write: DecisionWrite,
        if_won: Decision,
        if_lost: Decision,
        if_locked: Decision,
        now: float,
    ) -> None:
        self.write = write
        self.if_won = if_won
        self.if_lost = if_lost
        self.if_locked = if_locked
        self.now = now
        self.store_seconds = 0.0

    def settle(self, result: DecisionCommit) -> tuple[Decision, bool]:
        """The answer once the write committed with `result`, and whether it locked
        the user now."""
        return _answer(result, self.if_won, self.if_lost, self.if_locked), _locked_now(
            result, self.write.user, self.now
        )


def _answer(
    result: DecisionCommit, if_won: Decision, if_lost: Decision, if_locked: Decision
) -> Decision:
    """The decision a committed write phase stands for."""
    if result.locked:
        return if_locked
    return if_won if result.won else if_lost


def _locked_now(result: DecisionCommit, user: str | None, now: float) -> bool:
    """Whether this write's counted failure locked the user (metrics.lockouts)."""
    lock = result.lock
    locked = lock is not None and lock.locked_until is not None and lock.locked_until > now
    if locked:
        assert lock is not None
        log.info("user {user} locked after {n} failures", user=user, n=lock.failures)
    return locked


@dataclass(slots=True)  # not frozen: see authd.auth.interfaces
class DecisionStats:
    """What `ThreadedEngine` turns into metrics: time spent in the store, and whether this
    request's failure locked the user (metrics.lockouts)."""

    store_seconds: float = 0.0
    locked_now: bool = False


class _LeaveBatch(Exception):
    """A batched decision needs more than the store (a directory, a password check, a
    challenge): it runs alone, so nothing slow holds up the batch's answers. Raised
    before that decision wrote anything."""


class FirstFactorDue:
    """A chain decision paused before its first factor (`Engine.decide_many` with
    `pause_first_factor`): its reads are done and the typed string split, no code used.
    `check()` runs the first factor (blocking: a directory bind or a password hash) in
    any thread, outside any read snapshot; handed back to `decide_many`, the decision is
    finished there and its write batched with the others'. Checked at most once."""

    __slots__ = ("_attempt", "_outcome", "error")

    def __init__(self, attempt: _Attempt) -> None:
        self._attempt = attempt
        self._outcome: _FF | None = None
        self.error: Exception | None = None  # the first factor raised (fail closed)

    @property
    def request(self) -> AuthRequest:
        return self._attempt.req

    @property
    def checked(self) -> bool:
        return self._outcome is not None or self.error is not None

    def check(self) -> None:
        """Run the first factor; an exception is kept in `error`, never raised."""
        try:
            self._outcome = self._attempt._first_factor()
        except Exception as e:  # noqa: BLE001 - decide_many answers it with a reject
            self.error = e

    def _finish(self, batched: bool) -> Decision:
        """The rest of the decision after `check()`: batched, its write is held on the
        attempt; alone, it is committed here."""
        outcome = self._outcome
        if outcome is None:
            raise RuntimeError("first factor not checked")
        attempt = self._attempt
        attempt.batched = batched
        attempt.pause = False
        return attempt._after_first_factor(outcome)


class _FF(enum.Enum):
    """Outcome of the first-factor chain."""

    OK = "ok"
    BAD = "bad"
    UNKNOWN = "unknown"
    DOWN = "down"
    SKIPPED = "skipped"  # every backend unreachable and failmode open


class _Verdict(enum.IntEnum):
    """How well a reading's second factor matched; higher wins."""

    NONE = 0
    BACKUP = 1  # shaped like a backup code: only consuming it can tell
    BAD_PIN = 2  # the OTP matched, the PIN did not
    REPLAY = 3  # a valid code for a step/counter already used
    FRESH = 4  # valid, unused, PIN right (if any)


@dataclass(slots=True)  # not frozen: see authd.auth.interfaces
class _Match:
    candidate: Candidate
    verdict: _Verdict
    token: Token | None = None
    totp: TotpMatch | None = None
    hotp: int | None = None


def _invalid_text(text: object, limit: int, control_ok: bool) -> bool:
    if not isinstance(text, str) or len(text) > limit:
        return True
    if text.isascii():
        # The usual case. ASCII holds no surrogate, and its only characters that are
        # not printable are the controls: one C call instead of a regex scan.
        return "\x00" in text if control_ok else not text.isprintable()
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")  # lone surrogates cannot reach a directory or a hash
    except UnicodeEncodeError:
        return True
    return not control_ok and _CONTROL.search(text) is not None


def request_problem(req: AuthRequest) -> str | None:
    """Why a request is malformed (safe to log: never quotes a field), or None."""
    if _invalid_text(req.user, MAX_USER_LENGTH, False) or not req.user:
        return "invalid user name"
    if _invalid_text(req.password, MAX_SECRET_LENGTH, True):
        return "invalid password field"
    if req.otp is not None and _invalid_text(req.otp, MAX_SECRET_LENGTH, True):
        return "invalid otp field"
    if req.state is not None and (
        not isinstance(req.state, bytes) or not 0 < len(req.state) <= MAX_STATE_LENGTH
    ):
        return "invalid state"
    if req.first_factor not in _FIRST_FACTORS or req.otp_mode not in _OTP_MODES:
        return "invalid mode"
    for text in (req.frontend, req.client, req.source):
        if _invalid_text(text, MAX_USER_LENGTH, False):
            return "invalid request metadata"
    return None


def state_hash(state: bytes) -> str:
    """Challenge states are stored by hash: a database reader cannot answer one."""
    return hashlib.sha256(state).hexdigest()


class _MeteredStore:
    """The store calls one decision makes, timed (metrics.store_seconds)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.seconds = 0.0

    def _call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    def ensure_user(
        self, name: str, source: str, now: float, profile: dict[str, str], groups: Sequence[str]
    ) -> User:
        return self._call(self._store.ensure_user, name, source, now, profile, groups)

    def get_user_tokens_codes(self, name: str) -> tuple[User | None, list[Token], int]:
        """The user, their ACTIVE tokens and backup codes left, in one round trip."""
        user, tokens, codes = self._call(self._store.get_user_tokens_codes, name)
        active = [t for t in tokens if t.status == TokenStatus.ACTIVE and t.user == name]
        return user, active, codes

    def take_challenge(self, key: str, now: float) -> Challenge | None:
        return self._call(self._store.take_challenge, key, now)

    def commit_decision(self, write: DecisionWrite) -> DecisionCommit:
        return self._call(self._store.commit_decision, write)


class Engine:
    """Decides requests; shareable between threads (holds no request state). `config`
    may be replaced on reload (one attribute store): each decision reads it once."""

    def __init__(
        self,
        config: Config,
        store: Store,
        backends: Sequence[FirstFactorBackend],
        hash_key: bytes,
        metrics: Metrics | None = None,
        habits: SigninObserver | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.backends = tuple(backends)
        self._hash_key = hash_key
        self._metrics = metrics
        self.habits = habits  # unusual sign-in flags (audit.unusual_signin)

    @property
    def batches_decisions(self) -> bool:
        """Whether `decide_many` shares one write transaction between decisions (the
        store offers `decision_reads` and `commit_decisions`: SQLite). Otherwise it
        decides one by one, and callers gain nothing from handing it several at once."""
        return bool(getattr(self.store, "batches_decisions", False))

    def decide(self, req: AuthRequest, now: float) -> Decision:
        """The decision for `req` at `now`. Bad input is a BAD_REQUEST reject; store and
        backend errors propagate (the caller maps them, failing closed)."""
        return self.decide_with_stats(req, now)[0]

    def decide_with_stats(self, req: AuthRequest, now: float) -> tuple[Decision, DecisionStats]:
        """`decide`, with what ThreadedEngine turns into metrics. A decision that raises
        is audited as failed (`record_failure`) before the error propagates."""
        # A store may bound a whole decision (tokens in a directory: one request_timeout
        # for its reads, the first factor's bind and its write together, not one each).
        scope = getattr(self.store, "decision_scope", None)
        try:
            if scope is None:
                return self._decide_whole(req, now)
            with scope():
                return self._decide_whole(req, now)
        except Exception as e:
            self.record_failure(req, now, e)
            raise

    def record_failure(
        self, req: AuthRequest, now: float, error: BaseException, write: bool = True
    ) -> bool:
        """Audit a decision that could not be made (a store or directory failed): a
        reject with reason `unavailable` and the error's type, never its text. When the
        audit write fails too (or `write` is False: the caller saw it fail just now), the
        record goes to the log as one structured line and is counted
        (authd_audit_write_failures_total): no decision goes unrecorded. True when the
        record reached the store."""
        valid = request_problem(req) is None
        audit = AuditEvent(  # as _Attempt._record: nothing of an invalid request is kept
            now,
            f"{req.frontend}:{req.client}" if valid else "invalid",
            "auth",
            Outcome.REJECT.value,
            req.user if valid else "",
            req.client if valid else "",
            req.source if valid else "",
            Reason.UNAVAILABLE.value,
            type(error).__name__,
        )
        try:
            if not write:
                raise StoreUnavailable("audit store failed for an earlier record")
            self.store.append_audit(audit)
            return True
        except Exception as e:  # noqa: BLE001 - the audit store is down: log and count
            log.error(
                "audit record not written (audit store failed: {audit_error}): "
                "action={action} result={result} reason={reason} detail={detail} "
                "user={user} actor={actor} client={client} source={source} at={at}",
                audit_error=type(e).__name__,
                action=audit.action,
                result=audit.result,
                reason=audit.reason,
                detail=audit.detail,
                user=audit.user,
                actor=audit.actor,
                client=audit.client,
                source=audit.source,
                at=audit.at,
            )
            if self._metrics is not None:
                self._metrics.audit_failures.inc()
            return False

    def _decide_whole(self, req: AuthRequest, now: float) -> tuple[Decision, DecisionStats]:
        attempt = _Attempt(self, req, now)
        decision = attempt.run()
        return decision, DecisionStats(attempt.store.seconds, attempt.locked_now)

    def decide_many(
        self,
        items: Sequence[tuple[AuthRequest, float] | FirstFactorDue],
        *,
        pause_first_factor: bool = False,
    ) -> list[tuple[Decision, DecisionStats] | BaseException | FirstFactorDue]:
        """Each item's decision, or the exception it raised, in order; every decision is
        final (committed) when this returns. An item is a (request, now) or a checked
        `FirstFactorDue`, which is finished here. With `pause_first_factor`, a chain
        request (no challenge State) is not decided but returned as a `FirstFactorDue`
        after its reads: the caller checks it where blocking is fine and hands it back.

        Where the store batches decisions (SQLite), consecutive decisions go in two
        phases: (1) their reads and OTP matching under one read snapshot, which holds no
        lock (WAL), then (2) all their write phases in ONE short BEGIN IMMEDIATE ...
        COMMIT, and only then their answers. So SQLite's write lock is held for the
        writes alone (~15 µs a decision, not the ~100 µs of the whole decision) and two
        worker processes compute side by side instead of taking turns. A paused chain
        request's reads are in phase 1 of one batch, its write in phase 2 of a later one.

        Exactness does not rest on the snapshot: every write is conditional
        (compare-and-set on step/counter, conditional DELETE of a backup code, failures
        `+1 RETURNING`), so a code used meanwhile (another process, authctl) is a lost
        CAS: REPLAY, as between concurrent threads. Within a batch a user appears once
        (a second request of theirs cuts the batch), so this process's decisions for one
        user still see each other's writes, as if decided one by one. A decision that
        needs a directory (unpaused) or a challenge cuts the batch and runs alone; if the
        write transaction fails it is rolled back (nothing of it was committed or
        answered) and its decisions are taken again one by one (a finished first factor
        is not checked again)."""
        if not self.batches_decisions:
            return [self._alone(item) for item in items]
        out: list[tuple[Decision, DecisionStats] | BaseException | FirstFactorDue] = []
        rest = list(items)
        while rest:
            pending, cut = self._read_phase(rest, pause_first_factor)
            if pending:
                out.extend(self._write_phase(pending, rest))
            rest = rest[len(pending) :]
            if cut:  # the item that ended the batch, on its own (nothing of it written)
                out.append(self._alone(rest[0]))
                rest = rest[1:]
        return out

    def _read_phase(
        self, items: list[tuple[AuthRequest, float] | FirstFactorDue], pause: bool
    ) -> tuple[list[_Held | FirstFactorDue], bool]:
        """Phase 1 of `decide_many`: decide the longest prefix of `items` that can be
        batched, up to (not including) its writes. Returns, per item, the write it holds
        (or the paused decision), and whether an item had to be cut off (decided alone)."""
        pending: list[_Held | FirstFactorDue] = []
        users: set[str] = set()
        cut = False
        try:
            # Whom each item's reads are for: a checked first factor knows who the user
            # is; a new request starts under the name as typed (mapped).
            keys = [
                item._attempt.name if isinstance(item, FirstFactorDue) else _store_key(item[0])
                for item in items
            ]
            names = [k for k, item in zip(keys, items, strict=True) if isinstance(item, tuple)]
            with self.store.decision_reads(names):  # type: ignore[attr-defined]
                for item, key in zip(items, keys, strict=True):
                    req = item.request if isinstance(item, FirstFactorDue) else item[0]
                    if key in users:
                        break  # the next batch sees this one's writes
                    try:
                        if isinstance(item, FirstFactorDue):
                            attempt = item._attempt
                            if item.error is not None:
                                raise _LeaveBatch  # answered alone: its error, a reject
                            item._finish(batched=True)
                        else:
                            attempt = _Attempt(self, req, item[1], batched=True, pause=pause)
                            attempt.run()
                    except _LeaveBatch:
                        cut = True
                        break
                    except Exception as e:  # decided alone below, which reports it
                        # debug: a failure alone is logged once per outage (auth/outage.py)
                        log.debug(
                            "batched decision failed ({error}); deciding it alone",
                            error=type(e).__name__,  # only the type: the text may quote values
                        )
                        cut = True
                        break
                    users.add(key)
                    if attempt.due is not None:
                        pending.append(attempt.due)
                        attempt.due = None
                        continue
                    held = attempt.held
                    if held is None:  # pragma: no cover - every ending writes
                        cut = True
                        break
                    held.store_seconds = attempt.store.seconds
                    pending.append(held)
        except Exception as e:  # the read snapshot failed to begin or end: nothing written
            log.debug("decision reads failed ({error})", error=type(e).__name__)
            cut = cut or not pending  # always make progress: the first is decided alone
        return pending, cut

    def _write_phase(
        self,
        pending: list[_Held | FirstFactorDue],
        items: list[tuple[AuthRequest, float] | FirstFactorDue],
    ) -> list[tuple[Decision, DecisionStats] | BaseException | FirstFactorDue]:
        """Phase 2: every pending write in one transaction; the decisions only after its
        COMMIT (`items` starts with their items, to decide again alone should it fail).
        Paused decisions pass through. Its time is shared out evenly between the writes
        (store_seconds)."""
        held = [h for h in pending if isinstance(h, _Held)]
        commits: list[DecisionCommit] = []
        share = 0.0
        if held:
            clock = time.perf_counter
            begin = clock()
            try:
                commits = self.store.commit_decisions([h.write for h in held])  # type: ignore[attr-defined]
            except Exception as e:  # rolled back: none of it is committed or answered
                log.debug(
                    "decision batch rolled back ({error}); deciding its requests one by one",
                    error=type(e).__name__,
                )
                return [
                    p if isinstance(p, FirstFactorDue) else self._alone(item)
                    for p, item in zip(pending, items, strict=False)
                ]
            share = (clock() - begin) / len(held)
        settled = iter(zip(held, commits, strict=True))
        out: list[tuple[Decision, DecisionStats] | BaseException | FirstFactorDue] = []
        for p in pending:
            if isinstance(p, FirstFactorDue):
                out.append(p)
                continue
            h, commit = next(settled)
            decision, locked_now = h.settle(commit)
            out.append((decision, DecisionStats(h.store_seconds + share, locked_now)))
        return out

    def _alone(
        self, item: tuple[AuthRequest, float] | FirstFactorDue
    ) -> tuple[Decision, DecisionStats] | BaseException:
        """One item decided and committed by itself: a request from the start, a checked
        `FirstFactorDue` from its first factor's outcome (never checked again)."""
        # An exception is returned, not raised: the caller fails closed on it
        # (ThreadedEngine: reject); it has been audited as a failed decision here.
        if isinstance(item, FirstFactorDue):
            attempt = item._attempt
            try:
                if item.error is not None:
                    raise item.error
                decision = item._finish(batched=False)
            except Exception as e:
                self.record_failure(attempt.req, attempt.now, e)
                return e
            return decision, DecisionStats(attempt.store.seconds, attempt.locked_now)
        try:
            return self.decide_with_stats(*item)
        except Exception as e:  # audited by decide_with_stats
            return e


def _store_key(req: AuthRequest) -> str:
    """The name a request's store reads start under: as typed, less surrounding spaces
    and its client's realms (a directory may name someone else after its search)."""
    typed = req.user
    if not isinstance(typed, str):
        return ""
    return map_user_name(typed, req.realms) or typed


class _Attempt:
    """The state of one decision; lives only inside `Engine.decide`.

    Identity (CONTRACT: the user is who the directory or store says): `asked` is the
    typed name less surrounding spaces and the client's realms, what backends search
    for; `name` is who that is, what every store read and write, the challenge State,
    the audit row and the answer use. Both start equal; a backend's lookup may name the
    user otherwise (a directory entry's own name attribute), and the decision then
    starts over under that name (`_become`) before any password is checked.
    """

    def __init__(
        self,
        engine: Engine,
        req: AuthRequest,
        now: float,
        *,
        batched: bool = False,
        pause: bool = False,
    ) -> None:
        self.batched = batched
        self.pause = pause  # batched: a chain request stops before its first factor
        self.cfg = engine.config
        self.backends = engine.backends
        self.hash_key = engine._hash_key
        self.habits = engine.habits if self.cfg.audit.unusual_signin.enabled else None
        self.store = _MeteredStore(engine.store)
        self.req = req
        self.now = now
        self.asked = req.user
        self.name = req.user
        # chain, set by _plan: the password the first factor checks, then a challenge
        # or the use of `match`
        self.password = ""
        self.challenge_next = False
        self.match: _Match | None = None
        self.user: User | None = None
        self.tokens: list[Token] = []
        self.backup_left = False
        self.groups: tuple[str, ...] = ()
        self.locked_now = False
        self.lock_checked = False  # past the lock gate: the write checks the lock again
        self.first_factor_runs = 0
        self.detail = ""
        self.held: _Held | None = None  # batched: the write phase, held for decide_many
        self.due: FirstFactorDue | None = None  # paused before the first factor

    # ------------------------------------------------------------ entry
    def run(self) -> Decision:
        problem = request_problem(self.req)
        if problem is not None:
            self.detail = problem
            return self._reject(Reason.BAD_REQUEST)
        mapped = map_user_name(self.req.user, self.req.realms)
        if mapped is None:
            # Only spaces, or a realm this client does not strip: no user of ours
            # (CONTRACT: a variant maps to that user's record or to none).
            self.detail = "user name maps to no user (realm not configured, or empty)"
            return self._reject(Reason.UNKNOWN_USER)
        self.asked = self.name = mapped
        if (
            self.batched
            and self.req.first_factor != "none"
            and (not self.pause or self.req.state is not None)
        ):
            raise _LeaveBatch
        if self.req.first_factor == "none":
            return self._second_factor_only()
        if self.req.state is not None:
            return self._answer_challenge(self.req.state)
        return self._chain()

    # ------------------------------------------------------------ user data
    def _load(self) -> None:
        self.user, self.tokens, codes = self.store.get_user_tokens_codes(self.name)
        self.backup_left = self.user is not None and codes > 0
        if self.user is not None:
            self.groups = self.user.groups

    def _become(self, name: str) -> None:
        """A backend says the user is `name`: read that user's record, tokens, PIN and
        lock state instead, and (chain) split the typed string again for their tokens,
        before any password is checked, so that a name typed in another case or with
        spaces is the same user with the same second factor."""
        self.name = name
        self.groups = ()
        self._load()
        if self.req.first_factor == "chain" and self.req.state is None:
            self._plan()

    def _has_second_factor(self) -> bool:
        return bool(self.tokens) or self.backup_left

    def _pin_rule(self) -> PinRule | None:
        if self.user is None or not self.user.pin_hash:
            return None
        pin = self.cfg.otp.pin
        return PinRule(pin.position, pin.min_length, pin.max_length)

    def _default_otp_length(self) -> int:
        lengths = {t.digits for t in self.tokens}
        default = self.cfg.otp.default_digits
        return default if default in lengths or not lengths else min(lengths)

    # ------------------------------------------------------------ first factor
    def _first_factor(self) -> _FF:
        """The chain, run at most once per request (each check may cost a directory bind
        and count toward the directory's own lockout). A backend that knows the user
        asks `_password_for` who they are before it checks anything."""
        self.first_factor_runs += 1
        if self.first_factor_runs > 1:
            raise RuntimeError("first factor checked twice in one request")
        if not self.password:
            # Fail closed: an empty password never authenticates (an LDAP bind with one
            # is an unauthenticated bind that "succeeds").
            return _FF.BAD if self.user is not None else _FF.UNKNOWN
        unreachable: list[str] = []
        for backend in self.backends:
            result = backend.authenticate(self.asked, self._password_for)
            if result.unreachable:
                unreachable.append(backend.name)
                continue
            if result.known:
                if result.name and result.name != self.name:
                    return _FF.BAD  # fail closed: checked for someone it did not name
                self._remember(backend.name, result)
                return _FF.OK if result.ok else _FF.BAD
        return self._nobody_knew(unreachable)

    def _password_for(self, name: str) -> str:
        """What a backend checks for the user it found: the password of that user's
        reading of the typed string, after `_become` when it is not who was read."""
        if name and name != self.name:
            self._become(name)
        return self.password

    def _lookup(self) -> _FF:
        """first_factor none: the user must still exist somewhere."""
        if self.batched and self.backends:
            raise _LeaveBatch  # a directory search must not hold up the batch
        unreachable: list[str] = []
        for backend in self.backends:
            result = backend.lookup(self.asked)
            if result.unreachable:
                unreachable.append(backend.name)
            elif result.known:
                if result.name and result.name != self.name:
                    self._become(result.name)
                self._remember(backend.name, result)
                return _FF.OK
        if unreachable:
            return _FF.DOWN
        return _FF.UNKNOWN

    def _nobody_knew(self, unreachable: list[str]) -> _FF:
        if not unreachable:
            return _FF.UNKNOWN
        if self.cfg.primary.failmode == "open":
            log.warn(
                "FAILMODE OPEN: first factor SKIPPED for user {user}: backends {backends} "
                "unreachable",
                user=self.asked,
                backends=",".join(unreachable),
            )
            self.detail = "first factor skipped (failmode open)"
            return _FF.SKIPPED
        return _FF.DOWN

    def _remember(self, backend: str, result: PrimaryResult) -> None:
        """Directory users get a store record on first sight; the groups of this
        decision are the backend's (fresher than the store's copy)."""
        self.groups = tuple(result.groups)
        if self.user is not None:
            return
        self.user = self.store.ensure_user(
            self.name, backend, self.now, dict(result.profile), self.groups
        )
        # Tokens may have been assigned (token assign) before the first login.
        _, self.tokens, codes = self.store.get_user_tokens_codes(self.name)
        self.backup_left = codes > 0

    # ------------------------------------------------------------ second factor
    def _evaluate(self, cand: Candidate) -> _Match:
        """How `cand` matches, without consuming anything."""
        if cand.kind is SecondKind.BACKUP:
            return _Match(cand, _Verdict.BACKUP)
        best = _Match(cand, _Verdict.NONE)
        for token in self.tokens:
            if token.digits != len(cand.second):
                continue
            match = self._match_token(token, cand)
            if match.verdict > best.verdict:
                best = match
        if best.verdict in (_Verdict.FRESH, _Verdict.REPLAY) and not self._pin_ok(cand):
            best = dataclasses.replace(best, verdict=_Verdict.BAD_PIN)
        return best

    def _match_token(self, token: Token, cand: Candidate) -> _Match:
        code = cand.second
        if token.type == TokenType.TOTP:
            skew = self.cfg.otp.totp.skew
            found = match_totp(token, code, self.now, skew)
            if found is not None:
                return _Match(cand, _Verdict.FRESH, token, totp=found)
            # A code right for an already used step is a replay (RFC 6238 §5.2).
            if token.last_step >= 0:
                again = match_totp(dataclasses.replace(token, last_step=-1), code, self.now, skew)
                if again is not None and again.step <= token.last_step:
                    return _Match(cand, _Verdict.REPLAY, token)
            return _Match(cand, _Verdict.NONE)
        look_ahead = self.cfg.otp.hotp.look_ahead
        counter = match_hotp(token, code, look_ahead)
        if counter is not None:
            return _Match(cand, _Verdict.FRESH, token, hotp=counter)
        if token.counter > 0:
            start = max(0, token.counter - look_ahead - 1)
            behind = dataclasses.replace(token, counter=start)
            used = match_hotp(behind, code, token.counter - start - 1)
            if used is not None:
                return _Match(cand, _Verdict.REPLAY, token)
        return _Match(cand, _Verdict.NONE)

    def _pin_ok(self, cand: Candidate) -> bool:
        if self.user is None or not self.user.pin_hash:
            return True
        return verify_pin(cand.pin, self.user.pin_hash, self.hash_key, self.user.name)

    def _candidates(self, typed: str, with_password: bool) -> list[Candidate]:
        return list(
            split_candidates(
                typed,
                with_password=with_password,
                otp_lengths=[t.digits for t in self.tokens],
                pin=self._pin_rule(),
                backup_code=normalize_code if self.backup_left else None,
            )
        )

    def _best(self, typed: str, with_password: bool) -> _Match | None:
        best: _Match | None = None
        for cand in self._candidates(typed, with_password):
            match = self._evaluate(cand)
            if match.verdict is not _Verdict.NONE and (
                best is None or match.verdict > best.verdict
            ):
                best = match
        return best

    def _consume(self, match: _Match | None) -> Decision:
        """Apply a match with the store's compare-and-set, in the same transaction as
        the attempt record and audit of either ending; a lost race is a replay."""
        if match is None:
            return self._second_factor_failed(Reason.BAD_OTP)
        use: SingleUse
        if match.verdict is _Verdict.BACKUP:
            code_hash = hash_code(match.candidate.second, self.hash_key)
            use, detail, ok, lost = (
                UseBackupCode(self.name, code_hash),
                "backup code",
                Reason.OK_BACKUP_CODE,
                Reason.BAD_OTP,
            )
        elif match.verdict is _Verdict.BAD_PIN:
            return self._second_factor_failed(Reason.BAD_PIN)
        elif match.verdict is not _Verdict.FRESH or match.token is None:
            return self._second_factor_failed(Reason.REPLAY)
        else:
            serial = match.token.serial
            if match.totp is not None:
                use = UseTotpStep(serial, match.totp.step, match.totp.drift)
            elif match.hotp is not None:
                use = UseHotpCounter(serial, match.hotp)
            else:  # pragma: no cover - a FRESH match always carries its step or counter
                return self._second_factor_failed(Reason.REPLAY)
            detail, ok, lost = f"token {serial}", Reason.OK, Reason.REPLAY
        return self._commit(
            self._record(Outcome.ACCEPT, ok, detail=detail),
            self._decision(Outcome.ACCEPT, ok, ""),
            use=use,
            lost=self._record(Outcome.REJECT, lost, count_failure=lost is not Reason.REPLAY),
            if_lost=self._decision(Outcome.REJECT, lost, GENERIC_REJECT),
        )

    def _second_factor_failed(self, reason: Reason) -> Decision:
        # A replay is a code the user's token really produced, seen before (an echo, a
        # retried login): not a guess, so it does not count toward the lockout (the
        # HTTP failure delay still counts every reject).
        return self._commit(
            self._record(Outcome.REJECT, reason, count_failure=reason is not Reason.REPLAY),
            self._decision(Outcome.REJECT, reason, GENERIC_REJECT),
        )

    # ------------------------------------------------------------ the checks in order
    def _gate(self, ff: _FF) -> Decision | None:
        """Everything that rejects after the first factor and before any code is used."""
        if ff is _FF.DOWN:
            return self._reject(Reason.BACKEND_DOWN)
        if ff is _FF.UNKNOWN:
            return self._reject(Reason.UNKNOWN_USER)
        if ff is _FF.BAD:
            return self._reject(Reason.BAD_PASSWORD)
        if ff is _FF.SKIPPED and (self.user is None or not self._has_second_factor()):
            # Fail closed: with the first factor skipped, a user with no second factor
            # (or unknown to the store) would pass on nothing at all.
            return self._reject(Reason.BACKEND_DOWN)
        assert self.user is not None
        if self.user.disabled:
            return self._reject(Reason.DISABLED)
        if is_locked(self.user, self.now):
            return self._reject(Reason.LOCKED)
        # Read before a slow first factor, so not to be trusted: every ending from here
        # on is written only if the user is still not locked when the write applies
        # (DecisionWrite.locked), else it becomes a LOCKED reject.
        self.lock_checked = True
        if not self._has_second_factor():
            return self._no_token()
        return None

    def _no_token(self) -> Decision:
        enforcement = self.cfg.policy.enforcement
        for rule in self.cfg.policy.groups:
            if rule.group in self.groups:
                enforcement = rule.enforcement
                break
        if enforcement == "optional":
            return self._accept(Reason.OK_NO_TOKEN)
        portal = self.cfg.selfservice
        if portal.enabled and portal.public_url:
            return self._reject(Reason.NO_TOKEN, f"Enrol a token at {portal.public_url}")
        return self._reject(Reason.NO_TOKEN)

    # ------------------------------------------------------------ the paths
    def _chain(self) -> Decision:
        self._load()
        self._plan()
        if self.pause:  # decide_many hands the first factor out and finishes it later
            self.due = FirstFactorDue(self)
            return _HELD
        return self._after_first_factor(self._first_factor())

    def _after_first_factor(self, ff: _FF) -> Decision:
        return self._gate(ff) or (
            self._challenge() if self.challenge_next else self._consume(self.match)
        )

    def _plan(self) -> None:
        """Pick the reading of the typed string for the user read (no code used): the
        password the first factor must check (`password`), and what follows once it
        passed: a challenge, or using `match` (plain data, no closure: a batched attempt
        must leave no reference cycle behind)."""
        typed = self.req.password
        self.challenge_next = False
        self.match = None
        self.password = typed
        if self.req.otp is not None:  # HTTP: password and OTP arrive apart, no splitting
            self.match = self._best(self.req.otp, with_password=False)
            return
        if self.req.otp_mode == "challenge" or not self._has_second_factor():
            # The whole string is the password (no code expected, or it comes later).
            self.challenge_next = True
            return
        best = self._best(typed, with_password=True)
        if best is not None and best.verdict is _Verdict.BACKUP and self._tail_is_otp(typed):
            best = None  # a wrong OTP must count as an OTP failure, not a backup guess
        if best is not None and best.verdict > _Verdict.BACKUP:
            self.password = best.candidate.password
        elif self.req.otp_mode == "auto":
            # auto: nothing matched, so read it all as the password and ask for the code.
            self.challenge_next = True
            return
        elif best is not None:
            self.password = best.candidate.password
        else:
            self.password = self._likely_password(typed)
        self.match = best

    def _tail_is_otp(self, typed: str) -> bool:
        n = self._default_otp_length()
        return bool(self.tokens) and typed[-n:].isascii() and typed[-n:].isdigit()

    def _likely_password(self, typed: str) -> str:
        """No reading matched: strip a default-length OTP (and the PIN whose length the
        PIN hash confirms, else the shortest), so a right password still counts."""
        rule = self._pin_rule()
        n = self._default_otp_length()
        if rule is None:
            return default_password(typed, n)
        for cand in self._candidates(typed, with_password=True):
            if cand.kind is SecondKind.OTP and len(cand.second) == n and self._pin_ok(cand):
                return cand.password
        return default_password(typed, n, rule.min_length)

    def _challenge(self) -> Decision:
        """First factor passed, no usable code yet: either the policy decides (no token)
        or the user gets a single-use State bound to user and client."""
        if not self._has_second_factor():  # pragma: no cover - _gate handles it
            return self._no_token()
        state = secrets.token_bytes(32)
        ttl = self.cfg.radius.challenge_ttl
        # Bound to who the user is; `asked` lets the answer carry the name as typed again.
        data = json.dumps({"groups": list(self.groups), "asked": self.asked})
        challenge = Challenge(self.name, self.req.client, self.now + ttl, data)
        return self._finish(
            Outcome.CHALLENGE,
            Reason.CHALLENGE_ISSUED,
            self.cfg.radius.challenge_message,
            state,
            (state_hash(state), challenge),
        )

    def _answer_challenge(self, state: bytes) -> Decision:
        challenge = self.store.take_challenge(state_hash(state), self.now)
        answered_by = challenge is not None and self.asked in (
            challenge.user,
            _asked_from(challenge.data),
        )
        if challenge is not None and answered_by:
            self.name = challenge.user
        self._load()
        if (
            challenge is None
            or not answered_by
            or challenge.client != self.req.client
            or challenge.expires_at <= self.now
            or self.user is None
        ):
            return self._reject(Reason.BAD_STATE)
        self.groups = _groups_from(challenge.data, self.groups)
        typed = self.req.otp if self.req.otp is not None else self.req.password
        return self._gate(_FF.OK) or self._consume(self._best(typed, False))

    def _second_factor_only(self) -> Decision:
        """first_factor none: a gateway checked the password; the whole field (or `otp`)
        is [PIN+]OTP or a backup code."""
        self._load()
        # A stored user with a second factor is who the gateway named. One without
        # would pass on the gateway's word alone (policy optional): the backends say
        # who that name is first, so that a row older versions left for a variant of a
        # directory user's name (`ADBOB` beside adbob) leads to adbob's tokens.
        ff = _FF.OK if self.user is not None and self._has_second_factor() else self._lookup()
        typed = self.req.otp if self.req.otp is not None else self.req.password
        return self._gate(ff) or self._consume(self._best(typed, False))

    # ------------------------------------------------------------ endings
    def _accept(self, reason: Reason) -> Decision:
        return self._finish(Outcome.ACCEPT, reason, "")

    def _reject(self, reason: Reason, message: str = GENERIC_REJECT) -> Decision:
        return self._finish(Outcome.REJECT, reason, message)

    def _finish(
        self,
        outcome: Outcome,
        reason: Reason,
        message: str,
        state: bytes | None = None,
        challenge: tuple[str, Challenge] | None = None,
    ) -> Decision:
        return self._commit(
            self._record(outcome, reason),
            self._decision(outcome, reason, message, state),
            challenge=challenge,
        )

    def _record(
        self, outcome: Outcome, reason: Reason, *, count_failure: bool = False, detail: str = ""
    ) -> AttemptRecord:
        """One possible ending's writes: last attempt, counted failure, audit event."""
        req = self.req
        valid = reason is not Reason.BAD_REQUEST
        actor = f"{req.frontend}:{req.client}" if valid else "invalid"
        detail = detail or self.detail
        if outcome is Outcome.ACCEPT and self.habits is not None and valid:
            detail = self._unusual(self.habits, detail)
        # Positional, in field order: both endings' records are built for every decision,
        # and keyword arguments cost a dataclass __init__ about twice as much.
        audit = AuditEvent(
            self.now,  # at
            actor,
            "auth",  # action
            outcome.value,  # result
            self.name if valid else "",
            req.client if valid else "",
            req.source if valid else "",
            reason.value,
            detail,
        )
        return AttemptRecord(outcome is Outcome.ACCEPT, count_failure, audit)

    def _unusual(self, habits: SigninObserver, detail: str) -> str:
        """The audit detail, with ` unusual=...` when this success is unlike the user's
        earlier ones (a replayed code that then loses its race was still seen)."""
        name = self.user.name if self.user is not None else self.req.user
        learn = self.cfg.audit.unusual_signin.learn
        flags = habits.observe(name, self.req.source, self.req.client, self.now, learn)
        if not flags:
            return detail
        return f"{detail} unusual={','.join(flags)}".lstrip()

    def _commit(
        self,
        won: AttemptRecord,
        if_won: Decision,
        *,
        use: SingleUse | None = None,
        lost: AttemptRecord | None = None,
        if_lost: Decision | None = None,
        challenge: tuple[str, Challenge] | None = None,
    ) -> Decision:
        """The decision's whole write phase: one store call, one transaction, committed
        before the caller can answer (nothing is sent on an uncommitted write); the
        answer is `if_won`, or `if_lost` when the single use was lost, or a LOCKED
        reject when the write found the user locked (after the lock gate). Batched, the
        write is held for `Engine.decide_many` to commit with others, and a placeholder
        (a reject, should it ever escape) is returned."""
        lockout = self.cfg.otp.lockout
        valid = won.audit.reason != Reason.BAD_REQUEST.value
        if_locked = if_lost or if_won
        locked: AttemptRecord | None = None
        if self.lock_checked:
            locked = self._record(Outcome.REJECT, Reason.LOCKED)
            if_locked = self._decision(Outcome.REJECT, Reason.LOCKED, GENERIC_REJECT)
        write = DecisionWrite(  # positional, as in _record
            self.user.name if self.user is not None and valid else None,  # user
            self.now,
            self.req.source,
            self.req.client,
            lockout.max_attempts,
            lockout.auto_unlock_after,  # lock_seconds
            won,
            use,
            lost,
            challenge,
            locked,
        )
        if self.batched:
            self.held = _Held(write, if_won, if_lost or if_won, if_locked, self.now)
            return _HELD
        result = self.store.commit_decision(write)
        self.locked_now = _locked_now(result, write.user, self.now)
        return _answer(result, if_won, if_lost or if_won, if_locked)

    def _decision(
        self, outcome: Outcome, reason: Reason, message: str, state: bytes | None = None
    ) -> Decision:
        valid = reason is not Reason.BAD_REQUEST
        groups = self.groups if outcome is Outcome.ACCEPT else ()
        return Decision(outcome, reason, self.name if valid else "", message, state, groups)


def _asked_from(data: str) -> str | None:
    """The name the challenged request was typed as (kept in the challenge)."""
    try:
        asked = json.loads(data).get("asked") if data else None
    except (ValueError, AttributeError):
        return None
    return asked if isinstance(asked, str) else None


def _groups_from(data: str, fallback: tuple[str, ...]) -> tuple[str, ...]:
    """Groups the first factor saw, carried in the challenge (fresher than the store's)."""
    try:
        groups = json.loads(data).get("groups") if data else None
    except (ValueError, AttributeError):
        return fallback
    if isinstance(groups, list) and all(isinstance(g, str) for g in groups):
        return tuple(groups)
    return fallback
