"""Portal actions over real HTTP: enrolling a pending token (ignored by every decision
until confirmed), backup codes, revocation, and each refusal (action off, user not
allowed, wrong code, CSRF, expiry)."""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import time
from dataclasses import replace
from pathlib import Path

import pytest

from authd.config.model import LockoutConfig, SelfServiceGroups
from authd.core.model import Algorithm, TokenStatus
from authd.core.otp import hotp, totp
from authd.portal.resource import MAX_PENDING
from tests.fixtures.radius import SECRET, access_request
from tests.portal.harness import BASE, Browser, start_portal
from tests.rest.harness import PASSWORD, App, start_radius

ACCEPT, REJECT = 2, 3  # RADIUS codes (RFC 2865)


def _secret(b: Browser, page_text: str) -> bytes:
    found = re.search(r'<code class="secret" id="secret">([A-Z2-7]+)</code>', page_text)
    assert found, "no secret on the enroll page"
    text = found.group(1)
    return base64.b32decode(text + "=" * (-len(text) % 8))


def _enroll(b: Browser, kind: str = "totp") -> tuple[str, bytes, str]:
    """Start an enrollment; (serial, seed, page text)."""
    answer = b.post("enroll", {"type": kind})
    assert answer.status == 303, answer.status
    location = answer.header("location") or ""
    assert location.startswith(BASE + "enroll/")
    page = b.get(location)
    assert page.status == 200 and page.header("cache-control") == "no-store"
    text = b.text(page)
    return location.rsplit("/", 1)[1], _secret(b, text), text


def _code(seed: bytes, offset_steps: int = 0) -> str:
    return totp(seed, time.time() + 30 * offset_steps, 30, 6, Algorithm.SHA1)


def _wrong(right: str) -> str:
    return "000000" if right != "000000" else "111111"


@pytest.fixture
def nora(app: App) -> Browser:
    """nora (no token yet) signed in."""
    b = Browser(app)
    assert b.log_in("nora", PASSWORD).status == 303
    b.get("")
    return b


def radius_answer(app: App, user: str, password: str) -> int:
    """The RADIUS code of one Access-Request through the app's own engine."""
    radius = start_radius(app)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.bind(("127.0.0.1", 0))
        udp.setblocking(False)
        data, _ = access_request(user, password, SECRET)
        udp.sendto(data, ("127.0.0.1", radius.bound_ports()[0][1]))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            app.loop.reactor.iterate(0.002)
            with contextlib.suppress(BlockingIOError):
                return udp.recv(4096)[0]
        raise AssertionError("no RADIUS reply")
    finally:
        udp.close()
        app.loop.run(radius.stopService())


def test_enroll_page_shows_qr_secret_and_link(nora: Browser) -> None:
    """The QR code is inline SVG, the secret is text, the link is an otpauth:// URI."""
    serial, seed, text = _enroll(nora)
    assert "<svg" in text and "otpauth://totp/" in text and len(seed) >= 16
    assert serial in text


def test_pending_token_is_ignored_then_confirmed_token_works_over_radius(
    app: App, nora: Browser
) -> None:
    """Before confirmation the new token's code opens nothing (RADIUS and HTTP); a
    correct code activates it, and the next code is accepted over RADIUS."""
    serial, seed, _ = _enroll(nora)
    assert radius_answer(app, "nora", PASSWORD + _code(seed)) == REJECT
    validated = app.validate("nora", password=PASSWORD, otp=_code(seed))
    assert validated.json["result"] == "reject"
    token = app.store.get_token(serial)
    assert token is not None and token.status is TokenStatus.PENDING
    done = nora.post(f"enroll/{serial}", {"code": _code(seed)})
    assert (done.status, done.header("location")) == (303, BASE + "?notice=enrolled")
    token = app.store.get_token(serial)
    assert token is not None and token.status is TokenStatus.ACTIVE
    assert radius_answer(app, "nora", PASSWORD + _code(seed, 1)) == ACCEPT
    home = nora.text(nora.get(""))
    assert "no second factor yet" not in home


def test_hotp_enrollment_is_confirmed_by_its_first_code(app: App, nora: Browser) -> None:
    """An HOTP token is confirmed with counter 0's code and then expects counter 1."""
    serial, seed, text = _enroll(nora, "hotp")
    assert "otpauth://hotp/" in text
    assert nora.post(f"enroll/{serial}", {"code": hotp(seed, 0)}).status == 303
    assert radius_answer(app, "nora", PASSWORD + hotp(seed, 1)) == ACCEPT


def test_wrong_confirmation_code_keeps_the_token_pending_and_locks_nobody(
    app: App, nora: Browser
) -> None:
    """A wrong code is refused, the token stays pending, the user's failures stay 0."""
    serial, seed, _ = _enroll(nora)
    for _ in range(LockoutConfig().max_attempts + 1):
        answer = nora.post(f"enroll/{serial}", {"code": _wrong(_code(seed))})
        assert answer.status == 400 and "not right" in nora.text(answer)
    token = app.store.get_token(serial)
    assert token is not None and token.status is TokenStatus.PENDING
    user = app.store.get_user("nora")
    assert user is not None and user.failures == 0
    assert Browser(app).log_in("nora", PASSWORD).status == 303


def test_pending_token_expires(app: App, nora: Browser) -> None:
    """After pending_ttl the enrollment cannot be confirmed and is no longer listed."""
    serial, seed, _ = _enroll(nora)
    app.clock.advance(app.config.selfservice.pending_ttl + 1)
    answer = nora.post(f"enroll/{serial}", {"code": _code(seed)})
    assert (answer.status, answer.header("location")) == (303, BASE + "?notice=expired")
    assert serial not in nora.text(nora.get(""))
    token = app.store.get_token(serial)
    assert token is not None and token.status is TokenStatus.PENDING


def test_another_users_pending_token_is_not_found(app: App, nora: Browser) -> None:
    """A serial of someone else's enrollment shows nothing."""
    serial, _, _ = _enroll(nora)
    alice = Browser(app)
    alice.log_in("alice", PASSWORD, app.totp_now())
    assert alice.get(f"enroll/{serial}").status == 404


def test_backup_codes_shown_once_work_once_and_replace_the_old_set(
    app: App, nora: Browser
) -> None:
    """A new set is shown (with a download) and not cached; one code signs in after the
    password; a newer set kills the older one."""
    serial, seed, _ = _enroll(nora)
    nora.post(f"enroll/{serial}", {"code": _code(seed)})
    page = nora.post("backup_codes", {})
    assert page.status == 200 and page.header("cache-control") == "no-store"
    codes = re.findall(r"<li><code>([^<]+)</code></li>", nora.text(page))
    assert len(codes) == app.config.otp.backup_codes.count
    assert 'download="backup-codes.txt"' in nora.text(page)
    assert f"You have {len(codes)} unused" in nora.text(nora.get(""))
    nora.post("logout", {})
    again = Browser(app)
    assert again.log_in("nora", PASSWORD, codes[0]).status == 303
    assert Browser(app).log_in("nora", PASSWORD, codes[0]).status == 401  # used up
    again.get("")
    newer = again.post("backup_codes", {})
    assert newer.status == 200
    assert Browser(app).log_in("nora", PASSWORD, codes[1]).status == 401  # old set died


def test_revoke_own_token_but_not_someone_elses(app: App) -> None:
    """Revoking one's own token works; another user's serial is not found."""
    alice = Browser(app)
    alice.log_in("alice", PASSWORD, app.totp_now())
    alice.get("")
    app.add_user("bob", token="hotp")
    assert alice.post("revoke", {"serial": "HOTP-bob"}).status == 404
    assert app.store.get_token("HOTP-bob").status is TokenStatus.ACTIVE  # type: ignore[union-attr]
    answer = alice.post("revoke", {"serial": "TOTP-alice"})
    assert (answer.status, answer.header("location")) == (303, BASE + "?notice=revoked")
    assert app.store.get_token("TOTP-alice").status is TokenStatus.REVOKED  # type: ignore[union-attr]


def test_actions_post_without_or_with_a_wrong_csrf_token_are_refused(nora: Browser) -> None:
    """Every form needs the session's CSRF token."""
    for path, fields in (("enroll", {"type": "totp"}), ("backup_codes", {}), ("logout", {})):
        assert nora.post(path, fields, csrf=False).status == 403
        assert nora.post(path, {**fields, "csrf": "forged"}).status == 403


def test_actions_need_a_session(app: App) -> None:
    """Without a session an action answers with the sign-in page."""
    b = Browser(app)
    b.get("login")
    answer = b.post("backup_codes", {})
    assert answer.status == 401 and 'name="password"' in b.text(answer)


def test_action_switched_off_is_neither_shown_nor_served(tmp_path: Path) -> None:
    """With an action off the page offers no form for it and its path answers 404."""
    app = start_portal(tmp_path, actions=("backup_codes",))
    try:
        app.add_user("nora", token=None)
        b = Browser(app)
        b.log_in("nora", PASSWORD)
        home = b.text(b.get(""))
        assert 'id="h-enroll"' not in home and 'name="type"' not in home
        assert 'name="new_password"' not in home and 'name="email"' not in home
        assert "Backup codes" in home and "no second factor yet" in home
        assert b.post("enroll", {"type": "totp"}).status == 404
        assert b.post("revoke", {"serial": "x"}).status == 404
        for path in ("register", "password", "profile"):
            assert b.post(path, {"serial": "x", "email": "x@y.z"}).status == 404
    finally:
        app.close()


def test_user_outside_selfservice_groups_sees_the_operators_message(
    tmp_path: Path,
) -> None:
    """A user the groups leave out gets the message instead of the form, and 403."""
    app = start_portal(
        tmp_path,
        groups=SelfServiceGroups(allow=("staff",)),
        denied_message="Ask the IT desk in room 4.",
    )
    try:
        app.add_user("nora", token=None)
        b = Browser(app)
        b.log_in("nora", PASSWORD)
        home = b.text(b.get(""))
        assert "Ask the IT desk in room 4." in home and 'name="type"' not in home
        refused = b.post("enroll", {"type": "totp"})
        assert refused.status == 403 and "Ask the IT desk in room 4." in b.text(refused)
    finally:
        app.close()


def test_token_type_not_offered_is_refused(app: App, nora: Browser) -> None:
    """Only the configured token types can be enrolled."""
    assert nora.post("enroll", {"type": "sms"}).status == 400


def test_enroll_page_without_qr_shows_the_operators_note(tmp_path: Path) -> None:
    """show_qr off: secret and link only; enroll_message appears on the page."""
    app = start_portal(tmp_path, show_qr=False, enroll_message="Use the FreeOTP app.")
    try:
        app.add_user("nora", token=None)
        b = Browser(app)
        b.log_in("nora", PASSWORD)
        b.get("")
        _, seed, text = _enroll(b)
        assert "<svg" not in text and "otpauth://totp/" in text and len(seed) >= 16
        assert "Use the FreeOTP app." in text
    finally:
        app.close()


def test_replacing_a_token_keeps_the_old_one_until_the_new_one_is_verified(
    app: App,
) -> None:
    """Replace: the old token works while the new one is pending, and is revoked once
    the new one is confirmed; a wrong code changes nothing."""
    alice = Browser(app)
    alice.log_in("alice", PASSWORD, app.totp_now())
    alice.get("")
    answer = alice.post("enroll", {"type": "totp", "replaces": "TOTP-alice"})
    location = answer.header("location") or ""
    assert answer.status == 303 and location.endswith("?replaces=TOTP-alice")
    page = alice.get(location)
    text = alice.text(page)
    serial = location.split("/enroll/", 1)[1].split("?", 1)[0]
    seed = _secret(alice, text)
    assert "replaces TOTP-alice" in text
    wrong = alice.post(f"enroll/{serial}", {"code": _wrong(_code(seed)), "replaces": "TOTP-alice"})
    assert wrong.status == 400
    assert app.store.get_token("TOTP-alice").status is TokenStatus.ACTIVE  # type: ignore[union-attr]
    done = alice.post(f"enroll/{serial}", {"code": _code(seed), "replaces": "TOTP-alice"})
    assert (done.status, done.header("location")) == (303, BASE + "?notice=replaced")
    assert app.store.get_token("TOTP-alice").status is TokenStatus.REVOKED  # type: ignore[union-attr]
    assert app.store.get_token(serial).status is TokenStatus.ACTIVE  # type: ignore[union-attr]


def test_replacing_someone_elses_token_is_not_found(app: App, nora: Browser) -> None:
    """Only an own active token can be replaced."""
    assert nora.post("enroll", {"type": "totp", "replaces": "TOTP-alice"}).status == 404


def test_unconfirmed_enrollments_are_bounded_and_expired_ones_revoked(
    app: App, nora: Browser
) -> None:
    """At most MAX_PENDING enrollments wait at once; once they expire they are revoked
    (audited) and the user may start again."""
    serials = [_enroll(nora)[0] for _ in range(MAX_PENDING)]
    nora.get("")
    refused = nora.post("enroll", {"type": "totp"})
    assert refused.status == 429 and "Finish your other enrollments" in nora.text(refused)
    app.clock.advance(app.config.selfservice.pending_ttl + 1)
    assert nora.post("enroll", {"type": "totp"}).status == 303
    for serial in serials:
        assert app.store.get_token(serial).status is TokenStatus.REVOKED  # type: ignore[union-attr]
    expired = [e for e in app.store.query_audit(user="nora") if e.action == "token.expire"]
    assert {e.detail for e in expired} == set(serials)


def test_a_reload_applies_new_portal_settings(app: App, nora: Browser) -> None:
    """SIGHUP (HttpService.reload) swaps the portal's settings with the rest: an action
    switched off is gone at once; the session survives."""
    assert nora.post("enroll", {"type": "totp"}).status == 303
    portal = replace(app.config.selfservice, actions=("backup_codes",))
    app.service.reload(replace(app.config, selfservice=portal))
    home = nora.text(nora.get(""))
    assert "Signed in as" in home and 'id="h-enroll"' not in home
    assert nora.post("enroll", {"type": "totp"}).status == 404


def test_portal_actions_are_audited_with_the_user_and_their_address(
    app: App, nora: Browser
) -> None:
    """Every change names the user as actor and the address they came from."""
    serial, seed, _ = _enroll(nora)
    nora.post(f"enroll/{serial}", {"code": _code(seed)})
    rows = [e for e in app.store.query_audit(user="nora") if e.action.startswith("token.")]
    assert {e.action for e in rows} == {"token.add", "token.confirm"}
    assert {(e.actor, e.source) for e in rows} == {("selfservice:nora", "127.0.0.1")}
