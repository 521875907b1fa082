"""Where log events go: one observer on stdout (journald captures it), text or JSON.

Libraries that use stdlib `logging` (SQLAlchemy, ldap3) are routed into the same
stream at WARNING and above, so one place decides format and level. Every module names
its logger explicitly: a mypyc-compiled module has no frame of its own, and a name
derived from the caller's frame would read `importlib._bootstrap`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, cast

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python.failure import Failure

from authd.config.model import LoggingConfig

_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warning": LogLevel.warn,
    "error": LogLevel.error,
}


_FROM_STDLIB = {
    logging.DEBUG: LogLevel.debug,
    logging.INFO: LogLevel.info,
    logging.WARNING: LogLevel.warn,
    logging.ERROR: LogLevel.error,
    logging.CRITICAL: LogLevel.critical,
}

_STDLIB_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def make_observer(cfg: LoggingConfig, stream: IO[str]) -> ILogObserver:
    """An observer writing events at or above cfg.level to `stream` in cfg.format: one
    line per event, JSON lines (no record separator) for journald and log shippers."""
    base = (FileLogObserver(stream, json_line) if cfg.format == "json"
            else textFileLogObserver(stream))
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[cfg.level])
    # zope interfaces do not type-check as classes: cast to the interface they provide.
    return cast(ILogObserver, FilteringLogObserver(
        cast(ILogObserver, base),
        [cast(ILogFilterPredicate, quiet_libraries), cast(ILogFilterPredicate, predicate)]))


# Keys of Twisted's legacy `log.msg` events that repeat what the JSON line already says.
_LEGACY_KEYS = frozenset({"message", "format", "system", "isError", "time", "why", "failure"})


def json_line(event: LogEvent) -> str:
    """One event as one JSON object on one line: time, level, logger, the formatted
    message, the event's plain fields (client, source, reason, count, ...) for a log
    shipper to filter on, and the traceback of a failure as one string."""
    level = event.get("log_level")
    line: dict[str, object] = {
        "time": datetime.fromtimestamp(float(event.get("log_time", 0.0)), UTC)
        .isoformat(timespec="milliseconds"),
        "level": str(getattr(level, "name", "info")),
        "logger": str(event.get("log_namespace", "-")),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in _LEGACY_KEYS or key in line:
            continue
        if isinstance(value, str | int | float | bool) or value is None:
            line[key] = value
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        line["traceback"] = failure.getTraceback()
    return json.dumps(line, ensure_ascii=False, default=str) + "\n"


def quiet_libraries(event: LogEvent) -> PredicateResult:
    """Other code's info and debug events are dropped ("AuthdSite starting on 8080",
    "(UDP Port 1812 Closed)", "Main loop terminated."): authd logs its own start, listen
    and stop lines; libraries (Twisted, SQLAlchemy, ldap3) speak from WARNING up."""
    namespace = str(event.get("log_namespace", ""))
    if namespace == "authd" or namespace.startswith("authd."):
        return PredicateResult.maybe
    level = event.get("log_level")
    if level is None or level < LogLevel.warn:
        return PredicateResult.no
    return PredicateResult.maybe


def start_logging(cfg: LoggingConfig, stream: IO[str] | None = None) -> None:
    """Begin global logging once, at daemon start (the only global logging call)."""
    observer = make_observer(cfg, stream if stream is not None else sys.stdout)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    # Our own modules log at the configured level; chatty libraries only from WARNING.
    logging.basicConfig(level=logging.WARNING, handlers=[TwistedHandler()], force=True)
    logging.getLogger("authd").setLevel(_STDLIB_LEVELS[cfg.level])


class TwistedHandler(logging.Handler):
    """Hands stdlib log records to the Twisted log stream under the record's own logger
    name, formatted once, with the traceback of `log.exception()` kept as a Failure."""

    def emit(self, record: logging.LogRecord) -> None:
        level = _FROM_STDLIB.get(record.levelno, LogLevel.error)
        log = Logger(namespace=record.name)
        message = record.getMessage()
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            failure = Failure(error, type(error), error.__traceback__)
            log.failure("{message}", failure, level=level, message=message)
        else:
            log.emit(level, "{message}", message=message)
