"""Worker processes: `radius.workers` / `http.workers` > 1 run extra daemon processes.

Python runs one request at a time per process, so a second core needs a second process.
The main process (index 0) supervises `max(radius.workers, http.workers)` - 1 workers,
each `authd serve` on the same config with WORKER_ENV set to its index: worker i serves
RADIUS when i < radius.workers and HTTP when i < http.workers, binding with
SO_REUSEPORT (authd.radius.reuseport steers RADIUS datagrams). Processes share only the
store, where exactness lives (DESIGN.md), so nothing in RAM needs to agree. A worker
does not talk to systemd; the supervisor forwards SIGHUP, restarts a worker that dies,
and on stop sends SIGTERM and waits for them to drain.

`radius.pin_workers` pins process i (main: 0) to the i-th core the daemon was allowed
to use, when there are at least `workers` of them: each process then keeps its own
core's caches and the kernel never stacks two busy interpreters on one core. The
allowed set is taken before anyone pins and handed to workers in CORES_ENV, since a
child inherits its parent's (by then pinned) mask.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger(namespace="authd.workers")

WORKER_ENV = "AUTHD_WORKER"
CORES_ENV = "AUTHD_CORES"  # the cores the daemon may use, e.g. "0,1"
RESTART_DELAY = 1.0  # seconds before a dead worker is started again (no tight loop)
KILL_AFTER = 15.0  # seconds a worker may take to drain after SIGTERM


def is_worker(environ: Mapping[str, str] = os.environ) -> bool:
    """True inside a worker process started by WorkerSupervisor."""
    return bool(environ.get(WORKER_ENV))


def worker_index(environ: Mapping[str, str] = os.environ) -> int:
    """0 in the main process, i in worker i."""
    try:
        return max(0, int(environ.get(WORKER_ENV, "0") or "0"))
    except ValueError:
        return 0


def allowed_cores(environ: Mapping[str, str] = os.environ) -> list[int]:
    """The cores this daemon may use: from CORES_ENV in a worker, else this process's
    affinity mask (taskset, cgroup cpuset)."""
    text = environ.get(CORES_ENV, "")
    if text:
        try:
            return sorted({int(c) for c in text.split(",") if c})
        except ValueError:
            pass
    return sorted(os.sched_getaffinity(0))


def core_for(index: int, workers: int, cores: Sequence[int]) -> int | None:
    """The core process `index` of `workers` is pinned to, or None: one process, or
    fewer cores than processes (then the scheduler places them)."""
    if workers < 2 or len(cores) < workers or not 0 <= index < workers:
        return None
    return sorted(cores)[index]


def pin_process(core: int, task_dir: str = "/proc/self/task") -> bool:
    """Move every thread of this process onto `core` (Linux affinity is per thread;
    threads started later inherit it). False, logged, when the kernel refuses."""
    try:
        for tid in os.listdir(task_dir):
            try:
                os.sched_setaffinity(int(tid), {core})
            except ProcessLookupError:
                continue  # a thread that ended meanwhile
    except OSError as exc:
        log.warn("radius: cannot pin to core {core}: {error}", core=core, error=str(exc))
        return False
    log.info("process {pid} pinned to core {core}", pid=os.getpid(), core=core)
    return True


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
        # Taken now, before the main process pins itself (its children inherit that).
        self._environ.setdefault(CORES_ENV, ",".join(map(str, allowed_cores(self._environ))))
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
        log.info("started worker {index} (pid {pid})", index=index,
                 pid=getattr(transport, "pid", "?"))

    def _ended(self, proto: _Worker, reason: Failure) -> None:
        current = self._workers.get(proto.index)
        if current is not None and current[0] is proto:
            del self._workers[proto.index]
        if not self._stopping:
            log.error(
                "worker {index} ended ({why}); restarting in {delay:.0f}s",
                index=proto.index,
                why=reason.getErrorMessage(),
                delay=RESTART_DELAY,
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
