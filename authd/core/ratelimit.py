"""Token buckets and escalating failure delays: pure functions of an explicit `now`.

Buckets are computed lazily (the Synapse rate limiter's way): a bucket stores its level
and the time it was last touched, and refills on the next look. No timers, so a test
moves time by passing another `now`. Memory is bounded: a table never holds more than
`max_keys` entries; idle keys (full bucket, expired delay) are the first to go. A full
table makes room for `max_keys // 8` new keys at once: one pass over it then serves
that many new keys, so a flood of distinct keys costs O(1) per key, not a scan each.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


def _headroom(max_keys: int) -> int:
    """How many keys a full table frees at once (at least one)."""
    return max(1, max_keys // 8)


@dataclass
class _Bucket:
    level: float  # tokens available at `at`
    at: float


class TokenBucket:
    """Per-key token buckets holding up to `burst` tokens refilled at `rate` per second.

    `take(key, now)` spends one token and answers 0.0, or spends nothing and answers the
    seconds until a token is available (for Retry-After). A rate of 0 never refills.
    """

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        if burst < 1 or rate < 0 or max_keys < 1:
            raise ValueError("burst >= 1, rate >= 0 and max_keys >= 1 are required")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, bucket: _Bucket, now: float) -> float:
        # A clock stepping backwards must not mint tokens: elapsed never goes below 0.
        elapsed = max(0.0, now - bucket.at)
        return min(float(self.burst), bucket.level + elapsed * self.rate)

    def peek(self, key: str, now: float) -> float:
        """Seconds until `key` could take a token (0.0: now), without spending one."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        level = self._level(bucket, now)
        if level >= 1.0:
            return 0.0
        return float("inf") if self.rate == 0 else (1.0 - level) / self.rate

    def take(self, key: str, now: float) -> float:
        """Spend one token for `key`; 0.0 when allowed, else seconds to wait."""
        bucket = self._buckets.get(key)
        if bucket is None:
            self._make_room(now)
            bucket = _Bucket(level=float(self.burst), at=now)
            self._buckets[key] = bucket
        else:
            self._buckets.move_to_end(key)
        level = self._level(bucket, now)
        bucket.at = max(bucket.at, now)
        if level >= 1.0:
            bucket.level = level - 1.0
            return 0.0
        bucket.level = level
        return float("inf") if self.rate == 0 else (1.0 - level) / self.rate

    def _make_room(self, now: float) -> None:
        """Keep the table under `max_keys`: drop refilled buckets first, then the least
        recently used ones, down to `_headroom` free places (a forgotten bucket starts
        full again, the price of a bounded table under a flood of distinct keys)."""
        if len(self._buckets) < self.max_keys:
            return
        for key in [k for k, b in self._buckets.items() if self._level(b, now) >= self.burst]:
            del self._buckets[key]
        keep = self.max_keys - _headroom(self.max_keys)
        while len(self._buckets) > keep:
            self._buckets.popitem(last=False)


@dataclass
class _Backoff:
    failures: int
    not_before: float


@dataclass(frozen=True)
class BackoffState:
    """What operators see of a throttled user: failures in a row and when it eases."""

    failures: int
    not_before: float


class FailureBackoff:
    """Escalating delay after consecutive failures for one key (a user being guessed).

    After the n-th failure in a row, the key must wait `base * 2**(n-1)` seconds (at most
    `cap`) before its next attempt. It slows an online guesser long before the store's
    lockout triggers, while a victim is never shut out for more than `cap` seconds by it.
    A success forgets the key; so does `forget_after` seconds without a failure.
    """

    def __init__(
        self, base: float, cap: float, forget_after: float = 3600.0, max_keys: int = 100_000
    ) -> None:
        if base < 0 or cap < base or max_keys < 1:
            raise ValueError("0 <= base <= cap and max_keys >= 1 are required")
        self.base = base
        self.cap = cap
        self.forget_after = forget_after
        self.max_keys = max_keys
        self._entries: OrderedDict[str, _Backoff] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _live(self, key: str, now: float) -> _Backoff | None:
        entry = self._entries.get(key)
        if entry is not None and now >= entry.not_before + self.forget_after:
            del self._entries[key]
            return None
        return entry

    def wait(self, key: str, now: float) -> float:
        """Seconds `key` must still wait before its next attempt (0.0: go ahead)."""
        entry = self._live(key, now)
        if entry is None:
            return 0.0
        return max(0.0, entry.not_before - now)

    def state(self, key: str, now: float) -> BackoffState | None:
        """The key's current throttle, or None when it has none."""
        entry = self._live(key, now)
        return None if entry is None else BackoffState(entry.failures, entry.not_before)

    def failure(self, key: str, now: float) -> float:
        """Record a failure; answers the delay now imposed on `key`."""
        entry = self._live(key, now)
        if entry is None:
            self._make_room(now)
            entry = _Backoff(failures=0, not_before=now)
            self._entries[key] = entry
        else:
            self._entries.move_to_end(key)
        entry.failures += 1
        # 2**n overflows float for huge n; the cap is reached long before 64 doublings.
        delay = min(self.cap, self.base * 2.0 ** min(entry.failures - 1, 64))
        entry.not_before = max(entry.not_before, now + delay)
        return delay

    def success(self, key: str) -> None:
        """A success ends the key's throttle."""
        self._entries.pop(key, None)

    def clear(self, key: str) -> bool:
        """Operator action: lift the throttle; True when there was one."""
        return self._entries.pop(key, None) is not None

    def throttled_keys(self) -> list[str]:
        """Every key with a throttle (live or not yet forgotten), for operator views."""
        return list(self._entries)

    def _make_room(self, now: float) -> None:
        """Keep the table under `max_keys`: drop keys no longer delayed first, then the
        least recently failed ones, down to `_headroom` free places."""
        if len(self._entries) < self.max_keys:
            return
        for key in [k for k, e in self._entries.items() if now >= e.not_before]:
            del self._entries[key]
        keep = self.max_keys - _headroom(self.max_keys)
        while len(self._entries) > keep:
            self._entries.popitem(last=False)
