"""Composition root: the only place that names concrete classes.

`build_core` opens what both the daemon and `authctl` need (keys, store, first-factor
chain, engine, operator actions); `build_service` adds the thread pool and listeners.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy.engine import make_url
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from authd import systemd, worker_metrics
from authd.admin import AdminOps
from authd.audit_retention import AuditPruner
from authd.auth.interfaces import FirstFactorBackend, Store
from authd.auth.ldap_primary import LdapBackend
from authd.auth.local import LocalUsers, hash_password, make_password_hasher
from authd.batching.batch import Batched, Decisions, OneByOne
from authd.batching.threaded import ThreadedEngine
from authd.config.model import Config, PrimaryBackend, StoreConfig
from authd.config_audit import ConfigAudit
from authd.core.habits import SigninHabits
from authd.crypto import Keyring
from authd.decision.engine import Engine
from authd.habits_warmup import HabitsWarmup
from authd.metrics import Metrics
from authd.portability.ops import portability_ops
from authd.readiness import ReadinessProbe
from authd.service import AuthdService, Commit, Listener, Prepare
from authd.storage.ldap_attrs import LdapTokenStore
from authd.storage.recovery import SqlIssues
from authd.storage.sql import SqlStore

log = Logger(namespace="authd.app")


@dataclass
class Core:
    """What a decision needs, opened once per process; `close()` releases it."""

    config: Config
    keyring: Keyring
    sql: SqlStore
    store: Store
    backends: tuple[FirstFactorBackend, ...]
    engine: Engine
    admin: AdminOps
    habits: SigninHabits | None = None  # unusual sign-in (audit.unusual_signin)

    def close(self) -> None:
        for backend in self.backends:
            close = getattr(backend, "close", None)
            if close is not None:
                close()
        self.sql.close()


def _backend(cfg: PrimaryBackend, sql: SqlStore, hasher: PasswordHasher,
             metrics: Metrics | None) -> FirstFactorBackend:
    if cfg.type == "ldap":
        if not cfg.verify_certificates:
            log.warn("LDAP backend {name}: certificate verification is OFF", name=cfg.name)
        return LdapBackend(cfg, metrics=metrics)
    return LocalUsers(sql, hasher, name=cfg.name or "local")


def _store_url(cfg: StoreConfig) -> str:
    """store.url with store.password (from password_file) filled in."""
    if cfg.password is None:
        return cfg.url
    url = make_url(cfg.url).set(password=cfg.password.reveal())
    return url.render_as_string(hide_password=False)


def build_core(config: Config, clock: Callable[[], float] = time.time,
               metrics: Metrics | None = None, *, pool_size: int | None = None) -> Core:
    """Open keys and store (creating both on first start) and build the engine.

    The daemon and authctl both call this, so `authctl test` decides exactly as the
    daemon does. Directory connections open lazily, on first use.
    """
    keyring = Keyring.load_or_create(config.keys.file)
    sql = SqlStore.open(_store_url(config.store), keyring,
                        pool_size=pool_size if pool_size is not None else config.store.pool_size,
                        timeout=config.store.timeout,
                        audit_chain=config.audit.hash_chain,
                        cache_mib=config.store.cache_size,
                        mmap_mib=config.store.mmap_size)
    hasher = make_password_hasher(config.local_users.password_hash)
    backends = tuple(_backend(b, sql, hasher, metrics) for b in config.primary.backends)
    store: Store = sql
    if config.store.token_storage == "ldap":
        directory = next(b for b in backends if isinstance(b, LdapBackend))
        store = LdapTokenStore(sql, directory, keyring)
    if config.primary.failmode == "open":
        log.warn("primary.failmode is OPEN: an unreachable directory skips the first factor")
    habits = SigninHabits(
        max_users=config.audit.unusual_signin.max_users,
        on_flag=None if metrics is None else lambda s: metrics.unusual_signins.labels(s).inc()
    )
    if metrics is not None:
        _watch_caches(metrics, keyring, store, backends, habits)
    engine = Engine(config, store, backends, keyring.hash_key, metrics, habits)
    admin = AdminOps(config, store, keyring, clock, engine=engine,
                     backends=[b for b in backends if not isinstance(b, LocalUsers)],
                     password_hasher=lambda password: hash_password(hasher, password),
                     verify_audit=sql.verify_audit, issues=SqlIssues(sql.transaction))
    return Core(config, keyring, sql, store, backends, engine, admin, habits)


def _watch_caches(metrics: Metrics, keyring: Keyring, store: Store,
                  backends: tuple[FirstFactorBackend, ...], habits: SigninHabits) -> None:
    """authd_cache_entries for the tables the core owns (the listeners wire their own)."""
    directories = [b for b in backends if isinstance(b, LdapBackend)]
    metrics.watch_cache("opened_seeds", lambda: keyring.opened)
    metrics.watch_cache("signin_habits", habits.__len__)
    if directories:
        metrics.watch_cache("directory_users", lambda: sum(b.cached_users() for b in directories))
    if isinstance(store, LdapTokenStore):
        metrics.watch_cache("token_locations", store.location_hints)


def decisions_for(core: Core) -> Decisions:
    """Batches on the SQL store (SQLite and PostgreSQL); tokens held in a directory are
    decided one by one (their writes are directory operations, not a transaction)."""
    if core.store is core.sql:
        return Batched(core.engine, core.sql)
    return OneByOne(core.engine)


class _ListenerAdapter:
    """Gives every front-end the `prepare(Config)` the service calls on SIGHUP."""

    def __init__(self, service: Any, section: Callable[[Config], Any]) -> None:
        self.service = service
        self._section = section

    def startService(self) -> None:  # noqa: N802
        self.service.startService()

    def stopService(self) -> Deferred[None] | None:  # noqa: N802
        result: Deferred[None] | None = self.service.stopService()
        return result

    def prepare(self, config: Config) -> Commit:
        section = self._section(config)
        if section is None:
            commit: Commit = self.service.reload  # the worker supervisor forwards SIGHUP
            return commit
        prepared: Commit = self.service.prepare(section)
        return prepared


def _engine_part(engine: Engine, started: Config) -> Prepare:
    """The engine's share of a reload: policies and OTP settings take effect for the next
    request; the store, keys and first-factor backends stay as opened (a restart)."""

    def prepare(new: Config) -> Commit:
        config = replace(new, store=started.store, keys=started.keys, primary=started.primary)
        restart = [name for name in ("store", "keys", "primary")
                   if getattr(new, name) != getattr(started, name)]

        def commit() -> None:
            if restart:
                log.warn("{sections} changed; that takes effect on restart",
                         sections=", ".join(restart))
            engine.config = config

        return commit

    return prepare


def _portal(config: Config, core: Core, authenticate: Callable[..., Deferred[Any]],
            run_blocking: Callable[..., Deferred[Any]], reactor: Any, limits: Any) -> Any:
    """The self-service portal's resource, sessions in the SQL store."""
    from authd.mail import send_mail_async
    from authd.portal.resource import Portal, PortalDeps, PortalResource
    from authd.rest.clientaddr import parse_networks
    from authd.storage.sessions import SqlSessions

    portal = config.selfservice
    sessions = SqlSessions(core.sql.transaction, portal.session_idle, portal.session_max)
    return PortalResource(Portal(PortalDeps(
        config=portal,
        issuer=config.otp.issuer,
        authenticate=authenticate,
        admin=core.admin,
        sessions=sessions,
        run_blocking=run_blocking,
        seconds=reactor.seconds,
        limits=limits,
        pin=config.otp.pin,
        proxies=parse_networks(config.http.trusted_proxies),
        smtp=config.smtp,
        mailer=lambda smtp, to, subject, body: send_mail_async(reactor, smtp, to, subject, body),
    )))


def build_service(config: Config, reactor: Any, metrics: Metrics | None = None,
                  environ: Mapping[str, str] = os.environ) -> AuthdService:
    """The whole daemon, not yet started.

    With `radius.workers` or `http.workers` above 1 the main process also supervises
    worker processes (authd/workers.py): process i serves RADIUS while i < radius.workers
    and HTTP while i < http.workers, all sharing their ports with SO_REUSEPORT. A worker
    does not talk to systemd: the main process reports READY once its own sockets bound.
    """
    from authd.radius.service import RadiusService
    from authd.rest.service import HttpService
    from authd.workers import WorkerSupervisor, worker_index

    index = worker_index(environ)
    processes = process_count(config)

    metrics = metrics if metrics is not None else Metrics()
    core = build_core(config, reactor.seconds, metrics)
    metrics.watch_wal(core.sql.wal_status)
    pool = ThreadPool(minthreads=1, maxthreads=config.auth_threads, name="authd-auth")
    # Batches: one store turn at a time, so they grow with the load (why, and what a
    # second turn cost: batching/threaded.py). Decided one by one, each request waits on
    # the directory: a turn per pool thread.
    decisions = decisions_for(core)
    threaded = ThreadedEngine(decisions, reactor, pool, metrics,
                              store_threads=1 if isinstance(decisions, Batched) else None,
                              store_timeout=config.store.timeout)

    def run_blocking(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        return deferToThreadPool(reactor, pool, f, *args, **kwargs)

    # /readyz pings on a thread of their own: never queued behind decisions, nor in
    # front of them (authd/readiness.py).
    ready_pool = ThreadPool(minthreads=0, maxthreads=1, name="authd-ready")
    probe = ReadinessProbe(
        [("store", core.store.ping), *((b.name, b.ping) for b in core.backends)],
        reactor, ready_pool)

    listeners: list[Listener] = []
    if index == 0:  # workers do not talk to systemd; first to start, last to stop
        interval = systemd.watchdog_interval(environ, os.getpid())
        listeners.append(systemd.Watchdog(reactor, interval))
    # One /metrics over all processes: the main process makes the directory (never one
    # named by its own environment: it removes it at stop), workers are handed it.
    directory = ""
    if processes > 1:
        directory = (worker_metrics.make_directory() if index == 0
                     else environ.get(worker_metrics.DIR_ENV, ""))
    if directory:  # started before, stopped after the front-ends
        view = worker_metrics.MergedView(metrics.registry, directory, index, owner=index == 0)
        metrics.exported = view
        path = worker_metrics.snapshot_path(directory, index)
        listeners += [view, worker_metrics.SnapshotWriter(metrics.registry, path, reactor)]
    if config.radius.enabled and index < config.radius.workers:
        radius = RadiusService(config.radius, threaded.authenticate, reactor, metrics)
        listeners.append(_ListenerAdapter(radius, lambda c: c.radius))
    if config.http.enabled and index < config.http.workers:
        http = HttpService(config, threaded.authenticate, core.admin, run_blocking,
                           probe.check, reactor, metrics,
                           portability=portability_ops(config, core.store, core.keyring,
                                                       reactor.seconds))
        if config.selfservice.enabled:
            http.mount(b"selfservice", _portal(config, core, threaded.authenticate,
                                               run_blocking, reactor, http.limits))
        listeners.append(_ListenerAdapter(http, lambda c: c))
    # Audit retention: the main process prunes, on a thread of its own (audit_retention.py).
    audit_pool = ThreadPool(minthreads=0, maxthreads=1, name="authd-audit")
    if core.habits is not None:  # every process learns its users' habits at start
        warmup = HabitsWarmup(config, core.habits, core.store.export_audit, reactor, audit_pool)
        listeners.append(_ListenerAdapter(warmup, lambda c: c))
    if index == 0:
        pruner = AuditPruner(config.audit, core.store.prune_audit, reactor, audit_pool)
        listeners.append(_ListenerAdapter(pruner, lambda c: c))
    if processes > 1 and index == 0:
        argv = [sys.executable, "-m", "authd", "serve", "-c", config.source]
        supervisor = WorkerSupervisor(processes, argv, reactor,
                                      {**environ, worker_metrics.DIR_ENV: directory})
        listeners.append(_ListenerAdapter(supervisor, lambda c: None))

    if index > 0:
        return AuthdService(pool, listeners, _engine_part(core.engine, config),
                            close_store=core.close, notify=lambda state: None,
                            side_pools=(ready_pool, audit_pool))
    # The main process records the config it starts with and each reload's outcome.
    history = ConfigAudit(config, core.store.append_audit, reactor, audit_pool)
    listeners.insert(0, _ListenerAdapter(history, lambda c: c))
    return AuthdService(pool, listeners, _engine_part(core.engine, config),
                        close_store=core.close, side_pools=(ready_pool, audit_pool),
                        on_config=history.reloaded)


def process_count(config: Config) -> int:
    """How many daemon processes the config asks for (main process included)."""
    radius = config.radius.workers if config.radius.enabled else 1
    http = config.http.workers if config.http.enabled else 1
    return max(radius, http)
