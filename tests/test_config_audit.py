"""The settings change log: the daemon's start and every SIGHUP reload (accepted or
refused) leave an audit row with the config's digest and the changed key paths, and
never a value, secrets least of all."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

from twisted.python.threadpool import ThreadPool

from authd.admin import audit_json
from authd.config.errors import ConfigErrors
from authd.config.history import digest, flatten, reload_event
from authd.config.model import (
    ApiKey,
    Config,
    HttpConfig,
    LockoutConfig,
    OtpConfig,
    RadiusClient,
    RadiusConfig,
    Secret,
)
from authd.config_audit import ConfigAudit
from authd.service import AuthdService
from tests.fakes import FakeReactor, FakeStore

NOW = 1_767_225_600.0
OLD_SECRET, NEW_SECRET = "old-radius-s3cret", "new-radius-s3cret"


def _config(secret: str, max_attempts: int = 5, keys: int = 0) -> Config:
    client = RadiusClient(name="vpn", address="10.0.0.0/24", secret=Secret(secret))
    api_keys = tuple(
        ApiKey(name=f"k{i}", key_sha256="ab" * 32, scopes=("validate",)) for i in range(keys)
    )
    return replace(
        Config(),
        radius=RadiusConfig(clients=(client,)),
        otp=OtpConfig(lockout=LockoutConfig(max_attempts=max_attempts)),
        http=HttpConfig(api_keys=api_keys),
    )


def test_digest_ignores_secret_values_and_passwords_in_urls() -> None:
    """Two configs that differ only in a secret have one digest (the digest cannot be
    used to test guesses of a secret); any other setting changes it."""
    old, new = _config(OLD_SECRET), _config(NEW_SECRET)
    assert digest(flatten(old)) == digest(flatten(new))
    assert digest(flatten(old)) != digest(flatten(_config(OLD_SECRET, max_attempts=3)))
    with_pw = replace(Config(), store=replace(Config().store, url="postgresql://a:pw1@db/x"))
    other_pw = replace(Config(), store=replace(Config().store, url="postgresql://a:pw2@db/x"))
    assert digest(flatten(with_pw)) == digest(flatten(other_pw))


def test_reload_row_names_changed_paths_never_values() -> None:
    """Changed secret, changed number, an added list item: paths only."""
    event = reload_event(_config(OLD_SECRET), _config(NEW_SECRET, 3, keys=1), NOW, "authd@h")
    assert (event.action, event.result) == ("config.reload", "ok")
    changed = event.detail.split("changed=")[1].split(",")
    assert "radius.clients[0].secret" in changed and "otp.lockout.max_attempts" in changed
    assert "http.api_keys[0].name" in changed and "http.api_keys[0].key_sha256" in changed
    text = json.dumps(audit_json(event))
    for value in (OLD_SECRET, NEW_SECRET, "ab" * 32):
        assert value not in text


def _service(
    history: ConfigAudit, prepare: Callable[[Config], Callable[[], None]]
) -> AuthdService:
    return AuthdService(
        ThreadPool(minthreads=0, maxthreads=1, name="test-auth"),
        [],
        prepare,
        close_store=lambda: None,
        notify=lambda state: None,
        on_config=history.reloaded,
    )


def test_start_and_sighup_reloads_are_audited(pool: ThreadPool) -> None:
    """config.load at start; a reload that commits is `ok` with its changes; a refused
    one is `error` and keeps the old digest; the next good reload diffs from the config
    in force, not from the refused file."""
    reactor = FakeReactor(NOW)
    store = FakeStore()
    start = _config(OLD_SECRET)
    history = ConfigAudit(start, store.append_audit, reactor, pool, actor="authd@node1")
    history.startService()
    reactor.run_until(lambda: len(store.audit) == 1)

    def accept(config: Config) -> Callable[[], None]:
        return lambda: None

    service = _service(history, accept)
    assert service.reload(lambda: _config(NEW_SECRET)) is True
    reactor.run_until(lambda: len(store.audit) == 2)

    def bad() -> Config:
        raise ConfigErrors([])

    assert service.reload(bad) is False
    reactor.run_until(lambda: len(store.audit) == 3)
    assert service.reload(lambda: _config(NEW_SECRET, max_attempts=3)) is True
    reactor.run_until(lambda: len(store.audit) == 4)

    rows = [(e.action, e.result, e.actor) for e in store.audit]
    assert rows == [
        ("config.load", "ok", "authd@node1"),
        ("config.reload", "ok", "authd@node1"),
        ("config.reload", "error", "authd@node1"),
        ("config.reload", "ok", "authd@node1"),
    ]
    load, first, refused, last = store.audit
    assert f"sha256={digest(flatten(start))}" in load.detail
    assert first.detail.endswith("changed=radius.clients[0].secret")
    assert refused.reason == "refused" and "kept" in refused.detail
    assert last.detail.endswith("changed=otp.lockout.max_attempts")
    assert all(OLD_SECRET not in e.detail and NEW_SECRET not in e.detail for e in store.audit)
