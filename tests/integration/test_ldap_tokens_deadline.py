"""`token_storage: ldap` stays inside request_timeout: every LdapTokenStore call (reads,
the delete-old/add-new modify and its compare-and-set retries) runs under one directory
deadline, against a real slapd and hung sockets; past it the store fails closed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from authd.auth.interfaces import AttemptRecord, AuthRequest, DecisionWrite, Outcome, UseTotpStep
from authd.auth.ldap_primary import Directory, DirectoryEntry, LdapBackend
from authd.config.model import Config, PrimaryBackend, PrimaryConfig, StoreConfig
from authd.core.errors import StoreUnavailable
from authd.core.model import AuditEvent, Token, TokenType
from authd.core.otp import totp as totp_code
from authd.crypto import Keyring
from authd.decision.engine import Engine
from authd.storage.ldap_attrs import LdapTokenStore
from authd.storage.sql import SqlStore
from tests.fixtures.slapd import PASSWORDS, Slapd
from tests.integration.test_ldap_deadline import MARGIN, OPERATION, hung_servers, timed
from tests.integration.test_ldap_primary import make_config
from tests.integration.test_ldap_tokens import clear_tokens

pytestmark = pytest.mark.integration

SEED = bytes(range(1, 21))
REQUEST_TIMEOUT = 1.5
STEP = 59_000_000  # a TOTP step later than any the token has used


def totp(serial: str) -> Token:
    return Token(
        serial=serial, type=TokenType.TOTP, seed=SEED, user="alice", created_at=1_767_225_600.0
    )


def commit_for(serial: str, step: int) -> DecisionWrite:
    """The write phase of an accepted TOTP login of alice (what the engine commits)."""
    audit = AuditEvent(at=1.0, actor="radius:test", action="auth", result="accept", user="alice")
    lost = AttemptRecord(success=False, count_failure=True, audit=replace(audit, result="reject"))
    return DecisionWrite(
        user="alice",
        now=1.0,
        source="radius",
        client="test",
        max_attempts=5,
        lock_seconds=60.0,
        won=AttemptRecord(success=True, count_failure=False, audit=audit),
        use=UseTotpStep(serial, step, 0),
        lost=lost,
    )


class StoreFactory:
    """LdapTokenStores on one SQLite delegate, each over its own backend (so a server
    backed off by one test step does not leak into the next)."""

    def __init__(self, slapd: Slapd, keyring: Keyring, tmp_path: Path) -> None:
        self._slapd = slapd
        self._sql = SqlStore.open(f"sqlite:///{tmp_path / 'authd.db'}", keyring)
        self._keyring = keyring
        self.backends: list[LdapBackend] = []

    def config(self, *urls: str) -> PrimaryBackend:
        return make_config(
            self._slapd,
            *urls,
            token_attribute=self._slapd.token_attribute,
            request_timeout=REQUEST_TIMEOUT,
        )

    def store(self, *urls: str, directory: Directory | None = None) -> LdapTokenStore:
        backend = LdapBackend(self.config(*urls), directory=directory)
        self.backends.append(backend)
        return LdapTokenStore(self._sql, backend, self._keyring)

    def close(self) -> None:
        for b in self.backends:
            b.close()
        self._sql.close()


@pytest.fixture
def stores(slapd: Slapd, keyring: Keyring, tmp_path: Path) -> Iterator[StoreFactory]:
    clear_tokens(slapd)
    factory = StoreFactory(slapd, keyring, tmp_path)
    try:
        yield factory
    finally:
        factory.close()
        clear_tokens(slapd)


def test_token_read_with_hung_servers_fails_closed_within_request_timeout(
    stores: StoreFactory, slapd: Slapd
) -> None:
    """Three hung servers before the live one would cost 3 x the operation timeout; a
    token read ends with StoreUnavailable within request_timeout instead (the engine
    then fails closed), and the next read reaches the live server."""
    assert 3 * OPERATION > REQUEST_TIMEOUT + MARGIN  # what this test guards
    stores.store(slapd.url).add_token(totp("DL-READ"))
    with hung_servers(3) as hung:
        store = stores.store(*hung, slapd.url)

        def read() -> str:
            with pytest.raises(StoreUnavailable) as caught:
                store.get_token("DL-READ")
            return str(caught.value)

        message, elapsed = timed(read, 10.0)
        assert elapsed < REQUEST_TIMEOUT + MARGIN, elapsed
        assert "request_timeout" in message
        # The servers cut short are backed off: the next read is answered, and fast.
        token, elapsed = timed(lambda: store.get_token("DL-READ"), 10.0)
        assert token is not None and token.serial == "DL-READ"
        assert elapsed < REQUEST_TIMEOUT, elapsed


def test_commit_with_hung_servers_fails_closed_within_request_timeout(
    stores: StoreFactory, slapd: Slapd
) -> None:
    """A whole commit_decision (compare-and-set on the step, lock state, audit) is
    bounded by request_timeout; it fails with StoreUnavailable and nothing is written
    to the token, so the step is still unused afterwards."""
    live = stores.store(slapd.url)
    live.add_token(totp("DL-COMMIT"))
    with hung_servers(3) as hung:
        store = stores.store(*hung, slapd.url)

        def commit() -> None:
            with pytest.raises(StoreUnavailable):
                store.commit_decision(commit_for("DL-COMMIT", STEP))

        _, elapsed = timed(commit, 10.0)
        assert elapsed < REQUEST_TIMEOUT + MARGIN, elapsed
    token = live.get_token("DL-COMMIT")
    assert token is not None and token.last_step < STEP
    assert live.commit_decision(commit_for("DL-COMMIT", STEP)).won


def test_one_hung_server_then_the_live_one_works_as_before(
    stores: StoreFactory, slapd: Slapd
) -> None:
    """A hung first server costs its own operation timeout, then the live server
    answers within the deadline: reads and compare-and-set commits keep their meaning
    (a step is accepted once)."""
    stores.store(slapd.url).add_token(totp("DL-OK"))
    with hung_servers(1) as hung:
        store = stores.store(*hung, slapd.url)
        token, elapsed = timed(lambda: store.get_token("DL-OK"), 10.0)
        assert token is not None and token.user == "alice"
        assert OPERATION - 0.05 <= elapsed < REQUEST_TIMEOUT, elapsed
        first, elapsed = timed(lambda: store.commit_decision(commit_for("DL-OK", STEP)), 10.0)
        assert first.won and elapsed < REQUEST_TIMEOUT, elapsed
        again = store.commit_decision(commit_for("DL-OK", STEP))
        assert not again.won and again.lock is not None and again.lock.failures == 1
        user, tokens = store.get_user_with_tokens("alice")
        assert [t.serial for t in tokens] == ["DL-OK"]
        assert tokens[0].last_step == STEP


class SlowDirectory(Directory):
    """A real Directory whose every search also moves its deadline timer on by `cost`
    seconds: a slow but answering server, without the test sleeping."""

    def __init__(self, config: PrimaryBackend, cost: float) -> None:
        self.offset = 0.0
        self.searches = 0
        self._cost = cost
        super().__init__(config, timer=lambda: time.monotonic() + self.offset)

    def search(
        self,
        base: str,
        filter: str,  # noqa: A002 - the overridden method's name
        attributes: list[str],
        *,
        scope: str = "sub",
        size_limit: int = 0,
    ) -> list[DirectoryEntry]:
        found = super().search(base, filter, attributes, scope=scope, size_limit=size_limit)
        self.searches += 1
        self.offset += self._cost
        return found


def test_one_deadline_spans_all_operations_of_a_store_call(
    stores: StoreFactory, slapd: Slapd
) -> None:
    """Each search alone fits in request_timeout, but a failure count (find the user,
    read state, create it, re-read, modify) does not: the call is cut at the deadline
    as a whole, not per operation, and fails closed."""
    cost = 0.6
    assert cost < REQUEST_TIMEOUT < 4 * cost  # each step fits, the whole call does not
    slow = SlowDirectory(stores.config(slapd.url), cost)
    store = stores.store(slapd.url, directory=slow)
    with pytest.raises(StoreUnavailable):
        store.record_failure("alice", 1.0, 5, 60.0)
    assert slow.searches * cost >= REQUEST_TIMEOUT
    # Without the slowness the same call counts the failure.
    slow._cost = 0.0
    assert store.record_failure("alice", 1.0, 5, 60.0).failures == 1


def test_one_deadline_spans_a_whole_decision(
    stores: StoreFactory, slapd: Slapd, keyring: Keyring
) -> None:
    """First factor and tokens both in a slow directory: the token read, the bind and
    the write each fit in request_timeout, all of them together do not. The decision is
    cut at ONE deadline (it fails closed: the caller rejects), not at one per call, which
    let a request run two or three times request_timeout. Without the slowness the same
    request is accepted."""
    slow = SlowDirectory(stores.config(slapd.url), 0.0)
    store = stores.store(slapd.url, directory=slow)
    store.add_token(totp("DL-WHOLE"))
    config = Config(
        primary=PrimaryConfig(backends=(slow.config,)), store=StoreConfig(token_storage="ldap")
    )
    engine = Engine(config, store, [stores.backends[-1]], keyring.hash_key)
    now = 1_767_225_600.0 + 30 * 5

    def request(at: float) -> AuthRequest:
        return AuthRequest(
            user="alice",
            password=PASSWORDS["alice"] + totp_code(SEED, at),
            frontend="radius",
            client="nas",
            source="127.0.0.1",
        )

    # How many searches each part costs (no slowness yet): each part must fit alone.
    store.get_user_tokens_codes("alice")
    per_read = slow.searches
    cost = REQUEST_TIMEOUT / (per_read + 1)  # a read alone stays inside the deadline
    slow.searches, slow._cost = 0, cost
    with pytest.raises(StoreUnavailable):
        engine.decide(request(now), now)
    assert slow.offset <= REQUEST_TIMEOUT + cost  # cut at one deadline, not per call
    slow._cost = 0.0
    assert engine.decide(request(now + 30), now + 30).outcome is Outcome.ACCEPT
