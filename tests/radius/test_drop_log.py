"""Dropped RADIUS packets are logged with source and reason, rate-limited per
(source, reason): the first at once, then one summary a minute with the count."""

from __future__ import annotations

from twisted.internet.task import Clock

from authd.metrics import Metrics
from authd.radius.clients import build_client_table
from authd.radius.codec import RadiusDictionary
from authd.radius.drop_log import MORE_SOURCES, DropLog
from authd.radius.protocol import RadiusHandler, Settings
from tests.fixtures.logs import Logged
from tests.fixtures.radius import (
    SECRET,
    FakeEngine,
    access_request,
    client_config,
    radius_config,
)

GATEWAY = ("127.0.0.1", 40000)
STRANGER = ("192.0.2.7", 1645)


def _handler(clock: Clock) -> RadiusHandler:
    cfg = radius_config(client_config())
    settings = Settings(clients=build_client_table(cfg, RadiusDictionary()))
    return RadiusHandler(settings, FakeEngine(now=clock.seconds), clock, Metrics())


def test_first_drop_then_one_summary_per_interval() -> None:
    """A steady stream from one source yields its first drop and one line a minute."""
    drops = DropLog(interval=60)
    first = drops.note("10.0.0.1", "vpn", "bad_message_authenticator", now=0)
    assert first is not None and first.first and first.count == 1
    assert [drops.note("10.0.0.1", "vpn", "bad_message_authenticator", now=t)
            for t in range(1, 60)] == [None] * 59
    summary = drops.note("10.0.0.1", "vpn", "bad_message_authenticator", now=60)
    assert summary is not None and not summary.first
    assert (summary.count, summary.seconds) == (60, 60)
    assert "wrong shared secret" in summary.why


def test_keys_are_source_and_reason() -> None:
    """Another reason or another source is news and is logged at once."""
    drops = DropLog()
    assert drops.note("10.0.0.1", "vpn", "unknown_client", now=0) is not None
    assert drops.note("10.0.0.1", "vpn", "malformed_short", now=1) is not None
    assert drops.note("10.0.0.2", "vpn", "unknown_client", now=2) is not None
    assert drops.note("10.0.0.1", "vpn", "unknown_client", now=3) is None


def test_flush_tells_a_burst_that_stopped_and_forgets_quiet_keys() -> None:
    """A summary comes even when no further drop arrives; a source quiet for a whole
    interval is forgotten, so its next drop is logged at once again."""
    drops = DropLog(interval=60)
    drops.note("10.0.0.1", "", "unknown_client", now=0)
    for t in range(5):
        drops.note("10.0.0.1", "", "unknown_client", now=t)
    assert drops.flush(now=59) == []
    [summary] = drops.flush(now=60)
    assert summary.count == 5
    assert drops.flush(now=119) == [] and drops.flush(now=120) == []
    again = drops.note("10.0.0.1", "", "unknown_client", now=121)
    assert again is not None and again.first


def test_spoofed_sources_cannot_grow_the_table() -> None:
    """Past max_sources, new sources share one key: memory stays bounded under a flood."""
    drops = DropLog(max_sources=3)
    lines = [drops.note(f"10.0.0.{i}", "", "unknown_client", now=0) for i in range(10)]
    assert [line.source for line in lines if line is not None] == [
        "10.0.0.0", "10.0.0.1", "10.0.0.2", MORE_SOURCES]


def test_old_pam_radius_without_message_authenticator_is_told(logged: Logged) -> None:
    """A client sending no Message-Authenticator gets a log line naming its address,
    client and the reason, then a minute's count, not one line per packet."""
    clock = Clock()
    handler = _handler(clock)
    sent: list[bytes] = []
    for i in range(30):
        data, _ = access_request(identifier=i, message_authenticator=False)
        handler.datagram(data, GATEWAY, lambda d, a: sent.append(d))
        clock.advance(1)
    assert sent == []
    [line] = logged.lines("authd.radius.protocol")
    assert "127.0.0.1" in line and "missing_message_authenticator" in line
    assert "require_message_authenticator" in line
    clock.advance(30)
    handler.flush_drop_log()
    lines = logged.lines("authd.radius.protocol")
    assert len(lines) == 2 and "dropped 29 more packets from 127.0.0.1" in lines[1]
    assert SECRET not in logged.text


def test_unknown_client_and_malformed_are_told(logged: Logged) -> None:
    """An unknown source and a malformed datagram each get their line, with the event
    fields a log shipper can filter on."""
    clock = Clock()
    handler = _handler(clock)
    data, _ = access_request()
    handler.datagram(data, STRANGER, lambda d, a: None)
    handler.datagram(b"\x01\x02\x00", GATEWAY, lambda d, a: None)
    events = [e for e in logged.events if e.get("log_namespace") == "authd.radius.protocol"]
    assert [(e["source"], e["reason"]) for e in events] == [
        ("192.0.2.7", "unknown_client"), ("127.0.0.1", "malformed_short")]
    assert events[0]["client"] == "unknown"
