"""Where log events go: one observer on stdout (journald captures it), text or JSON.

Libraries that use stdlib `logging` (SQLAlchemy, ldap3) are routed into the same
stream at WARNING and above, so one place decides format and level. Every module names
its logger explicitly: a mypyc-compiled module has no frame of its own, and a name
derived from the caller's frame would read `importlib._bootstrap`.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, cast

from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    jsonFileLogObserver,
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
    """An observer writing events at or above cfg.level to `stream` in cfg.format."""
    base = jsonFileLogObserver(stream) if cfg.format == "json" else textFileLogObserver(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[cfg.level])
    # zope interfaces do not type-check as classes: cast to the interface they provide.
    return cast(ILogObserver, FilteringLogObserver(cast(ILogObserver, base),
                                                   [cast(ILogFilterPredicate, predicate)]))


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
