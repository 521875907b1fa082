"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.

A no-op when not started by systemd (no NOTIFY_SOCKET), so `authd serve` behaves the
same in a terminal and under `Type=notify`.
"""

from __future__ import annotations

import os
import socket


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
