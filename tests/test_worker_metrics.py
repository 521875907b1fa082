"""One /metrics over worker processes: each process's snapshot is summed into the view
of the process that answers the scrape."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from prometheus_client import generate_latest
from twisted.internet.task import Clock

from authd.metrics import Metrics
from authd.worker_metrics import MergedView, SnapshotWriter, make_directory, snapshot_path


def _two_processes(directory: str) -> tuple[Metrics, Metrics]:
    """The main process (HTTP and RADIUS) and a RADIUS-only worker, each with counts."""
    main, worker = Metrics(), Metrics()
    for metrics, accepts in ((main, 3), (worker, 5)):
        metrics.requests.labels(frontend="radius", result="accept", reason="ok").inc(accepts)
        metrics.latency.labels(frontend="radius").observe(0.004)
    worker.drops.labels(frontend="radius", reason="unknown_client").inc()
    return main, worker


def test_scrape_sums_every_process(tmp_path: Path) -> None:
    """Counters, histogram buckets and series only a worker has all show the total;
    per-process facts (build, start time, fd limit) are the answering process's own."""
    directory = str(tmp_path)
    main, worker = _two_processes(directory)
    SnapshotWriter(worker.registry, snapshot_path(directory, 1), Clock()).write()
    SnapshotWriter(main.registry, snapshot_path(directory, 0), Clock()).write()
    view = MergedView(main.registry, directory, index=0, owner=True)
    text = generate_latest(view).decode()  # type: ignore[arg-type]
    assert 'authd_requests_total{frontend="radius",reason="ok",result="accept"} 8.0' in text
    assert 'authd_request_duration_seconds_bucket{frontend="radius",le="0.005"} 2.0' in text
    assert 'authd_request_duration_seconds_count{frontend="radius"} 2.0' in text
    assert 'authd_drops_total{frontend="radius",reason="unknown_client"} 1.0' in text
    assert len(re.findall(r"^authd_build_info\{.*\} 1\.0$", text, re.M)) == 1
    [start] = re.findall(r"^process_start_time_seconds (\S+)$", text, re.M)
    assert float(start) == main.registry.get_sample_value("process_start_time_seconds")
    assert "_created" not in text


def test_snapshots_are_private_and_written_on_the_reactor(tmp_path: Path) -> None:
    """The directory is 0700 and files 0600; the writer writes at start, every interval
    and at stop, and leaves no timer behind."""
    directory = make_directory()
    clock = Clock()
    try:
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        metrics = Metrics()
        counter = metrics.requests.labels(frontend="radius", result="accept", reason="ok")
        path = snapshot_path(directory, 1)
        writer = SnapshotWriter(metrics.registry, path, clock, interval=1.0)
        writer.startService()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

        def written() -> float:
            [family] = [f for f in json.loads(path.read_text()) if f["name"] == "authd_requests"]
            return float(family["samples"][0][2])

        counter.inc()
        assert written() == 0
        clock.advance(1)
        assert written() == 1
        counter.inc()
        writer.stopService()
        assert written() == 2 and clock.getDelayedCalls() == []
    finally:
        MergedView(Metrics().registry, directory, index=0, owner=True).stopService()
    assert not os.path.exists(directory)


def test_a_worker_never_removes_the_directory(tmp_path: Path) -> None:
    """Only the main process, which created it, takes the directory away at stop."""
    MergedView(Metrics().registry, str(tmp_path), index=1, owner=False).stopService()
    assert tmp_path.is_dir()
