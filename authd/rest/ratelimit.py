"""The HTTP front-end's limits, built from `http.rate_limits` and retuned on reload.

Three tables, all pure (`authd.core.ratelimit`) and read with the injected clock's
`now`: a token bucket per source address, one per user name and source, and the
escalating delay after that user's consecutive failures from that source. They live in
RAM on purpose: they shape traffic in front of the engine; the exact, cross-node
lockout lives in the store.

The per-user tables are keyed by user *and* source: a throttle must slow the guesser,
not lock out the user. Someone who knows only a user name can fill the bucket and the
delay of that name from their own address, never from the user's usual one.
"""

from __future__ import annotations

from authd.config.model import RateLimitsConfig
from authd.core.ratelimit import BackoffState, FailureBackoff, TokenBucket
from authd.metrics import Metrics

MAX_KEYS = 100_000  # per table: ~100 bytes each, so each table stays around 10 MB
# Joins user and source in a key; user names never hold control characters (the HTTP
# body schema refuses them), so no two pairs share a key.
_SEP = "\x00"


def user_key(user: str, source: str) -> str:
    """The per-user tables' key for `user` trying from `source`."""
    return f"{user}{_SEP}{source}"


class Limits:
    """Per-source and per-user buckets plus the per-user failure backoff."""

    def __init__(self, config: RateLimitsConfig, max_keys: int = MAX_KEYS) -> None:
        self.per_source = TokenBucket(config.per_source.rate, config.per_source.burst, max_keys)
        self.per_user = TokenBucket(config.per_user.rate, config.per_user.burst, max_keys)
        self.backoff = FailureBackoff(
            config.failure_delay,
            max(config.failure_delay, config.failure_delay_max),
            max_keys=max_keys,
        )

    def watch(self, metrics: Metrics) -> None:
        """Export the tables' sizes as authd_cache_entries."""
        metrics.watch_cache("http_source_buckets", self.per_source.__len__)
        metrics.watch_cache("http_user_buckets", self.per_user.__len__)
        metrics.watch_cache("http_failure_backoff", self.backoff.__len__)

    def reconfigure(self, config: RateLimitsConfig) -> None:
        """Apply new rates on SIGHUP; buckets and failure counts carry over."""
        for bucket, limit in (
            (self.per_source, config.per_source),
            (self.per_user, config.per_user),
        ):
            bucket.rate = limit.rate
            bucket.burst = limit.burst
        self.backoff.base = config.failure_delay
        self.backoff.cap = max(config.failure_delay, config.failure_delay_max)

    def user_throttle(self, user: str, now: float) -> BackoffState | None:
        """The user's strongest failure delay over every source (operator view)."""
        states = [
            state
            for key in self._user_keys(user)
            if (state := self.backoff.state(key, now)) is not None
        ]
        return max(states, key=lambda s: (s.not_before, s.failures), default=None)

    def clear_user(self, user: str) -> bool:
        """Lift the user's failure delay from every source; True when there was one."""
        return any([self.backoff.clear(key) for key in self._user_keys(user)])

    def _user_keys(self, user: str) -> list[str]:
        prefix = user + _SEP
        return [key for key in self.backoff.throttled_keys() if key.startswith(prefix)]
