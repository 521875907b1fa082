"""Admin API for data portability (scope `admin`): export, import, token import.

The HTTP twins of `authctl export`, `import` and `token import`: binary files travel
base64-encoded in the JSON body (the export answers the bundle itself, as
application/octet-stream), bounded by `http.max_body`: a bundle or token file larger
than that is for authctl. Passphrases and PSKC passwords come only in the body of an
authenticated request, never in the URL.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from authd.portability.bundle import Protector
from authd.portability.merge import OnConflict
from authd.portability.ops import PortabilityOps
from authd.rest.errors import ApiError, bad_request
from authd.rest.routes import Call, Reply, Route
from authd.rest.validation import BodySchema, Field
from authd.token_import.pskc import Protection

RunBlocking = Callable[..., "Deferred[Any]"]
_B64 = r"^[A-Za-z0-9+/=\s]+$"
_MAX_B64 = 64 * 1024 * 1024  # further bounded by http.max_body

EXPORT_BODY = BodySchema(
    (
        Field(
            "passphrase",
            required=True,
            min_length=12,
            max_length=1024,
            description="seals the bundle (scrypt, AES-256-GCM)",
        ),
    )
)
IMPORT_BODY = BodySchema(
    (
        Field(
            "bundle",
            required=True,
            min_length=1,
            max_length=_MAX_B64,
            pattern=_B64,
            description="the bundle file, base64",
        ),
        Field("passphrase", required=True, min_length=12, max_length=1024),
        Field(
            "on_conflict",
            choices=tuple(c.value for c in OnConflict),
            description="default refuse: a conflict imports nothing",
        ),
        Field(
            "adopt_hash_key",
            kind="boolean",
            description="take the bundle's PIN/backup-code hash key (site without any)",
        ),
    )
)
TOKEN_IMPORT_BODY = BodySchema(
    (
        Field("format", required=True, choices=("pskc", "csv")),
        Field(
            "data",
            required=True,
            min_length=1,
            max_length=_MAX_B64,
            pattern=_B64,
            description="the PSKC or CSV file, base64",
        ),
        Field(
            "key",
            min_length=32,
            max_length=64,
            pattern=r"^[0-9A-Fa-f]+$",
            description="PSKC pre-shared AES key, hex",
        ),
        Field("password", min_length=1, max_length=1024, description="PSKC PBKDF2 password"),
    )
)
IMPORTED = {
    "type": "object",
    "required": ["action", "users", "tokens", "written", "unchanged", "conflicts"],
    "properties": {
        "action": {"type": "string"},
        "users": {"type": "integer"},
        "tokens": {"type": "integer"},
        "written": {"type": "integer"},
        "unchanged": {"type": "integer"},
        "conflicts": {"type": "array", "items": {"type": "string"}},
        "on_conflict": {"type": "string"},
        "adopted_hash_key": {"type": "boolean"},
    },
}
TOKENS_IMPORTED = {
    "type": "object",
    "required": ["action", "imported", "format"],
    "properties": {
        "action": {"type": "string"},
        "imported": {"type": "integer"},
        "format": {"type": "string"},
    },
}
_ERRORS = (400, 401, 403, 409, 413, 415, 429, 503)
_FILE = (("Content-Disposition", 'attachment; filename="authd.bundle"'),)


def _decode(text: str, name: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except binascii.Error:
        raise bad_request(f"{name}: not base64") from None


class PortabilityEndpoints:
    """Export/import handlers over one PortabilityOps (None: the API answers 503)."""

    def __init__(self, ops: PortabilityOps | None, run_blocking: RunBlocking) -> None:
        self._ops_or_none = ops
        self._run_blocking = run_blocking

    def _ops(self) -> PortabilityOps:
        if self._ops_or_none is None:
            raise ApiError(503, "unavailable", "the admin API is not enabled")
        return self._ops_or_none

    def routes(self) -> list[Route]:
        a = "/api/v1/admin"
        return [
            Route(
                "POST",
                f"{a}/export",
                self.export,
                "exportBundle",
                "`authctl export`: every user and token, sealed under the passphrase",
                "admin",
                scope="admin",
                body=EXPORT_BODY,
                response={"type": "string", "format": "binary"},
                response_type="application/octet-stream",
                statuses=_ERRORS,
            ),
            Route(
                "POST",
                f"{a}/import",
                self.import_bundle,
                "importBundle",
                "`authctl import`: all or nothing; a conflict refuses unless on_conflict",
                "admin",
                scope="admin",
                body=IMPORT_BODY,
                response=IMPORTED,
                statuses=_ERRORS,
            ),
            Route(
                "POST",
                f"{a}/tokens/import",
                self.import_tokens,
                "importTokens",
                "`authctl token import`: PSKC (RFC 6030) or CSV, unassigned, all or none",
                "admin",
                scope="admin",
                body=TOKEN_IMPORT_BODY,
                response=TOKENS_IMPORTED,
                statuses=_ERRORS,
            ),
        ]

    def _run(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        return self._run_blocking(functools.partial(method, *args, **kwargs))

    def export(self, call: Call) -> Deferred[Reply]:
        protector = Protector.from_passphrase(call.body["passphrase"])
        d = self._run(self._ops().export_bundle, call.actor, protector)
        return d.addCallback(
            lambda e: Reply(raw=e.data, content_type="application/octet-stream", headers=_FILE)
        )

    def import_bundle(self, call: Call) -> Deferred[Reply]:
        b = call.body
        d = self._run(
            self._ops().import_bundle,
            call.actor,
            _decode(b["bundle"], "bundle"),
            Protector.from_passphrase(b["passphrase"]),
            OnConflict(b.get("on_conflict", OnConflict.REFUSE.value)),
            adopt_hash_key=b.get("adopt_hash_key", False),
        )
        return d.addCallback(lambda r: Reply(body=r.to_json()))

    def import_tokens(self, call: Call) -> Deferred[Reply]:
        b = call.body
        key = bytes.fromhex(b["key"]) if "key" in b else None
        if key is not None and len(key) not in (16, 24, 32):
            raise bad_request("key: an AES key is 16, 24 or 32 bytes")
        protection = Protection(key=key, password=b.get("password"))
        d = self._run(
            self._ops().import_tokens,
            call.actor,
            _decode(b["data"], "data"),
            b["format"],
            protection,
        )
        return d.addCallback(lambda r: Reply(body=r.to_json()))
