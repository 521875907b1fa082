"""The audited operator actions of data portability: export, import, token import.

Shared by authctl and the admin API. Each writes one audit row (`ok`, or `error` with
the error class only: nothing typed or read from a file reaches the trail).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from authd.admin import AuditNote, audited
from authd.config.model import Config
from authd.core.errors import InvalidInput
from authd.core.model import AuditEvent, Token
from authd.portability.bundle import BundleError, Protector, Sealer, open_bundle
from authd.portability.merge import ImportPlan, OnConflict, plan_import
from authd.portability.records import (
    Records,
    token_from_json,
    token_to_json,
    user_from_json,
    user_to_json,
)
from authd.portability.user_file import as_records, parse_users
from authd.token_import.csv_rows import parse_csv
from authd.token_import.load import load_tokens
from authd.token_import.pskc import Protection, parse_pskc
from authd.token_import.register import Registration

PAYLOAD_VERSION = 1


class ImportConflict(InvalidInput):
    """The bundle disagrees with the store; `conflicts` lists each disagreement."""

    def __init__(self, conflicts: list[str]) -> None:
        self.conflicts = conflicts
        shown = conflicts[:50]
        more = (
            f"\n... and {len(conflicts) - len(shown)} more" if len(conflicts) > len(shown) else ""
        )
        super().__init__(
            "import refused, nothing written; resolve with --on-conflict skip|replace:\n"
            + "\n".join(shown)
            + more
        )


class PortableStore(Protocol):
    """What these actions need of a store (`SqlStore`, `LdapTokenStore`)."""

    def export_records(self) -> Records: ...

    def import_records(self, decide: Callable[[Records], ImportPlan]) -> ImportPlan: ...

    def add_tokens(self, new: Sequence[Token]) -> None: ...

    def claim_token(
        self, serial: str, user: str, *, step: int | None, drift: int, counter: int | None
    ) -> bool: ...

    def get_token(self, serial: str) -> Token | None: ...

    def append_audit(self, event: AuditEvent) -> None: ...


class HashKeyring(Protocol):
    @property
    def hash_key(self) -> bytes: ...

    def adopt_hash_key(self, hash_key: bytes) -> None: ...


@dataclass(frozen=True)
class Exported:
    data: bytes
    users: int
    tokens: int

    def to_json(self) -> dict[str, Any]:
        return {"action": "export", "users": self.users, "tokens": self.tokens}


@dataclass(frozen=True)
class Imported:
    users: int
    tokens: int
    written: int
    unchanged: int
    conflicts: tuple[str, ...]
    on_conflict: str
    adopted_hash_key: bool
    action: str = "import"  # or "user.import"

    @classmethod
    def of(
        cls,
        incoming: Records,
        plan: ImportPlan,
        on_conflict: OnConflict,
        adopted: bool,
        action: str = "import",
    ) -> Imported:
        return cls(
            len(incoming.users),
            len(incoming.tokens),
            plan.writes,
            plan.unchanged,
            tuple(plan.conflicts),
            on_conflict.value,
            adopted,
            action,
        )

    @property
    def detail(self) -> str:
        """The audit row's detail: counts only, nothing from the file."""
        return (
            f"{self.users} users, {self.tokens} tokens, {self.written} written, "
            f"{len(self.conflicts)} conflicts ({self.on_conflict})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "users": self.users,
            "tokens": self.tokens,
            "written": self.written,
            "unchanged": self.unchanged,
            "conflicts": list(self.conflicts),
            "on_conflict": self.on_conflict,
            "adopted_hash_key": self.adopted_hash_key,
        }


@dataclass(frozen=True)
class TokensImported:
    count: int
    format: str

    def to_json(self) -> dict[str, Any]:
        return {"action": "token.import", "imported": self.count, "format": self.format}


def _peppered(records: Records) -> bool:
    return any(r.user.pin_hash or r.backup for r in records.users)


class PortabilityOps:
    """Export, import and token import on one store, audited as `actor`."""

    def __init__(
        self,
        config: Config,
        store: PortableStore,
        keyring: HashKeyring,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._store = store
        self._keyring = keyring
        self._clock = clock
        self.registration = Registration(store, config.otp)

    def _audited(
        self, actor: str, action: str, detail: str = ""
    ) -> AbstractContextManager[AuditNote]:
        return audited(self._store, self._clock, actor, action, detail=detail)

    # ------------------------------------------------------------ export / import
    def export_bundle(self, actor: str, protector: Protector) -> Exported:
        """Every user and token with their state, sealed for `protector`."""
        with self._audited(actor, "export") as note:
            records = self._store.export_records()
            sealer = Sealer.new(protector)
            payload = {
                "version": PAYLOAD_VERSION,
                "created_at": self._clock(),
                # The pepper of the PIN and backup-code hashes: the other site needs it
                # to verify them (it travels only inside the encrypted payload).
                "hash_key": base64.b64encode(self._keyring.hash_key).decode("ascii"),
                "users": [user_to_json(r) for r in records.users],
                "tokens": [token_to_json(t, sealer.seeds.wrap) for t in records.tokens],
            }
            data = sealer.seal(payload)
            note.detail = f"{len(records.users)} users, {len(records.tokens)} tokens"
        return Exported(data, len(records.users), len(records.tokens))

    def import_bundle(
        self,
        actor: str,
        data: bytes,
        protector: Protector,
        on_conflict: OnConflict = OnConflict.REFUSE,
        *,
        adopt_hash_key: bool = False,
    ) -> Imported:
        """Verify the whole bundle, then write it in one transaction (SQL store), or
        nothing: a conflict refuses unless `on_conflict` says skip or replace."""
        with self._audited(actor, "import", f"on-conflict {on_conflict.value}") as note:
            payload, seeds = open_bundle(data, protector)
            try:
                if payload.get("version") != PAYLOAD_VERSION:
                    raise BundleError("bundle payload version is not supported")
                incoming = Records(
                    [user_from_json(u) for u in payload["users"]],
                    [token_from_json(t, seeds.unwrap) for t in payload["tokens"]],
                )
                hash_key = base64.b64decode(payload["hash_key"], validate=True)
            except (KeyError, TypeError, ValueError, AttributeError, binascii.Error):
                raise BundleError("bundle payload is malformed") from None
            adopted = False

            def decide(here: Records) -> ImportPlan:
                nonlocal adopted
                plan = _plan(incoming, here, on_conflict)
                if _peppered(incoming) and not hmac.compare_digest(
                    hash_key, self._keyring.hash_key
                ):
                    if not adopt_hash_key:
                        raise InvalidInput(
                            "the bundle's PIN and backup-code hashes use another site's hash "
                            "key; import with --adopt-hash-key (on a site with no PINs or "
                            "backup codes yet, daemons stopped) or share keys.json's hash_key"
                        )
                    if _peppered(here):
                        raise InvalidInput(
                            "cannot adopt the bundle's hash key: this site already has PIN "
                            "or backup-code hashes under its own"
                        )
                    self._keyring.adopt_hash_key(hash_key)
                    adopted = True
                return plan

            plan = self._store.import_records(decide)
            done = Imported.of(incoming, plan, on_conflict, adopted)
            note.detail = done.detail
        return done

    def import_users(
        self, actor: str, data: bytes, on_conflict: OnConflict = OnConflict.REFUSE
    ) -> Imported:
        """A users file (authd/portability/user_file.py) merged like a bundle, in one
        transaction: bad lines or (by default) a conflict refuse the whole file."""
        with self._audited(actor, "user.import", f"on-conflict {on_conflict.value}") as note:
            now = self._clock()
            rows = parse_users(data, now)
            incoming = Records()

            def decide(here: Records) -> ImportPlan:
                nonlocal incoming
                incoming = as_records(rows, here, now)
                return _plan(incoming, here, on_conflict)

            plan = self._store.import_records(decide)
            done = Imported.of(incoming, plan, on_conflict, False, "user.import")
            note.detail = done.detail
        return done

    # ------------------------------------------------------------ token import
    def import_tokens(
        self, actor: str, data: bytes, fmt: str, protection: Protection | None = None
    ) -> TokensImported:
        """A PSKC or CSV file's tokens, unassigned, all or none."""
        with self._audited(actor, "token.import", fmt) as note:
            now = self._clock()
            if fmt == "csv":
                try:
                    text = data.decode("utf-8-sig")
                except UnicodeDecodeError:
                    raise InvalidInput("the CSV file is not UTF-8") from None
                tokens = parse_csv(text, now)
            elif fmt == "pskc":
                tokens = parse_pskc(data, protection or Protection(), now)
            else:
                raise InvalidInput("format must be pskc or csv")
            count = load_tokens(self._store, tokens)
            note.detail = f"{count} tokens from {fmt}"
        return TokensImported(count, fmt)


def _plan(incoming: Records, here: Records, on_conflict: OnConflict) -> ImportPlan:
    """What to write; ImportConflict when there are conflicts and the rule is refuse."""
    plan = plan_import(incoming, here, on_conflict)
    if plan.conflicts and on_conflict is OnConflict.REFUSE:
        raise ImportConflict(plan.conflicts)
    return plan


def portability_ops(
    config: Config, store: object, keyring: HashKeyring, clock: Callable[[], float]
) -> PortabilityOps:
    """PortabilityOps on the store `build_core` opened (SQL, or tokens in LDAP)."""
    from authd.storage.ldap_attrs import LdapTokenStore  # the store modules import ours
    from authd.storage.sql import SqlStore

    if not isinstance(store, SqlStore | LdapTokenStore):
        raise InvalidInput("this store cannot export or import")
    return PortabilityOps(config, store, keyring, clock)
