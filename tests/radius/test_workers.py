"""WorkerSupervisor with a hand-written process reactor: spawn, restart, reload, stop."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from authd.workers import KILL_AFTER, RESTART_DELAY, WORKER_ENV, WorkerSupervisor, is_worker


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


def test_worker_index_and_allowed_cores_come_from_the_environment() -> None:
    """A worker learns its index and the daemon's original cores from its environment."""
    from authd.workers import CORES_ENV, allowed_cores, worker_index

    assert worker_index({}) == 0
    assert worker_index({WORKER_ENV: "2"}) == 2
    assert worker_index({WORKER_ENV: "junk"}) == 0
    assert allowed_cores({CORES_ENV: "3,1"}) == [1, 3]
    import os

    assert allowed_cores({}) == sorted(os.sched_getaffinity(0))


def test_core_for_pins_by_index_only_with_enough_cores() -> None:
    """Process i goes to the i-th allowed core; one process or too few cores: no pinning."""
    from authd.workers import core_for

    assert [core_for(i, 2, [4, 6]) for i in range(2)] == [4, 6]
    assert core_for(0, 1, [0, 1]) is None  # a single process is left to the scheduler
    assert core_for(2, 3, [0, 1]) is None  # fewer cores than processes
    assert core_for(5, 2, [0, 1]) is None


def test_supervisor_hands_workers_the_cores_seen_before_pinning() -> None:
    """Workers get the supervisor's original affinity (a child inherits a pinned mask)."""
    from authd.workers import CORES_ENV

    r = ProcessClock()
    sup = WorkerSupervisor(2, ARGV, r, environ={"PATH": "/usr/bin", CORES_ENV: "0,1"})
    sup.startService()
    assert [env[CORES_ENV] for _, _, env in r.spawned] == ["0,1"]
    sup.stopService()
    for t, _, _ in list(r.spawned):
        t.end(Failure(ProcessDone(0)))
    assert r.getDelayedCalls() == []


def test_pin_process_moves_every_thread(tmp_path: Any) -> None:
    """pin_process sets the affinity of every listed thread, and survives ones that ended."""
    import contextlib
    import os
    import threading

    from authd.workers import pin_process

    before = os.sched_getaffinity(0)
    core = min(before)
    done = threading.Event()
    t = threading.Thread(target=done.wait, args=(5,))
    t.start()
    try:
        tids = os.listdir("/proc/self/task")
        fake = tmp_path / "task"
        fake.mkdir()
        for tid in [*tids, "999999999"]:  # the last one does not exist
            (fake / tid).mkdir()
        assert pin_process(core, str(fake))
        assert all(os.sched_getaffinity(int(tid)) == {core} for tid in tids)
    finally:
        done.set()
        t.join()
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(tid), before)


def test_requests_from_one_source_spread_by_authenticator_and_retransmits_stick() -> None:
    """With the BPF program on a two-socket reuseport group, datagrams from ONE source
    port go to socket (authenticator word % 2): both workers get work, and a retransmit
    (same Request Authenticator) reaches the same socket as its original."""
    import os
    import select
    import socket

    from authd.radius.reuseport import spread_by_authenticator
    from authd.radius.service import bind_socket

    first = bind_socket("127.0.0.1", 0, 1 << 16, reuse_port=True)
    port = first.getsockname()[1]
    second = bind_socket("127.0.0.1", port, 1 << 16, reuse_port=True)
    socks = [first, second]
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert spread_by_authenticator(first, 2)
        landed: list[int] = []
        for i in range(40):
            auth = os.urandom(16)
            datagram = bytes((1, i, 0, 20)) + auth
            for _ in range(2):  # the original, then its retransmit
                client.sendto(datagram, ("127.0.0.1", port))
                ready, _, _ = select.select(socks, [], [], 2.0)
                assert len(ready) == 1, "exactly one socket receives each datagram"
                got = ready[0].recv(100)
                assert got == datagram
                landed.append(socks.index(ready[0]))
            want = int.from_bytes(auth[:4], "big") % 2
            assert landed[-2:] == [want, want]
        assert set(landed) == {0, 1}
    finally:
        client.close()
        for s in socks:
            s.close()


def test_spreading_never_loses_a_datagram_while_workers_are_missing() -> None:
    """A program for 3 workers on a 2-socket group (a worker restarting), and datagrams
    too short to carry an authenticator, fall back to the kernel's hash: all delivered."""
    import os
    import select
    import socket

    from authd.radius.reuseport import spread_by_authenticator
    from authd.radius.service import bind_socket

    first = bind_socket("127.0.0.1", 0, 1 << 16, reuse_port=True)
    port = first.getsockname()[1]
    second = bind_socket("127.0.0.1", port, 1 << 16, reuse_port=True)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert spread_by_authenticator(first, 3)
        datagrams = [bytes((1, i, 0, 20)) + os.urandom(16) for i in range(30)]
        datagrams += [b"\x01\x02"] * 5
        for datagram in datagrams:
            client.sendto(datagram, ("127.0.0.1", port))
            ready, _, _ = select.select([first, second], [], [], 2.0)
            assert len(ready) == 1 and ready[0].recv(100) == datagram
    finally:
        client.close()
        first.close()
        second.close()
