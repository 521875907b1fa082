"""Who may hold an HTTP connection open: a cap per source address and one in total.

Every open connection costs a file descriptor until it closes. Without caps, a few
hosts opening idle connections (or sending a header line now and then: slowloris) use
up the process's descriptors and real requests cannot connect. A new connection is
refused when its source already holds `per_source`; when the process holds `total`, the
oldest connection that is not being answered (idle, or still sending its request) is
closed to make room, so a real request gets in while slow senders are pushed out.
Trusted proxies are not capped per source: every client behind them shares that
address.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from authd.rest.clientaddr import Network


@dataclass(frozen=True)
class ConnectionLimits:
    total: int
    per_source: int
    exempt: tuple[Network, ...] = ()  # trusted proxies

    def capped(self, source: str) -> bool:
        """Whether `source` is held to `per_source` (everyone but trusted proxies)."""
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return True
        return not any(address in network for network in self.exempt)


class ConnectionTable:
    """Open connections in the order they opened, with their source address."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._open: dict[Hashable, str] = {}  # insertion order: oldest first
        self._per_source: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._open)

    def admit(
        self, conn: Hashable, source: str, busy: Callable[[Hashable], bool]
    ) -> list[Hashable] | None:
        """Register `conn` from `source`: None when it must be refused, else the
        connections to close first to make room for it (forgotten already)."""
        limits = self.limits
        if self._per_source[source] >= limits.per_source and limits.capped(source):
            return None
        evict: list[Hashable] = []
        if len(self._open) >= limits.total:
            excess = len(self._open) - limits.total + 1  # a reload may have lowered it
            evict = [c for c in self._open if not busy(c)][:excess]
            if len(evict) < excess:
                return None  # every connection is being answered: none to push out
            for old in evict:
                self.forget(old)
        self._open[conn] = source
        self._per_source[source] += 1
        return evict

    def forget(self, conn: Hashable) -> None:
        """`conn` closed (or is being closed); unknown connections are ignored."""
        source = self._open.pop(conn, None)
        if source is not None:
            self._per_source[source] -= 1
            if not self._per_source[source]:
                del self._per_source[source]
