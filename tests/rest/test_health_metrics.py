"""/healthz, /readyz and /metrics over HTTP."""

from __future__ import annotations

import time
from pathlib import Path

from twisted.internet.defer import Deferred, fail, succeed

from tests.rest.harness import ADMIN_KEY, PASSWORD, VALIDATE_KEY, App, make_config, start_app


def test_healthz_needs_no_key(app: App) -> None:
    """Liveness is public and says nothing but ok."""
    r = app.request("GET", "/healthz")
    assert (r.status, r.json) == (200, {"status": "ok"})


def test_readyz_details_only_for_admin_keys(app: App) -> None:
    """Real store and local backend answer: ready; only an admin key sees the checks."""
    r = app.request("GET", "/readyz")
    assert (r.status, r.json) == (200, {"status": "ready"})
    assert app.request("GET", "/readyz", key=VALIDATE_KEY).json == {"status": "ready"}
    r = app.request("GET", "/readyz", key=ADMIN_KEY)
    assert r.json == {"status": "ready", "checks": {"store": "ok", "local": "ok"}}


def _ready_app(tmp: Path, ready: object) -> App:
    return start_app(tmp, ready=ready)


def test_readyz_503_when_a_component_is_down(tmp_path: Path) -> None:
    """One failing component makes the node not ready; its error shows to admins only."""

    def ready() -> Deferred[dict[str, str]]:
        return succeed({"store": "ok", "ldap-main": "error: LDAPSocketOpenError"})

    app = _ready_app(tmp_path, ready)
    try:
        r = app.request("GET", "/readyz")
        assert (r.status, r.json) == (503, {"status": "not ready"})
        r = app.request("GET", "/readyz", key=ADMIN_KEY)
        assert r.status == 503
        assert r.json["checks"]["ldap-main"] == "error: LDAPSocketOpenError"
    finally:
        app.close()


def test_readyz_503_when_the_check_itself_fails(tmp_path: Path) -> None:
    """A readiness check that raises is 'not ready' (fail closed), never a 500."""

    def ready() -> Deferred[dict[str, str]]:
        return fail(RuntimeError("pool is gone"))

    app = _ready_app(tmp_path, ready)
    try:
        r = app.request("GET", "/readyz", key=ADMIN_KEY)
        assert r.status == 503
        assert r.json == {"status": "not ready", "checks": {"ready": "check failed: RuntimeError"}}
        assert b"pool is gone" not in r.raw
    finally:
        app.close()


def _sample(text: str, prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_move_with_requests(app: App) -> None:
    """Requests by front-end/result/reason, HTTP responses, latency, rate limits and
    build info appear in the Prometheus text, and move when requests are made."""
    before = app.request("GET", "/metrics")
    assert before.status == 200
    assert (before.header("content-type") or "").startswith("text/plain")
    text = before.raw.decode()
    assert "authd_build_info{" in text
    accept = 'authd_requests_total{frontend="http",reason="ok",result="accept"}'
    reject = 'authd_requests_total{frontend="http",reason="bad_otp",result="reject"}'
    assert _sample(text, accept) == 0
    app.validate("alice", password=PASSWORD, otp=app.totp_now())
    app.otp_check("hank", "000000")
    app.request("GET", "/api/v1/admin/users", key=VALIDATE_KEY)
    text = app.request("GET", "/metrics").raw.decode()
    assert _sample(text, accept) == 1
    assert _sample(text, reject) == 1
    assert _sample(text, 'authd_request_duration_seconds_count{frontend="http"}') == 2
    assert _sample(text, 'authd_http_responses_total{route="/api/v1/validate",status="200"}') == 1
    assert _sample(text, 'authd_http_responses_total{route="unmatched",status="403"}') == 1
    assert _sample(text, "authd_store_duration_seconds_count") == 2


def test_no_secret_in_metrics(app: App) -> None:
    """Neither the user's password nor an API key reaches the metrics text, and no label
    carries a user name (labels come from fixed sets)."""
    app.validate("alice", password=PASSWORD, otp=app.totp_now())
    text = app.request("GET", "/metrics").raw.decode()
    for secret in (PASSWORD, VALIDATE_KEY, ADMIN_KEY, "alice"):
        assert secret not in text


def test_readyz_hammered_with_a_hung_store_does_not_delay_decisions(tmp_path: Path) -> None:
    """While the store's ping hangs, 60 parallel /readyz calls cost one ping on a thread
    of its own: a decision still answers at once, and the health calls all get the one
    (fail-closed) result once the ping gives up."""
    import threading

    # 60 parallel calls are 60 connections from one address: allow them.
    app = start_app(tmp_path, make_config(tmp_path, max_connections_per_source=100))
    release = threading.Event()
    pings: list[int] = []

    def hung_ping() -> None:
        pings.append(1)
        release.wait(20)  # a hung dependency, freed by the test (never a timing wait)
        raise ConnectionError("store gone")

    app.add_user("alice")
    real_ping = app.store.ping
    app.store.ping = hung_ping  # type: ignore[method-assign]
    try:
        health = [app.request_later("GET", "/readyz") for _ in range(60)]
        started = time.monotonic()
        r = app.validate("alice", password=PASSWORD, otp=app.totp_now())
        assert r.json == {"result": "accept"}
        assert time.monotonic() - started < 2.0
        assert not release.is_set() and len(pings) == 1
        release.set()
        answers = [app.loop.run(d) for d in health]
        assert {a.status for a in answers} == {503}
        assert len(pings) == 1
    finally:
        release.set()
        app.store.ping = real_ping  # type: ignore[method-assign]
        app.close()
