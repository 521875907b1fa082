"""How an incoming bundle meets a store that may already hold some of it.

Pure: what to write is decided from the records alone, so the same rules serve every
store. Importing the same bundle twice changes nothing; state that only moves forward
keeps its furthest value on either side (RFC 6238 §5.2 / RFC 4226 §7.2: a used TOTP
step or HOTP counter must stay used, so the replay state never goes back; a lock or
failure count is never lowered by an import; a revoked token stays revoked).
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass, field, replace

from authd.core.model import LastSeen, Token, TokenStatus, User
from authd.portability.records import BackupCode, Records, UserRecord


class OnConflict(enum.StrEnum):
    REFUSE = "refuse"  # the default: report every conflict, import nothing
    SKIP = "skip"  # leave conflicting users and tokens as they are here
    REPLACE = "replace"  # the bundle's version wins


@dataclass
class ImportPlan:
    """What to write; `conflicts` lists what differs (refused, skipped or replaced)."""

    users: list[UserRecord] = field(default_factory=list)  # to write (merged)
    backup: dict[str, tuple[BackupCode, ...]] = field(default_factory=dict)  # to replace
    tokens: list[Token] = field(default_factory=list)  # to write (merged)
    delete_serials: list[str] = field(default_factory=list)  # replaced tokens here
    conflicts: list[str] = field(default_factory=list)
    unchanged: int = 0  # records already as the bundle has them

    @property
    def writes(self) -> int:
        return len(self.users) + len(self.backup) + len(self.tokens) + len(self.delete_serials)


def _later(a: LastSeen | None, b: LastSeen | None) -> LastSeen | None:
    if a is None or (b is not None and b.at > a.at):
        return b
    return a


def _max_deadline(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def merge_user(here: User, incoming: User) -> User:
    """The bundle's profile, password and PIN; the furthest lock and last-seen state."""
    return replace(
        incoming,
        failures=max(here.failures, incoming.failures),
        locked_until=_max_deadline(here.locked_until, incoming.locked_until),
        last_attempt=_later(here.last_attempt, incoming.last_attempt),
        last_success=_later(here.last_success, incoming.last_success),
        created_at=min(here.created_at, incoming.created_at),
    )


def merge_backup(
    here: tuple[BackupCode, ...], incoming: tuple[BackupCode, ...]
) -> tuple[BackupCode, ...]:
    """Two sets that share a code are one set (codes are random): a code used on either
    side stays used. Disjoint sets are two generations: the newer wins."""
    if not here:
        return incoming
    if not incoming:
        return here
    left = {c.hash for c in here}
    if any(c.hash in left for c in incoming):
        return tuple(c for c in incoming if c.hash in left)
    newer = max(c.created_at for c in here) >= max(c.created_at for c in incoming)
    return here if newer else incoming


def _hashes(codes: tuple[BackupCode, ...]) -> set[str]:
    return {c.hash for c in codes}


def same_token(a: Token, b: Token) -> bool:
    """The same physical token: same seed (compared in constant time) and parameters."""
    return (a.type, a.algorithm, a.digits, a.period) == (
        b.type,
        b.algorithm,
        b.digits,
        b.period,
    ) and hmac.compare_digest(a.seed, b.seed)


def merge_token(here: Token, incoming: Token) -> Token:
    revoked = TokenStatus.REVOKED in (here.status, incoming.status)
    forward = incoming.last_step > here.last_step
    return replace(
        incoming,
        counter=max(here.counter, incoming.counter),
        last_step=max(here.last_step, incoming.last_step),
        drift=incoming.drift if forward else here.drift,
        status=TokenStatus.REVOKED if revoked else incoming.status,
        created_at=min(here.created_at, incoming.created_at),
    )


def _differs(a: Token, b: Token) -> bool:
    return (a.user, a.counter, a.last_step, a.drift, a.status, a.description, a.created_at) != (
        b.user,
        b.counter,
        b.last_step,
        b.drift,
        b.status,
        b.description,
        b.created_at,
    )


def plan_import(incoming: Records, here: Records, on_conflict: OnConflict) -> ImportPlan:
    """Compare the bundle with what the store holds of the same users and serials."""
    plan = ImportPlan()
    users_here = {r.user.name: r for r in here.users}
    tokens_here = {t.serial: t for t in here.tokens}
    owned_here: dict[str, set[str]] = {}
    for t in here.tokens:
        if t.user is not None:
            owned_here.setdefault(t.user, set()).add(t.serial)
    by_user: dict[str | None, list[Token]] = {}
    for t in incoming.tokens:
        by_user.setdefault(t.user, []).append(t)

    def token_conflicts(owner: str | None, toks: list[Token]) -> dict[str, str]:
        """Serial -> what disagrees, for the bundle's tokens of `owner`."""
        found = {}
        for t in toks:
            h = tokens_here.get(t.serial)
            if h is None:
                continue
            if h.user != owner:
                found[t.serial] = f"token {t.serial}: belongs here to {h.user or 'nobody'}"
            elif not same_token(h, t):
                found[t.serial] = f"token {t.serial}: another seed or parameters here"
        return found

    def write_tokens(toks: list[Token], replacing: bool) -> None:
        for t in toks:
            h = tokens_here.get(t.serial)
            if h is None or replacing and not same_token(h, t):
                plan.tokens.append(t)
                continue
            merged = merge_token(h, t) if h.user == t.user else t
            if _differs(merged, h):
                plan.tokens.append(merged)
            else:
                plan.unchanged += 1

    for record in incoming.users:
        name = record.user.name
        toks = by_user.pop(name, [])
        found = list(token_conflicts(name, toks).values())
        existing = users_here.get(name)
        mine = {t.serial for t in toks}
        theirs_set = owned_here.get(name, set())
        # "Other tokens": both sides hold some, and not the same. A user with none on
        # one side simply gets (or keeps) the other side's.
        if existing is not None and theirs_set and mine and theirs_set != mine:
            theirs = ", ".join(sorted(theirs_set))
            found.insert(0, f"user {name}: tokens here ({theirs}) differ from the bundle's "
                            f"({', '.join(sorted(mine))})")  # fmt: skip
        if found:
            plan.conflicts += found
            if on_conflict is not OnConflict.REPLACE:
                continue
            plan.delete_serials += sorted(
                (owned_here.get(name, set()) - mine)
                | {t.serial for t in toks if t.serial in tokens_here}
            )
            plan.users.append(record)
            plan.backup[name] = record.backup
            for t in toks:
                plan.tokens.append(t)
            continue
        if existing is None:
            plan.users.append(record)
            if record.backup:  # a new user has none here to replace
                plan.backup[name] = record.backup
        else:
            same = record.user == existing.user
            merged = existing.user if same else merge_user(existing.user, record.user)
            if merged != existing.user:
                plan.users.append(UserRecord(merged))
            else:
                plan.unchanged += 1
            codes = merge_backup(existing.backup, record.backup)
            if _hashes(codes) != _hashes(existing.backup):
                plan.backup[name] = codes
        write_tokens(toks, replacing=False)

    for owner, toks in by_user.items():
        if owner is not None:
            plan.conflicts += [
                f"token {t.serial}: its user {owner} is not in the bundle" for t in toks
            ]
            continue
        unowned = token_conflicts(None, toks)
        if unowned:
            plan.conflicts += unowned.values()
            if on_conflict is not OnConflict.REPLACE:
                write_tokens([t for t in toks if t.serial not in unowned], replacing=False)
                continue
            plan.delete_serials += [t.serial for t in toks if t.serial in tokens_here
                                    and not same_token(tokens_here[t.serial], t)]  # fmt: skip
            write_tokens(toks, replacing=True)
            continue
        write_tokens(toks, replacing=False)
    return plan
