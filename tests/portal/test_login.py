"""Portal log-in and sessions over real HTTP: password through the engine's chain, a
code when the user has a token, sessions in the store, CSRF on every form."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from authd.config.model import LockoutConfig, SelfServiceConfig
from tests.portal.harness import BASE, Browser, mount_portal, portal_config
from tests.ports import free_ports
from tests.rest.harness import PASSWORD, App, start_app

FAILED = "Sign-in failed"
LOCKOUT = LockoutConfig()


def test_pages_carry_the_security_headers(app: App) -> None:
    """Framing refused, no script allowed, nothing cached; the login CSRF cookie is
    HttpOnly and SameSite=Strict."""
    page = Browser(app).get("")
    assert page.status == 200
    assert "frame-ancestors 'none'" in (page.header("content-security-policy") or "")
    assert "script-src" not in (page.header("content-security-policy") or "")
    assert page.header("x-frame-options") == "DENY"
    assert page.header("cache-control") == "no-store"
    cookie = (page.header("set-cookie") or "").lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=" + BASE in cookie
    assert b"<script" not in page.raw


def test_user_without_token_signs_in_with_password_and_sees_the_banner(app: App) -> None:
    """No active token: the password alone opens the portal, which urges enrolling."""
    b = Browser(app)
    answer = b.log_in("nora", PASSWORD)
    assert answer.status == 303 and answer.header("location") == BASE
    home = b.get("")
    assert "Signed in as" in b.text(home) and "no second factor yet" in b.text(home)


def test_user_with_token_must_give_a_code(app: App) -> None:
    """Password first, then the token's code; only then is the user signed in."""
    b = Browser(app)
    first = b.log_in("alice", PASSWORD)
    assert first.status == 200 and 'name="code"' in b.text(first)
    assert "Signed in as" not in b.text(b.get(""))
    done = b.post("code", {"code": app.totp_now()})
    assert done.status == 303
    home = b.text(b.get(""))
    assert "Signed in as" in home and "TOTP-alice" in home and "no second factor" not in home


def test_failures_do_not_say_which_factor_failed(app: App) -> None:
    """Wrong password, unknown user and wrong code all get the same answer."""
    answers = []
    for user, password, code in (
        ("alice", "wrong", None),
        ("nobody", PASSWORD, None),
        ("alice", PASSWORD, "000000" if app.totp_now() != "000000" else "111111"),
    ):
        b = Browser(app)
        answer = b.log_in(user, password, code)
        answers.append((answer.status, FAILED in b.text(answer)))
    assert answers == [(401, True)] * 3


def test_log_in_failures_count_towards_the_lockout(app: App) -> None:
    """The portal's wrong codes are the engine's failures: the user gets locked, then
    even the right code is refused; every attempt is audited as the portal's."""
    wrong = "000000" if app.totp_now() != "000000" else "111111"
    for _ in range(LOCKOUT.max_attempts):
        Browser(app).log_in("alice", PASSWORD, wrong)
    user = app.store.get_user("alice")
    assert user is not None and user.failures >= LOCKOUT.max_attempts
    assert Browser(app).log_in("alice", PASSWORD).status == 401
    actors = {e.actor for e in app.store.query_audit(user="alice") if e.action == "auth"}
    assert actors == {"portal:selfservice"}


def test_log_in_without_or_with_a_wrong_csrf_token_is_refused(app: App) -> None:
    """The log-in form's token must match its cookie."""
    b = Browser(app)
    b.get("login")
    assert b.post("login", {"user": "nora", "password": PASSWORD}, csrf=False).status == 403
    assert b.post("login", {"user": "nora", "password": PASSWORD, "csrf": "x" * 43}).status == 403


def test_a_new_session_id_at_log_in(app: App) -> None:
    """The id after the code differs from the one after the password (no fixation)."""
    b = Browser(app)
    b.log_in("alice", PASSWORD)
    half = b.cookies["authd_portal"]
    b.post("code", {"code": app.totp_now()})
    assert b.cookies["authd_portal"] != half


def test_log_out_ends_the_session(app: App) -> None:
    """After sign-out the old cookie opens nothing."""
    b = Browser(app)
    b.log_in("nora", PASSWORD)
    b.get("")
    cookie = b.cookies["authd_portal"]
    assert b.post("logout", {}).status == 303
    b.cookies["authd_portal"] = cookie
    assert "Signed in as" not in b.text(b.get(""))


def test_idle_and_absolute_timeouts(app: App) -> None:
    """A session ends after session_idle without requests, and after session_max even
    when used all along (time moved by the injected clock)."""
    cfg = app.config.selfservice
    b = Browser(app)
    b.log_in("nora", PASSWORD)
    app.clock.advance(cfg.session_idle - 1)
    assert "Signed in as" in b.text(b.get(""))
    app.clock.advance(cfg.session_idle + 1)
    assert "Signed in as" not in b.text(b.get(""))
    b = Browser(app)
    b.log_in("nora", PASSWORD)
    for _ in range(int(cfg.session_max // cfg.session_idle) + 1):
        app.clock.advance(cfg.session_idle - 1)
        page = b.text(b.get(""))
    assert "Signed in as" not in page


def test_two_nodes_share_the_session_store(tmp_path: Path) -> None:
    """A session opened on one node is valid on another node on the same store."""
    config = portal_config(tmp_path, alias="default")
    one = start_app(tmp_path, config)
    two = start_app(tmp_path, config)
    try:
        for node in (one, two):
            mount_portal(node)
            node.clock.advance(time.time() - node.clock.seconds())
        one.add_user("nora", token=None)
        b = Browser(one)
        b.log_in("nora", PASSWORD)
        other = Browser(two, cookies=dict(b.cookies))
        assert "Signed in as" in other.text(other.get(""))
        assert other.post("logout", {}).status == 303
        assert "Signed in as" not in b.text(b.get(""))
    finally:
        one.close()
        two.close()


def test_an_unknown_alias_is_not_found(app: App) -> None:
    """Only /selfservice/<alias>/ is served."""
    assert Browser(app).get("/selfservice/other/").status == 404
    assert SelfServiceConfig().alias == "default"


def test_portal_only_on_the_named_listener(tmp_path: Path) -> None:
    """selfservice.listen: the portal answers on the named address, 404 on the other;
    the API stays on both."""
    ports = free_ports(2)
    listen = (f"127.0.0.1:{ports[0]}", f"127.0.0.2:{ports[1]}")
    config = portal_config(tmp_path, listen=(listen[1],))
    config = replace(config, http=replace(config.http, listen=listen))
    app = start_app(tmp_path, config)
    try:
        mount_portal(app)
        inside = Browser(app)
        assert inside.get(f"http://127.0.0.2:{ports[1]}{BASE}login").status == 200
        assert inside.get(f"http://127.0.0.1:{ports[0]}{BASE}login").status == 404
        assert inside.get(f"http://127.0.0.1:{ports[0]}/healthz").status == 200
    finally:
        app.close()
