"""logsetup.py: stdlib records reach the Twisted stream whole, and every module logs
under its own name (compiled modules included)."""

from __future__ import annotations

import importlib
import io
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
    assert "authd.radius.protocol" in named and "authd.auth.threaded" in named
    assert {name: ns for name, ns in named.items() if ns != name} == {}
