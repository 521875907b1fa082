"""The HTTP front-end's limits, built from `http.rate_limits` and retuned on reload.

Three tables, all pure (`authd.core.ratelimit`) and read with the injected clock's
`now`: a token bucket per source address, one per user name, and the escalating delay
after a user's consecutive failures. They live in RAM on purpose: they shape traffic
in front of the engine; the exact, cross-node lockout lives in the store.
"""

from __future__ import annotations

from authd.config.model import RateLimitsConfig
from authd.core.ratelimit import FailureBackoff, TokenBucket

MAX_KEYS = 100_000  # per table: ~100 bytes each, so each table stays around 10 MB


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
