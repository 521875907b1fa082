"""The LDAP first factor against a real slapd: binds, escaping, TLS, failover, timeouts,
groups, caching, concurrency and secrecy."""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from zope.interface import provider

from authd.auth.ldap_primary import (
    Directory,
    DirectoryEntry,
    DirectoryUnavailable,
    LdapBackend,
)
from authd.config.model import GroupSearch, LdapServer, PrimaryBackend, Secret, UserSearch
from tests.fixtures.slapd import PASSWORDS, Slapd

pytestmark = pytest.mark.integration


def make_config(slapd: Slapd, *urls: str, **overrides: Any) -> PrimaryBackend:
    base = PrimaryBackend(
        type="ldap",
        name="dir",
        servers=tuple(LdapServer(u) for u in (urls or (slapd.url,))),
        ca_file=slapd.pki.ca_file,
        bind_dn=slapd.service_dn,
        bind_password=Secret(slapd.service_password),
        user_search=UserSearch(base=slapd.people, filter="(uid={user})"),
        groups=GroupSearch(mode="memberof", base=slapd.groups, cache_ttl=0),
        connect_timeout=1.0,
        operation_timeout=1.0,
        server_backoff=30.0,
    )
    return replace(base, **overrides)


@pytest.fixture
def backend(slapd: Slapd) -> Iterator[LdapBackend]:
    b = LdapBackend(make_config(slapd))
    yield b
    b.close()


@contextlib.contextmanager
def hung_server() -> Iterator[str]:
    """A TCP socket that completes the handshake (kernel backlog) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"ldap://127.0.0.1:{s.getsockname()[1]}"


def closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"ldap://127.0.0.1:{port}"


def wait_for_log(slapd: Slapd, needle: str, start: int, timeout: float = 5.0) -> str:
    """slapd's log from `start` once it contains `needle` (slapd writes asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        text = slapd.log_text()[start:]
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.02)


# ---------------------------------------------------------------- binds
def test_bind_success_returns_groups_and_profile(backend: LdapBackend) -> None:
    """The right password authenticates and brings the user's groups and profile."""
    r = backend.authenticate("alice", PASSWORDS["alice"])
    assert (r.known, r.ok, r.unreachable) == (True, True, False)
    assert r.groups == ("vpn",)
    assert r.profile == {
        "email": "alice@example.org",
        "phone": "+1 555 0101",
        "first_name": "Alice",
        "last_name": "Liddell",
    }


def test_bind_failure_is_known_but_not_ok(backend: LdapBackend) -> None:
    """A wrong password: the user is known (the chain stops here) but not authenticated,
    and no groups or profile leak out of a failed attempt."""
    r = backend.authenticate("alice", "wrong-password")
    assert (r.known, r.ok, r.unreachable) == (True, False, False)
    assert r.groups == () and r.profile == {}
    assert backend.authenticate("bob", PASSWORDS["alice"]).ok is False


def test_unknown_user_is_not_known(backend: LdapBackend) -> None:
    """A user the directory does not have lets the next backend in the chain decide."""
    r = backend.authenticate("mallory", "whatever")
    assert (r.known, r.ok, r.unreachable) == (False, False, False)


@pytest.mark.parametrize(
    "name",
    [
        "*",
        "al*",
        "*)(uid=*",
        "alice)(uid=*",
        "alice\x00",
        "alice\x00)(uid=*",
        "\\",
        "(",
        ")",
        "*\\2a",
        "star*",
    ],
)
def test_filter_metacharacters_cannot_widen_the_search(backend: LdapBackend, name: str) -> None:
    """User names built from `*`, `(`, `)`, `\\` and NUL match nothing, even with a
    password that is right for a real user."""
    for password in (PASSWORDS["alice"], PASSWORDS["star*user"]):
        r = backend.authenticate(name, password)
        assert (r.known, r.ok) == (False, False), name


def test_escaped_star_matches_only_itself(backend: LdapBackend, slapd: Slapd) -> None:
    """A real uid containing `*` is found exactly, and slapd saw the escaped filter."""
    start = len(slapd.log_text())
    assert backend.authenticate("star*user", PASSWORDS["star*user"]).ok
    log = wait_for_log(slapd, "star\\2Auser", start)
    assert 'filter="(uid=star\\2Auser)"' in log


def test_empty_password_is_refused_without_a_bind(backend: LdapBackend, slapd: Slapd) -> None:
    """An empty password never reaches the directory as a bind (RFC 4513 §5.1.2
    unauthenticated bind), for the DN of a real user."""
    start = len(slapd.log_text())
    r = backend.authenticate("carol", "")
    assert (r.known, r.ok) == (True, False)
    assert backend.directory.bind(slapd.user_dn("carol"), "") is False
    # A later bind by someone else marks the point up to which the log is complete.
    assert backend.authenticate("bob", PASSWORDS["bob"]).ok
    log = wait_for_log(slapd, f'BIND dn="{slapd.user_dn("bob")}"', start)
    assert f'BIND dn="{slapd.user_dn("bob")}"' in log
    assert f'BIND dn="{slapd.user_dn("carol")}"' not in log


def test_ambiguous_filter_fails_closed(slapd: Slapd) -> None:
    """When a filter template matches several entries nobody is authenticated."""
    b = LdapBackend(
        make_config(
            slapd, user_search=UserSearch(base=slapd.people, filter="(|(uid={user})(uid=bob))")
        )
    )
    try:
        r = b.authenticate("alice", PASSWORDS["alice"])
        assert (r.known, r.ok) == (False, False)
    finally:
        b.close()


# ---------------------------------------------------------------- TLS
@pytest.mark.parametrize("mode", ["ldaps", "starttls"])
def test_tls_with_the_test_ca(slapd: Slapd, mode: str) -> None:
    """LDAPS and StartTLS verify the server against the configured CA and work."""
    url = slapd.ldaps_url if mode == "ldaps" else slapd.url
    b = LdapBackend(make_config(slapd, url, start_tls=mode == "starttls"))
    try:
        r = b.authenticate("alice", PASSWORDS["alice"])
        assert (r.ok, r.unreachable) == (True, False)
        b.ping()
    finally:
        b.close()


@pytest.mark.parametrize("mode", ["ldaps", "starttls"])
def test_tls_with_an_unrelated_ca_fails_closed(slapd: Slapd, mode: str) -> None:
    """Certificate verification is on: a server the CA did not sign is unreachable,
    and no password is sent to it."""
    url = slapd.ldaps_url if mode == "ldaps" else slapd.url
    b = LdapBackend(
        make_config(slapd, url, start_tls=mode == "starttls", ca_file=slapd.pki.other_ca_file)
    )
    try:
        r = b.authenticate("alice", PASSWORDS["alice"])
        assert (r.known, r.ok, r.unreachable) == (False, False, True)
        with pytest.raises(DirectoryUnavailable):
            b.ping()
    finally:
        b.close()


# ---------------------------------------------------------------- failover, timeouts
def test_failover_when_the_first_server_is_down(slapd: Slapd) -> None:
    """A refused first server is backed off; the second answers; /readyz-style status
    shows which one is down, and the back-off ends with time."""
    now = [1000.0]
    cfg = make_config(slapd, closed_port_url(), slapd.url, server_backoff=30.0)
    b = LdapBackend(cfg, clock=lambda: now[0])
    try:
        assert b.authenticate("alice", PASSWORDS["alice"]).ok
        assert [up for _, up in b.directory.status()] == [False, True]
        assert b.authenticate("bob", PASSWORDS["bob"]).ok
        now[0] += 31
        assert [up for _, up in b.directory.status()] == [True, True]
    finally:
        b.close()


def test_hung_server_costs_no_more_than_the_timeout(slapd: Slapd) -> None:
    """A server that accepts TCP and never answers costs one operation timeout, then
    the next server decides; afterwards it is skipped altogether."""
    with hung_server() as hung:
        b = LdapBackend(make_config(slapd, hung, slapd.url, operation_timeout=0.5))
        try:
            started = time.monotonic()
            r = b.authenticate("alice", PASSWORDS["alice"])
            elapsed = time.monotonic() - started
            assert r.ok
            assert 0.45 <= elapsed < 0.5 + 0.5, elapsed
            started = time.monotonic()
            assert b.authenticate("bob", PASSWORDS["bob"]).ok
            assert time.monotonic() - started < 0.3
        finally:
            b.close()


def test_every_server_down_is_unreachable_within_the_timeouts(slapd: Slapd) -> None:
    """With every server hung or refusing, the answer is `unreachable` (the engine then
    fails closed), well under a 3 s RADIUS timeout, and ping raises."""
    with hung_server() as hung:
        b = LdapBackend(
            make_config(slapd, closed_port_url(), hung, operation_timeout=0.5, connect_timeout=0.5)
        )
        try:
            started = time.monotonic()
            r = b.authenticate("alice", PASSWORDS["alice"])
            assert (r.known, r.ok, r.unreachable) == (False, False, True)
            assert time.monotonic() - started < 1.5
            with pytest.raises(DirectoryUnavailable):
                b.ping()
        finally:
            b.close()


# ---------------------------------------------------------------- groups
@pytest.mark.parametrize(
    ("mode", "nested", "user", "expected"),
    [
        ("memberof", False, "alice", ("vpn",)),
        ("memberof", True, "alice", ("everyone", "staff", "vpn")),
        ("memberof", True, "carol", ("everyone", "staff")),
        ("search", False, "bob", ("admins",)),
        ("search", False, "alice", ("vpn",)),
        ("search", True, "dave", ("everyone", "staff", "vpn")),
        ("search", True, "star*user", ()),
    ],
)
def test_groups_and_nested_groups(
    slapd: Slapd, mode: str, nested: bool, user: str, expected: tuple[str, ...]
) -> None:
    """memberOf (overlay) and member/uniqueMember group search, direct and nested."""
    groups = GroupSearch(mode=mode, base=slapd.groups, nested=nested, cache_ttl=0)  # type: ignore[arg-type]
    b = LdapBackend(make_config(slapd, groups=groups))
    try:
        r = b.authenticate(user, PASSWORDS[user])
        assert r.ok and r.groups == expected
        assert b.lookup(user).groups == expected
    finally:
        b.close()


class CountingDirectory(Directory):
    """A real Directory that counts the operations it sends."""

    searches = 0
    binds = 0

    def search(
        self,
        base: str,
        filter: str,
        attributes: list[str],
        *,
        scope: str = "sub",
        size_limit: int = 0,
    ) -> list[DirectoryEntry]:
        self.searches += 1
        return super().search(base, filter, attributes, scope=scope, size_limit=size_limit)

    def bind(self, dn: str, password: str) -> bool:
        self.binds += 1
        return super().bind(dn, password)


def test_cached_user_costs_one_bind_and_expires(slapd: Slapd) -> None:
    """Within cache_ttl a request is a single bind (no search); after it, a search again.
    A failed bind drops the cached entry."""
    now = [0.0]
    cfg = make_config(slapd, groups=GroupSearch(base=slapd.groups, nested=True, cache_ttl=60))
    d = CountingDirectory(cfg, clock=lambda: now[0])
    b = LdapBackend(cfg, directory=d, clock=lambda: now[0])
    try:
        assert b.authenticate("alice", PASSWORDS["alice"]).ok
        first = d.searches
        assert first >= 2  # user, then the nested group walk
        assert b.authenticate("alice", PASSWORDS["alice"]).ok
        assert (d.searches, d.binds) == (first, 2)
        now[0] += 61
        assert b.authenticate("alice", PASSWORDS["alice"]).ok
        assert d.searches == 2 * first
        assert not b.authenticate("alice", "wrong").ok
        assert b.authenticate("alice", PASSWORDS["alice"]).ok
        assert d.searches == 3 * first
    finally:
        b.close()


# ---------------------------------------------------------------- threads, secrets
def test_concurrent_threads_share_a_small_pool(slapd: Slapd) -> None:
    """Many worker threads over a pool of two connections per server: every answer is
    right (no connection is shared between threads) and the pool stays bounded."""
    b = LdapBackend(make_config(slapd, pool_size=2))
    errors: list[str] = []

    def worker(i: int) -> None:
        for j in range(30):
            user = ("alice", "bob", "carol", "dave")[(i + j) % 4]
            good = (i * j) % 3 != 0
            r = b.authenticate(user, PASSWORDS[user] if good else "nope")
            if r.ok != good or not r.known:
                errors.append(f"{user} {good} {r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
    finally:
        b.close()


def test_secrets_never_reach_logs_or_reprs(slapd: Slapd) -> None:
    """Service and user passwords appear in no log event and no repr, also when binds
    fail and servers misbehave."""
    events: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        events.append(event)

    globalLogPublisher.addObserver(observe)
    with hung_server() as hung:
        cfg = make_config(slapd, hung, slapd.url, operation_timeout=0.3)
        bad = replace(cfg, servers=(LdapServer(slapd.url),), bind_password=Secret("Wr0ng-svc"))
        b, broken = LdapBackend(cfg), LdapBackend(bad)
        try:
            b.authenticate("alice", PASSWORDS["alice"])
            b.authenticate("alice", "Typo-Secret-77")
            assert broken.authenticate("alice", PASSWORDS["alice"]).unreachable
            texts = [formatEvent(e) + repr(e) for e in events]
            texts += [repr(b), repr(b.directory), repr(cfg), repr(bad)]
            for server in b.directory._servers:
                assert server.search_pool is not None and server.bind_pool is not None
                texts += [repr(c) for c, _ in server.search_pool._idle]
                texts += [repr(c) for c, _ in server.bind_pool._idle]
        finally:
            globalLogPublisher.removeObserver(observe)
            b.close()
            broken.close()
    assert any("backing off" in t for t in texts)
    blob = "\n".join(texts)
    for secret in (slapd.service_password, "Wr0ng-svc", PASSWORDS["alice"], "Typo-Secret-77"):
        assert secret not in blob


def test_busy_pool_is_not_a_server_failure(slapd: Slapd) -> None:
    """When every pooled connection stays busy past the timeout the request is
    unreachable, but the server is not backed off: it is congestion, not an outage."""
    b = LdapBackend(make_config(slapd, pool_size=1, operation_timeout=0.2))
    try:
        assert b.authenticate("alice", PASSWORDS["alice"]).ok
        pool = b.directory._servers[0].bind_pool
        assert pool is not None
        with pool.connection():
            r = b.authenticate("alice", PASSWORDS["alice"])
            assert (r.ok, r.unreachable) == (False, True)
        assert b.directory.status() == [(slapd.url, True)]
        assert b.authenticate("alice", PASSWORDS["alice"]).ok
    finally:
        b.close()


def test_connections_dropped_while_idle_are_replaced(slapd: Slapd) -> None:
    """Pooled connections the server closed while idle cost no failed request and do
    not back the server off: one fresh connection is opened instead."""
    b = LdapBackend(make_config(slapd, pool_size=2))
    try:
        assert b.authenticate("alice", PASSWORDS["alice"]).ok
        server = b.directory._servers[0]
        assert server.search_pool is not None and server.bind_pool is not None
        idle = [c for c, _ in (*server.search_pool._idle, *server.bind_pool._idle)]
        assert idle
        for conn in idle:
            conn.socket.shutdown(socket.SHUT_RDWR)  # as a server closing idle connections
        r = b.authenticate("alice", PASSWORDS["alice"])
        assert (r.ok, r.unreachable) == (True, False)
        assert b.directory.status() == [(slapd.url, True)]
    finally:
        b.close()


def test_non_ascii_password_binds_after_saslprep(slapd: Slapd) -> None:
    """A real bind: a stored UTF-8 password binds when typed in either form SASLprep
    maps to it (a no-break space becomes a space), and a wrong one does not."""
    dn = f"cn=saslprep-check,ou=services,{slapd.base_dn}"
    stored = "Grüße aus Köln"
    encoded = base64.b64encode(stored.encode("utf-8")).decode()
    slapd.ldapmodify(
        f"dn: {dn}\nchangetype: add\nobjectClass: simpleSecurityObject\n"
        f"objectClass: organizationalRole\ncn: saslprep-check\nuserPassword:: {encoded}\n"
    )
    directory = Directory(make_config(slapd))
    try:
        assert directory.bind(dn, stored)
        assert directory.bind(dn, "Grüße\u00a0aus\u00a0Köln")
        assert not directory.bind(dn, "Grüsse aus Köln")
    finally:
        directory.close()


def test_password_saslprep_prohibits_is_refused_without_blaming_the_server(
    backend: LdapBackend, slapd: Slapd
) -> None:
    """A password with a character RFC 4013 prohibits cannot bind anywhere: it is a
    wrong password, not a fault of the directory (no back-off, no unreachable)."""
    r = backend.authenticate("alice", PASSWORDS["alice"] + "\x7f")
    assert (r.known, r.ok, r.unreachable) == (True, False, False)
    assert backend.directory.status() == [(slapd.url, True)]
    assert backend.authenticate("alice", PASSWORDS["alice"]).ok
