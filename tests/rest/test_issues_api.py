"""Access-recovery requests under /api/v1/admin/issues: list, show, approve, reject;
scope `selfservice-admin` (or `admin`), which reaches nothing else of the admin API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from authd.config.model import ApiKey
from tests.rest.harness import (
    ADMIN_KEY,
    VALIDATE_KEY,
    App,
    make_config,
    sha256_hex,
    start_app,
)

HELPDESK_KEY = "helpdesk-key-0123456789abcdef-hd"
ISSUES = "/api/v1/admin/issues"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    """The standard keys plus `helpdesk` (selfservice-admin only); alice has a TOTP
    token and an open lost-token request."""
    config = make_config(tmp_path)
    helpdesk = ApiKey(name="helpdesk", key_sha256=sha256_hex(HELPDESK_KEY),
                      scopes=("selfservice-admin",))
    config = config.__class__(**{**config.__dict__, "http": config.http.__class__(
        **{**config.http.__dict__, "api_keys": (*config.http.api_keys, helpdesk)})})
    a = start_app(tmp_path, config)
    a.add_user("alice", token="totp")
    a.admin.from_source("192.0.2.7").open_issue("selfservice:alice", "alice", "token")
    try:
        yield a
    finally:
        a.close()
    assert a.clock.getDelayedCalls() == []


def test_helpdesk_key_lists_and_shows_requests(app: App) -> None:
    """selfservice-admin reads the queue, filtered by status, and one request."""
    listed = app.request("GET", ISSUES + "?status=open", key=HELPDESK_KEY)
    assert listed.status == 200
    (issue,) = listed.json["issues"]
    assert (issue["user"], issue["kind"], issue["source"]) == ("alice", "token", "192.0.2.7")
    shown = app.request("GET", f"{ISSUES}/{issue['id']}", key=HELPDESK_KEY)
    assert shown.status == 200 and shown.json == issue
    assert app.request("GET", ISSUES + "/999", key=HELPDESK_KEY).status == 404
    assert app.request("GET", ISSUES + "/x1", key=HELPDESK_KEY).status == 404
    assert app.request("GET", ISSUES + "?status=nope", key=HELPDESK_KEY).status == 400


def test_helpdesk_key_approves_a_lost_token(app: App) -> None:
    """Approval disables the tokens and sets the grant; audited with the key's name;
    a second decision is 409."""
    (issue,) = app.request("GET", ISSUES, key=HELPDESK_KEY).json["issues"]
    path = f"{ISSUES}/{issue['id']}/approve"
    approved = app.request("POST", path, key=HELPDESK_KEY)
    assert approved.status == 200 and approved.json["status"] == "approved"
    assert approved.json["decided_by"] == "http:helpdesk" and approved.json["grant_until"]
    assert [str(t.status) for t in app.store.list_tokens("alice")] == ["disabled"]
    assert app.request("POST", path, key=HELPDESK_KEY).status == 409
    actions = {e.action for e in app.admin.audit("test", "alice").events
               if e.actor == "http:helpdesk"}
    assert {"issue.approve", "token.disable"} <= actions


def test_admin_key_rejects(app: App) -> None:
    """`admin` includes the issues endpoints."""
    (issue,) = app.request("GET", ISSUES, key=ADMIN_KEY).json["issues"]
    rejected = app.request("POST", f"{ISSUES}/{issue['id']}/reject", key=ADMIN_KEY)
    assert rejected.status == 200 and rejected.json["status"] == "rejected"


def test_helpdesk_key_reaches_nothing_else_and_validate_nothing_here(app: App) -> None:
    """selfservice-admin is 403 on the rest of the admin API; validate is 403 on the
    issues; no key is 401."""
    assert app.request("GET", "/api/v1/admin/users", key=HELPDESK_KEY).status == 403
    assert app.request("POST", "/api/v1/admin/keys/rotate", key=HELPDESK_KEY).status == 403
    assert app.request("GET", ISSUES, key=VALIDATE_KEY).status == 403
    assert app.request("POST", ISSUES + "/1/approve", key=VALIDATE_KEY).status == 403
    assert app.request("GET", ISSUES).status == 401


def test_openapi_documents_the_issue_endpoints(app: App) -> None:
    """The four operations are in openapi.json with their scope."""
    doc = app.request("GET", "/api/v1/openapi.json").json
    ops = {op["operationId"]: op for path in doc["paths"].values() for op in path.values()}
    for name in ("listIssues", "showIssue", "approveIssue", "rejectIssue"):
        assert "selfservice-admin" in ops[name]["description"]
