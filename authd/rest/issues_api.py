"""Access-recovery requests under `/api/v1/admin/issues` (scope `selfservice-admin`,
which `admin` implies): the HTTP twins of `authctl issue list|show|approve|reject`.

A `selfservice-admin` key reaches these endpoints and nothing else of the admin API
(`resource.py` checks the prefix scope per path), so a help desk can handle requests
without the power to add users or keys.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred

from authd.rest.admin_api import AdminEndpoints
from authd.rest.errors import ApiError
from authd.rest.routes import Call, Reply, Route
from authd.rest.validation import Field, QuerySchema
from authd.storage.recovery import KINDS, STATUSES

SCOPE = "selfservice-admin"
PREFIX = ("api", "v1", "admin", "issues")
_MAX_ID = 2**62

ISSUE = {
    "type": "object",
    "required": ["id", "user", "kind", "status"],
    "properties": {
        "id": {"type": "integer"},
        "user": {"type": "string"},
        "kind": {"type": "string", "enum": list(KINDS)},
        "status": {"type": "string", "enum": list(STATUSES)},
        "source": {"type": "string"},
        "created_at": {"type": "number"},
        "decided_at": {"type": ["number", "null"]},
        "decided_by": {"type": "string"},
        "grant_until": {"type": ["number", "null"], "description": "lost token, approved: "
                        "the user may enter the portal once until then"},
    },
}
ISSUE_LIST = {
    "type": "object",
    "required": ["issues"],
    "properties": {"issues": {"type": "array", "items": ISSUE}},
}
LIST_QUERY = QuerySchema((Field("status", choices=STATUSES),))


class IssueEndpoints(AdminEndpoints):
    """The admin API's handlers (one AdminOps; None: 503), with the issues' routes."""

    def routes(self) -> list[Route]:
        base = "/api/v1/admin/issues"
        one = base + "/{issue}"
        return [
            _route("GET", base, self.list_issues, "listIssues",
                   "Access-recovery requests from the portal, oldest first", ISSUE_LIST,
                   query=LIST_QUERY),
            _route("GET", one, self.by_id("show_issue"), "showIssue",
                   "One access-recovery request", ISSUE),
            _route("POST", one + "/approve", self.by_id("approve_issue"), "approveIssue",
                   "Approve an open request (lost token: the user's tokens are disabled and "
                   "the portal admits the user once on the password)", ISSUE),
            _route("POST", one + "/reject", self.by_id("reject_issue"), "rejectIssue",
                   "Reject an open request", ISSUE),
        ]  # fmt: skip

    def list_issues(self, call: Call) -> Deferred[Reply]:
        d = self._run_blocking(
            functools.partial(self._ops().list_issues, call.actor, call.query.get("status"))
        )
        return d.addCallback(lambda rows: Reply(body={"issues": [r.to_json() for r in rows]}))

    def by_id(self, name: str) -> Callable[[Call], Deferred[Reply]]:
        """A handler calling AdminOps.<name>(actor, id)."""

        def handler(call: Call) -> Deferred[Reply]:
            raw = call.params["issue"]
            if not raw.isdigit() or not 0 < int(raw) < _MAX_ID:
                raise ApiError(404, "not_found", "no such issue")
            return self._call(getattr(self._ops(), name), call.actor, int(raw))

        return handler


def _route(*args: Any, **kwargs: Any) -> Route:
    """The admin API's route, under the narrower scope."""
    return replace(AdminEndpoints._ops_route(*args, **kwargs), scope=SCOPE)
