"""ReactorHistogram must expose exactly what prometheus_client's Histogram would for the
same observations (dashboards and alerts read those series), only cheaper to update."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from authd.metrics import LATENCY_BUCKETS, Metrics, ReactorHistogram

_VALUES = st.lists(
    st.floats(min_value=0, max_value=20, allow_nan=False, allow_infinity=False), max_size=50
)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


@given(_VALUES)
def test_same_buckets_count_and_sum_as_prometheus_histogram(values: list[float]) -> None:
    """Every bucket (bounds are inclusive, `le`), _count and _sum match the reference
    implementation, including values exactly on a bound and beyond the last one."""
    ours, reference = CollectorRegistry(), CollectorRegistry()
    fast = ReactorHistogram("x_seconds", "doc", ["frontend"], registry=ours)
    slow = Histogram("x_seconds", "doc", ["frontend"], buckets=LATENCY_BUCKETS, registry=reference)
    child = fast.labels(frontend="radius")
    for v in [*values, *LATENCY_BUCKETS]:
        child.observe(v)
        slow.labels(frontend="radius").observe(v)
    got, want = _samples(ours), _samples(reference)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key


def test_unlabelled_histogram_and_text_exposition() -> None:
    """Metrics.store_latency has no labels: observe() on it directly; the text format
    carries the usual _bucket/_count/_sum lines."""
    metrics = Metrics()
    metrics.store_latency.observe(0.003)
    metrics.store_latency.observe(7.0)
    text = generate_latest(metrics.registry).decode()
    assert 'authd_store_duration_seconds_bucket{le="0.005"} 1.0' in text
    assert 'authd_store_duration_seconds_bucket{le="+Inf"} 2.0' in text
    assert "authd_store_duration_seconds_count 2.0" in text
    assert "authd_store_duration_seconds_sum 7.003" in text


def test_wrong_labels_are_refused() -> None:
    """A typo in a label name is a programming error, caught at once, not a new series."""
    metrics = Metrics()
    with pytest.raises(ValueError):
        metrics.latency.labels(front_end="radius")


def test_exposition_follows_prometheus_naming() -> None:
    """Latencies are *_duration_seconds, counters end in _total, no *_created series."""
    metrics = Metrics()
    metrics.requests.labels(frontend="radius", result="accept", reason="ok").inc()
    metrics.latency.labels(frontend="radius").observe(0.01)
    metrics.directory_latency.labels(backend="ldap").observe(0.01)
    names = {s.name for family in metrics.registry.collect() for s in family.samples}
    assert not [n for n in names if n.endswith("_created")]
    histograms = {f.name for f in metrics.registry.collect() if f.type == "histogram"}
    assert histograms == {"authd_request_duration_seconds", "authd_store_duration_seconds",
                          "authd_directory_duration_seconds"}
    counters = {f.name for f in metrics.registry.collect() if f.type == "counter"}
    assert counters and all(n.startswith("authd_") or n.startswith("process_")
                            for n in counters)


def test_process_metrics_without_proc_stat() -> None:
    """process_* series are exported even where /proc/stat is hidden (ProcSubset=pid)."""
    metrics = Metrics()
    registry = metrics.registry
    rss = registry.get_sample_value("process_resident_memory_bytes")
    assert rss is not None and rss > 0
    start = registry.get_sample_value("process_start_time_seconds")
    assert start is not None
    assert abs(start - (time.time() - _uptime())) < 5
    assert registry.get_sample_value("process_cpu_seconds_total") is not None
    assert registry.get_sample_value("process_open_fds") is not None


def _uptime() -> float:
    """This process's age from the kernel's own clock."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/self/stat", "rb") as stat:
        started = float(stat.read().split(b")")[-1].split()[19]) / ticks
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started


def test_cache_entries_are_read_at_each_collection_from_the_latest_owner() -> None:
    """authd_cache_entries{cache} is the owner's size at scrape time; a reload's new
    owner replaces the old one under the same name; names outside CACHES are refused
    (a label value never comes from data)."""
    metrics = Metrics()
    table: dict[str, int] = {}
    metrics.watch_cache("radius_duplicates", table.__len__)
    table.update(a=1, b=2)
    samples = _samples(metrics.registry)
    assert samples[("authd_cache_entries", (("cache", "radius_duplicates"),))] == 2
    metrics.watch_cache("radius_duplicates", lambda: 7)
    samples = _samples(metrics.registry)
    assert samples[("authd_cache_entries", (("cache", "radius_duplicates"),))] == 7
    assert not any(name == "authd_cache_entries" and labels != (("cache", "radius_duplicates"),)
                   for name, labels in samples)
    with pytest.raises(ValueError, match="no cache"):
        metrics.watch_cache("alice", lambda: 1)
