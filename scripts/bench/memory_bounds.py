"""How many bytes each bounded in-memory table of authd holds when full (not a test).

`python scripts/bench/memory_bounds.py` fills every table listed in docs/DESIGN.md
("Memory bounds") to its bound through its own code, with entries of realistic size
(and, where entries vary, of the largest size a sender can make them), and prints the
entries and the bytes tracemalloc counts for it. Runs in about half a minute.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import tracemalloc
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from authd.auth.ldap_primary import CACHE_MAX_ENTRIES, DirectoryUser  # noqa: E402
from authd.core.habits import MAX_CLIENTS, MAX_NETWORKS, SigninHabits  # noqa: E402
from authd.core.ratelimit import FailureBackoff, TokenBucket  # noqa: E402
from authd.crypto import OPENED_MAX, Keyring  # noqa: E402
from authd.radius.dedup import DuplicateCache  # noqa: E402
from authd.radius.drop_log import DropLog  # noqa: E402
from authd.rest.ratelimit import MAX_KEYS, user_key  # noqa: E402
from authd.storage.ldap_attrs import HINTS_MAX  # noqa: E402


def measured(name: str, fill: Callable[[], tuple[object, int]]) -> None:
    """Print the entries and bytes of the table `fill` builds (kept alive while measured)."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    table, entries = fill()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    size = after - before
    print(f"{name:34} {entries:>9,} entries {size / 2**20:8.1f} MiB "
          f"{size / max(entries, 1):7.0f} B each", flush=True)
    del table


def _ip(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def duplicates(reply_bytes: int) -> Callable[[], tuple[object, int]]:
    def fill() -> tuple[object, int]:
        cache = DuplicateCache(window=30.0)
        reply = secrets.token_bytes(reply_bytes)
        for i in range(cache.max_entries + 1000):
            key = (_ip(i), 1024 + i % 60000, i & 255, secrets.token_bytes(16))
            cache.check(key, 0.0)
            # Each reply is its own bytes object, as the encoder makes them.
            cache.answered(key, reply[:-1] + bytes((i & 255,)), 0.0)
        return cache, len(cache)

    return fill


def habits() -> tuple[object, int]:
    table = SigninHabits()
    users = 100_000
    for i in range(users + 1000):
        user = f"user{i:07d}@example.org"
        for k in range(max(MAX_NETWORKS, MAX_CLIENTS)):
            table.learn(user, _ip(i * 16 + k * 256), f"gateway-{k}", 1767258000.0 + k * 3600)
    return table, len(table)


def directory_users() -> tuple[object, int]:
    # LdapBackend.find_user's table: one DirectoryUser per typed name (cache_ttl).
    cache: dict[str, DirectoryUser] = {}
    for i in range(CACHE_MAX_ENTRIES):
        name = f"user{i:07d}"
        cache[name] = DirectoryUser(
            name=name,
            dn=f"uid={name},ou=people,dc=example,dc=org",
            groups=tuple(f"group-{g}" for g in range(5)),
            profile={"email": f"{name}@example.org", "first_name": "Ann", "last_name": "Lee"},
            expires=1767258000.0,
        )
    return cache, len(cache)


def opened_seeds() -> tuple[object, int]:
    # The ring's table holds each blob string (a store row's, otherwise dropped): counted.
    with tempfile.TemporaryDirectory() as d:
        ring = Keyring.load_or_create(os.path.join(d, "keys.json"))
    for i in range(OPENED_MAX + 1000):
        aad = f"S{i:010d}".encode()
        ring.decrypt(ring.encrypt(secrets.token_bytes(20), aad), aad)
    return ring, ring.opened


def source_buckets() -> tuple[object, int]:
    table = TokenBucket(10.0, 20, MAX_KEYS)
    for i in range(MAX_KEYS + 1000):
        table.take(f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::1", 0.0)
    return table, len(table)


def user_buckets() -> tuple[object, int]:
    table = TokenBucket(1.0, 5, MAX_KEYS)
    for i in range(MAX_KEYS + 1000):
        # The HTTP schema admits user names up to 256 characters.
        table.take(user_key(f"{i:08d}".ljust(256, "x"), _ip(i)), 0.0)
    return table, len(table)


def backoff() -> tuple[object, int]:
    table = FailureBackoff(1.0, 30.0, max_keys=MAX_KEYS)
    for i in range(MAX_KEYS + 1000):
        table.failure(user_key(f"{i:08d}".ljust(256, "x"), _ip(i)), 0.0)
    return table, len(table)


def token_hints() -> tuple[object, int]:
    # LdapTokenStore._where: serial -> DN of the entry holding it.
    hints = {f"TOTP{i:08d}": f"uid=user{i:07d},ou=people,dc=example,dc=org"
             for i in range(HINTS_MAX)}
    return hints, len(hints)


def drop_log() -> tuple[object, int]:
    log = DropLog()
    for i in range(5000):
        log.note(_ip(i), "", "unknown_client", 0.0)
    return log, len(log)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="skip the larger reply cases")
    args = ap.parse_args()
    measured("radius_duplicates (64 B replies)", duplicates(64))
    if not args.quick:
        measured("radius_duplicates (500 B replies)", duplicates(500))
        measured("radius_duplicates (4096 B replies)", duplicates(4096))
    measured("signin_habits", habits)
    measured("directory_users", directory_users)
    measured("opened_seeds", opened_seeds)
    measured("http_source_buckets", source_buckets)
    measured("http_user_buckets", user_buckets)
    measured("http_failure_backoff", backoff)
    measured("token_hints", token_hints)
    measured("radius_drop_log", drop_log)


if __name__ == "__main__":
    main()
