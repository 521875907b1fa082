"""Free loopback ports for servers the tests start in another process (authd, slapd,
PostgreSQL), which bind them later.

A port the kernel hands out for port 0 comes from the ephemeral range, which every
outgoing connection and every `bind(0)` on the machine also draws from: between the probe
and the server's own bind, another process may take it (seen as EADDRINUSE). Ports are
therefore chosen at random below that range, and only when free for both TCP and UDP.
"""

from __future__ import annotations

import random
import socket

_LOWEST = 10000
_EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"


def _first_ephemeral() -> int:
    try:
        with open(_EPHEMERAL_RANGE) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_ports(count: int) -> list[int]:
    """count distinct ports, each free for TCP and UDP on 127.0.0.1 when chosen."""
    top = _first_ephemeral()
    if top - _LOWEST < 1000:
        raise RuntimeError(f"ephemeral ports start at {top}: no room for test ports below")
    pick = random.SystemRandom()
    chosen: list[int] = []
    for _ in range(1000):
        port = pick.randrange(_LOWEST, top)
        if port not in chosen and _free(port):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"no {count} free loopback ports found in {_LOWEST}-{top - 1}")


def free_port() -> int:
    """One port, free for TCP and UDP on 127.0.0.1 when chosen."""
    return free_ports(1)[0]
