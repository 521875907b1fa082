"""One decision as plain code: `Attempt.run()` reads the user's record and returns the
writes it wants (`Planned`), or the blocking work it needs first (`Pending`: a first
factor, a directory lookup, taking a challenge State), after which `Pending.finish()`
returns its `Planned`. Nothing here commits: the caller does (authd/decision/engine.py
alone, authd/batching together with other decisions).

Order of work (CONTRACT: a reject tells nothing, timing neither): validate the request,
read the user's second-factor registration, pick the reading of the typed string whose
second factor matches *without consuming it*, run the first factor exactly once, then
apply disabled/lockout/policy, and only then plan the code's use as the store's
compare-and-set. Every decision plans its record (last attempt, failures, one audit
event) in the same write.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from twisted.logger import Logger

from authd.auth.interfaces import (
    AttemptRecord,
    AuthRequest,
    Challenge,
    Decision,
    DecisionWrite,
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
from authd.core.backup_codes import hash_code, normalize_code
from authd.core.model import AuditEvent, Token, TokenStatus, TokenType, User, is_locked
from authd.core.otp import TotpMatch, match_hotp, match_totp
from authd.core.pin import verify_pin
from authd.core.split import Candidate, PinRule, SecondKind, default_password, split_candidates
from authd.core.username import map_user_name
from authd.decision.plan import Planned
from authd.decision.request import GENERIC_REJECT, request_problem, state_hash

if TYPE_CHECKING:
    from authd.decision.engine import Engine

log = Logger(namespace="authd.decision.attempt")

P = ParamSpec("P")
R = TypeVar("R")


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


class _MeteredStore:
    """The store reads one decision makes, timed (metrics.store_seconds)."""

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


class Attempt:
    """The state of one decision, from its request to its `Planned` write.

    Identity (CONTRACT: the user is who the directory or store says): `asked` is the
    typed name less surrounding spaces and the client's realms, what backends search
    for; `name` is who that is, what every store read and write, the challenge State,
    the audit row and the answer use. Both start equal; a backend's lookup may name the
    user otherwise (a directory entry's own name attribute), and the decision then
    starts over under that name (`_become`) before any password is checked.
    """

    def __init__(self, engine: Engine, req: AuthRequest, now: float) -> None:
        self.cfg = engine.config
        self.backends = engine.backends
        self.hash_key = engine.hash_key
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
        self.lock_checked = False  # past the lock gate: the write checks the lock again
        self.first_factor_runs = 0
        self.detail = ""
        self.ff = _FF.UNKNOWN  # what the blocking step found (Pending)
        self.challenge: Challenge | None = None  # the State answered, taken by outside()

    # ------------------------------------------------------------ entry
    def run(self) -> Planned | Pending:
        """The decision's reads and, unless it needs blocking work first, its plan."""
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
        if self.req.first_factor == "none":
            return self._second_factor_only()
        if self.req.state is not None:
            # Taking the State is a write of its own (single use, DELETE ... RETURNING):
            # done outside any batch.
            return Pending(self)
        return self._chain()

    def outside(self) -> None:
        """The blocking step `run` stopped before (see Pending): a first factor, a
        directory lookup, or taking the challenge State and reading its user."""
        if self.req.first_factor == "none":
            self.ff = self._lookup()
        elif self.req.state is not None:
            self._take_challenge(self.req.state)
        else:
            self.ff = self._first_factor()

    def finish(self) -> Planned:
        """The rest of the decision after `outside()`: CPU only, no store call."""
        if self.req.first_factor == "none":
            return self._gate(self.ff) or self._consume(self._best(self._second_typed(), False))
        if self.req.state is not None:
            return self._answer_challenge()
        return self._after_first_factor(self.ff)

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

    def _consume(self, match: _Match | None) -> Planned:
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

    def _second_factor_failed(self, reason: Reason) -> Planned:
        # A replay is a code the user's token really produced, seen before (an echo, a
        # retried login): not a guess, so it does not count toward the lockout (the
        # HTTP failure delay still counts every reject).
        return self._commit(
            self._record(Outcome.REJECT, reason, count_failure=reason is not Reason.REPLAY),
            self._decision(Outcome.REJECT, reason, GENERIC_REJECT),
        )

    # ------------------------------------------------------------ the checks in order
    def _gate(self, ff: _FF) -> Planned | None:
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

    def _no_token(self) -> Planned:
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
    def _chain(self) -> Pending:
        self._load()
        self._plan()
        return Pending(self)  # the first factor blocks (a bind, a password hash)

    def _after_first_factor(self, ff: _FF) -> Planned:
        return self._gate(ff) or (
            self._challenge() if self.challenge_next else self._consume(self.match)
        )

    def _plan(self) -> None:
        """Pick the reading of the typed string for the user read (no code used): the
        password the first factor must check (`password`), and what follows once it
        passed: a challenge, or using `match` (plain data, no closure: an attempt must
        leave no reference cycle behind)."""
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

    def _challenge(self) -> Planned:
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

    def _take_challenge(self, state: bytes) -> None:
        """Take the State (single use) and read the user it was issued to."""
        challenge = self.store.take_challenge(state_hash(state), self.now)
        answered_by = challenge is not None and self.asked in (
            challenge.user,
            _asked_from(challenge.data),
        )
        if challenge is not None and answered_by:
            self.name = challenge.user
        self._load()
        self.challenge = challenge if answered_by else None

    def _answer_challenge(self) -> Planned:
        challenge = self.challenge
        if (
            challenge is None
            or challenge.client != self.req.client
            or challenge.expires_at <= self.now
            or self.user is None
        ):
            return self._reject(Reason.BAD_STATE)
        self.groups = _groups_from(challenge.data, self.groups)
        return self._gate(_FF.OK) or self._consume(self._best(self._second_typed(), False))

    def _second_factor_only(self) -> Planned | Pending:
        """first_factor none: a gateway checked the password; the whole field (or `otp`)
        is [PIN+]OTP or a backup code."""
        self._load()
        # A stored user with a second factor is who the gateway named. One without
        # would pass on the gateway's word alone (policy optional): the backends say
        # who that name is first, so that a row older versions left for a variant of a
        # directory user's name (`ADBOB` beside adbob) leads to adbob's tokens.
        if self.user is not None and self._has_second_factor():
            ff = _FF.OK
        elif self.backends:
            return Pending(self)  # a directory search blocks
        else:
            ff = _FF.UNKNOWN
        return self._gate(ff) or self._consume(self._best(self._second_typed(), False))

    def _second_typed(self) -> str:
        """The second factor as typed: `otp` when given apart, else the whole field."""
        return self.req.otp if self.req.otp is not None else self.req.password

    # ------------------------------------------------------------ endings
    def _accept(self, reason: Reason) -> Planned:
        return self._finish(Outcome.ACCEPT, reason, "")

    def _reject(self, reason: Reason, message: str = GENERIC_REJECT) -> Planned:
        return self._finish(Outcome.REJECT, reason, message)

    def _finish(
        self,
        outcome: Outcome,
        reason: Reason,
        message: str,
        state: bytes | None = None,
        challenge: tuple[str, Challenge] | None = None,
    ) -> Planned:
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
    ) -> Planned:
        """The decision's whole write phase, for the caller to commit as one
        transaction before it answers (nothing is sent on an uncommitted write): the
        answer is `if_won`, or `if_lost` when the single use was lost, or a LOCKED
        reject when the write found the user locked (after the lock gate)."""
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
        return Planned(write, if_won, if_lost or if_won, if_locked, self.now, self.store.seconds)

    def _decision(
        self, outcome: Outcome, reason: Reason, message: str, state: bytes | None = None
    ) -> Decision:
        valid = reason is not Reason.BAD_REQUEST
        groups = self.groups if outcome is Outcome.ACCEPT else ()
        return Decision(outcome, reason, self.name if valid else "", message, state, groups)


class Pending:
    """A decision stopped before blocking work that must not run inside a store
    transaction or hold up other decisions: a first factor (a directory bind, a password
    hash), a directory lookup (first_factor none), or taking a challenge State (a write
    of its own). Its reads are done and the typed string split; no code is used yet.
    `run_outside()` does that work in any thread, once; `finish()` then plans the rest."""

    __slots__ = ("_attempt", "_done", "error")

    def __init__(self, attempt: Attempt) -> None:
        self._attempt = attempt
        self._done = False
        self.error: Exception | None = None  # the blocking step raised (fail closed)

    @property
    def request(self) -> AuthRequest:
        return self._attempt.req

    @property
    def now(self) -> float:
        return self._attempt.now

    @property
    def name(self) -> str:
        """Who the decision is for now (a first factor or a State may have said)."""
        return self._attempt.name

    @property
    def done(self) -> bool:
        return self._done

    def run_outside(self) -> None:
        """The blocking step; an exception is kept in `error`, never raised."""
        if self._done:
            raise RuntimeError("blocking step run twice")
        self._done = True
        try:
            self._attempt.outside()
        except Exception as e:  # noqa: BLE001 - the caller answers it with a reject
            self.error = e

    def finish(self) -> Planned:
        """The plan, after `run_outside()`; raises the step's error if it failed."""
        if not self._done:
            raise RuntimeError("blocking step not run")
        if self.error is not None:
            raise self.error
        return self._attempt.finish()


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
