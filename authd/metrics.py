"""Prometheus metrics, one registry per running service so tests stay independent.

Labels never carry a user name, secret or code (STYLE pattern 8): only front-end,
result, reason, RADIUS code and drop reason, all from small fixed sets. Names follow
the Prometheus conventions: base units (`*_duration_seconds`), `_total` counters, and
no `*_created` series (a scrape's worth of timestamps nobody graphs).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from authd import __version__, hot_path_build

disable_created_metrics()

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

# The in-memory tables that grow with users, sources or requests, each bounded
# (docs/DESIGN.md, "Memory bounds"): the values of authd_cache_entries' `cache` label.
CACHES = frozenset({
    "radius_duplicates",  # radius/dedup.py: requests in progress and replies sent
    "radius_client_lookups",  # radius/clients.py: source address -> client
    "radius_drop_log",  # radius/drop_log.py: (source, reason) drop summaries
    "directory_users",  # auth/ldap_primary.py: directory entries (groups.cache_ttl)
    "token_locations",  # storage/ldap_attrs.py: token serial -> directory entry
    "opened_seeds",  # crypto.py: decrypted token seeds
    "signin_habits",  # core/habits.py: users' recent networks, clients, hours
    "http_source_buckets",  # rest/ratelimit.py: per source address
    "http_user_buckets",  # rest/ratelimit.py: per user and source
    "http_failure_backoff",  # rest/ratelimit.py: per user and source
})


class _BeforeCollect(Collector):
    """No metrics of its own: registered first, it runs flush hooks before the other
    collectors, so counts a hot path keeps in plain integers are exact at every scrape
    (hooks run in the collecting thread: the reactor's, for authd's /metrics)."""

    def __init__(self) -> None:
        self.hooks: list[Callable[[], None]] = []

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> list[Metric]:
        for hook in self.hooks:
            hook()
        return []


class HistogramChild:
    """One label set's buckets as plain integers: `observe` is a bisect and two
    additions (~0.3 µs), against ~2.5 µs for prometheus_client's Histogram.observe (a
    lock and a walk over the bounds), paid on the reactor for every request."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        """Count one observation (`le` buckets: `amount` <= bound)."""
        self.counts[bisect_left(self._bounds, amount)] += 1
        self.sum += amount


class ReactorHistogram(Collector):
    """A Prometheus histogram (same samples as prometheus_client's, read at collect
    time) for values observed on ONE thread, the reactor's: the counts are plain
    integers, not locked. Anything observed from worker threads uses `Histogram`."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = tuple(sorted(float(b) for b in buckets))
        self._children: dict[tuple[str, ...], HistogramChild] = {}
        if not self._labelnames:
            self._children[()] = HistogramChild(self._bounds)
        if registry is not None:
            registry.register(self)

    def labels(self, **values: str) -> HistogramChild:
        """The child for one label set (bind it once; it is created on first use)."""
        if set(values) != set(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}")
        key = tuple(str(values[n]) for n in self._labelnames)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = HistogramChild(self._bounds)
        return child

    def observe(self, amount: float) -> None:
        """For a histogram without labels."""
        self._children[()].observe(amount)

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> list[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for key, child in list(self._children.items()):
            counts, running, buckets = list(child.counts), 0, []
            for bound, n in zip((*self._bounds, float("inf")), counts, strict=True):
                running += n
                buckets.append((floatToGoString(bound), running))
            family.add_metric(list(key), buckets, child.sum)
        return [family]


class WalGauges(Collector):
    """The SQLite write-ahead log, read at each scrape from `source` (a stat() and the
    checkpointer's own counts: no database call on the scraping thread). Nothing is
    exported without a source (PostgreSQL)."""

    def __init__(self) -> None:
        self.source: Callable[[], tuple[int, int, float]] | None = None

    def describe(self) -> list[Metric]:
        return []  # the families depend on the store: checked at collect time only

    def collect(self) -> list[Metric]:
        source = self.source
        if source is None:
            return []
        size, frames, lag = source()
        return [
            GaugeMetricFamily(
                "authd_store_wal_bytes", "Size of the SQLite write-ahead log file", value=size
            ),
            GaugeMetricFamily(
                "authd_store_wal_pending_frames",
                "WAL frames not yet copied into the database file (at the last checkpoint)",
                value=frames,
            ),
            GaugeMetricFamily(
                "authd_store_checkpoint_lag_seconds",
                "How long the oldest write not yet checkpointed has waited (0: none waits)",
                value=lag,
            ),
        ]


class _ProcessCollector(ProcessCollector):
    """prometheus_client's process_* metrics, with the boot time taken from the clocks
    instead of /proc/stat, which the unit hides (ProcSubset=pid): without it the
    collector would silently export nothing."""

    def _boot_time(self) -> float:
        return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


class Exposition(Protocol):
    """What /metrics renders: the registry, or a view over every worker process."""

    def collect(self) -> Iterable[Metric]: ...


class Metrics:
    """Every metric authd exports; front-ends receive this object, never the registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # With worker processes, app.py puts authd.worker_metrics.MergedView here.
        self.exported: Exposition = self.registry
        r = self.registry
        self._before_collect = _BeforeCollect()
        r.register(self._before_collect)
        _ProcessCollector(registry=r)
        self.build_info = Info("authd_build", "authd version and hot path build", registry=r)
        self.build_info.info({"version": __version__, "hot_path": hot_path_build()})
        self.requests = Counter(
            "authd_requests_total", "Authentication requests by front-end, result and reason",
            ["frontend", "result", "reason"], registry=r)
        self.radius_packets = Counter(
            "authd_radius_packets_total", "RADIUS packets received by code",
            ["code"], registry=r)
        self.drops = Counter(
            "authd_drops_total", "Requests dropped without reply, by front-end and reason",
            ["frontend", "reason"], registry=r)
        # Observed on the reactor for every request (RADIUS, HTTP, ThreadedEngine).
        self.latency = ReactorHistogram(
            "authd_request_duration_seconds", "Time from request received to reply sent",
            ["frontend"], buckets=LATENCY_BUCKETS, registry=r)
        self.lockouts = Counter(
            "authd_lockouts_total", "Users locked after too many second-factor failures",
            registry=r)
        self.store_latency = ReactorHistogram(
            "authd_store_duration_seconds", "Time spent in the store per decision",
            buckets=LATENCY_BUCKETS, registry=r)
        self.directory_latency = Histogram(
            "authd_directory_duration_seconds", "Time spent in first-factor directory operations",
            ["backend"], buckets=LATENCY_BUCKETS, registry=r)
        self.http_responses = Counter(
            "authd_http_responses_total", "HTTP responses by path group and status",
            ["route", "status"], registry=r)
        self.rate_limited = Counter(
            "authd_rate_limited_total", "Requests answered 429, by limit",
            ["limit"], registry=r)
        self.in_flight = Gauge(
            "authd_requests_in_flight", "Decisions currently being made",
            ["frontend"], registry=r)
        self.decision_errors = Counter(
            "authd_decision_errors_total",
            "Decisions that raised and were rejected (fail closed), by error type",
            ["error"], registry=r)
        self.audit_failures = Counter(
            "authd_audit_write_failures_total",
            "Audit records of failed decisions that could not be written (each logged instead)",
            registry=r)
        self.unusual_signins = Counter(
            "authd_unusual_signins_total",
            "Successful sign-ins unlike the user's earlier ones, by what was new",
            ["signal"], registry=r)  # network, client, hour
        self.radius_replies = Counter(
            "authd_radius_replies_total", "RADIUS replies sent by code (retransmits excluded)",
            ["code"], registry=r)
        # RadSec (RADIUS over TLS): labels are fixed states, configured client names and
        # a bounded set of reasons, never anything a peer chooses.
        self.radsec_connections = Gauge(
            "authd_radsec_connections", "RadSec connections by state (handshake, open)",
            ["state"], registry=r)
        self.radsec_client_connections = Gauge(
            "authd_radsec_client_connections", "Open RadSec connections per client",
            ["client"], registry=r)
        self.radsec_packets = Counter(
            "authd_radsec_packets_total", "RADIUS packets received over RadSec per client",
            ["client"], registry=r)
        self.radsec_handshake_failures = Counter(
            "authd_radsec_handshake_failures_total", "RadSec TLS handshakes failed, by reason",
            ["reason"], registry=r)
        self.radsec_refused = Counter(
            "authd_radsec_refused_total",
            "RadSec connections refused after accept or handshake, by reason",
            ["reason"], registry=r)
        self._wal = WalGauges()
        r.register(self._wal)
        self.cache_entries = Gauge(
            "authd_cache_entries", "Entries held by each bounded in-memory table",
            ["cache"], registry=r)
        self._cache_sizes: dict[str, Callable[[], int]] = {}
        self.before_collect(self._publish_cache_sizes)

    def watch_wal(self, source: Callable[[], tuple[int, int, float]] | None) -> None:
        """Export the SQLite WAL state (`WalGauges`): (file bytes, frames not yet
        checkpointed, checkpoint lag in seconds) read from `source` at each scrape."""
        self._wal.source = source

    def before_collect(self, flush: Callable[[], None]) -> None:
        """Run `flush` before every collection (a Prometheus scrape, a test reading a
        sample): a RADIUS listener counts in plain integers (a prometheus_client
        Counter.inc costs about a microsecond) and pushes the totals here."""
        self._before_collect.hooks.append(flush)

    def watch_cache(self, name: str, size: Callable[[], int]) -> None:
        """Export `size()` as authd_cache_entries{cache=name} at each collection; `name`
        is one of CACHES. A later call for a name replaces the earlier one."""
        if name not in CACHES:
            raise ValueError(f"authd_cache_entries has no cache {name!r}")
        self._cache_sizes[name] = size

    def _publish_cache_sizes(self) -> None:
        for name, size in list(self._cache_sizes.items()):
            self.cache_entries.labels(cache=name).set(size())
