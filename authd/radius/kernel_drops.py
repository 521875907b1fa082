"""Requests the kernel dropped because a RADIUS socket's receive buffer was full.

Such datagrams never reach authd, so no counter of its own can see them; the client
only times out and retransmits. Linux counts them per socket in the `drops` column of
/proc/net/udp and /proc/net/udp6 (the socket is found by its inode). Read at each
metrics collection, not per packet, so the request path pays nothing; the growth since
the last read goes into `authd_drops_total{frontend="radius",reason="receive_buffer_full"}`.
(SO_RXQ_OVFL would carry the same count as ancillary data, but Twisted's UDP port reads
with recvfrom, which drops ancillary data.)
"""

from __future__ import annotations

import os
import socket
from collections.abc import Collection

from authd.metrics import Metrics

# The process's own view (its network namespace): the unit's ProcSubset=pid hides the
# /proc/net link, not /proc/self/net.
PROC_NET = "/proc/self/net"
REASON = "receive_buffer_full"
_INODE, _DROPS = 9, 12  # columns of /proc/net/udp (after `sl`, the addresses, ...)


def socket_drops(inodes: Collection[int], proc_net: str = PROC_NET) -> dict[int, int]:
    """The kernel's drop count for each of `inodes` that is a UDP socket ({} off Linux)."""
    found: dict[int, int] = {}
    for table in ("udp", "udp6"):
        try:
            with open(os.path.join(proc_net, table), encoding="ascii") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > _DROPS and int(fields[_INODE]) in inodes:
                found[int(fields[_INODE])] = int(fields[_DROPS])
    return found


class KernelDrops:
    """Adds the kernel's receive-buffer drops of the watched sockets to authd_drops_total
    before every collection (a scrape, or a test reading a sample)."""

    def __init__(self, metrics: Metrics, proc_net: str = PROC_NET) -> None:
        self._counter = metrics.drops.labels(frontend="radius", reason=REASON)
        self._proc_net = proc_net
        self._seen: dict[int, int] = {}  # inode -> drops already counted
        metrics.before_collect(self.flush)

    def watch(self, sock: socket.socket) -> None:
        """Count this socket's drops from now on (the socket may be closed afterwards
        while a duplicate of it, such as the reactor's, stays open)."""
        inode = os.fstat(sock.fileno()).st_ino
        self._seen[inode] = socket_drops((inode,), self._proc_net).get(inode, 0)

    def forget(self) -> None:
        """Stop counting (the sockets are closed)."""
        self.flush()
        self._seen.clear()

    def flush(self) -> None:
        if not self._seen:
            return
        for inode, drops in socket_drops(self._seen, self._proc_net).items():
            if drops > self._seen[inode]:
                self._counter.inc(drops - self._seen[inode])
                self._seen[inode] = drops
