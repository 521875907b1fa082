"""`POST /api/v1/validate` and `POST /api/v1/otp/check`: HTTP bodies to `AuthRequest`s.

How a body maps onto the engine's modes (the same meanings as RADIUS):
- `/validate` with `state`: the answer to a challenge; `otp` is required and the
  password is not asked again (otp_mode `challenge`, first factor already done).
- `/validate` with `otp`: password and OTP checked in one go, the OTP given separately,
  so the engine never splits strings (otp_mode `inline`).
- `/validate` with neither: the password alone; a right one is answered `challenge`
  with a `state` (base64) to send back with the OTP (otp_mode `challenge`).
- `/otp/check`: the appliance did the first factor; only the OTP (or PIN+OTP, or a
  backup code) is checked (first_factor `none`).
Before the engine runs, the token bucket and escalating failure delay of the user from
this source are checked (429 without touching the store); after it, a reject escalates
that delay and an accept clears it. Another source's failures never slow the user.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from authd.auth.interfaces import AuthRequest, Decision, Outcome, Reason
from authd.core.username import map_user_name
from authd.metrics import Metrics
from authd.rest.errors import bad_request, too_many, unavailable
from authd.rest.ratelimit import Limits, user_key
from authd.rest.routes import Call, Clock, Reply, Route
from authd.rest.validation import BodySchema, Field

Authenticate = Callable[[AuthRequest], "Deferred[Decision]"]

# The engine refuses control characters in a user name; say so up front.
USER = Field(
    "user",
    required=True,
    min_length=1,
    max_length=255,
    pattern=r"^[^\x00-\x1f\x7f]+$",
    description="user name; the directory or store says who it is (README: user names)",
)
VALIDATE_BODY = BodySchema(
    (
        USER,
        Field(
            "password",
            max_length=1024,
            description="first factor; required unless `state` answers a challenge",
        ),
        Field(
            "otp",
            min_length=1,
            max_length=64,
            description="one-time code (or PIN+code, or a backup code)",
        ),
        Field(
            "state",
            min_length=4,
            max_length=512,
            pattern=r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|"
            r"[A-Za-z0-9+/]{4})$",
            description="the `state` of a challenge answer, as received (base64)",
        ),
    ),
    any_of=(("password",), ("state", "otp")),
)
OTP_CHECK_BODY = BodySchema(
    (
        USER,
        Field(
            "otp",
            required=True,
            min_length=1,
            max_length=64,
            description="one-time code (or PIN+code, or a backup code)",
        ),
    )
)
RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["result"],
    "properties": {
        "result": {"type": "string", "enum": ["accept", "reject", "challenge"]},
        "state": {"type": "string", "description": "base64; send back with the OTP"},
        "message": {"type": "string", "description": "safe to show the user"},
    },
}
# The decision could not be made (a directory or the store is down): 503, so that an
# appliance tells an outage from a wrong code; nothing about the user's guess either.
_OUTAGE = frozenset({Reason.BACKEND_DOWN, Reason.UNAVAILABLE})
# Not a guess at the user's secrets: no failure delay for these.
_NOT_A_GUESS = frozenset({Reason.BACKEND_DOWN, Reason.UNAVAILABLE, Reason.BAD_REQUEST})


class AuthEndpoints:
    """The two authentication endpoints, sharing the limits and the engine. `realms`
    (`http.realms`, replaced on reload) are stripped from the `user` of every body."""

    def __init__(
        self,
        authenticate: Authenticate,
        limits: Limits,
        clock: Clock,
        metrics: Metrics,
        realms: frozenset[str] = frozenset(),
    ) -> None:
        self.realms = realms
        self._authenticate = authenticate
        self._limits = limits
        self._clock = clock
        self._metrics = metrics
        # Bound once: `labels()` locks and builds a key on every call.
        self._user_limited = metrics.rate_limited.labels(limit="user")
        self._failures_limited = metrics.rate_limited.labels(limit="user_failures")

    def routes(self) -> list[Route]:
        statuses = (400, 401, 403, 413, 415, 429, 503)
        return [
            Route(
                "POST",
                "/api/v1/validate",
                self.validate,
                "validate",
                "Check password and OTP (or start / answer a challenge)",
                "auth",
                scope="validate",
                body=VALIDATE_BODY,
                response=RESULT_SCHEMA,
                statuses=statuses,
                auth_route=True,
            ),
            Route(
                "POST",
                "/api/v1/otp/check",
                self.otp_check,
                "otpCheck",
                "Check only the second factor (the caller did the first)",
                "auth",
                scope="validate",
                body=OTP_CHECK_BODY,
                response=RESULT_SCHEMA,
                statuses=statuses,
                auth_route=True,
            ),
        ]

    def validate(self, call: Call) -> Deferred[Reply]:
        body = call.body
        otp: str | None = body.get("otp")
        state_text: str | None = body.get("state")
        password: str | None = body.get("password")
        if state_text is not None:
            if otp is None:
                raise bad_request("otp: required with state")
            state = _decode_state(state_text)
            return self._run(
                call,
                AuthRequest(
                    user=body["user"],
                    password="",
                    frontend="http",
                    client=_client(call),
                    source=call.source,
                    otp=otp,
                    state=state,
                    first_factor="chain",
                    otp_mode="challenge",
                    realms=self.realms,
                ),
            )
        if password is None:
            raise bad_request("password: required without state")
        return self._run(
            call,
            AuthRequest(
                user=body["user"],
                password=password,
                frontend="http",
                client=_client(call),
                source=call.source,
                otp=otp,
                first_factor="chain",
                otp_mode="inline" if otp is not None else "challenge",
                realms=self.realms,
            ),
        )

    def otp_check(self, call: Call) -> Deferred[Reply]:
        return self._run(
            call,
            AuthRequest(
                user=call.body["user"],
                password="",
                frontend="http",
                client=_client(call),
                source=call.source,
                otp=call.body["otp"],
                first_factor="none",
                otp_mode="inline",
                realms=self.realms,
            ),
        )

    def _run(self, call: Call, req: AuthRequest) -> Deferred[Reply]:
        limits = self._limits
        key = user_key(throttle_key(req.user, req.realms), call.source)
        wait = limits.per_user.take(key, call.now)
        if wait:
            self._user_limited.inc()
            raise too_many("user", wait)
        wait = limits.backoff.wait(key, call.now)
        if wait:
            self._failures_limited.inc()
            raise too_many("user", wait)
        return self._authenticate(req).addCallback(self._answer, key)

    def _answer(self, decision: Decision, key: str) -> Reply:
        if decision.reason in _OUTAGE:
            raise unavailable()
        if decision.outcome is Outcome.ACCEPT:
            self._limits.backoff.success(key)
        elif decision.outcome is Outcome.REJECT and decision.reason not in _NOT_A_GUESS:
            self._limits.backoff.failure(key, self._clock.seconds())
        doc: dict[str, Any] = {"result": decision.outcome.value}
        if decision.state is not None:
            doc["state"] = base64.b64encode(decision.state).decode("ascii")
        if decision.message:
            doc["message"] = decision.message
        return Reply(body=doc)


def throttle_key(user: str, realms: frozenset[str] = frozenset()) -> str:
    """Whom per-user HTTP limits count against: every spelling a directory may take for
    one user (case, spaces, realms) shares one bucket, so variants of a name cannot
    multiply the guesses allowed."""
    return (map_user_name(user, realms) or user).casefold()


def _client(call: Call) -> str:
    return call.key.name if call.key is not None else ""


def _decode_state(text: str) -> bytes:
    try:
        state = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise bad_request("state: not base64") from None
    if not state:
        raise bad_request("state: empty")
    return state
