"""The daemon's lifecycle: ordered start, READY=1 after every listener is bound,
draining stop, and SIGHUP reloads that keep the old config when the new one is bad.

Twisted's MultiService does not wait for its children, so the order is explicit here:
the worker pool starts first and stops last, listeners bind in order and any bind
failure stops what was started and propagates (the daemon exits non-zero).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from typing import Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from authd import hot_path_build, systemd
from authd.config.errors import ConfigErrors
from authd.config.model import Config

log = Logger(namespace="authd.service")


class Listener(Protocol):
    """A front-end service: binds in startService, drains in stopService."""

    def startService(self) -> None: ...  # noqa: N802 (Twisted's name)
    def stopService(self) -> Deferred[None] | None: ...  # noqa: N802
    def reload(self, config: Config) -> None: ...


class AuthdService(Service):
    """Owns the auth thread pool, the store's lifetime and the listeners."""

    def __init__(
        self,
        pool: ThreadPool,
        listeners: Sequence[Listener],
        on_reload: Callable[[Config], None],
        close_store: Callable[[], None],
        notify: Callable[[str], object] = systemd.notify,
    ) -> None:
        self.pool = pool
        self.listeners = list(listeners)
        self._on_reload = on_reload
        self._close_store = close_store
        self._notify = notify

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self.pool.start()
        started: list[Listener] = []
        try:
            for listener in self.listeners:
                listener.startService()
                started.append(listener)
        except BaseException:
            for listener in reversed(started):
                listener.stopService()
            self.pool.stop()
            self.running = False
            raise
        # Everything built at start-up (config, routes, compiled statements, modules)
        # lives as long as the process: frozen out of the cyclic collector's reach, a full
        # collection no longer walks it. Measured: HTTP otp/check p99 56 -> 24 ms (+11%
        # req/s); RADIUS workers=2 p99 ~38 -> 11 ms (scripts/bench/http, scripts/bench/radius).
        gc.collect()
        gc.freeze()
        self._notify("READY=1")
        log.info("authd ready (hot path: {build})", build=hot_path_build())

    def stopService(self) -> Deferred[None]:  # noqa: N802
        super().stopService()
        self._notify("STOPPING=1")
        drained: Deferred[list[object]] = gatherResults(
            [maybeDeferred(listener.stopService) for listener in reversed(self.listeners)],
            consumeErrors=True,
        )

        def release(_: object) -> None:
            self.pool.stop()  # joins worker threads: in-flight decisions finish first
            self._close_store()
            log.info("authd stopped")

        return drained.addBoth(release)

    def reload(self, load: Callable[[], Config]) -> bool:
        """SIGHUP: load the config again; a bad one is refused and the old stays."""
        try:
            config = load()
        except ConfigErrors as errors:
            log.error("config reload refused, keeping the running config:\n{errors}",
                      errors=str(errors))
            return False
        except OSError as error:
            log.error("config reload refused, keeping the running config: {error}",
                      error=str(error))
            return False
        self._on_reload(config)
        for listener in self.listeners:
            listener.reload(config)
        log.info("config reloaded from {source}", source=config.source)
        return True
