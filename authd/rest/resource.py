"""The dispatcher: one twisted.web resource that runs every API request through the same
steps, in an order chosen so that cheap refusals come first and nothing reaches the
engine or the store before it has been limited, authenticated and validated:

    route -> per-source limit -> admin scope -> body size -> key/scope -> query -> body
    -> handler -> JSON answer

Handlers return plain `Reply` objects (or Deferreds of them); this module alone writes
to the twisted request, maps exceptions to statuses and counts responses.
"""

from __future__ import annotations

import hmac
import json
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from authd.metrics import Metrics
from authd.rest import issues_api
from authd.rest.apikeys import ApiKeyRing, KeyIdentity
from authd.rest.clientaddr import Network, client_address
from authd.rest.errors import ApiError, forbidden, from_exception, too_many, unauthorized
from authd.rest.ratelimit import Limits
from authd.rest.routes import Call, Clock, Reply, Route, Router, split_path

log = Logger(namespace="authd.rest.resource")
ADMIN_PREFIX = ("api", "v1", "admin")
JSON_TYPES = (b"application/json",)
# Built once: `json.dumps` with keyword arguments builds a new encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_JSON = b"application/json"
_FIXED_HEADERS = (
    (b"cache-control", [b"no-store"]),
    (b"x-content-type-options", [b"nosniff"]),
    (b"server", [b"authd"]),
)


# Per connection: the key ring, the Authorization header and who it identified.
_KeyCache = weakref.WeakKeyDictionary[Any, tuple[ApiKeyRing, bytes, "KeyIdentity | None"]]


class _BoundMetrics:
    """Metric children bound once per label set: `labels()` takes a lock and builds a
    key tuple on every call, a few microseconds per request on the hot path."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._responses: dict[tuple[str, int], Any] = {}
        self.latency = metrics.latency.labels(frontend="http")
        self.client_gone = metrics.drops.labels(frontend="http", reason="client_gone")
        self.source_limited = metrics.rate_limited.labels(limit="source")

    def response(self, route: str, status: int) -> Any:
        # Keys come from the route table and the fixed set of statuses: bounded.
        child = self._responses.get((route, status))
        if child is None:
            child = self._metrics.http_responses.labels(route=route, status=str(status))
            self._responses[(route, status)] = child
        return child


@dataclass(frozen=True)
class Policy:
    """What a reload swaps at once: the API keys and the trusted proxies."""

    keys: ApiKeyRing
    proxies: tuple[Network, ...]


class InFlight:
    """Counts requests being answered, so a stop can wait for the last one."""

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[Deferred[None]] = []

    def begin(self) -> None:
        self.count += 1

    def end(self) -> None:
        self.count -= 1
        if self.count == 0:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)

    def drained(self) -> Deferred[None]:
        """Fires once no request is in flight (at once if none is)."""
        d: Deferred[None] = Deferred()
        if self.count == 0:
            d.callback(None)
        else:
            self._waiters.append(d)
        return d


def _identify(
    request: Request, keys: ApiKeyRing, header: bytes, seen: _KeyCache
) -> KeyIdentity | None:
    """`keys.identify(header)`, remembered per connection: a keep-alive client sends the
    same header on every request. The remembered header is compared in constant time,
    and a reload (a new ring) invalidates it; nothing outlives the connection."""
    channel = request.channel
    if channel is None:  # the connection is already gone: nothing to remember it on
        return keys.identify(header)
    cached = seen.get(channel)
    if cached is not None and cached[0] is keys and hmac.compare_digest(cached[1], header):
        return cached[2]
    key = keys.identify(header)
    seen[channel] = (keys, header, key)
    return key


def _media_type(request: Request) -> bytes:
    value = request.getHeader(b"content-type") or b""
    return value.split(b";", 1)[0].strip().lower()


class ApiResource(Resource):
    """Answers every path it is given (a leaf): the API, health, metrics, OpenAPI."""

    isLeaf = True

    def __init__(
        self,
        router: Router,
        policy: Callable[[], Policy],
        limits: Limits,
        clock: Clock,
        metrics: Metrics,
        in_flight: InFlight,
    ) -> None:
        super().__init__()
        self._router = router
        self._policy = policy
        self._limits = limits
        self._clock = clock
        self._metrics = metrics
        self._in_flight = in_flight
        self._bound = _BoundMetrics(metrics)
        self._key_cache: _KeyCache = weakref.WeakKeyDictionary()

    def render(self, request: Request) -> int:
        started = time.perf_counter()
        self._in_flight.begin()
        state: dict[str, Any] = {"route": None, "gone": False}

        def gone(_: object) -> None:
            state["gone"] = True

        request.notifyFinish().addErrback(gone)
        # A handler answering at once (an error, health) skips the Deferred chain; an
        # engine call answers later. Both end in `_write` exactly once.
        try:
            result = self._handle(request, state)
        except Exception as exc:  # mapped to a status; unknown ones are a logged 500
            result = self._error_reply(exc)
        if isinstance(result, Deferred):
            result.addErrback(self._failed)
            result.addCallback(self._write, request, state, started)
            result.addErrback(self._write_failed, request)
            result.addBoth(self._end)
        else:
            try:
                self._write(result, request, state, started)
            except Exception:
                self._write_failed(Failure(), request)
            self._in_flight.end()
        return NOT_DONE_YET

    def _end(self, _: object) -> None:
        self._in_flight.end()

    def _failed(self, failure: Failure) -> Reply:
        return self._error_reply(failure.value)

    @staticmethod
    def _error_reply(exc: BaseException) -> Reply:
        err = from_exception(exc)
        return Reply(status=err.status, body=err.body(), headers=err.headers)

    def _write_failed(self, failure: Failure, request: Request) -> None:
        # Writing the answer itself failed (the connection broke mid-write): count it and
        # close the connection rather than leave the client waiting for a reply.
        self._metrics.drops.labels(frontend="http", reason="write_failed").inc()
        log.warn("HTTP reply not written: {kind}", kind=type(failure.value).__name__)
        transport = getattr(request.channel, "transport", None)
        if transport is not None:
            transport.abortConnection()

    def _write(self, reply: Reply, request: Request, state: dict[str, Any], started: float) -> None:
        route: Route | None = state["route"]
        label = route.path if route is not None else "unmatched"
        self._bound.response(label, reply.status).inc()
        if route is not None and route.auth_route:
            self._bound.latency.observe(time.perf_counter() - started)
        if state["gone"]:
            self._bound.client_gone.inc()
            return
        if reply.raw is not None:
            payload = reply.raw
        else:
            try:
                payload = _ENCODER.encode(reply.body).encode() + b"\n"
            except (TypeError, ValueError) as exc:  # a result JSON cannot carry: fail closed
                err = from_exception(exc)
                reply = Reply(status=err.status, body=err.body())
                payload = json.dumps(reply.body).encode() + b"\n"
        request.setResponseCode(reply.status)
        headers = request.responseHeaders
        # Raw header names as bytes, set straight on the Headers: `setHeader` re-checks
        # and re-encodes each one, a measurable share of a small answer's cost.
        headers.setRawHeaders(
            b"content-type",
            [_JSON if reply.content_type == "application/json" else reply.content_type.encode()],
        )
        headers.setRawHeaders(b"content-length", [b"%d" % len(payload)])
        for raw_name, raw_values in _FIXED_HEADERS:
            headers.setRawHeaders(raw_name, raw_values)
        for name, text in reply.headers:
            request.setHeader(name.encode(), text.encode())
        if request.method != b"HEAD":
            request.write(payload)
        request.finish()

    def _handle(self, request: Request, state: dict[str, Any]) -> Reply | Deferred[Reply]:
        parsed = split_path(request.path)
        segments = parsed or ()
        policy = self._policy()
        source = client_address(
            getattr(request.getClientAddress(), "host", ""),
            request.requestHeaders.getRawHeaders(b"x-forwarded-for"),
            policy.proxies,
        )
        now = self._clock.seconds()
        # /readyz needs no key and asks the dependencies: limited per source like the API.
        if segments[:1] == ("api",) or segments == ("readyz",):
            wait = self._limits.per_source.take(source, now)
            if wait:
                self._bound.source_limited.inc()
                raise too_many("source", wait)
        auth_headers = request.requestHeaders.getRawHeaders(b"authorization") or []
        key = (
            _identify(request, policy.keys, auth_headers[0], self._key_cache)
            if len(auth_headers) == 1
            else None
        )
        if segments[:3] == ADMIN_PREFIX:
            # CONTRACT: any path under /api/v1/admin/ is 401/403 before it is a 404; the
            # issues endpoints are the one part a `selfservice-admin` key reaches.
            issues = segments[: len(issues_api.PREFIX)] == issues_api.PREFIX
            self._require(key, issues_api.SCOPE if issues else "admin")
        method = request.method.decode("ascii", "replace")
        route, params = self._router.match(method, parsed)
        state["route"] = route
        if getattr(request, "body_too_large", False):
            raise ApiError(413, "too_large", "request body is too large")
        if route.scope is not None:
            self._require(key, route.scope)
        elif not route.optional_key:
            key = None
        query = route.query.parse(request.args or {}) if route.query else {}
        if route.query is None and request.args:
            raise ApiError(400, "bad_request", "this endpoint takes no query parameters")
        raw = request.content.read() if request.content is not None else b""
        body: dict[str, Any] = {}
        if route.body is not None:
            if _media_type(request) not in JSON_TYPES:
                raise ApiError(415, "unsupported_media_type", "send the body as application/json")
            body = route.body.parse(raw)
        elif raw:
            raise ApiError(400, "bad_request", "this endpoint takes no body")
        call = Call(key=key, source=source, now=now, params=params, query=query, body=body)
        return route.handler(call)

    @staticmethod
    def _require(key: Any, scope: str) -> None:
        if key is None:
            raise unauthorized()
        if not key.allows(scope):
            raise forbidden(scope)
