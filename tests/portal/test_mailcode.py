"""Log-in by a mailed one-time code for users without a password: the code goes to a
real SMTP server (aiosmtpd) through Twisted's SMTP client; the test reads it from the
message and signs in; wrong, expired and reused codes are refused."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import replace
from email import message_from_bytes
from pathlib import Path

import pytest

from authd.config.model import SmtpConfig
from authd.portal import mailcode
from tests.ctl.test_remind import Inbox, inbox  # noqa: F401 (fixture)
from tests.portal.harness import Browser, mount_portal, portal_config
from tests.rest.harness import App, start_app


@pytest.fixture
def mapp(tmp_path: Path, inbox: tuple[Inbox, int]) -> Iterator[App]:  # noqa: F811
    """The portal mailing through the inbox; mia (local, no password, an address)."""
    config = portal_config(tmp_path)
    smtp = SmtpConfig(host="127.0.0.1", port=inbox[1], security="none",
                      from_address="authd@example.com")
    app = start_app(tmp_path, replace(config, smtp=smtp))
    mount_portal(app)
    app.clock.advance(time.time() - app.clock.seconds())
    app.admin.add_user("test:setup", "mia", password=None)
    app.admin.set_user("test:setup", "mia", email="mia@example.org")
    try:
        yield app
    finally:
        app.close()
    assert app.clock.getDelayedCalls() == []


def _ask(app: App, user: str = "mia") -> Browser:
    b = Browser(app)
    b.get("login")
    answer = b.post("mail", {"user": user})
    assert answer.status == 200 and 'action="/selfservice/default/mailcode"' in b.text(answer)
    return b


def _mailed(app: App, box: Inbox, count: int = 1) -> str:
    """The code in the newest message, once `count` messages arrived (bounded wait)."""
    deadline = time.monotonic() + 10
    while len(box.messages) < count and time.monotonic() < deadline:
        app.loop.reactor.iterate(0.01)
    assert len(box.messages) == count, "no mail arrived"
    rcpt, raw = box.messages[-1]
    assert rcpt == ["mia@example.org"]
    text = message_from_bytes(raw).get_payload(decode=True).decode()
    found = re.search(r": ([A-Z2-9]{8})\s", text)
    assert found, text
    return found.group(1)


def test_mailed_code_signs_in_once(mapp: App, inbox: tuple[Inbox, int]) -> None:  # noqa: F811
    """The code from the mail signs mia in; the session cannot take it a second time."""
    b = _ask(mapp)
    code = _mailed(mapp, inbox[0])
    answer = b.post("mailcode", {"code": code.lower()})
    assert answer.status == 303
    assert "mia" in b.text(b.get("")) and 'name="password"' not in b.text(b.get(""))
    reused = b.post("mailcode", {"code": code})
    assert reused.status == 303 and reused.header("location") == "/selfservice/default/"
    rows = [e for e in mapp.store.query_audit(user="mia") if e.action == "auth"]
    assert [(e.actor, e.result) for e in rows] == [("portal:selfservice", "accept")]
    stored = "".join(str(r) for r in mapp.store.query_audit(user="mia"))
    assert code not in stored


def test_wrong_code_ends_the_attempt_and_counts_a_failure(
    mapp: App, inbox: tuple[Inbox, int],  # noqa: F811
) -> None:
    """One wrong answer ends that code: even the right one no longer works after it."""
    b = _ask(mapp)
    code = _mailed(mapp, inbox[0])
    wrong = b.post("mailcode", {"code": "AAAAAAAA" if code != "AAAAAAAA" else "BBBBBBBB"})
    assert wrong.status == 401 and "Sign-in failed" in b.text(wrong)
    assert b.post("mailcode", {"code": code}).status == 401  # session gone: sign in again
    assert mapp.store.get_user("mia").failures == 1


def test_expired_code_is_refused(mapp: App, inbox: tuple[Inbox, int]) -> None:  # noqa: F811
    """A code older than CODE_TTL no longer signs in (the clock is the portal's)."""
    b = _ask(mapp)
    code = _mailed(mapp, inbox[0])
    mapp.clock.advance(mailcode.CODE_TTL + 1)
    assert b.post("mailcode", {"code": code}).status == 401


def test_code_is_only_mailed_to_users_without_a_password(
    mapp: App, inbox: tuple[Inbox, int],  # noqa: F811
) -> None:
    """Unknown users and users with a password see the same page, and no mail goes out."""
    mapp.add_user("nora", token=None)
    mapp.admin.set_user("test:setup", "nora", email="nora@example.org")
    pages = {_ask(mapp, user).csrf != "" for user in ("nora", "ghost")}
    assert pages == {True}
    _ask(mapp)
    _mailed(mapp, inbox[0], count=1)  # only mia's


def test_mailed_code_needs_the_forms_csrf(mapp: App) -> None:
    """Asking for a code needs the log-in form's CSRF token."""
    b = Browser(mapp)
    b.get("login")
    assert b.post("mail", {"user": "mia", "csrf": "forged"}).status == 403


def test_sealed_code_is_a_salted_hash_that_expires() -> None:
    """The session row keeps no code; a malformed row fails closed."""
    sealed = mailcode.seal("ABCDEFGH", 1000.0)
    assert "ABCDEFGH" not in sealed and sealed != mailcode.seal("ABCDEFGH", 1000.0)
    assert mailcode.matches(sealed, "abcd-efgh", 1000.0 + mailcode.CODE_TTL)
    assert not mailcode.matches(sealed, "ABCDEFGH", 1000.0 + mailcode.CODE_TTL + 0.01)
    assert not mailcode.matches("garbage", "ABCDEFGH", 1000.0)
