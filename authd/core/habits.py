"""Unusual sign-in: is this successful sign-in unlike the user's earlier ones?

Each user's habits are a few recent networks (a /24 for IPv4, a /64 for IPv6: an
address inside one provider's pool or one office), a few recent RADIUS clients or
front-ends, and the hours of the day (UTC) they signed in at. A success from a network
or client not among them, or at an hour with no sign-in within an hour of it, is
flagged: the caller writes the flags into the audit row and counts them. Nothing is
blocked. Until a user has `learn` successes nothing is flagged (a new user has no
habits yet).

Cheap and bounded, since it runs inside decisions: a dict lookup, two short tuple scans
and a bit test under one lock; at most `MAX_NETWORKS` + `MAX_CLIENTS` strings and one
int per user, and at most `max_users` users (least recently seen dropped first). Kept in
memory per process, learned from live successes and, at start, from the audit trail's
recent accepts (`authd/habits_warmup.py`); worker processes each learn live from the
sign-ins they decide.
"""

from __future__ import annotations

import functools
import ipaddress
import threading
from collections import OrderedDict
from collections.abc import Callable

MAX_NETWORKS = 8
MAX_CLIENTS = 8
_DAY = 86400


def network_of(source: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) holding `source`; "" when there is no address."""
    # Fast path: a socket's dotted IPv4 address (front-ends hand over canonical ones).
    head, dot, last = source.rpartition(".")
    if dot and last.isdigit() and head.count(".") == 2 and ":" not in head:
        return head + ".0/24"
    return _slow_network_of(source)


@functools.lru_cache(maxsize=4096)
def _slow_network_of(source: str) -> str:
    try:
        ip = ipaddress.ip_address(source)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


# Per hour of the day: its bit and its neighbours' (wrapping at midnight).
_NEAR = tuple((1 << h) | (1 << ((h + 1) % 24)) | (1 << ((h - 1) % 24)) for h in range(24))


# A user's habits: (successes seen, bit set of hours, networks, clients), the last two
# most recent first. Plain tuples of ints and strings on purpose: the cyclic garbage
# collector stops tracking such tuples as it passes over them, so a full collection
# walks none of them. Held as objects with two lists, 100,000 users were 300,000 tracked
# objects and every full collection took ~0.2 s, ~6% of a sustained run's CPU.
_Habit = tuple[int, int, tuple[str, ...], tuple[str, ...]]
_UNSEEN: _Habit = (0, 0, (), ())


def _remember(items: tuple[str, ...], item: str, limit: int) -> tuple[str, ...]:
    """`item` first, then the others most recent first, at most `limit`."""
    if not item or (items and items[0] == item):  # the usual case: nothing new
        return items
    return (item, *(kept for kept in items if kept != item))[:limit]


def _seen(habit: _Habit, network: str, client: str, hour: int) -> _Habit:
    seen, hours, networks, clients = habit
    return (
        seen + 1,
        hours | 1 << hour,
        _remember(networks, network, MAX_NETWORKS),
        _remember(clients, client, MAX_CLIENTS),
    )


class SigninHabits:
    """Per-user habits; `observe` is called once per successful sign-in, from any thread."""

    def __init__(
        self, max_users: int = 100_000, on_flag: Callable[[str], None] | None = None
    ) -> None:
        self._max_users = max_users
        self._on_flag = on_flag
        self._users: OrderedDict[str, _Habit] = OrderedDict()  # least recently seen first
        self._lock = threading.Lock()

    def observe(
        self, user: str, source: str, client: str, now: float, learn: int
    ) -> tuple[str, ...]:
        """Flags for this success ("network", "client", "hour"; empty: usual, or fewer
        than `learn` earlier successes), then remember it as one of the user's habits."""
        network = network_of(source)
        hour = int(now % _DAY) // 3600
        with self._lock:
            habit = self._users.get(user, _UNSEEN)
            seen, hours, networks, clients = habit
            flags: tuple[str, ...] = ()
            known_net = not network or network in networks
            known_client = not client or client in clients
            known_hour = bool(hours & _NEAR[hour])
            if seen >= learn and not (known_net and known_client and known_hour):
                flags = tuple(
                    name
                    for name, known in (
                        ("network", known_net),
                        ("client", known_client),
                        ("hour", known_hour),
                    )
                    if not known
                )
            self._keep(user, _seen(habit, network, client, hour))
        if flags and self._on_flag is not None:
            for flag in flags:
                self._on_flag(flag)
        return flags

    def learn(self, user: str, source: str, client: str, at: float) -> None:
        """Remember an earlier success (from the audit trail at start), flagging nothing."""
        network = network_of(source)
        with self._lock:
            habit = self._users.get(user, _UNSEEN)
            self._keep(user, _seen(habit, network, client, int(at % _DAY) // 3600))

    def _keep(self, user: str, habit: _Habit) -> None:
        """Store the user's habits as the most recently seen; the lock is held."""
        self._users[user] = habit
        self._users.move_to_end(user)
        if len(self._users) > self._max_users:
            self._users.popitem(last=False)

    def __len__(self) -> int:
        return len(self._users)
