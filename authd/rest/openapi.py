"""The OpenAPI 3.1 description of every endpoint, generated from the route table.

Paths, methods, scopes, body and query schemas come from the same `Route` objects the
dispatcher enforces, so the document cannot claim what the server does not do; a test
runs schemathesis against the live server to keep the rest (statuses, shapes) honest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from authd import __version__
from authd.rest.admin_api import SERIAL_PATTERN, USER_PATTERN
from authd.rest.routes import Call, Reply, Route

ERROR = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
}
_DESCRIPTIONS = {
    400: "bad input (JSON error body)",
    401: "no valid API key",
    403: "key lacks the scope",
    404: "no such user or token",
    409: "already exists, or changed meanwhile",
    413: "body too large",
    415: "body is not application/json",
    429: "rate-limited (see Retry-After)",
    503: "not ready / store unavailable",
}
PATH_PARAMS: dict[str, dict[str, Any]] = {
    "user": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": USER_PATTERN},
    "serial": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": SERIAL_PATTERN},
    "issue": {"type": "string", "pattern": "^[1-9][0-9]{0,17}$"},
}


def _operation(route: Route) -> dict[str, Any]:
    content = {route.response_type: {"schema": route.response}}
    responses: dict[str, Any] = {str(route.success): {"description": "success", "content": content}}
    statuses = set(route.statuses)
    if route.rate_limited:
        statuses.add(429)
    if route.query is not None or route.body is not None or route.path_params:
        statuses.add(400)
    for status in sorted(statuses):
        if str(status) in responses:
            continue
        body = route.response if route.path == "/readyz" else ERROR
        entry: dict[str, Any] = {
            "description": _DESCRIPTIONS.get(status, "error"),
            "content": {"application/json": {"schema": body}},
        }
        if status == 429:
            entry["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
        if status == 401:
            entry["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        responses[str(status)] = entry
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "responses": responses,
    }
    if route.scope is not None:
        op["security"] = [{"apiKey": []}]
        op["description"] = f"Needs an API key with scope `{route.scope}`."
    elif route.optional_key:
        op["security"] = [{}, {"apiKey": []}]
    else:
        op["security"] = []
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": PATH_PARAMS[name]}
        for name in route.path_params
    ]
    if route.query is not None:
        params.extend(route.query.parameters())
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": route.body.json_schema()}},
        }
    return op


def build(routes: Sequence[Route]) -> dict[str, Any]:
    """The OpenAPI document for these routes."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "authd HTTP API",
            "version": __version__,
            "description": "Two-factor authentication: validation for appliances, "
            "administration mirroring authctl, health and metrics.",
        },
        "components": {
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer KEY`; keys and scopes "
                    "are in `http.api_keys`",
                }
            }
        },
        "paths": paths,
    }


class OpenApiEndpoint:
    """Serves the document built from every other route (and itself)."""

    def __init__(self) -> None:
        self._doc: dict[str, Any] = {}

    def route(self) -> Route:
        return Route(
            "GET",
            "/api/v1/openapi.json",
            self.serve,
            "openapi",
            "This OpenAPI 3.1 document",
            "meta",
        )

    def publish(self, routes: Sequence[Route]) -> None:
        self._doc = build(routes)

    def serve(self, call: Call) -> Reply:
        return Reply(body=self._doc)
