"""LDAP first factor: search-then-bind over a failover list of directory servers.

`Directory` owns the network side (TLS, timeouts, per-server back-off, two bounded
connection pools per server) and returns plain data; `LdapBackend` is the
`FirstFactorBackend` the engine calls from its worker threads. Both are thread-safe: an
ldap3 SYNC connection is used by one thread at a time (checked out of a pool), never
shared. Every failure to reach a directory surfaces as `DirectoryUnavailable`, which the
backend turns into `PrimaryResult(unreachable=True)` so the engine can fail closed.
The user's bind itself is encoded by `ldap_bind` (a fifth of ldap3's CPU per bind).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from twisted.logger import Logger

from authd.auth.groups import GroupResolver
from authd.auth.interfaces import PasswordFor, PrimaryResult
from authd.auth.ldap_bind import password_octets, simple_bind
from authd.config.model import PrimaryBackend
from authd.core.errors import AuthdError
from authd.core.username import name_attribute
from authd.metrics import Metrics

log = Logger(namespace="authd.auth.ldap_primary")

T = TypeVar("T")

# Profile keys the store understands -> usual directory attributes.
DEFAULT_PROFILE_ATTRIBUTES: Mapping[str, str] = {
    "email": "mail",
    "phone": "telephoneNumber",
    "first_name": "givenName",
    "last_name": "sn",
}
MAX_USER_LENGTH = 256
CACHE_MAX_ENTRIES = 10_000
IDLE_MAX = 60.0  # seconds an idle pooled connection is kept

# RFC 4511 result codes that say "this server cannot answer now" rather than "no".
_SERVER_TROUBLE = frozenset({1, 3, 11, 51, 52, 80})
_INVALID_CREDENTIALS = 49
_SIZE_LIMIT_EXCEEDED = 4
_NO_SUCH_OBJECT = 32
_NO_SUCH_ATTRIBUTE = 16


class DirectoryUnavailable(AuthdError):
    """No configured directory server could answer (down, hung, TLS or service bind)."""


class DeadlineExceeded(DirectoryUnavailable):
    """The request's deadline (request_timeout) passed before a server answered; the
    caller fails closed exactly as for any unreachable directory."""


class _DeadlinePassed(Exception):
    """No time is left for the next network wait; not a fault of the server."""


# The deadline (a time.monotonic() instant) of the request running in this thread, so
# that every search and bind on its behalf (including GroupResolver's) shares one budget.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "authd_ldap_deadline", default=None
)


class _ServerFailure(Exception):
    """One server failed; the caller backs it off and tries the next one. `reason` is
    short and from a fixed vocabulary (it reaches `authctl status`); the message may
    carry the library's own text, for the log."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


# Result codes a refused service bind reports (RFC 4511 §4.1.9), by what an operator fixes.
_BIND_RESULTS = {
    _INVALID_CREDENTIALS: "invalid credentials",
    50: "insufficient access rights",
    53: "unwilling to perform",
}


def failure_reason(error: BaseException) -> str:
    """Why connecting to a server failed, in words an operator acts on: TLS trust, the
    host name check, a refused or timed-out connection. Built from fixed phrases and
    OpenSSL's verify message only, never from anything the config holds (passwords)."""
    text = str(error)
    if "doesn't match any name" in text or "Hostname mismatch" in text:
        return "TLS: the server certificate does not name this host"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        why = text.partition("certificate verify failed: ")[2].partition(" (_ssl")[0]
        return "TLS: server certificate not trusted" + (f" ({why})" if why.isprintable()
                                                         and 0 < len(why) < 80 else "")
    if "ssl" in text.lower() or "tls" in text.lower():
        return "TLS handshake failed"
    if isinstance(error, ConnectionRefusedError) or "Connection refused" in text:
        return "connection refused"
    if isinstance(error, TimeoutError) or "timed out" in text:
        return "timed out"
    return type(error).__name__


@dataclass(frozen=True)
class DirectoryEntry:
    """One search result as plain data: attribute names lower-cased, values decoded."""

    dn: str
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def first(self, name: str) -> str:
        values = self.attributes.get(name.lower(), ())
        return values[0] if values else ""


class _PoolBusy(Exception):
    """Every connection to a server stayed busy for operation_timeout: local congestion,
    not a server fault, so the server is not backed off."""


class _FairSlots:
    """A counting semaphore that hands a released slot to the longest waiter.

    threading.Semaphore lets a thread that just released barge back in, which starved
    some workers for seconds under load (measured with scripts/bench/ldap).
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._lock = threading.Lock()
        self._waiters: collections.deque[threading.Event] = collections.deque()

    def acquire(self, timeout: float) -> bool:
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return True
            event = threading.Event()
            self._waiters.append(event)
        if event.wait(timeout):
            return True
        with self._lock:
            if event.is_set():  # handed over between the timeout and the lock
                return True
            self._waiters.remove(event)
            return False

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().set()
            else:
                self._free += 1


class _StaleConnection(Exception):
    """A reused connection failed: the server (or a firewall) may have dropped it while
    idle, so one fresh connection is tried before the server is blamed."""


class _Pool:
    """At most `size` connections to one server; idle ones are reused (LIFO) unless
    they have been idle for IDLE_MAX seconds (servers and firewalls drop idle LDAP
    connections: Active Directory after 900 s by default)."""

    def __init__(self, factory: Callable[[], ldap3.Connection], size: int, wait: float) -> None:
        self._factory = factory
        self._slots = _FairSlots(size)
        # deque.append/pop are atomic: no lock and Condition per take and return as with
        # queue.LifoQueue (measurable per bind); the slots already bound how many are out.
        self._idle: collections.deque[tuple[ldap3.Connection, float]] = collections.deque()
        self._wait = wait

    def _take_idle(self) -> ldap3.Connection | None:
        while True:
            try:
                conn, since = self._idle.pop()
            except IndexError:
                return None
            if time.monotonic() - since <= IDLE_MAX:
                return conn
            _close(conn)

    @contextlib.contextmanager
    def connection(
        self, fresh: bool = False, wait: float | None = None
    ) -> Iterator[tuple[ldap3.Connection, bool]]:
        """(connection for this thread alone, whether it was reused); the connection is
        dropped, not reused, if the body raised. fresh: drop every idle one first.
        wait: how long to queue for a slot, when less than the pool's own wait."""
        if not self._slots.acquire(self._wait if wait is None else min(wait, self._wait)):
            raise _PoolBusy("every connection stayed busy")
        try:
            if fresh:
                self.close()
            conn = self._take_idle()
            reused = conn is not None
            if conn is None:
                conn = self._factory()
            try:
                yield conn, reused
            except BaseException:
                _close(conn)
                raise
            self._idle.append((conn, time.monotonic()))
        finally:
            self._slots.release()

    def close(self) -> None:
        while True:
            try:
                _close(self._idle.popleft()[0])
            except IndexError:
                return


def _close(conn: ldap3.Connection) -> None:
    with contextlib.suppress(Exception):
        conn.unbind()


class _Server:
    """One configured server: address, pools, and when it may be tried again."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
            raise ValueError(f"not an ldap:// or ldaps:// URL: {url!r}")
        self.url = url
        self.host = parts.hostname
        self.use_ssl = parts.scheme == "ldaps"
        self.port = parts.port or (636 if self.use_ssl else 389)
        self.down_until = 0.0
        self.failure = ""  # why it was last backed off (failure_reason)
        self.search_pool: _Pool | None = None
        self.bind_pool: _Pool | None = None


def _simple_bind(conn: ldap3.Connection, dn: str, password: str) -> int:
    """Bind with ldap3 (the service account, once per connection) and return the LDAP
    result code; the password is not left on the object (ldap3's Connection repr would
    show it)."""
    octets = password_octets(password)
    if octets is None:
        return _INVALID_CREDENTIALS
    conn.authentication = ldap3.SIMPLE
    conn.user = dn
    conn.password = octets
    try:
        conn.bind(read_server_info=False)
    finally:
        conn.password = None
    return int(conn.result.get("result", 80)) if conn.result else 80


class Directory:
    """Failover, back-off and pooled connections for one set of directory servers.

    Servers are tried in configured order, skipping those backed off after a failure;
    when all are backed off the one whose back-off ends first gets a single probe. One
    attempt on one server costs at most connect_timeout (TCP and TLS handshake) plus
    operation_timeout per LDAP operation. Writes go to the first reachable server.
    Inside `deadline()`, every wait (pool slot, connect, operation) is also cut to what
    is left of the deadline, and no server is tried once it has passed.
    """

    def __init__(
        self,
        config: PrimaryBackend,
        *,
        clock: Callable[[], float] = time.monotonic,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        """clock: back-off bookkeeping (tests move it); timer: real time, since it bounds
        real socket waits."""
        if not config.servers:
            raise ValueError(f"ldap backend {config.name!r} has no servers")
        self._config = config
        self._clock = clock
        self._timer = timer
        self._lock = threading.Lock()
        self._tls: ldap3.Tls | None = None
        if config.start_tls or any(s.url.startswith("ldaps:") for s in config.servers):
            self._tls = ldap3.Tls(
                validate=ssl.CERT_REQUIRED if config.verify_certificates else ssl.CERT_NONE,
                ca_certs_file=config.ca_file or None,
            )
        self._servers = [_Server(s.url) for s in config.servers]
        for server in self._servers:
            server.search_pool = _Pool(
                functools.partial(self._connect, server, service=True),
                config.pool_size,
                config.operation_timeout,
            )
            server.bind_pool = _Pool(
                functools.partial(self._connect, server, service=False),
                config.pool_size,
                config.operation_timeout,
            )

    @property
    def config(self) -> PrimaryBackend:
        return self._config

    # ------------------------------------------------------------ deadline
    @contextlib.contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        """Bound every operation in this block (this thread) to `seconds` in total. A
        nested deadline never extends an outer one."""
        until = self._timer() + seconds
        outer = _deadline.get()
        token = _deadline.set(until if outer is None else min(outer, until))
        try:
            yield
        finally:
            _deadline.reset(token)

    def _budget(self, own: float) -> float:
        """How long the next network wait may take: its own timeout, or what is left of
        the deadline when that is less. Raises _DeadlinePassed when nothing is left."""
        until = _deadline.get()
        if until is None:
            return own
        left = until - self._timer()
        if left <= 0:
            raise _DeadlinePassed()
        return min(own, left)

    # ------------------------------------------------------------ connections
    def _connect(self, server: _Server, *, service: bool) -> ldap3.Connection:
        cfg = self._config
        srv = ldap3.Server(
            server.host,
            port=server.port,
            use_ssl=server.use_ssl,
            tls=self._tls,
            get_info=ldap3.NONE,
            # ldap3 keeps this timeout on the socket through the ldaps TLS handshake.
            connect_timeout=self._budget(cfg.connect_timeout),
        )
        # receive_timeout stays None: ldap3 2.9 packs it as an integer (floats crash), so
        # the operation timeout is set on the socket ourselves right after connecting.
        conn = ldap3.Connection(
            srv,
            client_strategy=ldap3.SYNC,
            auto_bind=ldap3.AUTO_BIND_NONE,
            raise_exceptions=False,
            auto_referrals=False,
            check_names=False,
            read_only=False,
        )
        try:
            conn.open(read_server_info=False)
            conn.socket.settimeout(self._budget(cfg.operation_timeout))
            if cfg.start_tls and not server.use_ssl and not conn.start_tls(read_server_info=False):
                raise _ServerFailure("StartTLS refused")
            if service and cfg.bind_dn:
                password = cfg.bind_password.reveal() if cfg.bind_password else ""
                if not password:
                    raise _ServerFailure("service account has no password")
                code = _simple_bind(conn, cfg.bind_dn, password)
                if code != 0:
                    why = _BIND_RESULTS.get(code, "refused")
                    raise _ServerFailure(f"service account bind: {why} (result {code})")
        except (_ServerFailure, _DeadlinePassed):
            _close(conn)
            raise
        except (LDAPException, OSError) as e:
            _close(conn)
            raise _ServerFailure(failure_reason(e), f"{type(e).__name__}: {e}") from None
        return conn

    def _candidates(self) -> list[_Server]:
        now = self._clock()
        with self._lock:
            up = [s for s in self._servers if s.down_until <= now]
            if up:
                return up
            return [min(self._servers, key=lambda s: s.down_until)]

    def _run(self, kind: str, work: Callable[[ldap3.Connection], T]) -> T:
        """Run `work` on the first server that can do it; back off the ones that fail.

        A server whose wait was cut short by the deadline is backed off like any server
        that did not answer in the time it was given: otherwise a request_timeout below
        a hung first server's own timeouts would never reach the second server.
        """
        reasons: list[str] = []
        for server in self._candidates():
            pool = server.search_pool if kind == "search" else server.bind_pool
            assert pool is not None
            try:
                try:
                    return self._attempt(pool, work, fresh=False)
                except _StaleConnection:
                    return self._attempt(pool, work, fresh=True)
            except _DeadlinePassed:
                break
            except _PoolBusy as e:
                log.warn("LDAP server {url}: {reason}", url=server.url, reason=str(e))
                reasons.append(f"{server.url}: {e}")
            except _ServerFailure as e:
                with self._lock:
                    server.down_until = self._clock() + self._config.server_backoff
                    server.failure = e.reason
                # Idle connections to a failed server are suspect: the probe after the
                # back-off starts afresh.
                for idle_pool in (server.search_pool, server.bind_pool):
                    if idle_pool is not None:
                        idle_pool.close()
                log.warn(
                    "LDAP server {url} failed ({reason}); backing off for {backoff}s",
                    url=server.url,
                    reason=str(e),
                    backoff=self._config.server_backoff,
                )
                reasons.append(f"{server.url}: {e}")
            if self._deadline_passed():
                break
        if self._deadline_passed():
            raise DeadlineExceeded(
                f"no LDAP server of {self._config.name!r} answered within request_timeout"
                f" ({self._config.request_timeout}s): " + ("; ".join(reasons) or "no time left")
            )
        raise DirectoryUnavailable(
            f"no LDAP server of {self._config.name!r} answered: " + "; ".join(reasons)
        )

    def _deadline_passed(self) -> bool:
        until = _deadline.get()
        return until is not None and self._timer() >= until

    def _attempt(self, pool: _Pool, work: Callable[[ldap3.Connection], T], *, fresh: bool) -> T:
        with pool.connection(fresh=fresh, wait=self._budget(self._config.operation_timeout)) as (
            conn,
            reused,
        ):
            # Reused or just opened (the connect spent part of the budget): either way
            # this operation may wait only for what is left.
            wait = self._budget(self._config.operation_timeout)
            if conn.socket is not None:
                conn.socket.settimeout(wait)
            started = time.monotonic()
            try:
                return work(conn)
            except (LDAPException, OSError) as e:
                # A reused connection that failed fast was most likely closed by the
                # server while idle; one that timed out means a hung server, which must
                # not cost a second timeout.
                fast = time.monotonic() - started < wait / 2
                if reused and not fresh and fast:
                    raise _StaleConnection() from None
                raise _ServerFailure(failure_reason(e), f"{type(e).__name__}: {e}") from None

    # ------------------------------------------------------------ operations
    def search(
        self,
        base: str,
        filter: str,
        attributes: list[str],
        *,
        scope: str = "sub",
        size_limit: int = 0,
    ) -> list[DirectoryEntry]:
        """Entries matching `filter` (already escaped by the caller) as plain data.

        With size_limit, a server answering sizeLimitExceeded returns the entries it sent
        (the caller sees more than it can accept and decides).
        """
        ldap_scope = (
            ldap3.SUBTREE if scope == "sub" else (ldap3.LEVEL if scope == "one" else ldap3.BASE)
        )
        time_limit = max(1, int(self._config.operation_timeout))

        def work(conn: ldap3.Connection) -> list[DirectoryEntry]:
            conn.search(
                base,
                filter,
                search_scope=ldap_scope,
                attributes=attributes,
                size_limit=size_limit,
                time_limit=time_limit,
            )
            code = int(conn.result.get("result", 80))
            if code in _SERVER_TROUBLE:
                raise _ServerFailure(f"search answered result {code}")
            if code not in (0, _SIZE_LIMIT_EXCEEDED, _NO_SUCH_OBJECT):
                raise DirectoryUnavailable(f"search in {base!r} refused with result {code}")
            return [_entry(r) for r in conn.response or () if r.get("type") == "searchResEntry"]

        return self._run("search", work)

    def bind(self, dn: str, password: str) -> bool:
        """True when `dn` binds with `password`. Refuses an empty password outright: an
        LDAP simple bind with a DN and no password is an anonymous bind (RFC 4513 §5.1.2)
        that many servers report as success."""
        if not password or not dn:
            return False

        def work(conn: ldap3.Connection) -> bool:
            code = simple_bind(conn, dn, password)
            if code in _SERVER_TROUBLE:
                raise _ServerFailure(f"bind answered result {code}")
            return code == 0

        return self._run("bind", work)

    def modify(self, dn: str, changes: dict[str, list[tuple[str, list[str]]]]) -> bool:
        """Apply `changes` in ONE modify (atomic per RFC 4511 §4.6) as the service account.

        False when the server refused because a value to delete is gone or a value to add
        is already there: another writer got there first (compare-and-set).
        """

        def work(conn: ldap3.Connection) -> bool:
            conn.modify(dn, changes)
            code = int(conn.result.get("result", 80))
            if code in _SERVER_TROUBLE:
                raise _ServerFailure(f"modify answered result {code}")
            if code == 0:
                return True
            if code in (_NO_SUCH_ATTRIBUTE, 20):  # 20: attributeOrValueExists
                return False
            raise DirectoryUnavailable(f"modify of {dn!r} refused with result {code}")

        return self._run("search", work)

    def status(self) -> list[tuple[str, bool]]:
        """(url, usable now) per server, for /readyz and authctl: False while backed off."""
        now = self._clock()
        with self._lock:
            return [(s.url, s.down_until <= now) for s in self._servers]

    def failures(self) -> dict[str, str]:
        """Why each server backed off now failed (url -> failure_reason), for authctl."""
        now = self._clock()
        with self._lock:
            return {s.url: s.failure for s in self._servers if s.down_until > now and s.failure}

    def ping(self) -> None:
        """Raise DirectoryUnavailable unless some server answers a root DSE read."""
        self.search("", "(objectClass=*)", ["1.1"], scope="base")

    def close(self) -> None:
        for server in self._servers:
            for pool in (server.search_pool, server.bind_pool):
                if pool is not None:
                    pool.close()


def _entry(raw: Mapping[str, Any]) -> DirectoryEntry:
    attrs: dict[str, tuple[str, ...]] = {}
    for name, values in (raw.get("raw_attributes") or {}).items():
        attrs[name.lower()] = tuple(
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values
        )
    return DirectoryEntry(dn=str(raw.get("dn", "")), attributes=attrs)


def user_filter(template: str, user: str) -> str:
    """The search filter for `user`, escaped per RFC 4515 §3 (`*`, `(`, `)`, `\\`, NUL),
    so a user name can never widen the search."""
    return template.replace("{user}", escape_filter_chars(user))


@dataclass(frozen=True)
class DirectoryUser:
    """What the directory says about a user, cached for `groups.cache_ttl`. `name` is
    the entry's own name attribute: who the user is, whatever was typed."""

    name: str
    dn: str
    groups: tuple[str, ...]
    profile: Mapping[str, str]
    expires: float


class LdapBackend:
    """`FirstFactorBackend` for `type: ldap`: service-account search, then a bind as the
    found DN. A user is known when exactly one entry matches; several matches fail
    closed. The user is the entry's name attribute (`user_search.name_attribute`), not
    what was typed: a directory matches names case-insensitively and (Active Directory)
    ignores surrounding spaces, so `ADBOB` finds adbob's entry and is adbob. The DN,
    name, groups and profile are cached briefly, so a cached user costs one bind per
    request, whatever the number of tokens."""

    def __init__(
        self,
        config: PrimaryBackend,
        *,
        directory: Directory | None = None,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self.name = config.name or "ldap"
        self._config = config
        self._clock = clock
        self.directory = directory if directory is not None else Directory(config, clock=clock)
        self._groups = GroupResolver(self.directory, config.groups, config.user_search.base)
        self._profile_attrs = dict(config.profile_attributes or DEFAULT_PROFILE_ATTRIBUTES)
        search = config.user_search
        name_attr = name_attribute(search.filter, search.name_attribute)
        if name_attr is None:
            raise ValueError(
                f"ldap backend {self.name!r}: user_search.filter compares no name attribute "
                "with {user}"
            )
        self._name_attr = name_attr
        # The label child bound once: labels() costs a lock and a lookup per request.
        self._latency = (
            metrics.directory_latency.labels(backend=self.name) if metrics is not None else None
        )
        self._cache: dict[str, DirectoryUser] = {}
        self._cache_lock = threading.Lock()

    # ------------------------------------------------------------ FirstFactorBackend
    def authenticate(self, user: str, password: str | PasswordFor) -> PrimaryResult:
        """Search the user's entry, then bind as it with `password` (or with what
        `password` gives for the entry's own name)."""
        started = time.perf_counter()
        try:
            # One budget for search, group walk and bind across every server, so the
            # whole first factor ends before a RADIUS client gives up.
            with self.directory.deadline(self._config.request_timeout):
                return self._authenticate(user, password)
        finally:
            if self._latency is not None:
                self._latency.observe(time.perf_counter() - started)

    def _authenticate(self, user: str, password: str | PasswordFor) -> PrimaryResult:
        try:
            found = self.find_user(user)
        except DirectoryUnavailable as e:
            log.error("LDAP backend {name}: {error}", name=self.name, error=str(e))
            return PrimaryResult(known=False, ok=False, unreachable=True)
        if found is None:
            return PrimaryResult(known=False, ok=False)
        if not isinstance(password, str):
            password = password(found.name)
        # Fail closed (STYLE 6): an empty password must never authenticate, and is
        # never sent, since a simple bind without a password is anonymous (RFC 4513).
        if not password:
            return PrimaryResult(known=True, ok=False, name=found.name)
        try:
            ok = self.directory.bind(found.dn, password)
        except DirectoryUnavailable as e:
            log.error("LDAP backend {name}: {error}", name=self.name, error=str(e))
            return PrimaryResult(known=True, ok=False, unreachable=True, name=found.name)
        if not ok:
            self.forget(user)  # the entry may have moved: search again next time
            return PrimaryResult(known=True, ok=False, name=found.name)
        return PrimaryResult(
            known=True, ok=True, groups=found.groups, profile=dict(found.profile), name=found.name
        )

    def lookup(self, user: str) -> PrimaryResult:
        try:
            with self.directory.deadline(self._config.request_timeout):
                found = self.find_user(user)
        except DirectoryUnavailable as e:
            log.error("LDAP backend {name}: {error}", name=self.name, error=str(e))
            return PrimaryResult(known=False, ok=False, unreachable=True)
        if found is None:
            return PrimaryResult(known=False, ok=False)
        return PrimaryResult(
            known=True, ok=False, groups=found.groups, profile=dict(found.profile), name=found.name
        )

    def ping(self) -> None:
        # /readyz must not hang on a set of hung servers either.
        with self.directory.deadline(self._config.request_timeout):
            self.directory.ping()

    # ------------------------------------------------------------ directory users
    def find_user(self, user: str) -> DirectoryUser | None:
        """The user's entry (cached), None when no entry or several match.

        Raises DirectoryUnavailable when no server answers.
        """
        if not user or len(user) > MAX_USER_LENGTH:
            return None
        now = self._clock()
        with self._cache_lock:
            cached = self._cache.get(user)
        if cached is not None and cached.expires > now:
            return cached
        search = self._config.user_search
        attrs = sorted({*self._profile_attrs.values(), "memberOf", self._name_attr})
        entries = self.directory.search(
            search.base, user_filter(search.filter, user), attrs, scope=search.scope, size_limit=2
        )
        if len(entries) != 1:
            if entries:
                log.warn(
                    "LDAP backend {name}: {count}+ entries match user {user!r}; refusing",
                    name=self.name,
                    count=len(entries),
                    user=user,
                )
            return None
        entry = entries[0]
        names = entry.attributes.get(self._name_attr.lower(), ())
        if len(names) != 1 or not names[0]:
            # Fail closed: with no name, or several, the same entry could be two users
            # in the store (two token sets, two lock counts).
            log.warn(
                "LDAP backend {name}: entry {dn} has {count} values of {attr}; refusing",
                name=self.name,
                dn=entry.dn,
                count=len(names),
                attr=self._name_attr,
            )
            return None
        name = names[0]
        groups = self._groups.resolve(entry.dn, name, entry.attributes.get("memberof", ()))
        profile = {
            key: entry.first(attr) for key, attr in self._profile_attrs.items() if entry.first(attr)
        }
        found = DirectoryUser(
            name=name,
            dn=entry.dn,
            groups=groups,
            profile=profile,
            expires=now + self._config.groups.cache_ttl,
        )
        if self._config.groups.cache_ttl > 0:
            with self._cache_lock:
                if len(self._cache) >= CACHE_MAX_ENTRIES:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[user] = found
        return found

    def find_named(self, name: str) -> DirectoryUser | None:
        """The entry whose own name is `name` exactly (a store or token owner's name),
        None for any other name, even one the directory matches: `ADBOB` finds adbob's
        entry, but that entry is not `ADBOB`'s. Raises DirectoryUnavailable."""
        found = self.find_user(name)
        return found if found is not None and found.name == name else None

    def cached_users(self) -> int:
        """Directory entries remembered (at most CACHE_MAX_ENTRIES)."""
        return len(self._cache)

    def forget(self, user: str) -> None:
        """Drop a cached user so the next request searches again."""
        with self._cache_lock:
            self._cache.pop(user, None)

    def close(self) -> None:
        self.directory.close()
