"""Which address an HTTP request came from, believing X-Forwarded-For only from proxies.

The peer address is the truth unless the peer is a configured trusted proxy; then the
X-Forwarded-For chain is walked from the right (the hop the proxy itself added) past
further trusted proxies, and the first untrusted address is the source. A malformed
entry stops the walk at the last address known good (a client cannot inject its way in).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """Networks from config CIDRs (a bare address is a /32 or /128)."""
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _trusted(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: Sequence[Network]
) -> bool:
    return any(addr.version == net.version and addr in net for net in proxies)


@functools.lru_cache(maxsize=4096)
def _peer_text(peer: str) -> str:
    """The peer's canonical text (an IPv4-mapped IPv6 peer as IPv4), remembered: parsing
    an address costs microseconds and a client sends many requests from one."""
    peer_ip = _ip(peer)
    return peer if peer_ip is None else str(peer_ip)


def client_address(
    peer: str, forwarded_for: Sequence[bytes] | None, proxies: Sequence[Network]
) -> str:
    """The request's source address as a string."""
    if not proxies or not forwarded_for:
        return _peer_text(peer)
    peer_ip = _ip(peer)
    if peer_ip is None:
        return peer
    if not proxies or not forwarded_for or not _trusted(peer_ip, proxies):
        return str(peer_ip)
    hops: list[str] = []
    for header in forwarded_for:
        hops.extend(header.decode("latin-1").split(","))
    source = peer_ip
    for hop in reversed(hops):
        addr = _ip(hop)
        if addr is None:
            break
        source = addr
        if not _trusted(addr, proxies):
            break
    return str(source)
