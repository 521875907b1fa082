"""HTTP error answers: one exception type for the handlers, one mapping from domain errors.

Every error leaves as `{"error": "<code>", "detail": "<safe text>"}`. An exception this
module does not know becomes a bare 500 `internal` (logged server-side, never echoed):
no stack trace and no exception text reaches a client, so nothing secret can leak.
"""

from __future__ import annotations

import re
import traceback

from twisted.logger import Logger

from authd.core.errors import AlreadyExists, Conflict, InvalidInput, NotFound, StoreUnavailable

log = Logger(namespace="authd.rest.errors")
# A quoted value in a domain error's message (`no user 'x'`): the caller sent it, and it
# may be a secret typed in the wrong field, so an HTTP answer leaves it out.
_QUOTED = re.compile(r"""\s*(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


class ApiError(Exception):
    """An HTTP error answer; `detail` must be safe to show (never a secret)."""

    def __init__(
        self, status: int, error: str, detail: str = "", headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(f"{status} {error}")
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers

    def body(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}


def bad_request(detail: str) -> ApiError:
    return ApiError(400, "bad_request", detail)


def unauthorized() -> ApiError:
    # RFC 6750 §3: a missing or wrong bearer token is answered with the challenge.
    return ApiError(
        401,
        "unauthorized",
        "a valid API key is required",
        (("WWW-Authenticate", 'Bearer realm="authd"'),),
    )


def forbidden(scope: str) -> ApiError:
    return ApiError(403, "forbidden", f"this API key lacks the {scope!r} scope")


def too_many(limit: str, retry_after: float) -> ApiError:
    # Retry-After is whole seconds (RFC 9110 §10.2.3); never 0, never unbounded.
    seconds = max(1, min(3600, int(-(-retry_after // 1)) if retry_after != float("inf") else 3600))
    return ApiError(
        429,
        "rate_limited",
        f"too many requests ({limit}); retry later",
        (("Retry-After", str(seconds)),),
    )


def without_values(text: str) -> str:
    """`text` without the quoted values in it (`no user 'x'` -> `no user`)."""
    return _QUOTED.sub("", text)


def unavailable() -> ApiError:
    """A decision that could not be made: the store or a directory is down (never a
    reject, so a caller can tell an outage from a wrong code)."""
    return ApiError(503, "unavailable", "a store or directory is unavailable; try again later")


def from_exception(exc: BaseException) -> ApiError:
    """The answer for an exception raised by a handler or an AdminOps call."""
    if isinstance(exc, ApiError):
        return exc
    # Domain error messages are written never to hold a secret (authd/core/errors.py),
    # but they quote the names and values the caller gave: those are left out.
    if isinstance(exc, NotFound):
        return ApiError(404, "not_found", without_values(str(exc)))
    if isinstance(exc, (AlreadyExists, Conflict)):
        return ApiError(409, "conflict", without_values(str(exc)))
    if isinstance(exc, InvalidInput):
        return ApiError(400, "invalid_input", without_values(str(exc)))
    if isinstance(exc, StoreUnavailable):
        return ApiError(503, "unavailable", "the store cannot be reached")
    # Fail closed: the client learns only that something broke. The log gets the type and
    # the frames but not the message, which a library may have built from a secret.
    frames = traceback.extract_tb(exc.__traceback__)
    where = " <- ".join(f"{f.filename}:{f.lineno}" for f in reversed(frames[-5:]))
    log.error(
        "unexpected {kind} in an HTTP handler at {where}",
        kind=type(exc).__name__,
        where=where or "?",
    )
    return ApiError(500, "internal", "internal error")
