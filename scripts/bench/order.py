"""The order in which a benchmark drives its users. Real gateways send users in no
order, so the default is a seeded shuffle; name order (neighbouring rows in a row, which
flatters a store's page cache) stays available as an option and is labelled as such.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

ORDERS = ("random", "name")


def rounds(users: int, count: int, order: str, seed: int, gap: int) -> list[list[int]]:
    """`count` rounds of `endless` (see there)."""
    return list(itertools.islice(endless(users, order, seed, gap), count))


def endless(users: int, order: str, seed: int, gap: int) -> Iterator[list[int]]:
    """Rounds, each visiting every user index once. With `random` each round is a fresh
    shuffle in which no user of the last `gap` places of a round comes back in the first
    `gap` places of the next (a user's next code must never be in flight with its
    previous one, as `gap` requests may be)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
    if order == "name":
        while True:
            yield list(range(users))
    if users < 2 * gap:
        raise ValueError(f"random order needs at least {2 * gap} users for {gap} in flight")
    rng = random.Random(seed)
    recent: set[int] = set()
    while True:
        perm = list(range(users))
        rng.shuffle(perm)
        # Move each recent user found near the start to a random later place whose
        # occupant is not recent: the swap keeps the round a permutation.
        for i in range(gap):
            if perm[i] in recent:
                while True:
                    j = rng.randrange(gap, users)
                    if perm[j] not in recent:
                        perm[i], perm[j] = perm[j], perm[i]
                        break
        recent = set(perm[-gap:])
        yield perm


def label(order: str, seed: int) -> str:
    """How the output names the order."""
    return f"users in random order (seed {seed})" if order == "random" else "users in NAME order"
