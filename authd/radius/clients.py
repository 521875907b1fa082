"""Which RADIUS client a datagram comes from, chosen by source address only.

CONTRACT: the secret is picked by source address (CIDR), never by NAS-Identifier or any
other attribute the sender controls. The most specific network wins, so a /32 can carry
its own secret inside a broader /24.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from twisted.logger import Logger

from authd.config.model import RadiusClient, RadiusConfig
from authd.core.username import realm_problem, realm_set
from authd.radius.codec import Keys, RadiusDictionary
from authd.radius.replies import ReplyPlan, build_reply_plan

log = Logger(namespace="authd.radius.clients")

# RFC 2865 §3 asks for at least 16 octets; 12 or fewer is what BlastRADIUS-era advisories
# call guessable by offline search.
WEAK_SECRET_OCTETS = 12

# Source addresses whose match a table remembers: past it, new sources are matched
# without being remembered (known clients came first; a spoofed flood cannot grow it).
LOOKUPS_MAX = 4096

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Client:
    """A configured client, ready for the hot path (secret as bytes, reply plan built)."""

    name: str
    network: Network
    secret: bytes = field(repr=False)
    require_message_authenticator: bool
    first_factor: str
    otp_mode: str
    replies: ReplyPlan
    keys: Keys = field(repr=False, compare=False)  # the secret keyed once for the hot path
    realms: frozenset[str] = frozenset()  # stripped from User-Name (core.username.realm_set)


class ClientConfigError(ValueError):
    """A client entry that cannot be used; the message names the client, never a secret."""


class ClientTable:
    """Source address -> Client, immutable; a reload builds a new table and swaps it."""

    def __init__(self, clients: list[Client]) -> None:
        # Most specific first; ties keep config order.
        self._clients = sorted(clients, key=lambda c: -c.network.prefixlen)
        self._cache: dict[str, Client | None] = {}

    @property
    def clients(self) -> list[Client]:
        return list(self._clients)

    def cached_lookups(self) -> int:
        """Source addresses whose match is remembered (at most LOOKUPS_MAX)."""
        return len(self._cache)

    def match(self, ip: str) -> Client | None:
        """The client for a source IP string, or None (unknown source: drop)."""
        try:
            return self._cache[ip]
        except KeyError:
            pass
        found = self._lookup(ip)
        if len(self._cache) < LOOKUPS_MAX:  # bound memory against spoofed-source floods
            self._cache[ip] = found
        return found

    def _lookup(self, ip: str) -> Client | None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        for c in self._clients:
            if addr.version == c.network.version and addr in c.network:
                return c
        return None


def build_client(rc: RadiusClient, config: RadiusConfig, dictionary: RadiusDictionary) -> Client:
    """Check one client entry and prepare it; ClientConfigError when unusable."""
    label = rc.name or rc.address or "<unnamed>"
    if not rc.name:
        raise ClientConfigError(f"radius client {label}: name is required")
    try:
        network = ipaddress.ip_network(rc.address, strict=False)
    except ValueError as exc:
        raise ClientConfigError(f"radius client {label}: bad address or CIDR") from exc
    if rc.secret is None or len(rc.secret) == 0:
        # Fail closed: an empty secret would make every authenticator forgeable.
        raise ClientConfigError(f"radius client {label}: secret is required")
    for realm in rc.realms:
        problem = realm_problem(realm)
        if problem is not None:
            raise ClientConfigError(f"radius client {label}: realms: {problem}")
    try:
        plan = build_reply_plan(rc.reply_attributes, config.netscaler_group, dictionary)
    except ValueError as exc:
        raise ClientConfigError(f"radius client {label}: {exc}") from exc
    return Client(
        name=rc.name,
        network=network,
        secret=rc.secret.reveal_bytes(),
        require_message_authenticator=rc.require_message_authenticator,
        first_factor=rc.first_factor,
        otp_mode=rc.otp_mode,
        replies=plan,
        realms=realm_set(rc.realms),
        keys=Keys(rc.secret.reveal_bytes()),
    )


def build_client_table(config: RadiusConfig, dictionary: RadiusDictionary) -> ClientTable:
    """Every client of `config`, or ClientConfigError listing every problem at once."""
    clients: list[Client] = []
    problems: list[str] = []
    names: set[str] = set()
    for rc in config.clients:
        try:
            c = build_client(rc, config, dictionary)
        except ClientConfigError as exc:
            problems.append(str(exc))
            continue
        if c.name in names:
            problems.append(f"radius client {c.name}: duplicate name")
            continue
        names.add(c.name)
        if len(c.secret) <= WEAK_SECRET_OCTETS:
            log.warn(
                "radius client {client}: secret is {octets} octets or shorter; use at least "
                "16 random octets",
                client=c.name,
                octets=WEAK_SECRET_OCTETS,
            )
        if not c.require_message_authenticator:
            log.warn(
                "radius client {client}: require_message_authenticator is off; requests "
                "without Message-Authenticator are open to BlastRADIUS (CVE-2024-3596)",
                client=c.name,
            )
        clients.append(c)
    if problems:
        raise ClientConfigError("; ".join(problems))
    return ClientTable(clients)
