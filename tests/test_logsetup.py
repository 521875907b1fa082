"""logsetup.py: stdlib records reach the Twisted stream whole, and every module logs
under its own name (compiled modules included)."""

from __future__ import annotations

import importlib
import io
import json
import logging
import pkgutil
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.logger import Logger, LogLevel, globalLogPublisher

import authd
from authd.config.model import LoggingConfig
from authd.logsetup import TwistedHandler, make_observer


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    found: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(found.append)
    yield found
    globalLogPublisher.removeObserver(found.append)


@pytest.fixture
def stdlib_log() -> Iterator[logging.Logger]:
    log = logging.getLogger("authd.test_logsetup")
    handler = TwistedHandler()
    log.addHandler(handler)
    log.propagate = False
    yield log
    log.removeHandler(handler)
    log.propagate = True


def test_stdlib_exception_keeps_its_traceback(
    events: list[dict[str, Any]], stdlib_log: logging.Logger
) -> None:
    """`log.exception()` in a stdlib-logging module arrives with its traceback, under the
    logger's name, and the text observer prints it."""
    try:
        raise ValueError("the cause")
    except ValueError:
        stdlib_log.exception("radius: unexpected error handling a datagram from %s", "10.0.0.1")
    [event] = [e for e in events if e.get("log_namespace") == "authd.test_logsetup"]
    assert event["log_level"] is LogLevel.error
    assert "ValueError: the cause" in event["log_failure"].getTraceback()
    out = io.StringIO()
    make_observer(LoggingConfig(level="info", format="text"), out)(event)
    text = out.getvalue()
    assert "[authd.test_logsetup#error] radius: unexpected error handling a datagram from " \
           "10.0.0.1" in text
    assert "Traceback" in text and "ValueError: the cause" in text


def test_stdlib_record_without_exception_has_no_failure(
    events: list[dict[str, Any]], stdlib_log: logging.Logger
) -> None:
    """A plain warning stays a plain event (no empty traceback), at the mapped level."""
    stdlib_log.warning("client %s: %d drops", "vpn", 3)
    [event] = [e for e in events if e.get("log_namespace") == "authd.test_logsetup"]
    assert event["log_level"] is LogLevel.warn and "log_failure" not in event
    assert event["message"] == "client vpn: 3 drops"


def _modules() -> Iterator[Any]:
    for info in pkgutil.walk_packages(authd.__path__, "authd."):
        if info.name.endswith("__main__"):  # runs the CLI when imported
            continue
        yield importlib.import_module(info.name)


def test_every_module_logs_under_its_own_name() -> None:
    """A module's logger is named for the module, explicitly: a name derived from the
    calling frame reads `importlib._bootstrap` in a mypyc-compiled module."""
    named = {}
    for module in _modules():
        log = getattr(module, "log", None)
        if isinstance(log, Logger):
            named[module.__name__] = log.namespace
        elif isinstance(log, logging.Logger):
            named[module.__name__] = log.name
    assert "authd.radius.protocol" in named and "authd.batching.threaded" in named
    assert {name: ns for name, ns in named.items() if ns != name} == {}


def _json_lines(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = io.StringIO()
    observer = make_observer(LoggingConfig(level="info", format="json"), out)
    for event in events:
        observer(event)
    text = out.getvalue()
    assert text.endswith("\n") and "\x1e" not in text
    return [json.loads(line) for line in text.splitlines()]


def test_json_format_is_one_object_per_line(events: list[dict[str, Any]],
                                            stdlib_log: logging.Logger) -> None:
    """`logging.format: json`: every line parses alone, with time, level, logger, the
    formatted message and the event's fields; a traceback stays inside its line."""
    log = Logger(namespace="authd.radius.protocol")
    log.warn("radius: dropped a packet from {source}: {reason}", source="10.0.0.1",
             reason="unknown_client", count=1)
    try:
        raise ValueError("the cause\nover two lines")
    except ValueError:
        stdlib_log.exception("failed for %s", "vpn")
    parsed = _json_lines([e for e in events if str(e["log_namespace"]).startswith("authd.")])
    assert len(parsed) == 2
    drop, failed = parsed
    assert drop["level"] == "warn" and drop["logger"] == "authd.radius.protocol"
    assert drop["message"] == "radius: dropped a packet from 10.0.0.1: unknown_client"
    assert (drop["source"], drop["reason"], drop["count"]) == ("10.0.0.1", "unknown_client", 1)
    assert drop["time"].endswith("+00:00")
    assert failed["message"] == "failed for vpn" and failed["level"] == "error"
    assert "ValueError: the cause" in failed["traceback"]


def test_library_chatter_is_filtered_authd_lines_are_not() -> None:
    """Twisted's start-up and shutdown lines (info, other namespaces) never reach the
    output; a library's warning and authd's own info lines do."""
    chatter = [
        {"log_namespace": "log_legacy", "log_level": LogLevel.info, "log_time": 0.0,
         "log_format": "{msg}", "msg": "AuthdSite starting on 8080"},
        {"log_namespace": "twisted.internet.base", "log_level": LogLevel.info,
         "log_time": 0.0, "log_format": "Main loop terminated."},
    ]
    kept = [
        {"log_namespace": "sqlalchemy.pool", "log_level": LogLevel.warn, "log_time": 0.0,
         "log_format": "connection invalidated"},
        {"log_namespace": "authd.service", "log_level": LogLevel.info, "log_time": 0.0,
         "log_format": "authd ready"},
    ]
    assert [line["message"] for line in _json_lines(chatter + kept)] == [
        "connection invalidated", "authd ready"]


def test_authd_logs_through_one_api() -> None:
    """Every authd module logs with twisted.logger; stdlib logging is only the bridge
    that brings libraries' records into the same stream."""
    stdlib_users = [module.__name__ for module in _modules()
                    if isinstance(getattr(module, "log", None), logging.Logger)]
    assert stdlib_users == []
