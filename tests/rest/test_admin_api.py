"""The admin API under /api/v1/admin/: every endpoint, scopes, error statuses, audit."""

from __future__ import annotations

from urllib.parse import quote

from authd.core.model import Algorithm
from authd.core.otp import hotp
from tests.rest.harness import ADMIN_KEY, BOTH_KEY, PASSWORD, SEED, SEED_B32, VALIDATE_KEY, App


def _admin(app: App, method: str, path: str, body: object = None) -> tuple[int, object]:
    r = app.request(method, "/api/v1/admin" + path, body, key=ADMIN_KEY)
    return r.status, r.json


def test_validate_key_gets_403_on_every_admin_path(app: App) -> None:
    """CONTRACT: any path under /api/v1/admin/ is 403 for a key without admin, even
    one that does not exist, and 401 without a key."""
    for method, path in (
        ("GET", "/api/v1/admin/users"),
        ("POST", "/api/v1/admin/users"),
        ("GET", "/api/v1/admin/no/such/thing"),
    ):
        r = app.request(method, path, key=VALIDATE_KEY)
        assert r.status == 403, path
        assert r.json["error"] == "forbidden"
        assert app.request(method, path).status == 401


def test_users_list_show_add(app: App) -> None:
    """List with wildcard and limit, show one, add one (201), duplicate (409)."""
    status, doc = _admin(app, "GET", "/users")
    assert status == 200
    assert [u["user"] for u in doc["users"]] == ["alice", "hank"]  # type: ignore[index]
    status, doc = _admin(app, "GET", "/users?pattern=a*&limit=1")
    assert [u["user"] for u in doc["users"]] == ["alice"]  # type: ignore[index]
    status, doc = _admin(
        app,
        "POST",
        "/users",
        {"user": "carol", "password": "pw-carol-1", "email": "c@example.org", "groups": ["vpn"]},
    )
    assert status == 201
    assert doc["user"] == "carol" and doc["groups"] == ["vpn"]  # type: ignore[index]
    assert "pw-carol-1" not in str(doc)
    assert _admin(app, "POST", "/users", {"user": "carol"})[0] == 409
    status, doc = _admin(app, "GET", "/users/alice")
    assert status == 200
    assert doc["status"] == "active" and doc["tokens"][0]["serial"] == "TOTP-alice"  # type: ignore[index]
    assert _admin(app, "GET", "/users/nobody") == (
        404,
        {"error": "not_found", "detail": "no user"},
    )
    assert _admin(app, "GET", "/users?limit=0")[0] == 400
    assert _admin(app, "GET", "/users?bogus=1")[0] == 400


def test_user_names_are_percent_decoded_once(app: App) -> None:
    """A user name with reserved characters travels percent-encoded in the path."""
    assert _admin(app, "POST", "/users", {"user": "bob@corp/x"})[0] == 201
    status, doc = _admin(app, "GET", "/users/" + quote("bob@corp/x", safe=""))
    assert status == 200 and doc["user"] == "bob@corp/x"  # type: ignore[index]


def test_disable_enable_unlock_reset(app: App) -> None:
    """Each state change is visible and affects authentication."""
    assert _admin(app, "POST", "/users/alice/disable")[1] == {
        "action": "user.disable",
        "subject": "alice",
        "result": "ok",
    }
    assert app.validate("alice", password=PASSWORD, otp=app.totp_now()).json["result"] == "reject"
    assert _admin(app, "POST", "/users/alice/enable")[0] == 200
    assert _admin(app, "GET", "/users/alice")[1]["status"] == "active"  # type: ignore[index]
    for _ in range(app.config.otp.lockout.max_attempts):
        app.otp_check("hank", "000000")
    assert _admin(app, "GET", "/users/hank")[1]["locked"] is True  # type: ignore[index]
    assert _admin(app, "POST", "/users/hank/unlock")[0] == 200
    assert _admin(app, "GET", "/users/hank")[1]["locked"] is False  # type: ignore[index]
    assert _admin(app, "POST", "/users/hank/reset")[0] == 200
    assert _admin(app, "GET", "/users/hank")[1]["tokens"] == []  # type: ignore[index]
    assert _admin(app, "POST", "/users/nobody/unlock")[0] == 404
    assert (
        app.request("POST", "/api/v1/admin/users/alice/unlock", {"x": 1}, key=ADMIN_KEY).status
        == 400
    )  # takes no body


def test_tokens_add_list_show_status_assign(app: App) -> None:
    """Token lifecycle over the API; the seed is only ever in the add response's URI."""
    status, doc = _admin(
        app,
        "POST",
        "/tokens",
        {"user": "alice", "type": "hotp", "secret": SEED_B32, "serial": "H2"},
    )
    assert status == 201
    assert doc["otpauth_uri"].startswith("otpauth://hotp/")  # type: ignore[index]
    assert SEED_B32.rstrip("=") in doc["otpauth_uri"]  # type: ignore[index]
    status, doc = _admin(app, "POST", "/tokens", {"user": "alice"})
    assert status == 201 and doc["token"]["type"] == "totp"  # type: ignore[index]
    assert _admin(app, "POST", "/tokens", {"user": "alice", "serial": "H2"})[0] == 409
    assert _admin(app, "POST", "/tokens", {"user": "alice", "digits": 7})[0] == 400
    assert _admin(app, "POST", "/tokens", {"user": "alice", "type": "sms"})[0] == 400
    status, doc = _admin(app, "GET", "/tokens?user=alice")
    serials = {t["serial"] for t in doc["tokens"]}  # type: ignore[index]
    assert {"TOTP-alice", "H2"} <= serials and len(serials) == 3
    assert SEED_B32 not in str(doc)
    assert _admin(app, "GET", "/tokens/H2")[1]["counter"] == 0  # type: ignore[index]
    for verb, shown in (("disable", "disabled"), ("enable", "active"), ("revoke", "revoked")):
        assert _admin(app, "POST", f"/tokens/H2/{verb}")[0] == 200
        assert _admin(app, "GET", "/tokens/H2")[1]["status"] == shown  # type: ignore[index]
    assert _admin(app, "POST", "/tokens/H2/enable")[0] == 400  # revoked is final
    assert _admin(app, "POST", "/tokens/TOTP-alice/unassign")[0] == 200
    assert _admin(app, "GET", "/tokens/TOTP-alice")[1]["user"] is None  # type: ignore[index]
    assert _admin(app, "POST", "/tokens/TOTP-alice/assign", {"user": "hank"})[0] == 200
    assert _admin(app, "GET", "/tokens/TOTP-alice")[1]["user"] == "hank"  # type: ignore[index]
    assert _admin(app, "GET", "/tokens/none")[0] == 404


def test_resync_hotp(app: App) -> None:
    """Two consecutive codes far ahead re-align an HOTP token."""
    c1, c2 = hotp(SEED, 500, 6, Algorithm.SHA1), hotp(SEED, 501, 6, Algorithm.SHA1)
    status, doc = _admin(app, "POST", "/tokens/HOTP-hank/resync", {"otp1": c1, "otp2": c2})
    assert status == 200 and doc["counter"] == 502  # type: ignore[index]
    assert (
        _admin(app, "POST", "/tokens/HOTP-hank/resync", {"otp1": "000000", "otp2": "000000"})[0]
        == 400
    )
    assert app.otp_check("hank", hotp(SEED, 502, 6, Algorithm.SHA1)).json["result"] == "accept"


def test_pin_and_backup_codes(app: App) -> None:
    """PIN set/remove with policy; a backup code set works once over /otp/check."""
    assert _admin(app, "PUT", "/users/alice/pin", {"pin": "1234"})[0] == 400  # trivial
    assert _admin(app, "PUT", "/users/alice/pin", {"pin": "8264"})[0] == 200
    assert _admin(app, "GET", "/users/alice")[1]["has_pin"] is True  # type: ignore[index]
    assert _admin(app, "DELETE", "/users/alice/pin")[0] == 200
    status, doc = _admin(app, "POST", "/users/alice/backup-codes")
    assert status == 200
    codes = doc["codes"]  # type: ignore[index]
    assert len(codes) == app.config.otp.backup_codes.count
    assert app.otp_check("alice", codes[0]).json["result"] == "accept"
    assert app.otp_check("alice", codes[0]).json["result"] == "reject"


def test_audit_paging_and_actor(app: App) -> None:
    """Every admin change is audited with actor http:<key name>; pages link up."""
    for verb in ("disable", "enable", "disable", "enable"):
        _admin(app, "POST", f"/users/hank/{verb}")
    status, page = _admin(app, "GET", "/audit?user=hank&limit=2")
    assert status == 200
    events = page["events"]  # type: ignore[index]
    assert [e["action"] for e in events] == ["user.enable", "user.disable"]
    assert {e["actor"] for e in events} == {"http:ops"}
    before = page["next_before_id"]  # type: ignore[index]
    _, page2 = _admin(app, "GET", f"/audit?user=hank&limit=2&before_id={before}")
    assert [e["action"] for e in page2["events"]] == ["user.enable", "user.disable"]  # type: ignore[index]
    assert {e["id"] for e in events}.isdisjoint({e["id"] for e in page2["events"]})  # type: ignore[index]
    assert _admin(app, "GET", "/audit?since=abc")[0] == 400


def test_admin_api_without_adminops_is_503(tmp_path: object) -> None:
    """A daemon built without AdminOps answers the admin API 503, never 500."""
    from pathlib import Path

    from tests.rest.harness import start_app

    a = start_app(Path(str(tmp_path)), admin=None)
    try:
        r = a.request("GET", "/api/v1/admin/users", key=ADMIN_KEY)
        assert r.status == 503 and r.json["error"] == "unavailable"
    finally:
        a.close()


def test_key_rotation_keeps_seeds_usable(app: App) -> None:
    """POST /keys/rotate re-encrypts every seed; tokens keep working afterwards."""
    status, doc = _admin(app, "POST", "/keys/rotate")
    assert status == 200
    assert doc["action"] == "key.rotate" and doc["reencrypted"] == 2  # type: ignore[index]
    assert app.otp_check("hank", app.next_hotp("hank")).json == {"result": "accept"}
    events = _admin(app, "GET", "/audit?limit=5")[1]["events"]  # type: ignore[index]
    assert ("key.rotate", "http:ops") in {(e["action"], e["actor"]) for e in events}


def test_test_endpoint_shows_the_internal_reason_to_admins_only(app: App) -> None:
    """/admin/test runs the real decision and reveals the reason; validate keys get 403."""
    status, doc = _admin(
        app, "POST", "/test", {"user": "alice", "password": "nope", "otp": "123456"}
    )
    assert status == 200
    assert doc["result"] == "reject" and doc["reason"] == "bad_password"  # type: ignore[index]
    status, doc = _admin(
        app, "POST", "/test", {"user": "alice", "password": PASSWORD, "otp": app.totp_now()}
    )
    assert (doc["result"], doc["reason"]) == ("accept", "ok")  # type: ignore[index]
    r = app.request(
        "POST", "/api/v1/admin/test", {"user": "alice", "password": "x"}, key=VALIDATE_KEY
    )
    assert r.status == 403


# ---------------------------------------------------------------- status (authctl status)
PG_PASSWORD = "pg-pass-s3cret-9f2"
BIND_PASSWORD = "bind-pass-s3cret-7c1"


class _UnreachableStore:
    """A store whose ping fails with a message quoting its URL, password included, as
    a real driver's error may: the report must carry the type, never the message."""

    def ping(self) -> None:
        raise ConnectionError(f"cannot reach postgresql://authd:{PG_PASSWORD}@127.0.0.1:1/authd")


class _DirectoryServers:
    """The LDAP pool's view of its servers: one backed off."""

    def status(self) -> list[tuple[str, bool]]:
        return [("ldap://127.0.0.1:1", False)]


class _DownDirectory:
    """An LDAP first-factor backend whose service bind fails, quoting its password."""

    name = "corp"
    directory = _DirectoryServers()

    def ping(self) -> None:
        raise PermissionError(f"bind as cn=svc with {BIND_PASSWORD} refused")


def test_status_reports_the_store_row_to_admins_only(app: App) -> None:
    """GET /admin/status is `authctl status`'s JSON: 200, ok, a store row naming the
    scheme; a validate-only key gets 403 and no key 401; no key or path secret leaks."""
    r = app.request("GET", "/api/v1/admin/status", key=ADMIN_KEY)
    assert r.status == 200
    assert r.json == app.admin.status("test").to_json()
    assert r.json["ok"] is True
    store = [c for c in r.json["components"] if c["kind"] == "store"]
    assert store == [
        {"component": "store", "kind": "store", "state": "ok", "detail": "sqlite", "ok": True}
    ]
    local = [c for c in r.json["components"] if c["kind"] == "backend"]
    assert [(c["component"], c["state"]) for c in local] == [("local", "ok")]
    text = r.raw.decode()
    for secret in (ADMIN_KEY, VALIDATE_KEY, BOTH_KEY, str(app.tmp)):
        assert secret not in text
    forbidden = app.request("GET", "/api/v1/admin/status", key=VALIDATE_KEY)
    assert forbidden.status == 403 and forbidden.json["error"] == "forbidden"
    assert app.request("GET", "/api/v1/admin/status").status == 401
    assert _admin(app, "GET", "/status?verbose=1")[0] == 400  # takes no query


def test_status_is_200_with_ok_false_when_unreachable(tmp_path: object) -> None:
    """A report, not a health check: an unreachable store and directory give 200 with
    `"ok": false` and one row each (plus the backed-off server); neither the store
    URL's password nor the bind password reaches the body."""
    from dataclasses import replace
    from pathlib import Path

    from authd.admin import AdminOps
    from authd.config.model import LdapServer, PrimaryBackend, PrimaryConfig, Secret, StoreConfig
    from authd.crypto import Keyring
    from tests.rest.harness import make_config, start_app

    tmp = Path(str(tmp_path))
    config = make_config(tmp)
    ops_config = replace(
        config,
        store=StoreConfig(url=f"postgresql://authd:{PG_PASSWORD}@127.0.0.1:1/authd"),
        primary=PrimaryConfig(
            backends=(
                PrimaryBackend(
                    type="ldap",
                    name="corp",
                    servers=(LdapServer(url="ldap://127.0.0.1:1"),),
                    bind_dn="cn=svc",
                    bind_password=Secret(BIND_PASSWORD),
                ),
            )
        ),
    )
    ops = AdminOps(
        ops_config,
        _UnreachableStore(),  # type: ignore[arg-type]
        Keyring.load_or_create(config.keys.file),
        lambda: 0.0,
        backends=[_DownDirectory()],  # type: ignore[list-item]
    )
    a = start_app(tmp, config, admin=ops)
    try:
        r = a.request("GET", "/api/v1/admin/status", key=ADMIN_KEY)
        assert r.status == 200
        assert r.json["ok"] is False
        rows = [(c["component"], c["kind"], c["state"], c["ok"]) for c in r.json["components"]]
        assert rows == [
            ("store", "store", "error: ConnectionError", False),
            ("corp", "backend", "error: PermissionError", False),
            ("corp server", "server", "error: unreachable", False),
        ]
        assert r.json["components"][0]["detail"] == "postgresql"
        text = r.raw.decode()
        for secret in (PG_PASSWORD, BIND_PASSWORD, ADMIN_KEY):
            assert secret not in text
    finally:
        a.close()
