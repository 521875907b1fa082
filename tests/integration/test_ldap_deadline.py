"""One deadline (request_timeout) bounds a whole LDAP first factor across servers and
operations, against a real slapd and hung sockets (issue 4: NetScaler gives up at 3 s)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import pytest
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from zope.interface import provider

from authd.auth.ldap_primary import DeadlineExceeded, LdapBackend
from authd.config.errors import ConfigErrors
from authd.config.model import GroupSearch, LdapServer, PrimaryBackend, Secret, UserSearch
from authd.config.parse import parse_config
from tests.fixtures.slapd import PASSWORDS, Slapd

pytestmark = pytest.mark.integration

T = TypeVar("T")
MARGIN = 0.3  # scheduling slack on a shared 2-core machine
OPERATION = 1.0  # each hung server costs this much without a deadline


def make_config(slapd: Slapd, *urls: str, **overrides: Any) -> PrimaryBackend:
    base = PrimaryBackend(
        type="ldap",
        name="dir",
        servers=tuple(LdapServer(u) for u in urls),
        bind_dn=slapd.service_dn,
        bind_password=Secret(slapd.service_password),
        user_search=UserSearch(base=slapd.people, filter="(uid={user})"),
        groups=GroupSearch(mode="memberof", base=slapd.groups, cache_ttl=0),
        connect_timeout=OPERATION,
        operation_timeout=OPERATION,
        server_backoff=30.0,
    )
    return replace(base, **overrides)


@contextlib.contextmanager
def hung_servers(count: int) -> Iterator[list[str]]:
    """`count` TCP sockets that complete the handshake (kernel backlog), never answer."""
    with contextlib.ExitStack() as stack:
        urls = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            s.listen(16)
            urls.append(f"ldap://127.0.0.1:{s.getsockname()[1]}")
        yield urls


def timed(call: Callable[[], T], limit: float) -> tuple[T, float]:
    """(result, seconds) of `call`, run in a thread so that this test itself never waits
    longer than `limit`, whatever the code under test does."""
    box: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            box.append(call())
        except BaseException as e:  # handed to the test thread below
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(timeout=limit)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), f"still running after {limit}s"
    if errors:
        raise errors[0]
    return box[0], elapsed


@contextlib.contextmanager
def captured_logs() -> Iterator[list[str]]:
    texts: list[str] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        level = event.get("log_level")
        texts.append(f"{getattr(level, 'name', level)} {formatEvent(event)} {event!r}")

    globalLogPublisher.addObserver(observe)
    try:
        yield texts
    finally:
        globalLogPublisher.removeObserver(observe)


@pytest.mark.parametrize("hung_count", [2, 3])
def test_hung_servers_before_a_live_one_cost_no_more_than_the_deadline(
    slapd: Slapd, hung_count: int
) -> None:
    """Two or three hung servers would cost one operation timeout each (more than the
    deadline); with request_timeout the call ends as unreachable within it, logs the
    deadline once, and no secret reaches the log."""
    request_timeout = 1.5
    assert hung_count * OPERATION > request_timeout + MARGIN  # what this test guards
    with hung_servers(hung_count) as hung, captured_logs() as logs:
        b = LdapBackend(make_config(slapd, *hung, slapd.url, request_timeout=request_timeout))
        try:
            r, elapsed = timed(lambda: b.authenticate("alice", PASSWORDS["alice"]), 5.0)
        finally:
            b.close()
    assert (r.known, r.ok, r.unreachable) == (False, False, True)
    assert request_timeout - 0.1 <= elapsed < request_timeout + MARGIN, elapsed
    deadline_lines = [t for t in logs if "request_timeout" in t]
    assert len(deadline_lines) == 1 and deadline_lines[0].startswith("error"), logs
    blob = "\n".join(logs)
    assert slapd.service_password not in blob and PASSWORDS["alice"] not in blob


def test_one_hung_server_then_the_live_one_answers_within_the_deadline(slapd: Slapd) -> None:
    """The hung first server costs its operation timeout; search and bind on the live
    second server fit in what is left of the deadline."""
    with hung_servers(1) as hung:
        b = LdapBackend(make_config(slapd, *hung, slapd.url, request_timeout=1.5))
        try:
            r, elapsed = timed(lambda: b.authenticate("alice", PASSWORDS["alice"]), 5.0)
            assert (r.known, r.ok, r.unreachable) == (True, True, False)
            assert OPERATION - 0.05 <= elapsed < 1.5, elapsed
            assert r.groups == ("vpn",)
        finally:
            b.close()


def test_lookup_is_bounded_by_the_same_deadline(slapd: Slapd) -> None:
    """lookup() (no password: user, groups and profile) has the same bound as
    authenticate(), and ping() for /readyz is bounded too."""
    with hung_servers(3) as hung:
        b = LdapBackend(make_config(slapd, *hung, slapd.url, request_timeout=1.2))
        try:
            r, elapsed = timed(lambda: b.lookup("bob"), 5.0)
            assert (r.known, r.unreachable) == (False, True)
            assert elapsed < 1.2 + MARGIN, elapsed
        finally:
            b.close()
        down = LdapBackend(make_config(slapd, *hung, request_timeout=1.2))
        try:

            def ping() -> str:
                with pytest.raises(DeadlineExceeded) as caught:
                    down.ping()
                return str(caught.value)

            message, elapsed = timed(ping, 5.0)
            assert elapsed < 1.2 + MARGIN, elapsed
            assert "request_timeout" in message
        finally:
            down.close()


def test_deadline_below_the_server_timeouts_still_fails_over(slapd: Slapd) -> None:
    """A request_timeout shorter than a hung server's own timeouts cuts its wait short
    and the request fails closed; the cut-short server is backed off, so the next
    request reaches the live server instead of timing out on the same one forever."""
    with hung_servers(1) as hung:
        b = LdapBackend(make_config(slapd, *hung, slapd.url, request_timeout=0.4))
        try:
            r, elapsed = timed(lambda: b.authenticate("alice", PASSWORDS["alice"]), 5.0)
            assert (r.ok, r.unreachable) == (False, True)
            assert elapsed < 0.4 + MARGIN, elapsed
            assert [up for _, up in b.directory.status()] == [False, True]
            r, elapsed = timed(lambda: b.authenticate("alice", PASSWORDS["alice"]), 5.0)
            assert (r.ok, r.unreachable) == (True, False)
            assert elapsed < 0.4, elapsed
        finally:
            b.close()


def test_a_nested_deadline_never_extends_the_outer_one(slapd: Slapd) -> None:
    """Directory.deadline() inside another keeps the earlier end: a caller that sets a
    tight budget (a store read, say) is not overridden by a looser inner one."""
    with hung_servers(1) as hung:
        b = LdapBackend(make_config(slapd, *hung, request_timeout=5.0))
        try:

            def nested() -> None:
                with b.directory.deadline(0.3), b.directory.deadline(5.0):
                    b.directory.search(slapd.people, "(uid=alice)", ["uid"])

            def expect_deadline() -> None:
                with pytest.raises(DeadlineExceeded):
                    nested()

            _, elapsed = timed(expect_deadline, 5.0)
            assert elapsed < 0.3 + MARGIN, elapsed
        finally:
            b.close()


def test_deadline_is_per_thread(slapd: Slapd) -> None:
    """A deadline set by one worker thread does not shorten another thread's request."""
    with hung_servers(1) as hung:
        b = LdapBackend(make_config(slapd, *hung, slapd.url, request_timeout=2.0))
        try:
            entered, release = threading.Event(), threading.Event()

            def short() -> None:
                with b.directory.deadline(0.05):
                    entered.set()
                    release.wait(5.0)  # holds its own (soon passed) deadline meanwhile

            holder = threading.Thread(target=short)
            holder.start()
            try:
                assert entered.wait(5.0)
                r, elapsed = timed(lambda: b.authenticate("alice", PASSWORDS["alice"]), 5.0)
            finally:
                release.set()
                holder.join(timeout=5.0)
            # The hung server got its whole operation timeout: not cut to 0.05 s.
            assert (r.ok, r.unreachable) == (True, False)
            assert elapsed >= OPERATION - 0.05, elapsed
        finally:
            b.close()


LDAP_YAML = """primary:
  backends:
    - type: ldap
      name: d
      servers: [{url: "ldap://127.0.0.1:1"}]
      user_search: {base: "dc=example,dc=org"}
%s"""


def test_request_timeout_is_a_duration_with_a_default_and_a_floor() -> None:
    """Operators write request_timeout as a duration; left out it is 2.5 s (under
    NetScaler's 3 s); below 0.1 s is refused with the key path and line."""
    config = parse_config(LDAP_YAML % "      request_timeout: 900ms\n", "authd.yaml")
    assert config.primary.backends[0].request_timeout == 0.9
    config = parse_config(LDAP_YAML % "", "authd.yaml")
    assert config.primary.backends[0].request_timeout == 2.5
    with pytest.raises(ConfigErrors) as caught:
        parse_config(LDAP_YAML % "      request_timeout: 50ms\n", "authd.yaml")
    assert "authd.yaml:7: primary.backends[0].request_timeout: must be at least" in str(
        caught.value
    )
