"""AuthdService: ordered start, READY only after every listener bound, draining stop,
and a SIGHUP reload that keeps the old config when the new one is bad."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from twisted.internet.defer import Deferred
from twisted.python.threadpool import ThreadPool

from authd.config.errors import ConfigErrors
from authd.config.model import Config
from authd.service import AuthdService


class FakeListener:
    """Records calls; can fail to bind, to prepare a reload, or hold stop until released."""

    def __init__(self, name: str, events: list[str], fail: bool = False,
                 refuse: Exception | None = None) -> None:
        self.name = name
        self.events = events
        self.fail = fail
        self.refuse = refuse
        self.stopped: Deferred[None] = Deferred()
        self.reloaded: list[Config] = []

    def startService(self) -> None:  # noqa: N802
        if self.fail:
            raise OSError(f"{self.name}: address in use")
        self.events.append(f"start {self.name}")

    def stopService(self) -> Deferred[None]:  # noqa: N802
        self.events.append(f"stop {self.name}")
        return self.stopped

    def prepare(self, config: Config) -> Callable[[], None]:
        self.events.append(f"prepare {self.name}")
        if self.refuse is not None:
            raise self.refuse
        return lambda: self.reloaded.append(config)


def make(events: list[str], listeners: list[FakeListener],
         reloads: list[Config]) -> AuthdService:
    pool = ThreadPool(minthreads=0, maxthreads=2, name="test-auth")

    def prepare(config: Config) -> Callable[[], None]:
        events.append("prepare engine")
        return lambda: reloads.append(config)

    return AuthdService(pool, listeners, prepare,
                        close_store=lambda: events.append("close store"),
                        notify=lambda state: events.append(state))


def test_ready_after_all_listeners_and_stop_in_reverse() -> None:
    """READY=1 follows the last bind; stop drains listeners before the store closes."""
    events: list[str] = []
    a, b = FakeListener("radius", events), FakeListener("http", events)
    service = make(events, [a, b], [])
    service.startService()
    assert events == ["start radius", "start http", "READY=1"]
    done = service.stopService()
    assert events[-3:] == ["STOPPING=1", "stop http", "stop radius"]
    assert "close store" not in events, "store must outlive in-flight requests"
    b.stopped.callback(None)
    a.stopped.callback(None)
    assert events[-1] == "close store"
    assert done.called


def test_bind_failure_stops_started_listeners_and_never_reports_ready() -> None:
    """A listener that cannot bind aborts start-up: no READY=1, earlier ones stopped."""
    events: list[str] = []
    a = FakeListener("radius", events)
    a.stopped.callback(None)
    service = make(events, [a, FakeListener("http", events, fail=True)], [])
    with pytest.raises(OSError, match="address in use"):
        service.startService()
    assert "READY=1" not in events
    assert "stop radius" in events
    assert not service.running


def test_reload_keeps_old_config_when_new_one_is_bad() -> None:
    """A bad config on SIGHUP is refused; listeners never see it."""
    events: list[str] = []
    listener = FakeListener("radius", events)
    reloads: list[Config] = []
    service = make(events, [listener], reloads)

    def bad() -> Config:
        raise ConfigErrors([])

    assert service.reload(bad) is False
    assert reloads == [] and listener.reloaded == []
    good = Config()
    assert service.reload(lambda: good) is True
    assert reloads == [good] and listener.reloaded == [good]


@pytest.mark.parametrize("refusal", [
    ValueError("api key 'vpn': /etc/authd/vpn.key holds too short a key"),
    OSError(13, "Permission denied", "/etc/authd/radius.dict"),
    RuntimeError("a library message that might quote s3cret"),
])
def test_reload_is_all_or_nothing(refusal: Exception) -> None:
    """Every part prepares before any commits: when the last part cannot prepare, neither
    the engine nor the earlier listener takes the new config, and one line says why."""
    from twisted.logger import globalLogPublisher

    events: list[str] = []
    radius = FakeListener("radius", events)
    http = FakeListener("http", events, refuse=refusal)
    reloads: list[Config] = []
    service = make(events, [radius, http], reloads)
    logged: list[dict[str, object]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        assert service.reload(lambda: Config()) is False
    finally:
        globalLogPublisher.removeObserver(logged.append)
    parts = [e for e in events if "=" not in e]  # without the sd_notify states
    assert parts == ["prepare engine", "prepare radius", "prepare http"]
    assert reloads == [] and radius.reloaded == [] and http.reloaded == []
    lines = [e for e in logged if "reload refused" in str(e.get("log_format", ""))]
    assert len(lines) == 1
    assert "log_failure" not in lines[0], "a refusal is a reason, not a traceback"
    why = str(lines[0]["why"])
    assert "\n" not in why and "s3cret" not in why
    expected = {
        "ValueError": str(refusal),
        "PermissionError": "/etc/authd/radius.dict: Permission denied",
        "RuntimeError": "unexpected RuntimeError",
    }
    assert why == expected[type(refusal).__name__]
