"""Admin API export, import and token import: scope, body checks, bundle bytes, the
same rules as authctl (all or nothing, idempotent, audited)."""

from __future__ import annotations

import base64
import secrets

from tests.rest.harness import ADMIN_KEY, VALIDATE_KEY, App

PASSPHRASE = "api bundle passphrase"


def test_export_then_import_same_site_changes_nothing(app: App) -> None:
    """Export answers the sealed bundle as octet-stream; importing it back writes
    nothing (every record already as the bundle has it)."""
    r = app.request("POST", "/api/v1/admin/export", {"passphrase": PASSPHRASE}, key=ADMIN_KEY)
    assert r.status == 200 and r.header("content-type") == "application/octet-stream"
    assert r.raw.startswith(b"authd-bundle\n")
    body = {"bundle": base64.b64encode(r.raw).decode(), "passphrase": PASSPHRASE}
    r = app.request("POST", "/api/v1/admin/import", body, key=ADMIN_KEY)
    assert r.status == 200, r.raw
    assert r.json["written"] == 0 and r.json["users"] == 2 and r.json["conflicts"] == []


def test_import_wrong_passphrase_or_bad_body_is_400(app: App) -> None:
    """A wrong passphrase, non-base64 data or a short passphrase are 400, and never
    echo what was sent."""
    r = app.request("POST", "/api/v1/admin/export", {"passphrase": PASSPHRASE}, key=ADMIN_KEY)
    bundle = base64.b64encode(r.raw).decode()
    body = {"bundle": bundle, "passphrase": "another passphrase"}
    wrong = app.request("POST", "/api/v1/admin/import", body, key=ADMIN_KEY)
    assert wrong.status == 400 and "another passphrase" not in wrong.raw.decode()
    bad = app.request("POST", "/api/v1/admin/import",
                      {"bundle": "@@@", "passphrase": PASSPHRASE}, key=ADMIN_KEY)  # fmt: skip
    assert bad.status == 400
    short = app.request("POST", "/api/v1/admin/export", {"passphrase": "short"}, key=ADMIN_KEY)
    assert short.status == 400


def test_token_import_csv_and_scope(app: App) -> None:
    """CSV tokens arrive unassigned (201-free: 200 with the count); a validate key is
    403; a duplicate file is 409 and writes nothing."""
    seed = secrets.token_bytes(20).hex()
    data = base64.b64encode(f"B1,{seed},totp\nB2,{seed},hotp,8,3\n".encode()).decode()
    body = {"format": "csv", "data": data}
    assert app.request("POST", "/api/v1/admin/tokens/import", body, key=VALIDATE_KEY).status == 403
    r = app.request("POST", "/api/v1/admin/tokens/import", body, key=ADMIN_KEY)
    assert r.status == 200 and r.json == {"action": "token.import", "imported": 2, "format": "csv"}
    assert app.store.get_token("B2").counter == 3  # type: ignore[union-attr]
    again = app.request("POST", "/api/v1/admin/tokens/import", body, key=ADMIN_KEY)
    assert again.status == 409
    [row, *_] = app.store.query_audit()
    assert (row.action, row.result, row.actor) == ("token.import", "error", "http:ops")
    assert seed not in row.detail


def test_openapi_documents_the_endpoints(app: App) -> None:
    """/api/v1/openapi.json lists the three operations."""
    doc = app.request("GET", "/api/v1/openapi.json").json
    ops = {op["operationId"] for path in doc["paths"].values() for op in path.values()}
    assert {"exportBundle", "importBundle", "importTokens"} <= ops
