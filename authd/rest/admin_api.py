"""The admin API under `/api/v1/admin/` (scope `admin`), mirroring `authctl`.

Each handler validates its input, then runs one `AdminOps` method in the auth thread
pool (`run_blocking`); AdminOps audits every change with actor `http:<key name>` and
raises NotFound / AlreadyExists or Conflict / InvalidInput, which `errors.py` maps to 404/409/400.
The front-end's own throttle (escalating failure delay) is shown with the user and
lifted by `unlock`, so an operator sees and clears every kind of lock in one place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from authd.admin import EXPORT_PAGE, AdminOps
from authd.auth.interfaces import AuditFilter
from authd.rest.errors import ApiError
from authd.rest.ratelimit import Limits
from authd.rest.routes import Call, Clock, Reply, Route
from authd.rest.validate import throttle_key
from authd.rest.validation import BodySchema, Field, QuerySchema

RunBlocking = Callable[..., "Deferred[Any]"]

_SEEN = {
    "type": ["object", "null"],
    "properties": {
        "at": {"type": "number"},
        "source": {"type": "string"},
        "client": {"type": "string"},
    },
}
TOKEN = {
    "type": "object",
    "required": ["serial", "type", "status"],
    "properties": {
        "serial": {"type": "string"},
        "type": {"type": "string", "enum": ["totp", "hotp"]},
        "user": {"type": ["string", "null"]},
        "status": {"type": "string"},
        "algorithm": {"type": "string"},
        "digits": {"type": "integer"},
        "period": {"type": ["integer", "null"]},
        "counter": {"type": ["integer", "null"]},
        "drift": {"type": ["integer", "null"]},
        "description": {"type": "string"},
        "created_at": {"type": "number"},
    },
}
USER_DETAIL = {
    "type": "object",
    "required": ["user", "status", "locked"],
    "properties": {
        "user": {"type": "string"},
        "source": {"type": "string"},
        "status": {"type": "string"},
        "disabled": {"type": "boolean"},
        "locked": {"type": "boolean"},
        "locked_until": {"type": ["number", "string", "null"]},
        "failures": {"type": "integer"},
        "has_password": {"type": "boolean"},
        "has_pin": {"type": "boolean"},
        "backup_codes_left": {"type": "integer"},
        "groups": {"type": "array"},
        "tokens": {"type": "array", "items": TOKEN},
        "last_attempt": _SEEN,
        "last_success": _SEEN,
        "http_throttle": {
            "type": ["object", "null"],
            "description": "the HTTP front-end's escalating delay for this user, if any",
            "properties": {"failures": {"type": "integer"}, "retry_after": {"type": "number"}},
        },
    },
}
USER_LIST = {
    "type": "object",
    "required": ["users"],
    "properties": {
        "users": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "user": {"type": "string"},
                    "status": {"type": "string"},
                    "source": {"type": "string"},
                    "tokens": {"type": "integer"},
                    "last_attempt": _SEEN,
                    "last_success": _SEEN,
                },
            },
        }
    },
}
DONE = {
    "type": "object",
    "required": ["action", "subject", "result"],
    "properties": {
        "action": {"type": "string"},
        "subject": {"type": "string"},
        "result": {"type": "string"},
    },
}
TOKEN_ADDED = {
    "type": "object",
    "required": ["token", "otpauth_uri"],
    "properties": {"token": TOKEN, "otpauth_uri": {"type": "string", "description": "shown once"}},
}
CODES = {
    "type": "object",
    "required": ["user", "codes"],
    "properties": {
        "user": {"type": "string"},
        "codes": {"type": "array", "items": {"type": "string"}},
    },
}
AUDIT_EXPORT = {
    "type": "object",
    "required": ["events"],
    "properties": {
        "events": {"type": "array", "items": {"type": "object"}},
        "next_after_id": {"type": ["integer", "null"]},
    },
}
AUDIT = {
    "type": "object",
    "required": ["events"],
    "properties": {
        "events": {"type": "array", "items": {"type": "object"}},
        "next_before_id": {"type": ["integer", "null"]},
    },
}


# The forms AdminOps accepts (authd/admin.py), published so that clients and fuzzers
# know them; AdminOps stays the judge.
USER_PATTERN = r"^[^\s\x00-\x1f\x7f*]+$"
SERIAL_PATTERN = r"^[A-Za-z0-9._:-]+$"


def _name(name: str, required: bool = False) -> Field:
    return Field(name, required=required, min_length=1, max_length=255, pattern=USER_PATTERN)


def _code(name: str) -> Field:
    return Field(name, required=True, min_length=6, max_length=8, pattern=r"^[0-9]+$")


def _profile_fields(groups_help: str) -> tuple[Field, ...]:
    return (
        Field("email", max_length=255),
        Field("phone", max_length=64),
        Field("first_name", max_length=255),
        Field("last_name", max_length=255),
        Field(
            "groups",
            kind="string-list",
            min_length=1,
            max_length=255,
            pattern=r"^[^\s\x00-\x1f\x7f]+$",
            description=groups_help,
        ),
    )


ADD_USER = BodySchema(
    (
        _name("user", required=True),
        Field(
            "password",
            min_length=1,
            max_length=1024,
            description="local password; omit for a directory-only user",
        ),
        *_profile_fields(""),
    )
)
SET_USER = BodySchema(_profile_fields("replaces the user's groups; [] removes them all"))
PASSWORD = BodySchema((Field("password", required=True, min_length=1, max_length=1024),))
NEW_API_KEY = BodySchema(
    (
        Field("name", required=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$"),
        Field(
            "scopes",
            kind="string-list",
            required=True,
            min_length=1,
            max_length=32,
            pattern=r"^(validate|admin|selfservice-admin)$",
        ),
    )
)
ADD_TOKEN = BodySchema(
    (
        _name("user", required=True),
        Field("type", choices=("totp", "hotp"), description="default totp"),
        Field(
            "secret",
            min_length=1,
            max_length=256,
            description="base32 seed; generated when omitted",
        ),
        Field("digits", kind="integer", minimum=6, maximum=8),
        Field("period", kind="integer", minimum=10, maximum=300),
        Field("algorithm", choices=("SHA1", "SHA256", "SHA512")),
        Field("serial", min_length=1, max_length=64, pattern=SERIAL_PATTERN),
    )
)
RESYNC = BodySchema((_code("otp1"), _code("otp2")))
ASSIGN = BodySchema((_name("user", required=True),))
PIN = BodySchema(
    (
        Field(
            "pin",
            required=True,
            min_length=1,
            max_length=64,
            description="must satisfy otp.pin (length, not trivial)",
        ),
    )
)
USERS_QUERY = QuerySchema(
    (
        Field("pattern", min_length=1, max_length=255, description="`*` wildcard"),
        Field("limit", kind="integer", minimum=1, maximum=100000),
    )
)
TOKENS_QUERY = QuerySchema((_name("user"),))
AUDIT_QUERY = QuerySchema(
    (
        _name("user"),
        Field("since", kind="number", minimum=0, maximum=1e11, description="POSIX seconds"),
        Field("limit", kind="integer", minimum=1, maximum=1000),
        Field(
            "before_id",
            kind="integer",
            minimum=1,
            maximum=2**62,
            description="`next_before_id` of the previous page",
        ),
    )
)
AUDIT_EXPORT_QUERY = QuerySchema(
    (
        _name("user"),
        Field("action", min_length=1, max_length=64),
        Field("result", min_length=1, max_length=32),
        Field("client", min_length=1, max_length=255),
        Field("since", kind="number", minimum=0, maximum=1e11, description="POSIX s, inclusive"),
        Field("until", kind="number", minimum=0, maximum=1e11, description="POSIX s, exclusive"),
        Field("after_id", kind="integer", minimum=0, maximum=2**62,
              description="`next_after_id` of the previous page"),
        Field("limit", kind="integer", minimum=1, maximum=1000),
    )
)  # fmt: skip
TEST_BODY = BodySchema(
    (
        _name("user", required=True),
        Field("password", required=True, min_length=1, max_length=1024),
        Field("otp", min_length=1, max_length=64),
    )
)
ROTATION = {
    "type": "object",
    "required": ["action", "key_id", "reencrypted"],
    "properties": {
        "action": {"type": "string"},
        "key_id": {"type": "string"},
        "reencrypted": {"type": "integer"},
    },
}
TEST_RESULT = {
    "type": "object",
    "required": ["user", "result", "reason"],
    "properties": {
        "user": {"type": "string"},
        "result": {"type": "string", "enum": ["accept", "reject", "challenge"]},
        "reason": {"type": "string", "description": "internal reason: operators only"},
        "message": {"type": "string"},
        "groups": {"type": "array", "items": {"type": "string"}},
    },
}
STATUS_REPORT = {
    "type": "object",
    "required": ["ok", "components"],
    "description": "a report, not a health check: 200 even when `ok` is false (see /readyz)",
    "properties": {
        "ok": {"type": "boolean", "description": "every component reachable"},
        "components": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["component", "kind", "state", "detail", "ok"],
                "properties": {
                    "component": {"type": "string"},
                    "kind": {"type": "string", "enum": ["store", "backend", "server"]},
                    "state": {"type": "string", "description": '"ok" or "error: <what>"'},
                    "detail": {"type": "string"},
                    "ok": {"type": "boolean"},
                },
            },
        },
    },
}
CHAIN_VERDICT = {
    "type": "object",
    "required": ["ok", "checked", "head", "bad_id", "problem"],
    "properties": {
        "ok": {"type": "boolean"},
        "checked": {"type": "integer"},
        "head": {"type": "object", "description": "position and hash: keep a copy elsewhere"},
        "bad_id": {"type": ["integer", "null"], "description": "the first bad row"},
        "problem": {"type": "string"},
    },
}
API_KEY = {
    "type": "object",
    "required": ["name", "scopes", "key", "key_sha256", "config"],
    "properties": {
        "name": {"type": "string"},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "key": {"type": "string", "description": "shown once; authd keeps no copy"},
        "key_sha256": {"type": "string"},
        "key_file": {"type": "null"},
        "config": {"type": "string", "description": "the http.api_keys entry to paste"},
    },
}
_ERRORS = (400, 401, 403, 404, 409, 413, 415, 429)


class AdminEndpoints:
    """Admin handlers over one AdminOps (None: the API answers 503)."""

    def __init__(
        self, admin: AdminOps | None, run_blocking: RunBlocking, limits: Limits, clock: Clock
    ) -> None:
        self._admin = admin
        self._run_blocking = run_blocking
        self._limits = limits
        self._clock = clock

    def _ops(self) -> AdminOps:
        if self._admin is None:
            raise ApiError(503, "unavailable", "the admin API is not enabled")
        return self._admin

    def _call(
        self, method: Callable[..., Any], *args: Any, status: int = 200, **kwargs: Any
    ) -> Deferred[Reply]:
        d = self._run_blocking(functools.partial(method, *args, **kwargs))
        return d.addCallback(lambda result: Reply(status=status, body=_json(result)))

    def routes(self) -> list[Route]:
        u, t = "/api/v1/admin/users", "/api/v1/admin/tokens"
        ops = self._ops_route

        return [
            ops("GET", u, self.list_users, "listUsers", "List users", USER_LIST, query=USERS_QUERY),
            ops(
                "POST",
                u,
                self.add_user,
                "addUser",
                "Add a local user",
                USER_DETAIL,
                body=ADD_USER,
                success=201,
            ),
            ops(
                "GET",
                u + "/{user}",
                self.show_user,
                "showUser",
                "A user's profile, tokens and lock state",
                USER_DETAIL,
            ),
            ops(
                "PATCH",
                u + "/{user}",
                self.set_user,
                "setUser",
                "Change profile fields and groups of a user (fields left out stay)",
                USER_DETAIL,
                body=SET_USER,
            ),
            ops(
                "DELETE",
                u + "/{user}",
                self.simple("delete_user"),
                "deleteUser",
                "Delete a user: tokens revoked, backup codes and PIN gone (audited)",
                DONE,
            ),
            ops(
                "PUT",
                u + "/{user}/password",
                self.set_password,
                "setPassword",
                "Set a local password",
                DONE,
                body=PASSWORD,
            ),
            ops(
                "POST",
                u + "/{user}/unlock",
                self.unlock_user,
                "unlockUser",
                "Clear failures, lock and HTTP throttle",
                DONE,
            ),
            ops(
                "POST",
                u + "/{user}/reset",
                self.simple("reset_user"),
                "resetUser",
                "Remove tokens, backup codes and PIN",
                DONE,
            ),
            ops(
                "POST",
                u + "/{user}/disable",
                self.simple("disable_user"),
                "disableUser",
                "Reject the user whatever they type",
                DONE,
            ),
            ops(
                "POST",
                u + "/{user}/enable",
                self.simple("enable_user"),
                "enableUser",
                "Undo disable",
                DONE,
            ),
            ops(
                "PUT",
                u + "/{user}/pin",
                self.set_pin,
                "setPin",
                "Set the server-side PIN",
                DONE,
                body=PIN,
            ),
            ops(
                "DELETE",
                u + "/{user}/pin",
                self.simple("remove_pin"),
                "removePin",
                "Remove the PIN",
                DONE,
            ),
            ops(
                "POST",
                u + "/{user}/backup-codes",
                self.simple("generate_backup_codes"),
                "generateBackupCodes",
                "A new set of backup codes (shown once)",
                CODES,
            ),
            ops(
                "GET",
                t,
                self.list_tokens,
                "listTokens",
                "List tokens",
                {"type": "object", "properties": {"tokens": {"type": "array", "items": TOKEN}}},
                query=TOKENS_QUERY,
            ),
            ops(
                "POST",
                t,
                self.add_token,
                "addToken",
                "Enroll a token; the otpauth URI is returned once",
                TOKEN_ADDED,
                body=ADD_TOKEN,
                success=201,
            ),
            ops(
                "GET",
                t + "/{serial}",
                self.token_simple("show_token"),
                "showToken",
                "One token (never its seed)",
                TOKEN,
            ),
            ops(
                "POST",
                t + "/{serial}/enable",
                self.token_simple("enable_token"),
                "enableToken",
                "Enable a token",
                DONE,
            ),
            ops(
                "POST",
                t + "/{serial}/disable",
                self.token_simple("disable_token"),
                "disableToken",
                "Disable a token",
                DONE,
            ),
            ops(
                "POST",
                t + "/{serial}/revoke",
                self.token_simple("revoke_token"),
                "revokeToken",
                "Revoke a token for good",
                DONE,
            ),
            ops(
                "POST",
                t + "/{serial}/resync",
                self.resync,
                "resyncToken",
                "Re-align a drifted token from two consecutive codes",
                TOKEN,
                body=RESYNC,
            ),
            ops(
                "POST",
                t + "/{serial}/assign",
                self.assign,
                "assignToken",
                "Give the token to a user",
                DONE,
                body=ASSIGN,
            ),
            ops(
                "POST",
                t + "/{serial}/unassign",
                self.token_simple("unassign_token"),
                "unassignToken",
                "Take the token from its user",
                DONE,
            ),
            ops(
                "GET",
                "/api/v1/admin/audit",
                self.audit,
                "queryAudit",
                "The audit trail, newest first, paged",
                AUDIT,
                query=AUDIT_QUERY,
            ),
            ops(
                "GET",
                "/api/v1/admin/audit/verify",
                self.verify_audit,
                "verifyAudit",
                "`authctl audit verify`: check the audit hash chain (200 with ok false if broken)",
                CHAIN_VERDICT,
            ),
            ops(
                "POST",
                "/api/v1/admin/apikeys",
                self.new_api_key,
                "newApiKey",
                "A fresh API key (shown once) and the config lines that admit it",
                API_KEY,
                body=NEW_API_KEY,
                success=201,
            ),
            ops(
                "GET",
                "/api/v1/admin/audit/export",
                self.export_audit,
                "exportAudit",
                "The audit trail oldest first, filtered by user, action, result, client, time",
                AUDIT_EXPORT,
                query=AUDIT_EXPORT_QUERY,
            ),
            ops(
                "POST",
                "/api/v1/admin/keys/rotate",
                self.rotate_key,
                "rotateKey",
                "A new data key; every stored seed is re-encrypted under it",
                ROTATION,
            ),
            ops(
                "POST",
                "/api/v1/admin/test",
                self.test_auth,
                "testAuth",
                "Run the daemon's decision and show its internal reason (a real attempt)",
                TEST_RESULT,
                body=TEST_BODY,
            ),
            ops(
                "GET",
                "/api/v1/admin/status",
                self.status,
                "showStatus",
                "`authctl status`: can this node reach its store and first-factor backends?",
                STATUS_REPORT,
            ),
        ]

    @staticmethod
    def _ops_route(
        method: str,
        path: str,
        handler: Any,
        op_id: str,
        summary: str,
        response: dict[str, Any],
        body: BodySchema | None = None,
        query: QuerySchema | None = None,
        success: int = 200,
    ) -> Route:
        return Route(
            method,
            path,
            handler,
            op_id,
            summary,
            "admin",
            scope="admin",
            body=body,
            query=query,
            response=response,
            success=success,
            statuses=_ERRORS + (503,),
        )

    # ---------------------------------------------------------------- users
    def list_users(self, call: Call) -> Deferred[Reply]:
        d = self._run_blocking(
            functools.partial(
                self._ops().list_users,
                call.actor,
                call.query.get("pattern"),
                call.query.get("limit"),
            )
        )
        return d.addCallback(lambda rows: Reply(body={"users": [r.to_json() for r in rows]}))

    def add_user(self, call: Call) -> Deferred[Reply]:
        b = call.body
        return self._call(
            self._ops().add_user,
            call.actor,
            b["user"],
            password=b.get("password"),
            email=b.get("email", ""),
            phone=b.get("phone", ""),
            first_name=b.get("first_name", ""),
            last_name=b.get("last_name", ""),
            groups=b.get("groups", []),
            status=201,
        )

    def show_user(self, call: Call) -> Deferred[Reply]:
        user = call.params["user"]
        d = self._run_blocking(functools.partial(self._ops().show_user, call.actor, user))

        def add_throttle(detail: Any) -> Reply:
            doc = detail.to_json()
            now = self._clock.seconds()
            state = self._limits.user_throttle(throttle_key(user), now)
            doc["http_throttle"] = (
                None
                if state is None
                else {"failures": state.failures, "retry_after": max(0.0, state.not_before - now)}
            )
            return Reply(body=doc)

        return d.addCallback(add_throttle)

    def unlock_user(self, call: Call) -> Deferred[Reply]:
        user = call.params["user"]
        d = self._call(self._ops().unlock_user, call.actor, user)

        def lift(reply: Reply) -> Reply:
            self._limits.clear_user(throttle_key(user))
            return reply

        return d.addCallback(lift)

    def simple(self, name: str) -> Callable[[Call], Deferred[Reply]]:
        """A handler calling AdminOps.<name>(actor, user)."""

        def handler(call: Call) -> Deferred[Reply]:
            return self._call(getattr(self._ops(), name), call.actor, call.params["user"])

        return handler

    def set_user(self, call: Call) -> Deferred[Reply]:
        b = call.body
        return self._call(
            self._ops().set_user,
            call.actor,
            call.params["user"],
            email=b.get("email"),
            phone=b.get("phone"),
            first_name=b.get("first_name"),
            last_name=b.get("last_name"),
            groups=b.get("groups"),
        )

    def set_password(self, call: Call) -> Deferred[Reply]:
        return self._call(
            self._ops().set_password, call.actor, call.params["user"], call.body["password"]
        )

    def set_pin(self, call: Call) -> Deferred[Reply]:
        return self._call(self._ops().set_pin, call.actor, call.params["user"], call.body["pin"])

    # ---------------------------------------------------------------- tokens
    def token_simple(self, name: str) -> Callable[[Call], Deferred[Reply]]:
        """A handler calling AdminOps.<name>(actor, serial)."""

        def handler(call: Call) -> Deferred[Reply]:
            return self._call(getattr(self._ops(), name), call.actor, call.params["serial"])

        return handler

    def list_tokens(self, call: Call) -> Deferred[Reply]:
        d = self._run_blocking(
            functools.partial(self._ops().list_tokens, call.actor, call.query.get("user"))
        )
        return d.addCallback(lambda rows: Reply(body={"tokens": [r.to_json() for r in rows]}))

    def add_token(self, call: Call) -> Deferred[Reply]:
        b = call.body
        return self._call(
            self._ops().add_token,
            call.actor,
            b["user"],
            b.get("type", "totp"),
            secret_b32=b.get("secret"),
            digits=b.get("digits"),
            period=b.get("period", 30),
            algorithm=b.get("algorithm", "SHA1"),
            serial=b.get("serial"),
            status=201,
        )

    def resync(self, call: Call) -> Deferred[Reply]:
        return self._call(
            self._ops().resync_token,
            call.actor,
            call.params["serial"],
            call.body["otp1"],
            call.body["otp2"],
        )

    def assign(self, call: Call) -> Deferred[Reply]:
        return self._call(
            self._ops().assign_token, call.actor, call.params["serial"], call.body["user"]
        )

    def audit(self, call: Call) -> Deferred[Reply]:
        q = call.query
        return self._call(
            self._ops().audit,
            call.actor,
            user=q.get("user"),
            since=q.get("since"),
            limit=q.get("limit", 100),
            before_id=q.get("before_id"),
        )

    def export_audit(self, call: Call) -> Deferred[Reply]:
        q = call.query
        where = AuditFilter(
            **{k: q.get(k) for k in ("user", "action", "result", "client", "since", "until")}
        )
        return self._call(
            self._ops().export_audit,
            call.actor,
            where,
            q.get("after_id", 0),
            q.get("limit", EXPORT_PAGE),
        )

    # ---------------------------------------------------------------- keys, test
    def rotate_key(self, call: Call) -> Deferred[Reply]:
        return self._call(self._ops().rotate_key, call.actor)

    def verify_audit(self, call: Call) -> Deferred[Reply]:
        """A report like /status: 200 whether or not the chain holds (see `ok`)."""
        return self._call(self._ops().verify_audit, call.actor)

    def new_api_key(self, call: Call) -> Deferred[Reply]:
        """Over HTTP only `key_sha256` lines: the daemon writes no key files for callers."""
        return self._call(
            self._ops().new_api_key, call.actor, call.body["name"], call.body["scopes"], status=201
        )

    def status(self, call: Call) -> Deferred[Reply]:
        """`authctl status` over HTTP: always 200 with the report (its `ok` says whether
        all is reachable); a failed probe is a row, not an error status. /readyz is the
        health check that answers 503."""
        return self._call(self._ops().status, call.actor)

    def test_auth(self, call: Call) -> Deferred[Reply]:
        """`authctl test` over HTTP: counts as a real attempt (lockout, audit)."""
        b = call.body
        return self._call(self._ops().test_auth, call.actor, b["user"], b["password"], b.get("otp"))


def _json(result: Any) -> Any:
    if isinstance(result, list):
        return [r.to_json() for r in result]
    return result.to_json()
