"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, the watchdog pings
and the messages around a reload.

A no-op when not started by systemd (no NOTIFY_SOCKET), so `authd serve` behaves the
same in a terminal and under `Type=notify`.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall


def notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Send `state` (e.g. "READY=1") to systemd; True if a socket was there to send to."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket (sd_notify(3))
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(state.encode("utf-8"))
    return True


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as `MONOTONIC_USEC=` next to RELOADING=1 wants."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def reloading(now_usec: int) -> str:
    """The state that opens a reload; READY=1 closes it (sd_notify(3): systemd 253+
    matches the reload by MONOTONIC_USEC, older ones ignore the field)."""
    return f"RELOADING=1\nMONOTONIC_USEC={now_usec}"


def reloaded(refused: str | None) -> str:
    """The state that closes a reload: READY=1 either way (the old config still serves),
    with STATUS= saying whether the new one took, shown by `systemctl status`."""
    if refused is None:
        return "READY=1\nSTATUS=config reloaded"
    return "READY=1\nSTATUS=reload refused: " + " ".join(refused.split())


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC (sd_watchdog_enabled(3)),
    or None when systemd wants no pings from this process."""
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


class Watchdog:
    """Sends WATCHDOG=1 from the reactor, so the pings stop when the event loop wedges
    and systemd restarts the daemon (WatchdogSec= in the unit). Shaped like a listener:
    started first, stopped last, nothing to reload."""

    def __init__(
        self,
        clock: IReactorTime,
        interval: float | None,
        send: Callable[[str], object] = notify,
    ) -> None:
        self._interval = interval
        self._send = send
        self._loop = LoopingCall(self._ping)
        self._loop.clock = clock

    def _ping(self) -> None:
        self._send("WATCHDOG=1")

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        if self._interval is not None and not self._loop.running:
            self._loop.start(self._interval, now=True)

    def stopService(self) -> None:  # noqa: N802
        if self._loop.running:
            self._loop.stop()

    def prepare(self, config: object) -> Callable[[], None]:
        return lambda: None
