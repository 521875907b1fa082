"""One /metrics over every daemon process (`radius.workers` / `http.workers` > 1).

Each process keeps its own registry (the hot path counts in plain integers, see
metrics.py). Every process writes a snapshot of it, once a second and at stop, to a
private directory the main process creates (0700, removed at stop) and hands to the
workers in DIR_ENV; the process answering /metrics shows its own live samples plus the
others' latest snapshots, summed series by series. So a RADIUS-only worker's requests
are counted, and a scrape that lands on any HTTP worker shows the same totals (the
others' part at most a second old). prometheus_client's multiprocess mode would not
see authd's own collectors (ReactorHistogram, the flushed RADIUS counts).

Not summed: authd_build (the same in every process), process_start_time_seconds and
process_max_fds (the answering process's own), and the SQLite WAL gauges (one file that
every process reads the same way). A worker that restarts starts its
counters from zero, which Prometheus' rate() reads as a counter reset.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger(namespace="authd.worker_metrics")

DIR_ENV = "AUTHD_METRICS_DIR"
WRITE_INTERVAL = 1.0  # seconds: how stale another process's part of a scrape may be
NOT_SUMMED = frozenset({
    "authd_build", "process_start_time_seconds", "process_max_fds",
    "authd_store_wal_bytes", "authd_store_wal_pending_frames",
    "authd_store_checkpoint_lag_seconds",
})

Series = tuple[str, tuple[tuple[str, str], ...]]  # sample name, sorted labels


def make_directory() -> str:
    """A fresh private directory for the snapshots (mkdtemp makes it 0700)."""
    return tempfile.mkdtemp(prefix="authd-metrics-")


def snapshot_path(directory: str, index: int) -> Path:
    return Path(directory) / f"process-{index}.json"


def snapshot(registry: CollectorRegistry) -> list[dict[str, Any]]:
    """The registry's families as plain data (collecting runs the flush hooks)."""
    return [
        {"name": family.name, "documentation": family.documentation, "type": family.type,
         "samples": [[s.name, s.labels, s.value] for s in family.samples]}
        for family in registry.collect()
    ]


def write_snapshot(registry: CollectorRegistry, path: Path) -> None:
    """Replace `path` atomically: a reader sees the old snapshot or the new, whole."""
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(snapshot(registry), out)
    os.replace(temporary, path)


class _Family:
    def __init__(self, name: str, documentation: str, kind: str) -> None:
        self.name, self.documentation, self.kind = name, documentation, kind
        self.values: dict[Series, float] = {}

    def add(self, samples: Iterable[tuple[str, Mapping[str, str], float]]) -> None:
        for name, labels, value in samples:
            key = (name, tuple(sorted(labels.items())))
            self.values[key] = self.values.get(key, 0.0) + float(value)

    def metric(self) -> Metric:
        family = Metric(self.name, self.documentation, self.kind)
        for (name, labels), value in self.values.items():
            family.add_sample(name, dict(labels), value)
        return family


class MergedView:
    """What /metrics renders: this process's registry plus the other processes'
    snapshots. Shaped like a listener: its directory goes when the daemon stops."""

    def __init__(self, registry: CollectorRegistry, directory: str, index: int,
                 owner: bool) -> None:
        self._registry = registry
        self.directory = directory
        self._own = snapshot_path(directory, index).name
        self._owner = owner  # the main process created the directory and removes it

    def collect(self) -> list[Metric]:
        families: dict[str, _Family] = {}
        for family in self._registry.collect():
            merged = families[family.name] = _Family(family.name, family.documentation,
                                                     family.type)
            merged.add((s.name, s.labels, s.value) for s in family.samples)
        for data in self._others():
            for other in data:
                if other["name"] in NOT_SUMMED:
                    continue
                merged = families.setdefault(other["name"], _Family(
                    other["name"], other["documentation"], other["type"]))
                merged.add((name, labels, value) for name, labels, value in other["samples"])
        return [family.metric() for family in families.values()]

    def _others(self) -> list[list[dict[str, Any]]]:
        found = []
        for path in sorted(Path(self.directory).glob("process-*.json")):
            if path.name == self._own:
                continue
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # a process that has not written yet, or is gone with its dir
        return found

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        pass

    def stopService(self) -> None:  # noqa: N802
        if self._owner:
            shutil.rmtree(self.directory, ignore_errors=True)

    def prepare(self, config: object) -> Callable[[], None]:
        return lambda: None


class SnapshotWriter:
    """Writes this process's snapshot every WRITE_INTERVAL on the reactor, and a last
    one at stop (so a drained worker's final counts are kept)."""

    def __init__(self, registry: CollectorRegistry, path: Path, clock: IReactorTime,
                 interval: float = WRITE_INTERVAL) -> None:
        self._registry = registry
        self._path = path
        self._interval = interval
        self._loop = LoopingCall(self.write)
        self._loop.clock = clock

    def write(self) -> None:
        if not self._path.parent.is_dir():
            return  # the main process is stopping and took the directory away
        try:
            write_snapshot(self._registry, self._path)
        except OSError as error:
            log.warn("cannot write metrics snapshot {path}: {error}", path=str(self._path),
                     error=error.strerror or type(error).__name__)

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        self._loop.start(self._interval, now=True)

    def stopService(self) -> None:  # noqa: N802
        if self._loop.running:
            self._loop.stop()
        self.write()

    def prepare(self, config: object) -> Callable[[], None]:
        return lambda: None
