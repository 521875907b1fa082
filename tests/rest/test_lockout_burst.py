"""The lockout under a burst of parallel guesses over real HTTP (validate with the
password, otp/check without), through ThreadedEngine and SQLite: exactly max_attempts
guesses are evaluated, the rest and a right code sent after them are refused as locked."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, gatherResults

from authd.auth.interfaces import AuthRequest, Decision
from authd.config.model import LockoutConfig
from tests.rest.harness import PASSWORD, VALIDATE_KEY, App, make_config, start_app

MAX_ATTEMPTS = 3
GUESSES = 100
DEADLINE = 60.0


class Entered:
    """The engine's `authenticate`, counting the requests that reached it."""

    def __init__(self) -> None:
        self.inner: Callable[[AuthRequest], Deferred[Decision]] | None = None
        self.count = 0

    def __call__(self, req: AuthRequest) -> Deferred[Decision]:
        assert self.inner is not None
        self.count += 1
        return self.inner(req)


@pytest.fixture
def burst_app(tmp_path: Path) -> Iterator[tuple[App, Entered]]:
    """alice (password + TOTP); max_attempts 3, locked until an operator unlocks; room
    for the whole burst's connections from one address (an appliance's)."""
    config = make_config(tmp_path)
    lockout = LockoutConfig(max_attempts=MAX_ATTEMPTS, auto_unlock_after=None)
    http = replace(config.http, max_connections_per_source=GUESSES + 1)
    config = replace(config, otp=replace(config.otp, lockout=lockout), http=http)
    entered = Entered()
    app = start_app(tmp_path, config, authenticate=entered)
    entered.inner = app.engine.authenticate
    app.add_user("alice", token="totp")
    try:
        yield app, entered
    finally:
        app.close()


def _run_until(app: App, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not done():
        assert time.monotonic() < deadline, "the burst did not reach the engine in time"
        app.loop.reactor.iterate(0.005)


@pytest.mark.parametrize("path", ["validate", "otp/check"])
def test_http_burst_locks_after_exactly_max_attempts(
    burst_app: tuple[App, Entered], path: str
) -> None:
    """100 parallel wrong codes (with the password on validate, alone on otp/check),
    then the right code once they have all reached the engine: 3 are evaluated, the
    user is locked, 97 and the right code are refused as locked (counter and audit)."""
    app, entered = burst_app
    right = app.totp_now()
    wrong = "000000" if right != "000000" else "111111"

    def body(code: str) -> dict[str, Any]:
        if path == "validate":
            return {"user": "alice", "password": PASSWORD, "otp": code}
        return {"user": "alice", "otp": code}

    sent = [
        app.request_later("POST", f"/api/v1/{path}", body(wrong), key=VALIDATE_KEY)
        for _ in range(GUESSES)
    ]
    _run_until(app, lambda: entered.count == GUESSES)
    sent.append(app.request_later("POST", f"/api/v1/{path}", body(right), key=VALIDATE_KEY))
    answers = app.loop.run(gatherResults(sent), timeout=DEADLINE)
    assert [r.status for r in answers] == [200] * (GUESSES + 1)
    assert {r.json["result"] for r in answers} == {"reject"}
    user = app.store.get_user("alice")
    assert user is not None and user.failures == MAX_ATTEMPTS and user.locked_until is not None
    audited = app.store.query_audit(user="alice", limit=1000)
    reasons = Counter(e.reason for e in audited if e.action == "auth")
    assert reasons == {"bad_otp": MAX_ATTEMPTS, "locked": GUESSES + 1 - MAX_ATTEMPTS}
    token = app.store.get_token("TOTP-alice")
    assert token is not None and token.last_step == -1
