"""Portal actions on the account itself: PIN, resync, recent sign-ins."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from authd.core.model import Algorithm
from authd.core.otp import totp
from tests.portal.harness import BASE, Browser, mount_portal, portal_config
from tests.rest.harness import PASSWORD, SEED, App, start_app


@pytest.fixture
def alice(app: App) -> Browser:
    """alice (TOTP) signed in with password and code."""
    b = Browser(app)
    assert b.log_in("alice", PASSWORD, app.totp_now()).status == 303
    b.get("")
    return b


def test_set_change_and_remove_the_pin(app: App, alice: Browser) -> None:
    """A PIN is set (then needed with the code over the API), changed, and removed."""
    answer = alice.post("pin", {"pin": "4711", "pin2": "4711"})
    assert (answer.status, answer.header("location")) == (303, BASE + "?notice=pin_set")
    user = app.store.get_user("alice")
    assert user is not None and user.pin_hash
    first = user.pin_hash
    alice.get("")
    assert alice.post("pin", {"pin": "8152", "pin2": "8152"}).status == 303
    user = app.store.get_user("alice")
    assert user is not None and user.pin_hash not in ("", None, first)
    alice.get("")
    answer = alice.post("pin", {"remove": "1"})
    assert (answer.status, answer.header("location")) == (303, BASE + "?notice=pin_removed")
    user = app.store.get_user("alice")
    assert user is not None and not user.pin_hash


@pytest.mark.parametrize(
    ("pin", "pin2", "why"),
    [
        ("1234", "1234", "too easy to guess"),
        ("0000", "0000", "too easy to guess"),
        ("12", "12", "at least"),
        ("4711", "4712", "differ"),
    ],
)
def test_trivial_short_or_mistyped_pins_are_refused(
    app: App, alice: Browser, pin: str, pin2: str, why: str
) -> None:
    """The PIN policy applies in the portal; the refusal never repeats the PIN."""
    answer = alice.post("pin", {"pin": pin, "pin2": pin2})
    assert answer.status == 400 and why in alice.text(answer)
    assert f">{pin}<" not in alice.text(answer) and f'"{pin}"' not in alice.text(answer)
    user = app.store.get_user("alice")
    assert user is not None and not user.pin_hash


def test_resync_realigns_a_drifted_token(app: App, alice: Browser) -> None:
    """Two consecutive codes far ahead of the server realign the token."""
    now = app.loop.reactor.seconds()
    codes = [totp(SEED, now + 600 + 30 * i, 30, 6, Algorithm.SHA1) for i in range(2)]
    wrong = alice.post("resync", {"serial": "TOTP-alice", "otp1": codes[1], "otp2": codes[0]})
    assert wrong.status == 400 and "consecutive" in alice.text(wrong)
    alice.get("")
    answer = alice.post("resync", {"serial": "TOTP-alice", "otp1": codes[0], "otp2": codes[1]})
    assert (answer.status, answer.header("location")) == (303, BASE + "?notice=resynced")
    token = app.store.get_token("TOTP-alice")
    # 20 steps ahead; where the 30 s boundary falls moves it by one.
    assert token is not None and token.drift in (20, 21, 22)


def test_resync_of_someone_elses_token_is_not_found(app: App, alice: Browser) -> None:
    """Only own tokens can be resynced."""
    app.add_user("bob", token="hotp")
    assert alice.post("resync", {"serial": "HOTP-bob", "otp1": "1", "otp2": "2"}).status == 404


def test_recent_sign_ins_show_the_users_own_attempts(app: App, alice: Browser) -> None:
    """The home page lists alice's own attempts (results and front-end), nobody else's."""
    app.add_user("bob", token=None)
    app.validate("bob", password="wrong")
    app.validate("alice", password="wrong", otp="000000")
    page = alice.text(alice.get(""))
    section = page[page.index('id="h-history"') :]
    assert "http:vpn" in section and "portal:selfservice" in section
    assert "reject" in section and "accept" in section and "bob" not in section


def test_sign_ins_behind_a_trusted_proxy_record_the_forwarded_source(tmp_path: Path) -> None:
    """With http.trusted_proxies, the audit (and the user's history) names the address
    in X-Forwarded-For, as the HTTP API does."""
    config = portal_config(tmp_path)
    config = replace(config, http=replace(config.http, trusted_proxies=("127.0.0.1/32",)))
    app = start_app(tmp_path, config)
    try:
        mount_portal(app)
        app.add_user("nora", token=None)
        b = Browser(app, headers={"x-forwarded-for": "203.0.113.9"})
        b.log_in("nora", PASSWORD)
        assert "203.0.113.9" in b.text(b.get(""))
        sources = {e.source for e in app.store.query_audit(user="nora") if e.action == "auth"}
        assert sources == {"203.0.113.9"}
    finally:
        app.close()
