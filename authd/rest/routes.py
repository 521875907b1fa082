"""The route table: what each endpoint takes, needs and answers, in one declaration.

A `Route` is read both by the dispatcher (method, path, scope, body and query schemas)
and by the OpenAPI generator, so the published description and the enforced behaviour
come from the same data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

from twisted.internet.defer import Deferred

from authd.rest.apikeys import KeyIdentity
from authd.rest.errors import ApiError
from authd.rest.validation import BodySchema, QuerySchema


class Clock(Protocol):
    """What the front-end needs of time: `reactor.seconds` or a test's `Clock`."""

    def seconds(self) -> float: ...


@dataclass(frozen=True)
class Reply:
    """A handler's answer: a JSON document (`body`) or raw bytes with a content type."""

    status: int = 200
    body: Any = None
    raw: bytes | None = None
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Call:
    """One validated request as a handler sees it."""

    key: KeyIdentity | None
    source: str
    now: float
    params: dict[str, str] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def actor(self) -> str:
        """The audit actor for this call (`http:<key name>`)."""
        return f"http:{self.key.name}" if self.key is not None else "http:anonymous"


Handler = Callable[[Call], "Reply | Deferred[Reply]"]


@dataclass(frozen=True)
class Route:
    """One endpoint. `scope` None: no key needed; `optional_key`: a key adds detail."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    scope: str | None = None
    optional_key: bool = False
    body: BodySchema | None = None
    query: QuerySchema | None = None
    response: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    response_type: str = "application/json"
    success: int = 200
    statuses: tuple[int, ...] = ()
    rate_limited: bool = True
    auth_route: bool = False  # counts into the front-end latency histogram

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.strip("/").split("/"))

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(s[1:-1] for s in self.segments if s.startswith("{"))


def split_path(raw: bytes) -> tuple[str, ...] | None:
    """Path segments, each percent-decoded once (a user name may hold `/` as %2F)."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    parts = text.strip("/").split("/")
    if "%" not in text:
        return tuple(parts)
    try:
        return tuple(unquote(p, errors="strict") for p in parts)
    except UnicodeDecodeError:
        return None


class Router:
    """Finds the route for a method and path; 404 and 405 are decided here."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)
        seen = set()
        for r in self.routes:
            if (r.method, r.segments) in seen:
                raise ValueError(f"duplicate route {r.method} {r.path}")
            seen.add((r.method, r.segments))
        # Paths without parameters found by one dict look-up, unless an earlier route
        # with parameters would also bind them (first match wins, as in the scan).
        self._static: dict[tuple[str, tuple[str, ...]], Route] = {}
        for i, r in enumerate(self.routes):
            if r.path_params:
                continue
            earlier = self.routes[:i]
            if not any(self._bind(e.segments, r.segments) is not None for e in earlier):
                self._static[(r.method, r.segments)] = r

    def match(self, method: str, segments: tuple[str, ...] | None) -> tuple[Route, dict[str, str]]:
        """The route for `method` and the path's `split_path` segments."""
        if segments is None:
            raise ApiError(400, "bad_request", "path is not valid UTF-8")
        static = self._static.get((method, segments))
        if static is not None:
            return static, {}
        allowed: list[str] = []
        for route in self.routes:
            params = self._bind(route.segments, segments)
            if params is None:
                continue
            if route.method == method:
                return route, params
            allowed.append(route.method)
        if allowed:
            allow = ", ".join(sorted(set(allowed)))
            raise ApiError(405, "method_not_allowed", f"use {allow}", (("Allow", allow),))
        raise ApiError(404, "not_found", "no such endpoint")

    @staticmethod
    def _bind(pattern: tuple[str, ...], segments: tuple[str, ...]) -> dict[str, str] | None:
        if len(pattern) != len(segments):
            return None
        params: dict[str, str] = {}
        for want, got in zip(pattern, segments, strict=True):
            if want.startswith("{"):
                if not got or len(got) > 256 or "\x00" in got:
                    return None
                params[want[1:-1]] = got
            elif want != got:
                return None
        return params
