"""A decision that fails because a dependency is down is still on record, and the HTTP
API tells it from a wrong code: tokens in a real slapd that is hung (SIGSTOP on this
test's own instance), and a real PostgreSQL store that refuses connections."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from twisted.logger import globalLogPublisher

from authd.auth.interfaces import AuthRequest
from authd.auth.ldap_primary import LdapBackend
from authd.batching.threaded import ThreadedEngine
from authd.config.model import PrimaryConfig, StoreConfig
from authd.core.model import Token, TokenType
from authd.crypto import Keyring
from authd.decision.engine import Engine
from authd.storage.ldap_attrs import LdapTokenStore
from tests.fixtures.slapd import PASSWORDS, start_slapd
from tests.integration.test_ldap_primary import make_config as ldap_config
from tests.rest.harness import PASSWORD, SEED, App, Response, make_config, start_app
from tests.world import decisions_for

pytestmark = pytest.mark.integration

UNAVAILABLE = {
    "error": "unavailable",
    "detail": "a store or directory is unavailable; try again later",
}


def _metric(app: App, name: str) -> float:
    return app.metrics.registry.get_sample_value(name) or 0.0


@contextlib.contextmanager
def _logged() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)


def _assert_outage(response: Response) -> None:
    assert (response.status, response.json) == (503, UNAVAILABLE)


def test_hung_directory_holding_the_tokens_is_audited_and_answered_503(tmp_path: Path) -> None:
    """token_storage: ldap and the only directory server hung: /otp/check and /validate
    answer 503 (not `200 reject`), and each failed decision leaves an audit row (reject,
    reason `unavailable`, the error's type, no code); after SIGCONT the unused code
    still works."""
    slapd = start_slapd(tmp_path / "slapd", log_stats=False)
    app: App | None = None
    try:
        directory = ldap_config(slapd, token_attribute=slapd.token_attribute, request_timeout=1.0)
        base = make_config(tmp_path)
        config = replace(
            base,
            primary=PrimaryConfig(backends=(directory,)),
            store=replace(base.store, token_storage="ldap"),
        )
        engines: list[ThreadedEngine] = []

        def authenticate(req: AuthRequest) -> Any:
            return engines[0].authenticate(req)

        app = start_app(tmp_path, config, authenticate=authenticate)
        keyring = Keyring.load_or_create(config.keys.file)
        backend = LdapBackend(directory)
        tokens = LdapTokenStore(app.store, backend, keyring)
        tokens.add_token(Token(serial="H-alice", type=TokenType.HOTP, seed=SEED, user="alice"))
        engine = Engine(config, tokens, [backend], keyring.hash_key, app.metrics)
        decisions = decisions_for(engine)
        engines.append(ThreadedEngine(decisions, app.loop.reactor, app.pool, app.metrics))
        assert app.otp_check("alice", app.next_hotp("alice")).json == {"result": "accept"}

        code = app.next_hotp("alice")
        os.kill(slapd.process.pid, signal.SIGSTOP)
        try:
            _assert_outage(app.otp_check("alice", code))
            _assert_outage(app.validate("alice", password=PASSWORDS["alice"], otp=code))
        finally:
            os.kill(slapd.process.pid, signal.SIGCONT)
        audit = app.store.query_audit(user="alice")
        assert [(e.result, e.reason, e.detail) for e in audit[:2]] == [
            ("reject", "unavailable", "StoreUnavailable")
        ] * 2
        assert {e.actor for e in audit[:2]} == {"http:vpn"}
        assert all(code not in repr(e) and PASSWORDS["alice"] not in repr(e) for e in audit)
        assert _metric(app, "authd_audit_write_failures_total") == 0
        backend.close()
    finally:
        if app is not None:
            app.close()
        slapd.stop()


def _refuse_connections(url: str, refuse: bool) -> None:
    """Close the database to new connections (and end the open ones), or reopen it."""
    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(not refuse).lower()}')
        if refuse:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


def test_store_down_answers_503_and_logs_and_counts_the_lost_audit_record(
    tmp_path: Path, postgres_db_url: str
) -> None:
    """With the PostgreSQL store refusing connections the decision cannot be made or
    audited: 503 with a JSON error, and the audit record goes to the log as one
    structured line (user, client, reason; no password, no code) and to
    authd_audit_write_failures_total. Once the store is back the code is unused."""
    config = replace(make_config(tmp_path), store=StoreConfig(url=postgres_db_url))
    app = start_app(tmp_path, config)
    try:
        app.add_user("alice", token="hotp")
        code = app.next_hotp("alice")
        _refuse_connections(postgres_db_url, True)
        try:
            with _logged() as events:
                _assert_outage(app.otp_check("alice", code))
                _assert_outage(app.validate("alice", password=PASSWORD, otp=code))
        finally:
            _refuse_connections(postgres_db_url, False)
        assert _metric(app, "authd_audit_write_failures_total") == 2
        lost = [e for e in events if e.get("log_format", "").startswith("audit record not written")]
        assert len(lost) == 2
        for e in lost:
            assert (e["user"], e["reason"], e["result"], e["actor"]) == (
                "alice",
                "unavailable",
                "reject",
                "http:vpn",
            )
            assert e["audit_error"] == "StoreUnavailable"
        text = "".join(repr(e) for e in events)
        assert code not in text and PASSWORD not in text
        assert app.otp_check("alice", code).json == {"result": "accept"}
    finally:
        app.close()
