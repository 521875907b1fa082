"""`radius.workers: N`: N-1 extra daemon processes sharing the RADIUS port.

Python runs one request at a time per process, so a second core needs a second process.
Every process binds the RADIUS addresses with SO_REUSEPORT (RadiusService does, when
workers > 1); the kernel hashes each client's source address and port to one socket,
so a retransmit meets the duplicate cache that saw the original. Processes share only
the store, where exactness lives (DESIGN.md), so nothing in RAM needs to agree.

The supervisor runs in the main process: it starts the workers with WORKER_ENV set
(a worker serves RADIUS only: no HTTP, no systemd notification), forwards SIGHUP,
restarts a worker that dies, and on stop sends SIGTERM and waits for them to drain.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

log = logging.getLogger(__name__)

WORKER_ENV = "AUTHD_RADIUS_WORKER"
RESTART_DELAY = 1.0  # seconds before a dead worker is started again (no tight loop)
KILL_AFTER = 15.0  # seconds a worker may take to drain after SIGTERM


def is_worker(environ: Mapping[str, str] = os.environ) -> bool:
    """True inside a worker process started by WorkerSupervisor."""
    return bool(environ.get(WORKER_ENV))


class _Worker(ProcessProtocol):
    def __init__(self, supervisor: WorkerSupervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.ended: Deferred[None] = Deferred()

    def processEnded(self, reason: Failure) -> None:  # noqa: N802 - Twisted's name
        self.ended.callback(None)
        self.supervisor._ended(self, reason)


class WorkerSupervisor(Service):
    """Keeps `count - 1` worker processes running `argv` (the main process is one)."""

    def __init__(
        self,
        count: int,
        argv: Sequence[str],
        reactor: Any,  # IReactorProcess & IReactorTime (zope interfaces: Any for mypy)
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.count = count
        self.argv = list(argv)
        self._reactor = reactor
        self._environ = dict(os.environ if environ is None else environ)
        self._workers: dict[int, tuple[_Worker, Any]] = {}
        self._restarts: dict[int, Any] = {}  # index -> pending IDelayedCall
        self._stopping = False

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()
        self._stopping = False
        for index in range(1, self.count):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        if self._stopping:
            return
        env = {**self._environ, WORKER_ENV: str(index)}
        proto = _Worker(self, index)
        transport = self._reactor.spawnProcess(
            proto, self.argv[0], self.argv, env=env, childFDs={0: "w", 1: 1, 2: 2}
        )
        self._workers[index] = (proto, transport)
        log.info("radius: started worker %d (pid %s)", index, getattr(transport, "pid", "?"))

    def _ended(self, proto: _Worker, reason: Failure) -> None:
        current = self._workers.get(proto.index)
        if current is not None and current[0] is proto:
            del self._workers[proto.index]
        if not self._stopping:
            log.error(
                "radius: worker %d ended (%s); restarting in %.0fs",
                proto.index,
                reason.getErrorMessage(),
                RESTART_DELAY,
            )
            self._restarts[proto.index] = self._reactor.callLater(
                RESTART_DELAY, self._spawn, proto.index
            )

    def pids(self) -> list[int]:
        """Process ids of the running workers (for tests and the benchmark)."""
        return [int(t.pid) for _, t in self._workers.values() if t.pid]

    def _signal(self, name: str) -> None:
        for _, transport in list(self._workers.values()):
            try:
                transport.signalProcess(name)
            except (ProcessExitedAlready, OSError):
                continue

    def reload(self) -> None:
        """Forward SIGHUP: each worker re-reads the config itself."""
        self._signal("HUP")

    def stopService(self) -> Deferred[Any]:  # noqa: N802 - Twisted's name
        """SIGTERM every worker (each drains), SIGKILL what is left after KILL_AFTER."""
        super().stopService()
        self._stopping = True
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        ended = [proto.ended for proto, _ in self._workers.values()]
        self._signal("TERM")
        killer = self._reactor.callLater(KILL_AFTER, self._signal, "KILL")

        def done(result: object) -> object:
            if killer.active():
                killer.cancel()
            return result

        return DeferredList(ended).addBoth(done)
