"""Lifecycle endpoints of the admin API: set, password, delete, apikeys; in openapi.json."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.rest.harness import ADMIN_KEY, PASSWORD, VALIDATE_KEY, App

NEW_PASSWORD = "N3w-Batt3ry-Staple"


def _admin(app: App, method: str, path: str, body: object = None) -> tuple[int, Any]:
    r = app.request(method, "/api/v1/admin" + path, body, key=ADMIN_KEY)
    return r.status, r.json


def test_patch_user_changes_given_fields(app: App) -> None:
    """PATCH /users/{user} sets the given fields and groups; others stay; 404 unknown."""
    status, doc = _admin(app, "PATCH", "/users/alice", {"phone": "+43 1", "groups": ["vpn"]})
    assert status == 200 and (doc["phone"], doc["groups"]) == ("+43 1", ["vpn"])
    status, doc = _admin(app, "PATCH", "/users/alice", {"email": "a@example.org"})
    assert (doc["email"], doc["phone"], doc["groups"]) == ("a@example.org", "+43 1", ["vpn"])
    assert _admin(app, "PATCH", "/users/nobody", {"email": "x@y"})[0] == 404
    assert _admin(app, "PATCH", "/users/alice", {"groups": ["a b"]})[0] == 400


def test_put_password_then_old_one_fails(app: App) -> None:
    """PUT /users/{user}/password: the new password authenticates, the old no longer."""
    assert _admin(app, "PUT", "/users/alice/password", {"password": NEW_PASSWORD}) == (
        200,
        {"action": "user.passwd", "subject": "alice", "result": "ok"},
    )
    assert app.validate("alice", password=PASSWORD, otp=app.totp_now()).json["result"] == "reject"
    app.clock.advance(30)
    assert app.validate("alice", password=NEW_PASSWORD, otp=app.totp_now()).json["result"] == (
        "accept"
    )
    assert _admin(app, "PUT", "/users/alice/password", {"password": ""})[0] == 400


def test_delete_user_revokes_tokens_and_audits(app: App) -> None:
    """DELETE /users/{user}: 200, then 404; the token is revoked; audited as http:<key>."""
    assert _admin(app, "DELETE", "/users/alice")[0] == 200
    assert _admin(app, "GET", "/users/alice")[0] == 404
    assert _admin(app, "DELETE", "/users/alice")[0] == 404
    token = _admin(app, "GET", "/tokens/TOTP-alice")[1]
    assert (token["status"], token["user"]) == ("revoked", None)
    events = _admin(app, "GET", "/audit?user=alice")[1]["events"]
    assert [(e["action"], e["result"]) for e in events[:2]] == [
        ("user.delete", "error"),
        ("user.delete", "ok"),
    ]
    assert events[1]["actor"].startswith("http:")


def test_new_api_key_is_usable_once_configured(app: App) -> None:
    """POST /apikeys returns a fresh key with its key_sha256 lines; 403 without admin."""
    status, doc = _admin(app, "POST", "/apikeys", {"name": "vpn", "scopes": ["validate"]})
    assert status == 201
    assert doc["key_sha256"] == hashlib.sha256(doc["key"].encode()).hexdigest()
    assert doc["key_file"] is None and "key_sha256:" in doc["config"]
    assert _admin(app, "POST", "/apikeys", {"name": "vpn", "scopes": ["root"]})[0] == 400
    r = app.request("POST", "/api/v1/admin/apikeys", {"name": "x", "scopes": ["admin"]},
                    key=VALIDATE_KEY)  # fmt: skip
    assert r.status == 403


def test_lifecycle_endpoints_are_in_openapi(app: App) -> None:
    """openapi.json names each new operation with the admin scope."""
    spec = app.request("GET", "/api/v1/openapi.json").json
    ops = {
        op["operationId"]
        for item in spec["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }
    assert {"setUser", "deleteUser", "setPassword", "newApiKey"} <= ops


def test_audit_export_filters_and_pages(app: App) -> None:
    """GET /audit/export: oldest first, filtered by action and result, paged by id."""
    for _ in range(3):
        _admin(app, "POST", "/users/hank/disable")
    _admin(app, "DELETE", "/users/nobody")  # user.delete error
    status, doc = _admin(app, "GET", "/audit/export?action=user.disable&limit=2")
    assert status == 200 and [e["action"] for e in doc["events"]] == ["user.disable"] * 2
    assert doc["events"][0]["id"] < doc["events"][1]["id"]
    more = _admin(app, "GET", f"/audit/export?action=user.disable&after_id={doc['next_after_id']}")
    assert len(more[1]["events"]) == 1 and more[1]["next_after_id"] is None
    errors = _admin(app, "GET", "/audit/export?result=error")[1]["events"]
    assert [(e["action"], e["user"]) for e in errors] == [("user.delete", "nobody")]
    assert _admin(app, "GET", "/audit/export?since=abc")[0] == 400


def test_audit_verify_over_http_says_when_the_chain_is_off(app: App) -> None:
    """GET /audit/verify answers 400 naming audit.hash_chain when the chain is off (the
    default); it is in openapi.json (the chain itself: tests/storage/test_audit_chain.py)."""
    status, doc = _admin(app, "GET", "/audit/verify")
    assert status == 400 and "audit.hash_chain" in str(doc)
    spec = app.request("GET", "/api/v1/openapi.json").json
    assert "get" in spec["paths"]["/api/v1/admin/audit/verify"]
