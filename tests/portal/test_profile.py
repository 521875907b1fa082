"""Portal actions on the user's record: password (local users only) and profile details,
each audited with the user as actor, each refusal over real HTTP."""

from __future__ import annotations

from pathlib import Path

from authd.storage.schema import users
from authd.storage.sessions import STAGE_IN, SqlSessions
from tests.portal.harness import Browser, start_portal
from tests.portal.test_actions import nora  # noqa: F401 (fixture)
from tests.rest.harness import PASSWORD, App

NEW = "a brand new passphrase"


def _audit(app: App, action: str) -> list[tuple[str, str, str]]:
    return [(e.actor, e.source, e.result) for e in app.store.query_audit(user="nora")
            if e.action == action]


def test_password_change_needs_the_current_one_and_then_works(app: App, nora: Browser) -> None:  # noqa: F811
    """A wrong current password changes nothing; the right one sets the new password,
    which then signs in while the old one no longer does."""
    home = nora.text(nora.get(""))
    assert 'name="new_password"' in home and 'name="password"' in home
    wrong = nora.post("password", {"password": "guess", "new_password": NEW,
                                   "new_password2": NEW})
    assert wrong.status == 400 and "current password is not right" in nora.text(wrong)
    differ = nora.post("password", {"password": PASSWORD, "new_password": NEW,
                                    "new_password2": NEW + "x"})
    assert differ.status == 400
    done = nora.post("password", {"password": PASSWORD, "new_password": NEW,
                                  "new_password2": NEW})
    assert done.status == 303 and done.header("location").endswith("?notice=password_set")
    assert Browser(app).log_in("nora", PASSWORD).status == 401
    assert Browser(app).log_in("nora", NEW).status == 303
    assert _audit(app, "user.passwd") == [("selfservice:nora", "127.0.0.1", "ok")]


def test_password_refused_for_a_user_whose_password_lives_elsewhere(app: App) -> None:
    """A user not kept locally gets no password form and a 403 for the action."""
    app.admin.add_user("test:setup", "dora", password=PASSWORD)
    with app.store.transaction() as conn:
        conn.execute(users.update().where(users.c.name == "dora").values(source="ldap"))
    b = _signed_in(app, "dora")
    home = b.text(b.get(""))
    assert 'name="new_password"' not in home
    refused = b.post("password", {"new_password": NEW, "new_password2": NEW})
    assert refused.status == 403
    assert app.store.get_user("dora").password_hash is not None  # untouched


def _signed_in(app: App, user: str) -> Browser:
    """A browser holding a live session for `user`, made in the store directly (the
    test chain has no directory backend to sign them in)."""
    sessions = SqlSessions(app.store.transaction, 900, 28800)
    session = sessions.create(user, STAGE_IN, app.clock.seconds())
    return Browser(app, cookies={"authd_portal": session.id}, csrf=session.csrf)


def test_a_user_without_a_password_sets_one(app: App) -> None:
    """No current password to prove: the form asks only for the new one."""
    app.admin.add_user("test:setup", "pia", password=None)
    b = _signed_in(app, "pia")
    home = b.text(b.get(""))
    assert 'name="new_password"' in home and 'name="password"' not in home
    assert b.post("password", {"new_password": NEW, "new_password2": NEW}).status == 303
    assert Browser(app).log_in("pia", NEW).status == 303


def test_profile_details_are_saved_and_audited_without_values(
    app: App, nora: Browser,  # noqa: F811
) -> None:
    """E-mail, phone and names land in the store; the trail names fields, not values."""
    fields = {"email": "nora@example.org", "phone": "+49 30 1234", "first_name": "Nora",
              "last_name": "Grün"}
    answer = nora.post("profile", fields)
    assert answer.status == 303 and answer.header("location").endswith("?notice=profile_set")
    user = app.store.get_user("nora")
    assert (user.email, user.phone, user.first_name, user.last_name) == tuple(fields.values())
    assert 'value="nora@example.org"' in nora.text(nora.get(""))
    rows = [e for e in app.store.query_audit(user="nora") if e.action == "user.set"]
    assert [(e.actor, e.source) for e in rows] == [("selfservice:nora", "127.0.0.1")]
    assert "nora@example.org" not in rows[0].detail


def test_profile_refuses_a_bad_address_and_overlong_or_control_text(
    app: App, nora: Browser,  # noqa: F811
) -> None:
    """Nothing is stored from a form with a bad field."""
    for bad in ({"email": "not an address"}, {"first_name": "x" * 500},
                {"last_name": "a\nb"}):
        assert nora.post("profile", bad).status == 400
    assert app.store.get_user("nora").first_name in (None, "")


def test_profile_and_password_need_csrf(nora: Browser) -> None:  # noqa: F811
    """Forged forms are refused and change nothing."""
    for path in ("profile", "password"):
        assert nora.post(path, {"csrf": "forged", "email": "x@y.z",
                                "new_password": NEW, "new_password2": NEW}).status == 403
        assert nora.post(path, {"email": "x@y.z"}, csrf=False).status == 403


def test_login_name_is_off_by_default(nora: Browser) -> None:  # noqa: F811
    """Not listed in the default actions: no form, and the path answers 404."""
    assert 'name="new_name"' not in nora.text(nora.get(""))
    assert nora.post("login_name", {"new_name": "nora2"}).status == 404


def test_login_name_moves_the_account_and_its_token(tmp_path: Path) -> None:
    """Switched on, alice becomes alicia: her token follows (RADIUS accepts the new
    name), the old name is gone, a taken or bad name is refused."""
    app = start_portal(tmp_path, actions=("login_name", "enroll"))
    try:
        app.add_user("alice")
        app.add_user("nora", token=None)
        b = Browser(app)
        assert b.log_in("alice", PASSWORD, app.totp_now()).status == 303
        assert 'name="new_name"' in b.text(b.get(""))
        assert b.post("login_name", {"new_name": "nora"}).status == 409
        assert b.post("login_name", {"new_name": "a b"}).status == 400
        answer = b.post("login_name", {"new_name": "alicia"})
        assert answer.status == 303 and answer.header("location").endswith("?notice=renamed")
        assert app.store.get_user("alice") is None
        assert [t.serial for t in app.store.list_tokens("alicia")] == ["TOTP-alice"]
        assert "alicia" in b.text(b.get(""))  # the session went along
        rows = [e for e in app.store.query_audit(user="alice") if e.action == "user.rename"]
        assert {(e.actor, e.result, e.detail) for e in rows} == {
            ("selfservice:alice", "error", "nora"), ("selfservice:alice", "error", "a b"),
            ("selfservice:alice", "ok", "alicia")}
    finally:
        app.close()
