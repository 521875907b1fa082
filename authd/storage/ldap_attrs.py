"""`token_storage: ldap`: OATH token records kept in the user's own directory entry.

Each token is one value of a multi-valued attribute (`primary.backends[].token_attribute`)
of the user's entry: ``<serial>|<ciphertext>``, the ciphertext being the whole record as
JSON, AES-256-GCM under the data key with the serial as associated data, so the
directory only ever shows serials and ciphertext. Every change is ONE LDAP modify that
deletes the exact old value and adds the new one: the server applies it atomically
(RFC 4511 §4.6) and refuses it when the old value is gone, so two authd nodes writing to
one directory master can never both accept the same code (compare-and-set).

A directory user's other state (failure count, lock deadline, PIN hash, backup-code
hashes) is one more value of the same attribute, ``~state|<ciphertext>``, changed the
same way, so lockouts and single-use backup codes are exact across nodes too. User
records, last-seen data, challenges and audit stay in the SQL store this class
delegates to, as do tokens without a user and everything about users the directory does
not know (local users in a mixed chain).
"""

from __future__ import annotations

import base64
import contextlib
import enum
import functools
import json
import math
import random
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, runtime_checkable

import ldap3
from ldap3.utils.conv import escape_filter_chars
from twisted.logger import Logger

from authd.auth.interfaces import (
    AuditFilter,
    Challenge,
    DecisionCommit,
    DecisionWrite,
    LockState,
    SingleUse,
    Store,
    UseBackupCode,
    UseHotpCounter,
    UserOverview,
    UseTotpStep,
    commit_decision_in_steps,
    get_user_tokens_codes_in_steps,
)
from authd.auth.ldap_primary import DirectoryEntry, DirectoryUnavailable, LdapBackend
from authd.core import otp
from authd.core.errors import AlreadyExists, AuthdError, InvalidInput, NotFound, StoreUnavailable
from authd.core.lockout import after_failure, after_unlock
from authd.core.model import Algorithm, AuditEvent, Token, TokenStatus, TokenType, User
from authd.portability.merge import ImportPlan
from authd.portability.records import BackupCode, Records, UserRecord, token_columns

log = Logger(namespace="authd.storage.ldap_attrs")

SEPARATOR = "|"
RECORD_VERSION = 1
# One value per user holds the rest of the state; serials never start with "~".
STATE_PREFIX = "~state|"
# No state yet: a creation marker, this prefix and a random suffix. Every state value is
# unique (markers by their suffix, states by their encryption nonce), so a
# compare-and-set that deletes the exact values it read can never succeed on a value
# that went away and came back (ABA): a constant marker could be re-added by a late
# creator, and a count made on it would be lost.
STATE_EMPTY = "~state|-"
STATE_AAD = b"authd-user-state"
HINTS_MAX = 100_000
CAS_ATTEMPTS = 16  # a compare-and-set lost to a concurrent writer is re-evaluated this often
_SERIAL_RE = re.compile(r"^[^\s|~\x00-\x1f\x7f][^\s|\x00-\x1f\x7f]{0,127}$")

P = ParamSpec("P")
R = TypeVar("R")


@runtime_checkable
class BulkTokens(Protocol):
    """What import and registration need of the SQL store behind the directory."""

    def add_tokens(self, new: Sequence[Token]) -> None: ...

    def claim_token(
        self, serial: str, user: str, *, step: int | None, drift: int, counter: int | None
    ) -> bool: ...

    def export_records(self) -> Records: ...

    def import_records(self, decide: Callable[[Records], ImportPlan]) -> ImportPlan: ...


class Cipher(Protocol):
    """What this store needs of `authd.crypto.Keyring`."""

    def encrypt(self, plaintext: bytes, aad: bytes) -> str: ...
    def decrypt(self, blob: str, aad: bytes) -> bytes: ...
    def rotate(self) -> str: ...


def _back_off(attempt: int) -> None:
    """Random pause after a lost compare-and-set, so two writers stop colliding in
    lock-step (we are on a worker thread; sleeping blocks no reactor)."""
    time.sleep(random.uniform(0, 0.002 * attempt))


def _check_serial(serial: str) -> None:
    if not _SERIAL_RE.match(serial):
        raise InvalidInput(
            f"token serial must be 1-128 printable characters without spaces or {SEPARATOR!r}"
        )


def encode_record(token: Token, cipher: Cipher) -> str:
    """The attribute value for `token`: serial in clear, everything else encrypted."""
    record = {
        "v": RECORD_VERSION,
        **token_columns(token),
        "seed": base64.b64encode(token.seed).decode(),
    }
    plaintext = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
    return f"{token.serial}{SEPARATOR}{cipher.encrypt(plaintext, token.serial.encode())}"


def decode_record(value: str, cipher: Cipher) -> Token:
    """The token in an attribute value; raises AuthdError when it is not ours or was
    tampered with (the serial outside must be the one bound inside)."""
    serial, sep, blob = value.partition(SEPARATOR)
    if not sep or not serial:
        raise InvalidInput("not an authd token value")
    r: dict[str, Any] = json.loads(cipher.decrypt(blob, serial.encode()))
    if r.get("v") != RECORD_VERSION or r.get("serial") != serial:
        raise InvalidInput(f"token value for {serial!r} is inconsistent")
    return Token(
        serial=serial,
        type=TokenType(r["type"]),
        seed=base64.b64decode(r["seed"]),
        user=r["user"],
        algorithm=Algorithm(r["algorithm"]),
        digits=int(r["digits"]),
        period=int(r["period"]),
        counter=int(r["counter"]),
        last_step=int(r["last_step"]),
        drift=int(r["drift"]),
        status=TokenStatus(r["status"]),
        description=str(r["description"]),
        created_at=float(r["created_at"]),
    )


@dataclass(frozen=True)
class UserState:
    """What the directory keeps per user besides tokens (the user's lock state,
    failure count, PIN hash and backup-code hashes)."""

    user: str
    failures: int = 0
    locked_until: float | None = None  # math.inf: until an operator unlocks
    pin_hash: str | None = field(default=None, repr=False)
    backup: tuple[str, ...] = field(default=(), repr=False)


def _is_marker(value: str) -> bool:
    """A creation marker (empty state) rather than an encrypted state."""
    return value.startswith(STATE_EMPTY)


def _new_marker() -> str:
    return STATE_EMPTY + secrets.token_hex(8)


def _locked(state: UserState, now: float) -> bool:
    """core.model.is_locked on the directory's copy of the lock state."""
    return state.locked_until is not None and now < state.locked_until


def _after_success(state: UserState, now: float) -> UserState:
    """A success ends the run of failures and clears an expired lock, never a running
    one (as the SQL store's success update)."""
    return replace(
        state, failures=0, locked_until=state.locked_until if _locked(state, now) else None
    )


def _totp_change(step: int, drift: int) -> Callable[[Token], Token | None]:
    """RFC 6238 §5.2: a step is accepted once, only after every step accepted before,
    on an active token (None: refused)."""

    def change(t: Token) -> Token | None:
        if t.status is not TokenStatus.ACTIVE or t.last_step >= step:
            return None
        return replace(t, last_step=step, drift=drift)

    return change


def _hotp_change(counter: int) -> Callable[[Token], Token | None]:
    """RFC 4226 §7.2: the counter becomes `counter + 1` if it was <= `counter`."""

    def change(t: Token) -> Token | None:
        if t.status is not TokenStatus.ACTIVE or t.counter > counter:
            return None
        return replace(t, counter=counter + 1)

    return change


class _Use(enum.Enum):
    """How a decision's single use ended when the lock is part of its compare-and-set."""

    WON = "won"
    LOST = "lost"  # the code was used already (or the token is not active)
    LOCKED = "locked"  # the user was locked: nothing used


def encode_state(state: UserState, cipher: Cipher) -> str:
    locked = state.locked_until
    record = {
        "v": RECORD_VERSION,
        "user": state.user,
        "failures": state.failures,
        "locked_until": "inf" if locked is not None and math.isinf(locked) else locked,
        "pin_hash": state.pin_hash,
        "backup": list(state.backup),
    }
    plaintext = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
    return STATE_PREFIX + cipher.encrypt(plaintext, STATE_AAD)


def decode_state(value: str, cipher: Cipher) -> UserState:
    if not value.startswith(STATE_PREFIX):
        raise InvalidInput("not an authd user state value")
    r: dict[str, Any] = json.loads(cipher.decrypt(value[len(STATE_PREFIX) :], STATE_AAD))
    if r.get("v") != RECORD_VERSION:
        raise InvalidInput("user state version is not supported")
    locked = r["locked_until"]
    return UserState(
        user=str(r["user"]),
        failures=int(r["failures"]),
        locked_until=math.inf if locked == "inf" else (None if locked is None else float(locked)),
        pin_hash=r["pin_hash"],
        backup=tuple(str(h) for h in r["backup"]),
    )


def _bounded(
    method: Callable[Concatenate[LdapTokenStore, P], R],
) -> Callable[Concatenate[LdapTokenStore, P], R]:
    """Run a store call under ONE directory deadline (request_timeout) covering all its
    reads, modifies and compare-and-set retries: one engine request with tokens in the
    directory must not outlast request_timeout when servers hang (it fails closed with
    StoreUnavailable instead)."""

    @functools.wraps(method)
    def bounded(self: LdapTokenStore, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._directory.deadline(self._timeout):
            return method(self, *args, **kwargs)

    return bounded


class LdapTokenStore:
    """A `Store` whose token records live in directory attributes (see module doc).

    `backend` is the LDAP first-factor backend that finds users (its service account
    needs write access to the token attribute); `delegate` is the SQL store.
    """

    def __init__(
        self, delegate: Store, backend: LdapBackend, cipher: Cipher, attribute: str | None = None
    ) -> None:
        self._delegate = delegate
        self._backend = backend
        self._directory = backend.directory
        self._cipher = cipher
        self._attr = attribute or backend.directory.config.token_attribute
        if not self._attr:
            raise ValueError("token_storage ldap needs primary.backends[].token_attribute")
        self._base = backend.directory.config.user_search.base
        self._timeout = backend.directory.config.request_timeout
        self._where: dict[str, str] = {}  # serial -> DN last seen holding it (a hint)

    def decision_scope(self) -> AbstractContextManager[None]:
        """One directory deadline (request_timeout) for a whole engine decision: its
        token reads, the first factor's search and bind, and its write share it, so a
        slow directory cannot stretch one request to several request_timeouts. Past it
        the decision fails closed (the engine's caller rejects)."""
        return self._directory.deadline(self._timeout)

    # ------------------------------------------------------------ directory access
    @contextlib.contextmanager
    def _reachable(self) -> Iterator[None]:
        """Every directory operation is bounded by request_timeout even outside a
        `_bounded` call (a nested deadline never extends the call's own)."""
        try:
            with self._directory.deadline(self._timeout):
                yield
        except DirectoryUnavailable as e:
            raise StoreUnavailable(f"directory holding tokens: {e}") from None

    def location_hints(self) -> int:
        """Token serials whose entry is remembered (at most HINTS_MAX)."""
        return len(self._where)

    def _user_dn(self, user: str) -> str:
        with self._reachable():
            found = self._backend.find_named(user)
        if found is None:
            raise NotFound(f"user {user!r} is not in the directory")
        return found.dn

    def _entries(self, filt: str) -> list[DirectoryEntry]:
        with self._reachable():
            return self._directory.search(self._base, filt, [self._attr])

    def _values(self, entry: DirectoryEntry) -> tuple[str, ...]:
        return entry.attributes.get(self._attr.lower(), ())

    def _decode_all(self, entry: DirectoryEntry) -> list[tuple[str, Token]]:
        out = []
        for value in self._values(entry):
            if value.startswith(STATE_PREFIX):
                continue
            try:
                out.append((value, decode_record(value, self._cipher)))
            except (AuthdError, ValueError, KeyError) as e:
                # Fail closed: an unreadable record is no token at all.
                log.error(
                    "unreadable token value in {dn}: {error}", dn=entry.dn, error=type(e).__name__
                )
        return out

    def _locate(self, serial: str) -> tuple[str, str, Token] | None:
        """(entry DN, exact attribute value, token) of a token kept in the directory.

        The entry where the serial was last seen is read first (one base read); the
        subtree search runs when it is not there (first use, or the token moved).
        """
        prefix = f"{serial}{SEPARATOR}"
        hint = self._where.get(serial)
        if hint is not None:
            for entry in self._entries_of(hint):
                for value, token in self._decode_all(entry):
                    if token.serial == serial and value.startswith(prefix):
                        return entry.dn, value, token
        entries = self._entries(f"({self._attr}={escape_filter_chars(prefix)}*)")
        for entry in entries:
            for value, token in self._decode_all(entry):
                if token.serial == serial and value.startswith(prefix):
                    if len(self._where) >= HINTS_MAX:
                        self._where.clear()
                    self._where[serial] = entry.dn
                    return entry.dn, value, token
        return None

    def _replace_value(self, dn: str, old: str | None, new: str | None) -> bool:
        """Delete `old` and add `new` in ONE modify; False when `old` is already gone."""
        changes: list[tuple[str, list[str]]] = []
        if old is not None:
            changes.append((ldap3.MODIFY_DELETE, [old]))
        if new is not None:
            changes.append((ldap3.MODIFY_ADD, [new]))
        with self._reachable():
            return self._directory.modify(dn, {self._attr: changes})

    def _update(
        self, serial: str, change: Callable[[Token], Token | None], fallback: Callable[[], bool]
    ) -> bool:
        """Compare-and-set loop: re-read, decide, write iff nobody wrote in between."""
        for attempt in range(CAS_ATTEMPTS):
            if attempt:
                _back_off(attempt)
            found = self._locate(serial)
            if found is None:
                return fallback()
            dn, old_value, token = found
            new = change(token)
            if new is None:
                return False
            if new == token:
                return True
            if self._replace_value(dn, old_value, encode_record(new, self._cipher)):
                return True
        log.warn(
            "token {serial}: gave up after {n} concurrent updates", serial=serial, n=CAS_ATTEMPTS
        )
        return False

    # ------------------------------------------------------------ tokens
    @_bounded
    def add_token(self, token: Token) -> None:
        """A directory user's token goes into the user's entry; one without a user, or of
        a user only the SQL store knows, to the SQL store. Raises AlreadyExists for a
        serial taken in either place, NotFound for a user neither knows."""
        _check_serial(token.serial)
        if self._locate(token.serial) is not None:
            raise AlreadyExists(f"token {token.serial!r} exists")
        dn = None if token.user is None else self._directory_dn(token.user)
        if dn is None:  # unassigned, or a user only the SQL store knows (local user)
            self._delegate.add_token(token)
            return
        if self._delegate.get_token(token.serial) is not None:
            raise AlreadyExists(f"token {token.serial!r} exists")
        if not self._replace_value(dn, None, encode_record(token, self._cipher)):
            raise AlreadyExists(f"token {token.serial!r} exists")

    @_bounded
    def add_tokens(self, new: Sequence[Token]) -> None:
        """Imported (unassigned) tokens go to the SQL store in one transaction, once no
        serial is taken in the directory either (one search, serials read from the
        values' plain prefix)."""
        if any(t.user is not None for t in new):
            raise InvalidInput("bulk import takes unassigned tokens only")
        wanted = {t.serial for t in new}
        taken = sorted(
            serial
            for entry in self._entries(f"({self._attr}=*)")
            for value in self._values(entry)
            if not value.startswith(STATE_PREFIX)
            and (serial := value.split(SEPARATOR, 1)[0]) in wanted
        )
        if taken:
            shown = ", ".join(taken[:20]) + (" ..." if len(taken) > 20 else "")
            raise AlreadyExists(f"{len(taken)} serial(s) already in the directory: {shown}")
        self._delegate_sql().add_tokens(new)

    def claim_token(
        self, serial: str, user: str, *, step: int | None, drift: int, counter: int | None
    ) -> bool:
        """Unassigned tokens live in the SQL store; the claimed one stays there (as
        other hardware tokens assigned by an operator do)."""
        return self._delegate_sql().claim_token(
            serial, user, step=step, drift=drift, counter=counter
        )

    def _delegate_sql(self) -> BulkTokens:
        if not isinstance(self._delegate, BulkTokens):
            raise InvalidInput("the token store behind the directory has no bulk import")
        return self._delegate

    @_bounded
    def get_token(self, serial: str) -> Token | None:
        found = self._locate(serial)
        return found[2] if found is not None else self._delegate.get_token(serial)

    @_bounded
    def list_tokens(self, user: str | None = None) -> list[Token]:
        """Directory tokens first, then those the SQL store keeps (unassigned, or
        assigned hardware tokens imported there)."""
        if user is None:
            entries = self._entries(f"({self._attr}=*)")
        else:
            with self._reachable():
                found = self._backend.find_named(user)
            entries = [] if found is None else self._entries_of(found.dn)
        tokens = [
            t for e in entries for _, t in self._decode_all(e) if user is None or t.user == user
        ]
        seen = {t.serial for t in tokens}
        tokens += [t for t in self._delegate.list_tokens(user) if t.serial not in seen]
        return tokens

    def _entries_of(self, dn: str) -> list[DirectoryEntry]:
        with self._reachable():
            return self._directory.search(dn, "(objectClass=*)", [self._attr], scope="base")

    def active_tokens(self, user: str) -> list[Token]:
        return [t for t in self.list_tokens(user) if t.status is TokenStatus.ACTIVE]

    @_bounded
    def set_token_status(self, serial: str, status: TokenStatus) -> bool:
        status = TokenStatus(status)
        return self._update(
            serial,
            lambda t: replace(t, status=status),
            lambda: self._delegate.set_token_status(serial, status),
        )

    @_bounded
    def assign_token(self, serial: str, user: str | None) -> bool:
        """Move a directory token to another user's entry (add there first, then delete
        here: a crash in between leaves a duplicate, never a loss); unassigning moves it
        to the SQL store. Tokens kept in the SQL store stay there."""
        found = self._locate(serial)
        if found is None:
            return self._delegate.assign_token(serial, user)
        dn, value, token = found
        if user is None:
            self._delegate.add_token(replace(token, user=None))
        else:
            new_dn = self._user_dn(user)
            moved = replace(token, user=user)
            if new_dn.lower() == dn.lower():
                return self._replace_value(dn, value, encode_record(moved, self._cipher))
            self._replace_value(new_dn, None, encode_record(moved, self._cipher))
        self._replace_value(dn, value, None)
        return True

    @_bounded
    def accept_totp_step(self, serial: str, step: int, drift: int) -> bool:
        """True for exactly one caller per (token, step), only for a step later than any
        accepted before (RFC 6238 §5.2), on an active token; same rule as the SQL store."""
        return self._update(
            serial,
            _totp_change(step, drift),
            lambda: self._delegate.accept_totp_step(serial, step, drift),
        )

    @_bounded
    def accept_hotp_counter(self, serial: str, counter: int) -> bool:
        """The counter becomes `counter + 1` if it was <= `counter` (RFC 4226 §7.2)."""
        return self._update(
            serial,
            _hotp_change(counter),
            lambda: self._delegate.accept_hotp_counter(serial, counter),
        )

    @_bounded
    def resync_token(
        self,
        serial: str,
        *,
        counter: int | None = None,
        last_step: int | None = None,
        drift: int | None = None,
    ) -> bool:
        """Forward only, like the SQL store: the compare-and-set loop re-reads the value
        and writes only while neither resync code was used (`otp.resync_write`)."""
        guard = otp.resync_write(counter, last_step)

        def change(t: Token) -> Token | None:
            if not guard.allows(t):
                return None
            return replace(
                t,
                counter=t.counter if counter is None else counter,
                last_step=t.last_step if last_step is None else last_step,
                drift=t.drift if drift is None else drift,
            )

        return self._update(
            serial,
            change,
            lambda: self._delegate.resync_token(
                serial, counter=counter, last_step=last_step, drift=drift
            ),
        )

    # ------------------------------------------------------------ user state
    def _directory_dn(self, name: str) -> str | None:
        """The entry of a directory user (whose state lives there), None for a user
        only the SQL store knows (a local user in a mixed chain) and for a name that is
        not an entry's own (`ADBOB` for adbob): tokens are read from the entry of the
        user they belong to, never from one a variant of the name matches."""
        with self._reachable():
            found = self._backend.find_named(name)
        return None if found is None else found.dn

    def _state_in(
        self, dn: str, user: str, values: Sequence[str]
    ) -> tuple[tuple[str, ...], UserState]:
        """(every exact state value, none when there is no state yet; the state) from an
        entry's attribute values. A creation marker next to a real state is a leftover
        of two first writers (one added its marker after the other had replaced its
        own): the real state counts, and the next compare-and-set deletes both."""
        found = tuple(v for v in values if v.startswith(STATE_PREFIX))
        real = [v for v in found if not _is_marker(v)]
        if not real:
            return found, UserState(user=user)
        if len(real) > 1:
            log.error("{n} state values in {dn}; using the first", n=len(real), dn=dn)
        value = real[0]
        try:
            state = decode_state(value, self._cipher)
        except (AuthdError, ValueError, KeyError) as e:
            # Fail closed: unreadable lock state must not look like "unlocked".
            raise StoreUnavailable(f"unreadable user state in {dn}: {type(e).__name__}") from None
        if state.user != user:
            raise StoreUnavailable(f"user state in {dn} belongs to someone else")
        return found, state

    def _entry_values(self, dn: str) -> list[str]:
        return [v for e in self._entries_of(dn) for v in self._values(e)]

    def _read_state(self, dn: str, user: str) -> tuple[tuple[str, ...], UserState]:
        return self._state_in(dn, user, self._entry_values(dn))

    def _update_state(
        self, dn: str, user: str, change: Callable[[UserState], UserState | None]
    ) -> UserState | None:
        """Compare-and-set on the user's state value; None when `change` refused."""
        for attempt in range(CAS_ATTEMPTS):
            if attempt:
                _back_off(attempt)
            old_values, state = self._read_state(dn, user)
            new = change(state)
            if new is None:
                return None
            if new == state:
                return state
            if not old_values:
                # First state of this user: add a creation marker, then change it like
                # any other value (markers of concurrent creators all go with the
                # first compare-and-set that read them).
                self._replace_value(dn, None, _new_marker())
                continue
            if self._replace_state(dn, old_values, [], self._state_value(new)):
                return new
        raise StoreUnavailable(f"user state of {user!r}: too many concurrent updates")

    def _replace_state(
        self,
        dn: str,
        old_values: Sequence[str],
        changes: list[tuple[str, list[str]]],
        new_value: str,
    ) -> bool:
        """ONE modify: `changes`, then every old state value deleted (so it fails if any
        changed: compare-and-set) and `new_value` added; False when it lost."""
        changes = [
            *changes,
            (ldap3.MODIFY_DELETE, list(old_values)),
            (ldap3.MODIFY_ADD, [new_value]),
        ]
        with self._reachable():
            return self._directory.modify(dn, {self._attr: changes})

    def _state_value(self, state: UserState) -> str:
        """The attribute value holding `state`: encrypted, so never a value seen before,
        even for the empty state (see STATE_EMPTY)."""
        return encode_state(state, self._cipher)

    def _with_state(self, user: User) -> User:
        dn = self._directory_dn(user.name)
        if dn is None:
            return user
        _, state = self._read_state(dn, user.name)
        return replace(
            user,
            failures=state.failures,
            locked_until=state.locked_until,
            pin_hash=state.pin_hash,
        )

    @_bounded
    def get_user(self, name: str) -> User | None:
        """The SQL record, with lock state and PIN hash from the directory for a
        directory user."""
        user = self._delegate.get_user(name)
        return None if user is None else self._with_state(user)

    @_bounded
    def get_user_with_tokens(self, name: str) -> tuple[User | None, list[Token]]:
        """One read of the user's entry gives tokens and state. Directory tokens come
        back even before the first login has created the store record: the engine needs
        them to split password and code."""
        user = self._delegate.get_user(name)
        dn = self._directory_dn(name)
        if dn is None:
            return user, self._delegate.list_tokens(name)
        values = self._entry_values(dn)
        tokens = [
            t
            for _, t in self._decode_all(DirectoryEntry(dn, {self._attr.lower(): tuple(values)}))
            if t.user == name
        ]
        seen = {t.serial for t in tokens}
        tokens += [t for t in self._delegate.list_tokens(name) if t.serial not in seen]
        if user is not None:
            _, state = self._state_in(dn, name, values)
            user = replace(
                user,
                failures=state.failures,
                locked_until=state.locked_until,
                pin_hash=state.pin_hash,
            )
        return user, tokens

    @_bounded
    def get_user_tokens_codes(self, name: str) -> tuple[User | None, list[Token], int]:
        """Directory and SQL parts cannot be read in one round trip: two reads."""
        return get_user_tokens_codes_in_steps(self, name)

    def add_user(self, user: User) -> None:
        self._delegate.add_user(user)

    @_bounded
    def ensure_user(
        self,
        name: str,
        source: str,
        now: float,
        profile: dict[str, str] | None = None,
        groups: Sequence[str] = (),
    ) -> User:
        return self._with_state(self._delegate.ensure_user(name, source, now, profile, groups))

    @_bounded
    def list_users(
        self, pattern: str | None = None, limit: int | None = None
    ) -> list[UserOverview]:
        """The SQL overview, completed from ONE search over every directory value:
        tokens counted, lock state and registration taken from the directory."""
        overviews = self._delegate.list_users(pattern, limit)
        active: dict[str, int] = {}
        has_token: set[str] = set()
        states: dict[str, UserState] = {}
        for entry in self._entries(f"({self._attr}=*)"):
            for _, token in self._decode_all(entry):
                if token.user:
                    has_token.add(token.user)
                    active[token.user] = active.get(token.user, 0) + (
                        token.status is TokenStatus.ACTIVE
                    )
            for value in self._values(entry):
                if value.startswith(STATE_PREFIX) and not _is_marker(value):
                    with contextlib.suppress(AuthdError, ValueError, KeyError):
                        decoded = decode_state(value, self._cipher)
                        states[decoded.user] = decoded
        out = []
        for o in overviews:
            name = o.user.name
            user, registered = o.user, o.registered or name in has_token
            state: UserState | None = states.get(name)
            if state is not None:
                user = replace(
                    user,
                    failures=state.failures,
                    locked_until=state.locked_until,
                    pin_hash=state.pin_hash,
                )
                registered = registered or bool(state.pin_hash or state.backup)
            out.append(
                UserOverview(
                    user=user,
                    active_tokens=o.active_tokens + active.get(name, 0),
                    registered=registered,
                )
            )
        return out

    def set_password_hash(self, name: str, password_hash: str | None) -> bool:
        return self._delegate.set_password_hash(name, password_hash)

    def set_disabled(self, name: str, disabled: bool) -> bool:
        return self._delegate.set_disabled(name, disabled)

    def set_profile(
        self, name: str, profile: Mapping[str, str], groups: Sequence[str] | None = None
    ) -> bool:
        return self._delegate.set_profile(name, profile, groups)

    @_bounded
    def rename_user(self, name: str, new_name: str) -> bool:
        """A directory user's name is the directory's: only store users move."""
        if self._directory_dn(name) is not None:
            raise InvalidInput("a directory user's name changes in the directory")
        return self._delegate.rename_user(name, new_name)

    @_bounded
    def delete_user(self, name: str) -> bool:
        """The directory entry is not authd's to delete: its token values, PIN and
        backup codes go as in `reset_user` (a token value removed is revoked for good)
        and its lock state is cleared, so a user who reappears starts afresh; then the
        SQL row (a local user's tokens are revoked there)."""
        dn = self._directory_dn(name)
        self.reset_user(name)
        if dn is not None:
            self._update_state(dn, name, lambda st: UserState(user=name))
        return self._delegate.delete_user(name)

    @_bounded
    def set_pin_hash(self, name: str, pin_hash: str | None) -> bool:
        dn = self._directory_dn(name)
        if dn is None:
            return self._delegate.set_pin_hash(name, pin_hash)
        self._update_state(dn, name, lambda st: replace(st, pin_hash=pin_hash))
        return True

    @_bounded
    def unlock_user(self, name: str) -> bool:
        dn = self._directory_dn(name)
        if dn is None:
            return self._delegate.unlock_user(name)
        update = after_unlock()
        self._update_state(
            dn, name, lambda st: replace(st, failures=update.failures, locked_until=None)
        )
        return True

    @_bounded
    def reset_user(self, name: str) -> bool:
        """Drop the user's directory tokens, PIN and backup codes too; lock state is left
        alone, as in the SQL store. One modify per value, so a value changed meanwhile
        is retried, never resurrected."""
        dn = self._directory_dn(name)
        if dn is not None:
            for _ in range(CAS_ATTEMPTS):
                values = [
                    v
                    for e in self._entries_of(dn)
                    for v in self._values(e)
                    if not v.startswith(STATE_PREFIX)
                ]
                if not values:
                    break
                for value in values:
                    self._replace_value(dn, value, None)
            self._update_state(dn, name, lambda st: replace(st, pin_hash=None, backup=()))
        return self._delegate.reset_user(name)

    @_bounded
    def record_failure(
        self, name: str, now: float, max_attempts: int, lock_seconds: float | None
    ) -> LockState:
        """core.lockout.after_failure applied by compare-and-set on the directory value,
        so two nodes counting at once both count."""
        dn = self._directory_dn(name)
        if dn is None:
            return self._delegate.record_failure(name, now, max_attempts, lock_seconds)

        def change(st: UserState) -> UserState:
            update = after_failure(st.failures, st.locked_until, now, max_attempts, lock_seconds)
            return replace(st, failures=update.failures, locked_until=update.locked_until)

        new = self._update_state(dn, name, change)
        assert new is not None
        return LockState(failures=new.failures, locked_until=new.locked_until)

    @_bounded
    def record_attempt(
        self, name: str, now: float, source: str, client: str, success: bool
    ) -> None:
        """Last-seen data stays in SQL; a success ends the run of failures and clears an
        expired lock (never a running one), as in the SQL store."""
        self._delegate.record_attempt(name, now, source, client, success)
        if not success:
            return
        dn = self._directory_dn(name)
        if dn is None:
            return

        self._update_state(dn, name, lambda st: _after_success(st, now))

    @_bounded
    def replace_backup_codes(self, user: str, code_hashes: Sequence[str], now: float) -> None:
        dn = self._directory_dn(user)
        if dn is None:
            self._delegate.replace_backup_codes(user, code_hashes, now)
            return
        codes = tuple(code_hashes)
        self._update_state(dn, user, lambda st: replace(st, backup=codes))

    @_bounded
    def consume_backup_code(self, user: str, code_hash: str) -> bool:
        """Single use: removing the hash is a compare-and-set, so one caller wins."""
        dn = self._directory_dn(user)
        if dn is None:
            return self._delegate.consume_backup_code(user, code_hash)

        def change(st: UserState) -> UserState | None:
            if code_hash not in st.backup:
                return None
            return replace(st, backup=tuple(h for h in st.backup if h != code_hash))

        return self._update_state(dn, user, change) is not None

    @_bounded
    def backup_codes_left(self, user: str) -> int:
        dn = self._directory_dn(user)
        if dn is None:
            return self._delegate.backup_codes_left(user)
        return len(self._read_state(dn, user)[1].backup)

    def put_challenge(self, state_hash: str, challenge: Challenge) -> None:
        self._delegate.put_challenge(state_hash, challenge)

    def take_challenge(self, state_hash: str, now: float) -> Challenge | None:
        return self._delegate.take_challenge(state_hash, now)

    @_bounded
    def commit_decision(self, write: DecisionWrite) -> DecisionCommit:
        """Token and lock state live in the directory, audit in SQL: no one transaction
        spans both, so the write phase runs as its exact single steps. Past the lock
        gate (`write.locked`), the lock check is part of each directory compare-and-set:
        a code is used in ONE modify that also replaces the user's exact state value (so
        it fails if a parallel guess counted or locked meanwhile, and is re-evaluated),
        and a failure is counted only on a state found unlocked."""
        user = write.user
        if write.locked is None or user is None:
            return commit_decision_in_steps(self, write)
        dn = self._directory_dn(user)
        if dn is None:  # a user only the SQL store knows: all of it in one transaction there
            return self._delegate.commit_decision(write)
        used = self._use_unless_locked(dn, user, write.use, write.now, write.won.success)
        if used is _Use.LOCKED:
            return self._commit_locked(write, user)
        record = write.won if used is _Use.WON else write.lost
        if record is None:
            raise ValueError("DecisionWrite.lost is required when a single use can be lost")
        lock: LockState | None = None
        if record.count_failure:
            now, most, seconds = write.now, write.max_attempts, write.lock_seconds

            def count(st: UserState) -> UserState | None:
                if _locked(st, now):
                    return None
                update = after_failure(st.failures, st.locked_until, now, most, seconds)
                return replace(st, failures=update.failures, locked_until=update.locked_until)

            counted = self._update_state(dn, user, count)
            if counted is None:
                return self._commit_locked(write, user)
            lock = LockState(failures=counted.failures, locked_until=counted.locked_until)
        if used is _Use.WON and write.challenge is not None:
            self._delegate.put_challenge(*write.challenge)
        self._delegate.record_attempt(user, write.now, write.source, write.client, record.success)
        self._delegate.append_audit(record.audit)
        return DecisionCommit(used is _Use.WON, lock)

    def _commit_locked(self, write: DecisionWrite, user: str) -> DecisionCommit:
        """The user was locked when the write came: only the LOCKED ending is written."""
        assert write.locked is not None
        self._delegate.record_attempt(user, write.now, write.source, write.client, False)
        self._delegate.append_audit(write.locked.audit)
        return DecisionCommit(False, None, locked=True)

    def _use_unless_locked(
        self, dn: str, user: str, use: SingleUse | None, now: float, success: bool
    ) -> _Use:
        """The single use (or, without one, a success's reset of the failure count) as
        a compare-and-set that also requires the user's state to be the unlocked one it
        read; a won use resets the count in the same modify. Without a use nor a success
        it only checks the lock (the failure count that follows is conditional too)."""
        if isinstance(use, UseBackupCode):
            return self._use_backup_code(dn, user, use.code_hash, now)
        if use is None:

            def check(st: UserState) -> UserState | None:
                if _locked(st, now):
                    return None
                return _after_success(st, now) if success else st

            return _Use.LOCKED if self._update_state(dn, user, check) is None else _Use.WON
        if isinstance(use, UseTotpStep):
            serial, change = use.serial, _totp_change(use.step, use.drift)
        elif isinstance(use, UseHotpCounter):
            serial, change = use.serial, _hotp_change(use.counter)
        for attempt in range(CAS_ATTEMPTS):
            if attempt:
                _back_off(attempt)
            entries = self._entries_of(dn)
            state_values, state = self._state_in(
                dn, user, [v for e in entries for v in self._values(e)]
            )
            if _locked(state, now):
                return _Use.LOCKED
            found = [
                (value, token)
                for e in entries
                for value, token in self._decode_all(e)
                if token.serial == serial
            ]
            if not found:
                # Not in the user's entry (unassigned, or kept in SQL): its own
                # compare-and-set, after the lock check just made.
                won = (
                    self.accept_totp_step(use.serial, use.step, use.drift)
                    if isinstance(use, UseTotpStep)
                    else self.accept_hotp_counter(use.serial, use.counter)
                )
                return _Use.WON if won else _Use.LOST
            token_value, token = found[0]
            new = change(token)
            if new is None:
                return _Use.LOST
            if not state_values:  # first state of this user: create it, then retry
                self._replace_value(dn, None, _new_marker())
                continue
            token_change = [
                (ldap3.MODIFY_DELETE, [token_value]),
                (ldap3.MODIFY_ADD, [encode_record(new, self._cipher)]),
            ]
            reset = self._state_value(_after_success(state, now))
            if self._replace_state(dn, state_values, token_change, reset):
                return _Use.WON
        raise StoreUnavailable(f"token {serial}: too many concurrent updates")

    def _use_backup_code(self, dn: str, user: str, code_hash: str, now: float) -> _Use:
        """Removing the code's hash from the state value, unless that state is locked."""
        locked = False

        def change(st: UserState) -> UserState | None:
            nonlocal locked
            locked = _locked(st, now)
            if locked or code_hash not in st.backup:
                return None
            kept = tuple(h for h in st.backup if h != code_hash)
            return replace(_after_success(st, now), backup=kept)

        if self._update_state(dn, user, change) is not None:
            return _Use.WON
        return _Use.LOCKED if locked else _Use.LOST

    def append_audit(self, event: AuditEvent) -> None:
        self._delegate.append_audit(event)

    def query_audit(
        self,
        user: str | None = None,
        since: float | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[AuditEvent]:
        return self._delegate.query_audit(user, since, limit, before_id)

    # ------------------------------------------------------------ export, import
    def export_records(self) -> Records:
        """The SQL store's records completed from ONE search: the directory's tokens and
        each directory user's lock state, PIN and backup-code hashes (the directory
        keeps no creation time for a set of codes: 0). A user known only by a token
        or state value gets a record of its own."""
        base = self._delegate_sql().export_records()
        by_name = {r.user.name: r for r in base.users}

        def record(name: str) -> UserRecord:
            found = by_name.get(name)
            if found is None:
                found = by_name[name] = UserRecord(User(name, source=self._backend.name))
                base.users.append(found)
            return found

        in_directory: list[Token] = []
        for entry in self._entries(f"({self._attr}=*)"):
            in_directory += [t for _, t in self._decode_all(entry)]
            for value in self._values(entry):
                if not value.startswith(STATE_PREFIX) or value == STATE_EMPTY:
                    continue
                state = decode_state(value, self._cipher)  # unreadable: fail, never drop
                r = record(state.user)
                r.user = replace(
                    r.user,
                    failures=state.failures,
                    locked_until=state.locked_until,
                    pin_hash=state.pin_hash,
                )
                r.backup = tuple(BackupCode(h, 0.0) for h in state.backup)
        for t in in_directory:
            if t.user is not None:
                record(t.user)
        seen = {t.serial for t in in_directory}
        base.users.sort(key=lambda r: r.user.name)
        return Records(base.users, in_directory + [t for t in base.tokens if t.serial not in seen])

    def import_records(self, decide: Callable[[Records], ImportPlan]) -> ImportPlan:
        """The plan is made and checked whole before any write (a refused import writes
        nothing). Directory and SQL store share no transaction: SQL rows are written in
        one, then each directory change is one atomic modify, so a failure part-way
        leaves every record whole and importing again completes the rest."""
        plan = decide(self.export_records())
        dns: dict[str, str | None] = {}

        def dn_of(name: str | None) -> str | None:
            if name is None:
                return None
            if name not in dns:
                dns[name] = self._directory_dn(name)
            return dns[name]

        sql_deletes: list[str] = []
        moves: list[tuple[Token, str]] = []
        sql_tokens: list[Token] = []
        for serial in plan.delete_serials:
            found = self._locate(serial)
            if found is None:
                sql_deletes.append(serial)
            else:
                self._replace_value(found[0], found[1], None)
        for t in plan.tokens:
            dn = dn_of(t.user)
            if dn is None:
                found = self._locate(t.serial)
                if found is not None:  # leaves the directory for the SQL store
                    self._replace_value(found[0], found[1], None)
                sql_tokens.append(t)
            else:
                moves.append((t, dn))
                sql_deletes.append(t.serial)  # if the SQL store held it, it moves out
        merged = {r.user.name: r.user for r in plan.users}
        sql_backup = {n: c for n, c in plan.backup.items() if dn_of(n) is None}
        self._delegate_sql().import_records(
            lambda _: ImportPlan(plan.users, sql_backup, sql_tokens, sql_deletes)
        )
        for t, dn in moves:
            found = self._locate(t.serial)
            value = encode_record(t, self._cipher)
            if found is None:
                self._replace_value(dn, None, value)
            elif found[0].lower() == dn.lower():
                self._replace_value(dn, found[1], value)
            else:  # add first, then delete: a crash in between duplicates, never loses
                self._replace_value(dn, None, value)
                self._replace_value(found[0], found[1], None)
        for name in sorted(set(merged) | set(plan.backup)):
            dn = dn_of(name)
            if dn is None:
                continue
            user, codes = merged.get(name), plan.backup.get(name)

            def change(st: UserState, user: User | None = user, codes: Any = codes) -> UserState:
                if user is not None:
                    st = replace(st, failures=user.failures, locked_until=user.locked_until,
                                 pin_hash=user.pin_hash)  # fmt: skip
                if codes is not None:
                    st = replace(st, backup=tuple(c.hash for c in codes))
                return st

            self._update_state(dn, name, change)
        return plan

    def export_audit(
        self, where: AuditFilter, after_id: int = 0, limit: int = 1000
    ) -> list[AuditEvent]:
        return self._delegate.export_audit(where, after_id, limit)

    def prune_audit(self, before: float, batch: int) -> int:
        return self._delegate.prune_audit(before, batch)

    # ------------------------------------------------------------ keys, health
    def rotate_key(self) -> int:
        """New data key (the SQL store rotates the key file), then every directory
        value is re-encrypted under it by compare-and-set. Returns records rewritten."""
        count = self._delegate.rotate_key()
        for entry in self._entries(f"({self._attr}=*)"):
            for value, token in self._decode_all(entry):
                if self._replace_value(entry.dn, value, encode_record(token, self._cipher)):
                    count += 1
            for value in self._values(entry):
                if value.startswith(STATE_PREFIX) and not _is_marker(value):
                    state = decode_state(value, self._cipher)
                    if self._replace_value(entry.dn, value, encode_state(state, self._cipher)):
                        count += 1
        return count

    def ping(self) -> None:
        self._delegate.ping()
        with self._reachable():
            self._directory.ping()

    def close(self) -> None:
        self._delegate.close()
