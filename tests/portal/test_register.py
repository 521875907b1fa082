"""Registering an imported hardware token in the portal: serial plus a current code,
then the token authenticates over RADIUS; every refusal reads the same."""

from __future__ import annotations

import base64
import secrets
import time

from authd.core import otp
from authd.token_import.csv_rows import parse_csv
from authd.token_import.load import load_tokens
from tests.portal.harness import Browser
from tests.portal.test_actions import ACCEPT, REJECT, nora, radius_answer  # noqa: F401
from tests.rest.harness import PASSWORD, App

SEED = secrets.token_bytes(20)


def _import(app: App) -> None:
    """The operator imports two unassigned tokens from CSV (`authctl token import`)."""
    b32 = base64.b32encode(SEED).decode().rstrip("=")
    text = f"serial,secret,type\nHW-1,{b32},totp\nHW-2,{SEED.hex()},hotp\n"
    load_tokens(app.store, parse_csv(text, app.clock.seconds()))


def test_registered_token_authenticates_over_radius(app: App, nora: Browser) -> None:  # noqa: F811
    """A current code claims the imported token; it then works as nora's second factor
    (with a later code: the registering one is used up)."""
    _import(app)
    now = time.time()
    answer = nora.post("register", {"serial": "HW-1", "code": otp.totp(SEED, now)})
    assert answer.status == 303 and answer.header("location").endswith("?notice=registered")
    assert app.store.get_token("HW-1").user == "nora"
    assert radius_answer(app, "nora", PASSWORD + otp.totp(SEED, now)) == REJECT  # replay
    assert radius_answer(app, "nora", PASSWORD + otp.totp(SEED, now + 30)) == ACCEPT
    rows = [e for e in app.store.query_audit(user="nora") if e.action == "token.register"]
    assert [(e.actor, e.source, e.result) for e in rows] == [
        ("selfservice:nora", "127.0.0.1", "ok")]


def test_refusals_read_the_same_and_claim_nothing(app: App, nora: Browser) -> None:  # noqa: F811
    """Wrong code, unknown serial and someone else's token: one message, status 400."""
    _import(app)
    app.admin.assign_token("test:setup", "HW-2", "alice")
    texts = set()
    for serial, code in (("HW-1", "000000" if otp.totp(SEED, time.time()) != "000000"
                          else "111111"),
                         ("NOPE", otp.totp(SEED, time.time())),
                         ("HW-2", otp.hotp(SEED, 0))):
        answer = nora.post("register", {"serial": serial, "code": code})
        assert answer.status == 400
        texts.add(nora.text(answer).split('role="alert"', 1)[-1][:200])
    assert len(texts) == 1 and "No unassigned token" in texts.pop()
    assert app.store.get_token("HW-1").user is None
    assert app.store.get_token("HW-2").user == "alice"
    assert nora.post("register", {"serial": "HW-1", "code": "1", "csrf": "x"}).status == 403
