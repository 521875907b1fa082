"""A live HTTP front-end on loopback for tests: real engine, SQLite store, AdminOps,
thread pool and treq client, on a private reactor that the test drives step by step.

No global reactor (Twisted coding standard): each app gets its own SelectReactor, run
with `iterate()` until the awaited Deferred fires, bounded by a wall-clock timeout.
The rate limiters read an injected `Clock`, so tests move their time explicitly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, succeed
from twisted.internet.selectreactor import SelectReactor
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from authd.admin import AdminOps
from authd.auth.local import LocalUsers, make_password_hasher
from authd.batching.threaded import ThreadedEngine
from authd.config.model import (
    ApiKey,
    Config,
    HttpConfig,
    KeysConfig,
    LocalUsersConfig,
    PasswordHashConfig,
    RateLimit,
    RateLimitsConfig,
    StoreConfig,
)
from authd.core.model import Algorithm
from authd.core.otp import hotp, totp
from authd.crypto import Keyring
from authd.decision.engine import Engine
from authd.metrics import Metrics
from authd.portability.ops import PortabilityOps
from authd.readiness import ReadinessProbe
from authd.rest.service import HttpService
from authd.storage.recovery import SqlIssues
from authd.storage.sql import SqlStore
from tests.world import decisions_for

VALIDATE_KEY = "validate-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef-admin"
BOTH_KEY = "both-key-0123456789abcdef-both"
SEED = bytes(range(20))
SEED_B32 = base64.b32encode(SEED).decode()
PASSWORD = "correct horse battery"
# Generous limits unless a test asks for tight ones: limits are tested on purpose only.
WIDE = RateLimitsConfig(
    per_source=RateLimit(rate=1000.0, burst=1000),
    per_user=RateLimit(rate=1000.0, burst=1000),
    failure_delay=0.0,
    failure_delay_max=0.0,
)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Loop:
    """A private reactor driven by `run(d)`; `close()` releases its file descriptors."""

    def __init__(self) -> None:
        self.reactor = SelectReactor()
        # "Running" without run(): startup triggers fire (the reactor's resolver pool
        # starts) and no signal handler is touched; iterate() then does the work.
        self.reactor.startRunning(installSignalHandlers=False)

    def run(self, d: Deferred[Any], timeout: float = 15.0) -> Any:
        box: list[Any] = []
        d.addBoth(box.append)
        deadline = time.monotonic() + timeout
        while not box:
            if time.monotonic() > deadline:
                raise AssertionError(f"no result within {timeout}s")
            self.reactor.iterate(0.005)
        result = box[0]
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def close(self) -> None:
        self.reactor.stop()
        for _ in range(10):  # shutdown triggers stop the reactor's own thread pool
            self.reactor.iterate(0)
        self.reactor.disconnectAll()
        waker = getattr(self.reactor, "waker", None)
        if waker is not None:
            self.reactor.removeReader(waker)
            waker.connectionLost(None)


@implementer(IBodyProducer)
class BytesProducer:
    """A request body written at once: treq's default producer would schedule its writes
    on the global reactor's cooperator, which never runs here."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred[None]:  # noqa: N802
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:  # noqa: N802
        pass

    def resumeProducing(self) -> None:  # noqa: N802
        pass

    def stopProducing(self) -> None:  # noqa: N802
        pass


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@dataclass
class App:
    """A started HttpService plus everything a test pokes at."""

    loop: Loop
    service: HttpService
    config: Config
    store: SqlStore
    admin: AdminOps
    clock: Clock
    metrics: Metrics
    pool: ThreadPool
    http_pool: HTTPConnectionPool
    client: HTTPClient
    port: int
    tmp: Path
    engine: ThreadedEngine
    ready_pool: ThreadPool
    hotp_counter: dict[str, int] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """One request over a keep-alive connection; JSON body unless `raw` is given."""
        return self.loop.run(
            self.request_later(method, path, body, key=key, raw=raw, headers=headers)
        )

    def request_later(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Deferred[Response]:
        """The same request, not yet awaited (for concurrent requests)."""
        hdrs: dict[bytes, list[bytes]] = {}
        if key is not None:
            hdrs[b"authorization"] = [f"Bearer {key}".encode()]
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs[b"content-type"] = [b"application/json"]
        for k, v in (headers or {}).items():
            hdrs[k.lower().encode()] = [v.encode()]

        async def go() -> Response:
            producer = BytesProducer(data) if data is not None else None
            resp = await self.client.request(method, self.base + path, data=producer, headers=hdrs)
            content = await treq.content(resp)
            got = {
                k.decode().lower(): [x.decode() for x in v]
                for k, v in resp.headers.getAllRawHeaders()
            }
            return Response(resp.code, got, content)

        return Deferred.fromCoroutine(go())

    def validate(self, user: str, *, key: str = VALIDATE_KEY, **fields: Any) -> Response:
        return self.request("POST", "/api/v1/validate", {"user": user, **fields}, key=key)

    def otp_check(self, user: str, otp: str, *, key: str = VALIDATE_KEY) -> Response:
        return self.request("POST", "/api/v1/otp/check", {"user": user, "otp": otp}, key=key)

    def totp_now(self, offset_steps: int = 0) -> str:
        """The TOTP code of SEED at the engine's clock (the reactor's real time)."""
        return totp(SEED, self.loop.reactor.seconds() + 30 * offset_steps, 30, 6, Algorithm.SHA1)

    def next_hotp(self, user: str) -> str:
        """The next unused HOTP code of the user's HOTP token (seed SEED)."""
        counter = self.hotp_counter.get(user, 0)
        self.hotp_counter[user] = counter + 1
        return hotp(SEED, counter, 6, Algorithm.SHA1)

    def add_user(
        self,
        name: str,
        *,
        token: str | None = "totp",  # noqa: S107
        password: str | None = PASSWORD,
    ) -> None:
        self.admin.add_user("test:setup", name, password=password)
        if token is not None:
            self.admin.add_token(
                "test:setup", name, token, secret_b32=SEED_B32, serial=f"{token.upper()}-{name}"
            )

    def close(self) -> None:
        try:
            self.loop.run(self.http_pool.closeCachedConnections())
            self.loop.run(Deferred.fromCoroutine(_stop(self.service)))
        finally:
            self.ready_pool.stop()
            self.pool.stop()
            self.store.close()
            self.loop.close()


def start_radius(app: App) -> Any:
    """A RadiusService on loopback deciding through `app`'s own engine (no reject delay)."""
    from authd.radius.service import RadiusService
    from tests.fixtures.radius import client_config, radius_config

    radius = RadiusService(
        radius_config(client_config(), reject_delay=0.0),
        app.engine.authenticate,
        app.loop.reactor,
        app.metrics,
    )
    radius.startService()
    return radius


async def _stop(service: HttpService) -> None:
    if service.running:
        await service.stopService()


def make_config(
    tmp: Path,
    *,
    limits: RateLimitsConfig = WIDE,
    keys: tuple[ApiKey, ...] | None = None,
    **http: Any,
) -> Config:
    """A config for tests: SQLite in `tmp`, cheap argon2, HTTP on an ephemeral port."""
    key_file = tmp / "admin.key"
    key_file.write_text(ADMIN_KEY + "\n")
    key_file.chmod(0o600)
    if keys is None:
        keys = (
            ApiKey(name="vpn", key_sha256=sha256_hex(VALIDATE_KEY), scopes=("validate",)),
            ApiKey(name="ops", key_file=str(key_file), scopes=("admin",)),
            ApiKey(name="both", key_sha256=sha256_hex(BOTH_KEY), scopes=("validate", "admin")),
        )
    return Config(
        store=StoreConfig(url=f"sqlite:///{tmp / 'authd.db'}"),
        keys=KeysConfig(file=str(tmp / "keys.json")),
        local_users=LocalUsersConfig(PasswordHashConfig(time_cost=1, memory_cost_kib=8192)),
        http=replace(
            HttpConfig(), listen=("127.0.0.1:0",), api_keys=keys, rate_limits=limits, **http
        ),
        auth_threads=4,
    )


_DEFAULT: Any = object()


def start_app(
    tmp: Path,
    config: Config | None = None,
    *,
    ready: Any = None,
    authenticate: Any = None,
    admin: Any = _DEFAULT,
) -> App:
    """Build and start the whole HTTP stack on a private reactor."""
    config = config if config is not None else make_config(tmp)
    loop = Loop()
    reactor = loop.reactor
    keyring = Keyring.load_or_create(config.keys.file)
    store = SqlStore.open(config.store.url, keyring, pool_size=4)
    hasher = make_password_hasher(config.local_users.password_hash)
    backends = [LocalUsers(store, hasher)]
    metrics = Metrics()
    engine = Engine(config, store, backends, keyring.hash_key, metrics)
    pool = ThreadPool(minthreads=1, maxthreads=config.auth_threads, name="auth")
    pool.start()
    threaded = ThreadedEngine(decisions_for(engine), reactor, pool, metrics)
    # Readiness on a thread of its own, as app.py builds it.
    ready_pool = ThreadPool(minthreads=0, maxthreads=1, name="ready")
    ready_pool.start()
    probe = ReadinessProbe(
        [("store", store.ping), *((b.name, b.ping) for b in backends)], reactor, ready_pool
    )
    clock = Clock()
    clock.advance(1_767_225_600.0)
    ops = AdminOps(config, store, keyring, reactor.seconds, engine=engine, backends=backends,
                   issues=SqlIssues(store.transaction))

    def run_blocking(f: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        return deferToThreadPool(reactor, pool, f, *args, **kwargs)

    service = HttpService(
        config,
        authenticate or threaded.authenticate,
        ops if admin is _DEFAULT else admin,
        run_blocking,
        ready or probe.check,
        reactor,
        metrics,
        clock=clock,
        portability=PortabilityOps(config, store, keyring, reactor.seconds),
    )
    try:
        service.startService()
    except BaseException:
        # A failed start (e.g. a taken port) must not leave the pool's non-daemon
        # threads behind: the interpreter would wait for them at exit forever.
        ready_pool.stop()
        pool.stop()
        store.close()
        loop.close()
        raise
    http_pool = HTTPConnectionPool(reactor, persistent=True)
    client = HTTPClient(Agent(reactor, pool=http_pool))
    return App(
        loop,
        service,
        config,
        store,
        ops,
        clock,
        metrics,
        pool,
        http_pool,
        client,
        service.bound_ports()[0],
        tmp,
        threaded,
        ready_pool,
    )
