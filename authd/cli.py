"""`authd serve` and `authd check-config`: the only place that touches the global reactor."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

from authd import __version__
from authd.config.errors import ConfigErrors
from authd.config.model import Config
from authd.config.parse import resolve_config_path

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

# Every module `serve` loads before it answers, listeners included: check-config imports
# them too, so an install missing a dependency fails the unit's ExecStartPre with the
# module's name instead of restarting `serve` forever.
DAEMON_MODULES = (
    "authd.app",
    "authd.logsetup",
    "authd.radius.service",
    "authd.rest.service",
    "authd.workers",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authd", description="Two-factor authentication server")
    parser.add_argument("--version", action="version", version=f"authd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("serve", "run the daemon in the foreground"),
                       ("check-config", "validate the config file and exit")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("-c", "--config", metavar="FILE",
                         help="config file (default: $AUTHD_CONFIG or /etc/authd/authd.yaml)")
    return parser


def _load(path: str) -> Config | None:
    """The config as `serve` will use it, or None after printing every problem to stderr.
    check-config, serve and a reload share this one validation (authd/preflight.py)."""
    from authd.preflight import load

    try:
        return load(path)
    except ConfigErrors as errors:
        print(str(errors), file=sys.stderr)
        return None


def import_daemon() -> str | None:
    """Import what `serve` runs; None, or why the install cannot run it."""
    for name in DAEMON_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as error:
            missing = (error.name or str(error)).split(".")[0]
            return (f"authd cannot start: {name} needs {missing}, which is not installed "
                    "(reinstall authd with its dependencies: pip install authd)")
    return None


def check_config(path: str) -> int:
    """Exit 0 when the file is valid and the daemon's modules import; print every config
    problem and exit 2, or the missing module and exit 1."""
    # The install first: the config's own checks load the listeners' modules too.
    broken = import_daemon()
    if broken is not None:
        print(broken, file=sys.stderr)
        return EXIT_FAILURE
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    print(f"{path}: OK")
    return EXIT_OK


def serve(path: str) -> int:
    """Run until SIGTERM/SIGINT (exit 0); SIGHUP reloads the config."""
    broken = import_daemon()
    if broken is not None:
        print(broken, file=sys.stderr)
        return EXIT_FAILURE
    config = _load(path)
    if config is None:
        return EXIT_CONFIG

    from twisted.internet import reactor as global_reactor
    from twisted.logger import Logger

    from authd.app import build_service
    from authd.logsetup import start_logging
    from authd.preflight import load

    reactor: Any = global_reactor  # zope interfaces do not type-check as classes
    start_logging(config.logging)
    log = Logger(namespace="authd.cli")
    try:
        service = build_service(config, reactor)
    except Exception as error:  # noqa: BLE001 (start-up failure: say why, exit 1)
        log.failure("authd could not start: {error}", error=str(error))
        return EXIT_FAILURE

    outcome = {"code": EXIT_OK}

    def start() -> None:
        try:
            service.startService()
        except Exception as error:  # noqa: BLE001
            log.failure("authd could not start: {error}", error=str(error))
            outcome["code"] = EXIT_FAILURE
            reactor.stop()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        reactor.callFromThread(service.reload, lambda: load(path))

    signal.signal(signal.SIGHUP, on_hup)
    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: service.stopService() if service.running else None)
    reactor.run()
    return outcome["code"]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = resolve_config_path(args.config)
    if args.command == "check-config":
        return check_config(path)
    return serve(path)


if __name__ == "__main__":
    sys.exit(main())
