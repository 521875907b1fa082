"""Rate limits and the escalating failure delay, over HTTP, with an injected clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from authd.config.model import RateLimit, RateLimitsConfig
from tests.rest.harness import ADMIN_KEY, PASSWORD, VALIDATE_KEY, App, make_config, start_app


def _app(tmp: Path, limits: RateLimitsConfig, **http: object) -> App:
    a = start_app(tmp, make_config(tmp, limits=limits, **http))
    a.add_user("alice", token="totp")
    a.add_user("hank", token="hotp")
    return a


@pytest.fixture
def tight(tmp_path: Path) -> Iterator[App]:
    """Per source: 3 at once, then 1/s. Per user: 2 at once, then 1 per 2 s."""
    a = _app(
        tmp_path,
        RateLimitsConfig(
            per_source=RateLimit(rate=1.0, burst=3),
            per_user=RateLimit(rate=0.5, burst=2),
            failure_delay=0.0,
            failure_delay_max=0.0,
        ),
    )
    yield a
    a.close()
    assert a.clock.getDelayedCalls() == []


@pytest.fixture
def slowdown(tmp_path: Path) -> Iterator[App]:
    """Failure delay 2 s doubling to at most 8 s; buckets wide open."""
    a = _app(
        tmp_path,
        RateLimitsConfig(
            per_source=RateLimit(rate=100.0, burst=100),
            per_user=RateLimit(rate=100.0, burst=100),
            failure_delay=2.0,
            failure_delay_max=8.0,
        ),
    )
    yield a
    a.close()


def _limited(app: App, limit: str) -> float:
    return (
        app.metrics.registry.get_sample_value("authd_rate_limited_total", {"limit": limit}) or 0.0
    )


def _audit_count(app: App, user: str) -> int:
    return len(app.admin.audit("t", user=user, limit=1000).events)


def test_per_source_bucket_answers_429_and_refills(tight: App) -> None:
    """The 4th request within a second is 429 with Retry-After; a second later the bucket
    has a token again. Health endpoints are never limited."""
    for _ in range(3):
        assert tight.request("GET", "/api/v1/openapi.json").status == 200
    r = tight.request("GET", "/api/v1/openapi.json")
    assert r.status == 429
    assert r.header("retry-after") == "1"
    assert r.json["error"] == "rate_limited"
    assert _limited(tight, "source") == 1
    assert tight.request("GET", "/healthz").status == 200
    tight.clock.advance(1.0)
    assert tight.request("GET", "/api/v1/openapi.json").status == 200
    assert tight.request("GET", "/api/v1/openapi.json").status == 429


def test_per_source_limit_counts_unauthenticated_calls(tight: App) -> None:
    """Key guessing spends the source's tokens too (limit before authentication)."""
    for _ in range(3):
        r = tight.request("POST", "/api/v1/otp/check", {"user": "x", "otp": "1"}, key="guess")
        assert r.status == 401
    r = tight.request("POST", "/api/v1/otp/check", {"user": "x", "otp": "1"}, key=VALIDATE_KEY)
    assert r.status == 429


def test_per_user_bucket_limits_without_touching_the_store(tight: App) -> None:
    """A user's 3rd attempt in a burst is 429 and leaves no audit record; another user
    is unaffected; 2 s later the user may try again."""
    tight.clock.advance(10)  # a fresh source bucket is full anyway; keep it simple
    assert tight.otp_check("hank", "000000").json["result"] == "reject"
    assert tight.otp_check("hank", "000001").json["result"] == "reject"
    before = _audit_count(tight, "hank")
    r = tight.otp_check("hank", tight.next_hotp("hank"))
    assert r.status == 429
    assert r.header("retry-after") == "2"
    assert _audit_count(tight, "hank") == before
    assert _limited(tight, "user") == 1
    tight.clock.advance(2.0)
    assert tight.otp_check("hank", tight.next_hotp("hank")).json == {"result": "accept"}


def test_spellings_of_a_name_share_the_user_s_limits(tight: App) -> None:
    """`hank`, `HANK` and ` Hank ` count against one per-user bucket: variants of a name
    (one user to a directory) cannot multiply the guesses the limit allows."""
    tight.clock.advance(10)
    assert tight.otp_check("hank", "000000").json["result"] == "reject"
    assert tight.otp_check("HANK", "000001").json["result"] == "reject"
    assert tight.otp_check(" Hank ", "000002").status == 429


def test_escalating_delay_then_operator_sees_and_lifts_it(slowdown: App) -> None:
    """Each failure doubles the wait (2, 4, 8, 8 s); the admin API shows the throttle;
    unlock lifts it; nothing here is a sleep."""
    app = slowdown
    waits = []
    for _ in range(4):
        assert app.otp_check("hank", "000000").json["result"] == "reject"
        r = app.otp_check("hank", "000000")
        assert r.status == 429
        waits.append(int(r.header("retry-after") or 0))
        app.clock.advance(waits[-1])
    assert waits == [2, 4, 8, 8]
    assert _limited(app, "user_failures") == 4
    # The store's lockout (5 failures) is not reached by 4 failures: only slowed down.
    shown = app.request("GET", "/api/v1/admin/users/hank", key=ADMIN_KEY).json
    assert shown["locked"] is False
    # The count is remembered (the next failure waits longer), but no wait is left now.
    assert shown["http_throttle"] == {"failures": 4, "retry_after": 0.0}
    app.otp_check("hank", "000000")
    shown = app.request("GET", "/api/v1/admin/users/hank", key=ADMIN_KEY).json
    assert shown["http_throttle"] == {"failures": 5, "retry_after": 8.0}
    assert shown["locked"] is True  # the 5th failure reached the store's lockout
    assert app.request("POST", "/api/v1/admin/users/hank/unlock", key=ADMIN_KEY).status == 200
    shown = app.request("GET", "/api/v1/admin/users/hank", key=ADMIN_KEY).json
    assert shown["http_throttle"] is None and shown["locked"] is False
    assert app.otp_check("hank", app.next_hotp("hank")).json == {"result": "accept"}


def test_a_replay_is_slowed_down_but_not_locked_out(slowdown: App) -> None:
    """A used code sent again is a reject the failure delay counts (429 next), but not a
    guess for the lockout: five replays leave the user unlocked."""
    app = slowdown
    code = app.next_hotp("hank")
    assert app.otp_check("hank", code).json == {"result": "accept"}
    for _ in range(5):
        assert app.otp_check("hank", code).json["result"] == "reject"
        r = app.otp_check("hank", code)
        assert r.status == 429
        app.clock.advance(int(r.header("retry-after") or 0))
    shown = app.request("GET", "/api/v1/admin/users/hank", key=ADMIN_KEY).json
    assert shown["locked"] is False and shown["http_throttle"]["failures"] == 5
    assert app.otp_check("hank", app.next_hotp("hank")).json == {"result": "accept"}


def test_accept_clears_the_delay(slowdown: App) -> None:
    """After a failure and its wait, a success starts the user from zero."""
    app = slowdown
    app.validate("alice", password="wrong", otp="000000")
    app.clock.advance(2)
    assert app.validate("alice", password=PASSWORD, otp=app.totp_now()).json["result"] == "accept"
    app.validate("alice", password="wrong", otp="000000")
    r = app.validate("alice", password="wrong", otp="000000")
    assert r.header("retry-after") == "2"  # back to the first step, not 4


def test_trusted_proxy_forwarded_for(tmp_path: Path) -> None:
    """With 127.0.0.1 as trusted proxy, the X-Forwarded-For client is the source, and the
    per-source limit applies to it rather than to the proxy."""
    app = _app(
        tmp_path,
        RateLimitsConfig(
            per_source=RateLimit(rate=0.0, burst=1),
            per_user=RateLimit(rate=100.0, burst=100),
            failure_delay=0.0,
            failure_delay_max=0.0,
        ),
        trusted_proxies=("127.0.0.0/8",),
    )
    try:

        def check(client: str) -> int:
            return app.request(
                "POST",
                "/api/v1/validate",
                {"user": "alice", "password": PASSWORD, "otp": app.totp_now()},
                key=VALIDATE_KEY,
                headers={"x-forwarded-for": f"198.51.100.7, {client}"},
            ).status

        assert check("203.0.113.9") == 200
        seen = app.admin.show_user("t", "alice").last_success
        assert seen is not None and seen.source == "203.0.113.9"
        assert check("203.0.113.9") == 429  # that client's single token is spent
        assert check("203.0.113.10") == 200  # another client behind the same proxy
    finally:
        app.close()


def test_guesser_elsewhere_does_not_shut_out_the_user(tmp_path: Path) -> None:
    """One wrong password a second from an attacker's address fills only that address's
    bucket and delay for the user: the attacker gets 429s, while the user's correct
    attempts from their usual address still pass, every time (default limits)."""
    app = _app(tmp_path, RateLimitsConfig(), trusted_proxies=("127.0.0.0/8",))
    try:

        def attempt(client: str, password: str, otp: str) -> tuple[int, str | None]:
            r = app.request(
                "POST",
                "/api/v1/validate",
                {"user": "hank", "password": password, "otp": otp},
                key=VALIDATE_KEY,
                headers={"x-forwarded-for": client},
            )
            return r.status, r.json.get("result")

        attacker, user = "203.0.113.9", "198.51.100.7"
        seen = []
        for second in range(30):
            seen.append(attempt(attacker, f"guess-{second}", "000000")[0])
            if second % 10 == 9:
                assert attempt(user, PASSWORD, app.next_hotp("hank")) == (200, "accept")
            app.clock.advance(1.0)
        assert seen.count(429) > 20, seen  # the guesser is slowed down
        assert 200 in seen
    finally:
        app.close()
