"""Puts config loads and reloads into the audit trail (rows built by
`authd.config.history`), written on the audit pool: a SIGHUP arrives on the reactor
thread, which never waits for the store."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from authd.config.history import load_event, reload_event
from authd.config.model import Config
from authd.core.model import AuditEvent

log = Logger(namespace="authd.config_audit")


def daemon_actor() -> str:
    """`authd@<host>`: which node loaded the config (several share one PostgreSQL)."""
    return f"authd@{socket.gethostname()}"


class ConfigAudit:
    """Remembers the config in force, to name what a reload changed."""

    def __init__(
        self,
        config: Config,
        append: Callable[[AuditEvent], None],
        reactor: Any,
        pool: ThreadPool,
        actor: str | None = None,
    ) -> None:
        self._config = config
        self._append = append
        self._reactor = reactor
        self._pool = pool
        self._actor = actor or daemon_actor()

    # As a listener of AuthdService: the load is recorded once the pools run; reloads
    # arrive through `reloaded` (AuthdService's on_config), refused ones included.
    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        self.loaded()

    def stopService(self) -> None:  # noqa: N802
        return None

    def prepare(self, config: Config) -> Callable[[], None]:
        return lambda: None

    def loaded(self) -> Deferred[None]:
        """The daemon started with the config given at construction."""
        return self._write(load_event(self._config, self._reactor.seconds(), self._actor))

    def reloaded(self, new: Config | None) -> Deferred[None]:
        """A reload committed `new`, or was refused (None): the old config stays."""
        event = reload_event(self._config, new, self._reactor.seconds(), self._actor)
        if new is not None:
            self._config = new
        return self._write(event)

    def _write(self, event: AuditEvent) -> Deferred[None]:
        d: Deferred[None] = deferToThreadPool(self._reactor, self._pool, self._append, event)

        def failed(failure: Failure) -> None:
            # The row is lost, the reload is not: say so in the log (no values in it).
            log.error("audit: could not record {action}: {error}", action=event.action,
                      error=failure.type.__name__)  # fmt: skip

        return d.addErrback(failed)
