"""`token_storage: ldap` against a real slapd: the lock is part of the directory
compare-and-set, so parallel guesses stop at max_attempts and a right code written after
the lock is refused, as with the SQL store."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest
from twisted.python.threadpool import ThreadPool

from authd.auth.interfaces import (
    AttemptRecord,
    AuthRequest,
    Decision,
    DecisionCommit,
    DecisionWrite,
    Outcome,
    Reason,
    UseBackupCode,
    UseTotpStep,
)
from authd.auth.ldap_primary import LdapBackend
from authd.batching.threaded import ThreadedEngine
from authd.config.model import Config, LockoutConfig, OtpConfig, PrimaryConfig, StoreConfig
from authd.core.model import AuditEvent, Token, TokenType
from authd.crypto import Keyring
from authd.decision.engine import Engine
from authd.metrics import Metrics
from authd.storage.ldap_attrs import STATE_EMPTY, STATE_PREFIX, LdapTokenStore
from authd.storage.sql import SqlStore
from tests.fakes import FakeReactor
from tests.fixtures.slapd import PASSWORDS, Slapd
from tests.integration.test_ldap_primary import make_config
from tests.integration.test_ldap_tokens import SEED, _code, clear_tokens
from tests.world import decisions_for

pytestmark = pytest.mark.integration

NOW = 1_767_225_607.0
MAX_ATTEMPTS = 3
GUESSES = 40
DEADLINE = 60.0


@pytest.fixture
def directory_store(
    slapd: Slapd, keyring: Keyring, tmp_path: Path
) -> Iterator[tuple[LdapTokenStore, LdapBackend]]:
    """alice, known to the directory, with TOTP token L-T in her entry."""
    clear_tokens(slapd)
    cfg = make_config(slapd, token_attribute=slapd.token_attribute)
    backend = LdapBackend(cfg)
    store = LdapTokenStore(
        SqlStore.open(f"sqlite:///{tmp_path / 'l.db'}", keyring), backend, keyring
    )
    store.ensure_user("alice", cfg.name, NOW)
    store.add_token(Token(serial="L-T", type=TokenType.TOTP, seed=SEED, user="alice"))
    try:
        yield store, backend
    finally:
        store.close()
        backend.close()
        clear_tokens(slapd)


def _record(result: str, reason: str, failure: bool = False) -> AttemptRecord:
    event = AuditEvent(NOW, "radius:nas", "auth", result, "alice", "nas", "127.0.0.1", reason)
    return AttemptRecord(result == "accept", failure, event)


def _gated(use: UseTotpStep | UseBackupCode | None, won: AttemptRecord) -> DecisionWrite:
    return DecisionWrite(
        "alice",
        NOW,
        "127.0.0.1",
        "nas",
        MAX_ATTEMPTS,
        None,
        won,
        use,
        _record("reject", "replay"),
        None,
        _record("reject", "locked"),
    )


def test_a_locked_user_uses_no_code_and_counts_no_failure(
    directory_store: tuple[LdapTokenStore, LdapBackend],
) -> None:
    """alice locked after the decision read her: a TOTP step, a backup code and a
    counted failure each write only the LOCKED ending; unlocked, a failure counts on
    from her count, and the step is won with the count reset in the same modify."""
    store, _ = directory_store
    store.replace_backup_codes("alice", ["h1"], NOW)
    store.record_failure("alice", NOW, 1, None)
    locked = DecisionCommit(won=False, lock=None, locked=True)
    assert store.commit_decision(_gated(UseTotpStep("L-T", 100, 0), _record("accept", "ok"))) == (
        locked
    )
    assert store.commit_decision(_gated(UseBackupCode("alice", "h1"), _record("accept", "ok"))) == (
        locked
    )
    assert store.commit_decision(_gated(None, _record("reject", "bad_otp", True))) == locked
    token = store.get_token("L-T")
    assert token is not None and token.last_step == -1
    assert store.backup_codes_left("alice") == 1
    user = store.get_user("alice")
    assert user is not None and user.failures == 1
    assert store.unlock_user("alice")
    store.record_failure("alice", NOW, 5, None)
    counted = store.commit_decision(_gated(None, _record("reject", "bad_otp", True)))
    assert counted.lock is not None and counted.lock.failures == 2  # counted on, not reset
    won = store.commit_decision(_gated(UseTotpStep("L-T", 100, 0), _record("accept", "ok")))
    assert won == DecisionCommit(won=True, lock=None)
    user = store.get_user("alice")
    assert user is not None and (user.failures, user.locked_until) == (0, None)
    reasons = [e.reason for e in store.query_audit(user="alice", limit=10)]
    assert reasons == ["ok", "bad_otp", "locked", "locked", "locked"]


@pytest.mark.parametrize("first_factor", ["chain", "none"])
def test_parallel_guesses_lock_after_exactly_max_attempts(
    directory_store: tuple[LdapTokenStore, LdapBackend], first_factor: str
) -> None:
    """40 parallel wrong codes, with alice's directory password or OTP only, and the
    right code last, through ThreadedEngine on 8 threads: exactly 3 evaluated, the rest
    and the right code refused as locked."""
    store, backend = directory_store
    config = Config(
        primary=PrimaryConfig(backends=(backend.directory.config,)),
        store=StoreConfig(token_storage="ldap"),
        otp=OtpConfig(lockout=LockoutConfig(max_attempts=MAX_ATTEMPTS, auto_unlock_after=None)),
    )
    engine = Engine(config, store, [backend], b"k" * 32)
    reactor = FakeReactor(NOW)
    pool = ThreadPool(minthreads=1, maxthreads=8, name="auth-ldap-race")
    pool.start()
    try:
        threaded = ThreadedEngine(decisions_for(engine), reactor, pool, Metrics())
        right = _code(SEED, NOW)
        codes = ["000000" if right != "000000" else "111111"] * GUESSES + [right]
        results: dict[int, Decision] = {}
        for i, code in enumerate(codes):
            typed = (PASSWORDS["alice"] if first_factor == "chain" else "") + code
            req = AuthRequest(
                "alice", typed, "radius", "nas", "127.0.0.1", first_factor=first_factor
            )
            threaded.authenticate(req).addCallback(lambda d, i=i: results.__setitem__(i, d))
        reactor.run_until(lambda: len(results) == len(codes), timeout=DEADLINE)
    finally:
        pool.stop()
    assert all(d.outcome is Outcome.REJECT for d in results.values())
    reasons = Counter(d.reason for d in results.values())
    assert reasons == {Reason.BAD_OTP: MAX_ATTEMPTS, Reason.LOCKED: len(codes) - MAX_ATTEMPTS}
    assert results[GUESSES].reason is Reason.LOCKED
    user = store.get_user("alice")
    assert user is not None and user.failures == MAX_ATTEMPTS and user.locked_until is not None
    audited = Counter(e.reason for e in store.query_audit(user="alice", limit=1000))
    assert audited["bad_otp"] == MAX_ATTEMPTS and audited["locked"] == len(codes) - MAX_ATTEMPTS
    token = store.get_token("L-T")
    assert token is not None and token.last_step == -1


def test_a_stray_empty_marker_never_hides_the_real_state(
    directory_store: tuple[LdapTokenStore, LdapBackend], slapd: Slapd
) -> None:
    """Two first writers of a user's state can leave the empty marker next to the real
    state (one added it after the other had replaced it): the real state counts
    wherever the marker sits, and the next write of the state removes the marker."""
    store, _ = directory_store
    store.record_failure("alice", NOW, 1, None)  # alice locked
    conn = ldap3.Connection(
        ldap3.Server(slapd.url), slapd.admin_dn, slapd.admin_password, auto_bind=True
    )
    dn, attr = slapd.user_dn("alice"), slapd.token_attribute

    def states() -> list[str]:
        conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=[attr])
        return [v for v in conn.entries[0][attr].values if v.startswith(STATE_PREFIX)]

    try:
        (real,) = states()
        # The marker first, as the race leaves it when the second writer's add lands.
        change = [(ldap3.MODIFY_DELETE, [real]), (ldap3.MODIFY_ADD, [STATE_EMPTY, real])]
        assert conn.modify(dn, {attr: change})
        assert states()[0] == STATE_EMPTY and len(states()) == 2
        user = store.get_user("alice")
        assert user is not None and (user.failures, user.locked_until) == (1, math.inf)
        assert store.commit_decision(_gated(None, _record("reject", "bad_otp", True))).locked
        assert store.unlock_user("alice")
        (kept,) = states()  # one encrypted state, the marker gone with the real one
        assert not kept.startswith(STATE_EMPTY)
        user = store.get_user("alice")
        assert user is not None and (user.failures, user.locked_until) == (0, None)
    finally:
        conn.unbind()
