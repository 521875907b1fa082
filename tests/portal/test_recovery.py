"""Restore access over real HTTP: each kind of request proved with what remains and
queued; failures generic; approval of a lost token lets the user in once to enroll
anew; a normal sign-in drops the user's open requests."""

from __future__ import annotations

from dataclasses import replace
from email import message_from_bytes
from pathlib import Path

import pytest
from twisted.internet.task import Clock, deferLater

from authd.admin import AdminOps
from authd.auth.interfaces import AuthRequest, Outcome
from authd.config.model import SmtpConfig
from authd.core.errors import Conflict
from authd.core.model import TokenStatus, User
from authd.crypto import Keyring
from authd.storage.recovery import SqlIssues
from tests.ctl.test_remind import Inbox, inbox  # noqa: F401 (the SMTP sink fixture)
from tests.portal.harness import Browser, mount_portal, portal_config
from tests.rest.harness import PASSWORD, SEED_B32, App, start_app

OPERATOR = "authctl:op"


def _ask(app: App, kind: str, user: str, password: str = "", code: str = "") -> tuple[
    Browser, int, str
]:
    b = Browser(app)
    form = b.get("recover")
    assert form.status == 200 and 'name="kind"' in b.text(form)
    answer = b.post("recover", {"kind": kind, "user": user, "password": password,
                                "code": code})
    return b, answer.status, b.text(answer)


def _issues(app: App) -> list[tuple[str, str, str]]:
    return [(i.user, i.kind, i.status) for i in app.admin.list_issues(OPERATOR)]


def test_login_page_offers_restore_access(app: App) -> None:
    """The sign-in page links to the restore-access form."""
    b = Browser(app)
    assert 'href="/selfservice/default/recover"' in b.text(b.get("login"))


def test_lost_token_is_proved_with_the_password(app: App) -> None:
    """Lost token: the right password queues a request, audited with the source."""
    _, status, text = _ask(app, "token", "alice", password=PASSWORD)
    assert status == 202 and "request is queued" in text
    assert _issues(app) == [("alice", "token", "open")]
    opened = [e for e in app.admin.audit(OPERATOR, "alice").events if e.action == "issue.open"]
    assert len(opened) == 1 and opened[0].actor == "selfservice:alice"
    assert opened[0].source == "127.0.0.1" and PASSWORD not in repr(opened[0])


def test_forgotten_password_is_proved_with_a_code_or_a_backup_code(app: App) -> None:
    """Forgotten password: a current code, or a backup code, queues a request."""
    _, status, _ = _ask(app, "password", "alice", code=app.totp_now())
    assert status == 202
    app.add_user("bob", token=None)
    codes = app.admin.generate_backup_codes("test:setup", "bob").codes
    app.admin.add_token("test:setup", "bob", "hotp")
    _, status, _ = _ask(app, "password", "bob", code=codes[0])
    assert status == 202
    assert _issues(app) == [("alice", "password", "open"), ("bob", "password", "open")]


def test_lost_mail_needs_password_and_code(app: App) -> None:
    """Lost mail address: password and code together; the password alone is not enough."""
    _, status, _ = _ask(app, "mail", "alice", password=PASSWORD)
    assert status == 400 and _issues(app) == []
    _, status, _ = _ask(app, "mail", "alice", password=PASSWORD, code=app.totp_now())
    assert status == 202 and _issues(app) == [("alice", "mail", "open")]


def test_failed_proofs_say_nothing_and_queue_nothing(app: App) -> None:
    """Wrong password, unknown user, a user with no token, a wrong code: one answer."""
    wrong = "000000" if app.totp_now() != "000000" else "111111"
    answers = {
        (status, text.count("Sign-in failed"))
        for _, status, text in (
            _ask(app, "token", "alice", password="wrong"),
            _ask(app, "token", "nobody", password=PASSWORD),
            _ask(app, "token", "nora", password=PASSWORD),
            _ask(app, "password", "alice", code=wrong),
        )
    }
    assert answers == {(401, 1)} and _issues(app) == []


def test_the_form_needs_its_csrf_token(app: App) -> None:
    """A post without the form's token is refused and queues nothing."""
    b = Browser(app)
    b.get("recover")
    answer = b.post("recover", {"kind": "token", "user": "alice", "password": PASSWORD,
                                "csrf": "forged"})
    assert answer.status == 403 and _issues(app) == []


def test_a_normal_sign_in_drops_the_open_request(app: App) -> None:
    """The real user signing in with both factors closes the request as superseded, so
    an operator cannot approve a request someone else made."""
    _ask(app, "token", "alice", password=PASSWORD)
    assert Browser(app).log_in("alice", PASSWORD, app.totp_now()).status == 303
    assert _issues(app) == [("alice", "token", "superseded")]
    (issue,) = app.admin.list_issues(OPERATOR)
    refused = app.admin.list_issues(OPERATOR, "open")
    assert refused == [] and issue.decided_by == "sign-in"


def test_approved_lost_token_lets_the_user_in_once_to_enroll(app: App) -> None:
    """Approval disables the tokens; the password alone then opens the portal once
    (the grant is used); the next password-only sign-in is refused."""
    _ask(app, "token", "alice", password=PASSWORD)
    (issue,) = app.admin.list_issues(OPERATOR)
    approved = app.admin.approve_issue(OPERATOR, issue.id)
    assert approved.status == "approved" and approved.grant_until is not None
    assert [t.status for t in app.store.list_tokens("alice")] == [TokenStatus.DISABLED]
    b = Browser(app)
    assert b.log_in("alice", PASSWORD).status == 303
    home = b.text(b.get(""))
    assert "Signed in as" in home and "no second factor yet" in home
    assert _issues(app) == [("alice", "token", "used")]
    again = Browser(app).log_in("alice", PASSWORD)
    assert again.status == 401 and "Sign-in failed" in Browser(app).text(again)


def test_disabled_tokens_without_a_grant_keep_the_user_out(app: App) -> None:
    """An operator disabled the user's tokens: the password alone does not open the
    portal (it would let the user enroll past that decision)."""
    (token,) = app.store.list_tokens("alice")
    app.admin.disable_token(OPERATOR, token.serial)
    assert Browser(app).log_in("alice", PASSWORD).status == 401


def test_a_grant_expires(app: App) -> None:
    """The one-time grant ends `selfservice.recovery_grant_ttl` after approval."""
    clock = Clock()
    clock.advance(app.loop.reactor.seconds())
    ops = AdminOps(app.config, app.store, Keyring.load_or_create(app.config.keys.file),
                   clock.seconds,
                   issues=SqlIssues(app.store.transaction))
    issue = ops.open_issue("selfservice:alice", "alice", "token")
    ops.approve_issue(OPERATOR, issue.id)
    clock.advance(app.config.selfservice.recovery_grant_ttl)
    assert ops.take_grant("selfservice:alice", "alice") is False
    assert ops.show_issue(OPERATOR, issue.id).status == "approved"


def test_rejected_request_changes_nothing(app: App) -> None:
    """A rejected lost-token request leaves the tokens as they were; it cannot be
    decided twice."""
    _ask(app, "token", "alice", password=PASSWORD)
    (issue,) = app.admin.list_issues(OPERATOR)
    assert app.admin.reject_issue(OPERATOR, issue.id).status == "rejected"
    assert [t.status for t in app.store.list_tokens("alice")] == [TokenStatus.ACTIVE]
    actions = [e.action for e in app.admin.audit(OPERATOR, "alice").events]
    assert "issue.reject" in actions


def test_a_sign_in_elsewhere_settles_the_request_before_approval(app: App) -> None:
    """The real user accepted over another front-end (here the HTTP API's check) after
    asking: the operator finds the request superseded and cannot approve it."""
    _ask(app, "token", "alice", password=PASSWORD)
    (issue,) = app.admin.list_issues(OPERATOR, "open")
    decision = app.loop.run(app.engine.authenticate(AuthRequest(
        user="alice", password=PASSWORD + app.totp_now(), frontend="http", client="vpn",
        source="198.51.100.4")))
    assert decision.outcome is Outcome.ACCEPT
    with pytest.raises(Conflict):
        app.admin.approve_issue(OPERATOR, issue.id)
    assert _issues(app) == [("alice", "token", "superseded")]
    assert [t.status for t in app.store.list_tokens("alice")] == [TokenStatus.ACTIVE]


def test_a_request_mails_the_help_desk(
    tmp_path: Path, inbox: tuple[Inbox, int]  # noqa: F811
) -> None:
    """selfservice.recovery_notify gets a notice naming user, kind and request, sent
    off the request (a real SMTP server receives it); no password in it."""
    handler, port = inbox
    config = portal_config(tmp_path, recovery_notify="helpdesk@example.com")
    config = replace(config, smtp=SmtpConfig(host="127.0.0.1", port=port, security="none",
                                             from_address="authd@example.com"))
    a = start_app(tmp_path, config)
    try:
        mount_portal(a)
        a.add_user("alice", token="totp")
        _, status, _ = _ask(a, "token", "alice", password=PASSWORD)
        assert status == 202
        for _ in range(200):  # delivery is asynchronous: at most 10 s
            if handler.messages:
                break
            a.loop.run(deferLater(a.loop.reactor, 0.05, lambda: None))
        assert [to for to, _ in handler.messages] == [["helpdesk@example.com"]]
        body = message_from_bytes(handler.messages[0][1]).get_payload()
        assert "user alice lost their token" in body and PASSWORD not in body
    finally:
        a.close()


def test_a_second_proof_is_not_a_sign_in(app: App) -> None:
    """Proving another request (here with a code) leaves the first one open: only a
    normal sign-in supersedes."""
    _ask(app, "token", "alice", password=PASSWORD)
    _, status, _ = _ask(app, "password", "alice", code=app.totp_now())
    assert status == 202
    assert _issues(app) == [("alice", "token", "open"), ("alice", "password", "open")]


def test_a_directory_user_cannot_ask_for_a_password(app: App) -> None:
    """A forgotten password is for local users: a directory user, proved by a code, is
    told to ask the help desk and nothing is queued."""
    app.store.add_user(User(name="dave", source="ldap"))
    app.admin.add_token("test:setup", "dave", "totp", secret_b32=SEED_B32)
    _, status, text = _ask(app, "password", "dave", code=app.totp_now())
    assert status == 400 and "organisation's directory" in text and _issues(app) == []
