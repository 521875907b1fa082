"""POST /api/v1/validate and /api/v1/otp/check over real HTTP on loopback."""

from __future__ import annotations

import base64
from pathlib import Path

from twisted.internet.defer import Deferred, succeed

from authd.auth.interfaces import AuthRequest, Decision, Outcome, Reason
from authd.config.model import RateLimit, RateLimitsConfig
from authd.decision.request import GENERIC_REJECT
from tests.rest.harness import (
    ADMIN_KEY,
    BOTH_KEY,
    PASSWORD,
    VALIDATE_KEY,
    App,
    make_config,
    start_app,
)


def test_validate_accepts_password_and_current_totp(app: App) -> None:
    """The right password with the current code is a 200 accept."""
    r = app.validate("alice", password=PASSWORD, otp=app.totp_now())
    assert r.status == 200
    assert r.json == {"result": "accept"}
    assert r.header("content-type") == "application/json"
    assert r.header("cache-control") == "no-store"


def test_otp_check_accepts_hotp_once_then_rejects_replay(app: App) -> None:
    """/otp/check needs no password; a code works once, its replay is rejected."""
    code = app.next_hotp("hank")
    assert app.otp_check("hank", code).json == {"result": "accept"}
    again = app.otp_check("hank", code)
    assert again.status == 200
    assert again.json["result"] == "reject"


def test_rejects_look_identical(app: App) -> None:
    """Unknown user, wrong password, wrong code and a locked user get the same body."""
    wrong = "000000" if app.totp_now() != "000000" else "111111"
    bodies = [
        app.validate("nobody", password=PASSWORD, otp=app.totp_now()).raw,
        app.validate("alice", password="wrong password", otp=app.totp_now()).raw,
        app.validate("alice", password=PASSWORD, otp=wrong).raw,
    ]
    for _ in range(app.config.otp.lockout.max_attempts):
        app.validate("hank", password=PASSWORD, otp="999999x")
    assert app.admin.show_user("t", "hank").locked
    bodies.append(app.validate("hank", password=PASSWORD, otp=app.next_hotp("hank")).raw)
    assert len(set(bodies)) == 1, bodies
    assert b"reject" in bodies[0]


def test_challenge_round_trip(app: App) -> None:
    """Password alone -> challenge with a base64 state; state + code -> accept; the state
    is single-use."""
    first = app.validate("alice", password=PASSWORD)
    assert first.status == 200
    assert first.json["result"] == "challenge"
    state = first.json["state"]
    assert len(base64.b64decode(state)) >= 16
    code = app.totp_now()
    second = app.validate("alice", state=state, otp=code)
    assert second.json == {"result": "accept"}
    third = app.validate("alice", state=state, otp=app.totp_now(1))
    assert third.json["result"] == "reject"


def test_challenge_wrong_password_is_a_plain_reject(app: App) -> None:
    """A wrong password in challenge mode never yields a state."""
    r = app.validate("alice", password="nope")
    assert r.json["result"] == "reject"
    assert "state" not in r.json


def test_state_must_be_base64_and_needs_otp(app: App) -> None:
    """A malformed state or a state without otp is a 400, not an engine call."""
    r = app.validate("alice", state="***", otp="123456")
    assert r.status == 400
    assert r.json["error"] == "bad_request"
    r = app.validate("alice", state=base64.b64encode(b"x" * 32).decode())
    assert r.status == 400
    assert "otp" in r.json["detail"]


def test_password_required_without_state(app: App) -> None:
    """/validate without password and without state is a 400."""
    r = app.validate("alice", otp="123456")
    assert r.status == 400
    assert "password" in r.json["detail"]


def test_missing_and_wrong_keys_are_401_with_bearer_challenge(app: App) -> None:
    """No key, an unknown key and a non-Bearer scheme all get 401 + WWW-Authenticate."""
    body = {"user": "alice", "otp": "123456"}
    for headers in (
        {},
        {"authorization": "Bearer not-a-key"},
        {"authorization": f"Basic {VALIDATE_KEY}"},
    ):
        r = app.request("POST", "/api/v1/otp/check", body, headers=headers)
        assert r.status == 401
        assert r.header("www-authenticate") == 'Bearer realm="authd"'
        assert r.json == {"error": "unauthorized", "detail": "a valid API key is required"}


def test_admin_only_key_cannot_validate(app: App) -> None:
    """Scopes are enforced both ways: an admin-only key gets 403 on /validate."""
    r = app.validate("alice", password=PASSWORD, otp=app.totp_now(), key=ADMIN_KEY)
    assert r.status == 403
    assert r.json["error"] == "forbidden"
    assert app.validate("alice", password=PASSWORD, otp=app.totp_now(), key=BOTH_KEY).status == 200


def test_strict_json(app: App) -> None:
    """Unknown fields, wrong types, bad JSON, duplicates, NaN, long strings: all 400."""
    cases = [
        {"user": "alice", "otp": "1", "extra": 1},
        {"user": 5, "otp": "1"},
        {"user": "alice", "otp": ["1"]},
        {"user": "", "otp": "1"},
        {"user": "a" * 300, "otp": "1"},
        {"user": "al\x00ice", "otp": "1"},
        {"otp": "1"},
        [],
    ]
    for body in cases:
        r = app.request("POST", "/api/v1/otp/check", body, key=VALIDATE_KEY)
        assert r.status == 400, body
        assert set(r.json) == {"error", "detail"}
    json_type = {"content-type": "application/json"}
    for raw in (
        b"{",
        b'{"user":"a","user":"b","otp":"1"}',
        b'{"user":"a","otp":NaN}',
        b"\xff\xfe",
        b"",
    ):
        r = app.request("POST", "/api/v1/otp/check", raw=raw, key=VALIDATE_KEY, headers=json_type)
        assert r.status == 400, raw
        assert r.json["error"] == "bad_request"


def test_errors_never_echo_secrets(app: App) -> None:
    """A 400 names the field but never quotes the password or the code."""
    secret = "Sup3r-Secret-Passw0rd"
    r = app.validate("alice", password=secret, otp=["424242"])
    assert r.status == 400
    assert secret.encode() not in r.raw and b"424242" not in r.raw


def test_content_type_must_be_json(app: App) -> None:
    """A form or text body is 415, never parsed."""
    r = app.request(
        "POST",
        "/api/v1/otp/check",
        raw=b"user=alice&otp=1",
        key=VALIDATE_KEY,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status == 415
    assert r.json["error"] == "unsupported_media_type"


def test_body_cap_is_413(app: App) -> None:
    """A body over http.max_body is refused with 413 and a JSON error."""
    big = b'{"user":"alice","otp":"' + b"1" * (app.config.http.max_body + 10) + b'"}'
    r = app.request(
        "POST",
        "/api/v1/otp/check",
        raw=big,
        key=VALIDATE_KEY,
        headers={"content-type": "application/json"},
    )
    assert r.status == 413
    assert r.json["error"] == "too_large"


def test_unknown_path_and_wrong_method(app: App) -> None:
    """404 for an unknown path, 405 with Allow for a known path and the wrong method."""
    r = app.request("GET", "/api/v1/nothing-here", key=VALIDATE_KEY)
    assert r.status == 404
    assert r.json["error"] == "not_found"
    r = app.request("GET", "/api/v1/validate", key=VALIDATE_KEY)
    assert r.status == 405
    assert r.header("allow") == "POST"


def test_source_address_and_client_are_recorded(app: App) -> None:
    """The engine sees frontend http, the key name as client and the peer address."""
    r = app.request(
        "POST",
        "/api/v1/validate",
        {"user": "alice", "password": PASSWORD, "otp": app.totp_now()},
        key=VALIDATE_KEY,
        headers={"x-forwarded-for": "203.0.113.9"},
    )
    assert r.json["result"] == "accept"
    seen = app.admin.show_user("t", "alice").last_success
    assert seen is not None
    # No trusted proxy configured: X-Forwarded-For is ignored.
    assert (seen.source, seen.client) == ("127.0.0.1", "vpn")


def test_errors_never_echo_what_was_sent(app: App) -> None:
    """A secret sent as a field name, a duplicate key, a query parameter or a user name
    in the path comes back in no 400/404 body; the body names what is allowed instead."""
    secret = "hunter2-Pasted-By-Mistake"
    json_type = {"content-type": "application/json"}
    answers = [
        app.request("POST", "/api/v1/validate", {"user": "alice", secret: "x"},
                    key=VALIDATE_KEY),
        app.request("POST", "/api/v1/otp/check", key=VALIDATE_KEY, headers=json_type,
                    raw=f'{{"user":"a","otp":"1","{secret}":1,"{secret}":2}}'.encode()),
        app.request("GET", f"/api/v1/admin/users?{secret}=1", key=ADMIN_KEY),
        app.request("GET", f"/api/v1/admin/users/{secret}", key=ADMIN_KEY),
    ]
    assert [r.status for r in answers] == [400, 400, 400, 404]
    for r in answers:
        assert secret.lower() not in r.raw.decode().lower(), r.raw
    assert "allowed: user, password, otp, state" in answers[0].json["detail"]


def test_directory_down_is_503_and_does_not_slow_the_user(tmp_path: Path) -> None:
    """Every directory unreachable (a BACKEND_DOWN decision): both endpoints answer
    503 `unavailable`, never `200 reject`, and an outage is no guess: it does not
    start the escalating failure delay."""
    limits = RateLimitsConfig(
        per_source=RateLimit(rate=100.0, burst=100),
        per_user=RateLimit(rate=100.0, burst=100),
        failure_delay=2.0,
        failure_delay_max=8.0,
    )

    def directory_down(req: AuthRequest) -> Deferred[Decision]:
        return succeed(Decision(Outcome.REJECT, Reason.BACKEND_DOWN, req.user, GENERIC_REJECT))

    app = start_app(tmp_path, make_config(tmp_path, limits=limits), authenticate=directory_down)
    try:
        for _ in range(3):
            for r in (
                app.validate("alice", password=PASSWORD, otp="123456"),
                app.otp_check("alice", "123456"),
            ):
                assert (r.status, r.json["error"]) == (503, "unavailable")
    finally:
        app.close()
