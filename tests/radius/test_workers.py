"""WorkerSupervisor with a hand-written process reactor: spawn, restart, reload, stop."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from authd.radius.workers import KILL_AFTER, RESTART_DELAY, WORKER_ENV, WorkerSupervisor, is_worker


class FakeTransport:
    """Records signals; `end()` reports the process gone like the reactor would."""

    def __init__(self, proto: Any, pid: int) -> None:
        self.proto, self.pid = proto, pid
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:  # noqa: N802 - Twisted's name
        self.signals.append(name)

    def end(self, reason: Failure) -> None:
        self.proto.processEnded(reason)


class ProcessClock(Clock):
    """A Clock that can also 'spawn' processes."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[FakeTransport, list[str], dict[str, str]]] = []

    def spawnProcess(
        self, proto: Any, executable: str, args: list[str], env: dict[str, str], **kw: Any
    ) -> FakeTransport:  # noqa: N802 - Twisted's name
        t = FakeTransport(proto, 1000 + len(self.spawned))
        proto.makeConnection(t)
        self.spawned.append((t, args, env))
        return t


ARGV = ["/usr/bin/python3", "-m", "authd", "serve", "-c", "/etc/authd/authd.yaml"]


def test_starts_count_minus_one_workers_marked_as_workers() -> None:
    """workers: 3 -> two more processes with the same command and WORKER_ENV set."""
    r = ProcessClock()
    sup = WorkerSupervisor(3, ARGV, r, environ={"PATH": "/usr/bin"})
    sup.startService()
    assert [args for _, args, _ in r.spawned] == [ARGV, ARGV]
    assert [env[WORKER_ENV] for _, _, env in r.spawned] == ["1", "2"]
    assert all(is_worker(env) for _, _, env in r.spawned) and not is_worker({})
    assert sup.pids() == [1000, 1001]
    for t, _, _ in r.spawned:
        t.end(Failure(ProcessDone(0)))
    r.advance(RESTART_DELAY)  # restarts are due; stop them cleanly below
    sup.stopService()
    for t, _, _ in r.spawned[2:]:
        t.end(Failure(ProcessDone(0)))
    r.advance(KILL_AFTER)
    assert r.getDelayedCalls() == []


def test_dead_worker_is_restarted_after_a_delay() -> None:
    """A worker that dies is started again after RESTART_DELAY, not in a tight loop."""
    r = ProcessClock()
    sup = WorkerSupervisor(2, ARGV, r, environ={})
    sup.startService()
    r.spawned[0][0].end(Failure(ProcessTerminated(1)))
    assert len(r.spawned) == 1
    r.advance(RESTART_DELAY)
    assert len(r.spawned) == 2 and r.spawned[1][2][WORKER_ENV] == "1"
    d = sup.stopService()
    r.spawned[1][0].end(Failure(ProcessDone(0)))
    assert d.called and r.getDelayedCalls() == []


def test_reload_forwards_sighup_and_stop_drains_then_kills() -> None:
    """reload() sends HUP; stop sends TERM, and KILL only to a worker still alive after
    KILL_AFTER; the stop Deferred fires when every worker has ended."""
    r = ProcessClock()
    sup = WorkerSupervisor(3, ARGV, r, environ={})
    sup.startService()
    sup.reload()
    (a, _, _), (b, _, _) = r.spawned
    assert a.signals == b.signals == ["HUP"]
    d = sup.stopService()
    assert a.signals[-1] == b.signals[-1] == "TERM"
    a.end(Failure(ProcessDone(0)))
    r.advance(KILL_AFTER)
    assert b.signals[-1] == "KILL" and "KILL" not in a.signals
    assert not d.called
    b.end(Failure(ProcessTerminated(signal=9)))
    assert d.called and len(r.spawned) == 2  # no restart while stopping
