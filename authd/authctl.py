"""`authctl [-c FILE] [--json] <noun> <verb> ...`: the operator CLI (CONTRACT).

Exit 0 ok, 1 failure (not found, refused, rejected test, store down), 2 usage or config
error. With `--json` every command, failures included, prints one JSON document on
stdout. Works beside a running daemon: the store serialises writers (SQLite WAL with
BEGIN IMMEDIATE, PostgreSQL transactions), so no daemon round-trip is needed.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from authd.config.errors import ConfigErrors
from authd.config.parse import load_config, resolve_config_path
from authd.core.errors import AuthdError
from authd.ctl import qr
from authd.ctl.commands import EXIT_FAILURE, EXIT_USAGE, Console, Printed, run
from authd.ctl.parser import UsageError, build_parser


def actor_name() -> str:
    """`authctl:<unix user>` for the audit trail; the uid when no name can be found."""
    try:
        return f"authctl:{getpass.getuser()}"
    except (OSError, KeyError):
        return f"authctl:uid{os.getuid()}"


def _emit(doc: Any, as_json: bool, text: str, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n")
    elif text:
        out.write(text + "\n")


def _fail(kind: str, message: str, as_json: bool, out: TextIO, err: TextIO) -> None:
    """Errors go to stderr; with --json also as the one document on stdout."""
    err.write(f"authctl: {message}\n")
    if as_json:
        _emit({"error": {"type": kind, "message": message}}, True, "", out)


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    clock: Callable[[], float] = time.time,
    prompt: Callable[[str], str] = getpass.getpass,
) -> int:
    """Run one authctl command; returns the exit code (the console script exits with it).

    The keyword arguments exist for tests (streams, clock, no-echo prompt); the console
    script uses the process's own.
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # argparse: usage error (2) or --help/--version (0)
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    as_json: bool = args.json
    path = resolve_config_path(args.config)
    try:
        config = load_config(path)
    except ConfigErrors as errors:
        err.write(f"{errors}\n")
        if as_json:
            _emit(
                {"error": {"type": "ConfigErrors", "problems": [str(p) for p in errors.problems]}},
                True,
                "",
                out,
            )
        return EXIT_USAGE

    from authd.ctl import portability  # after the config: their imports are heavier
    from authd.ctl.wiring import open_admin, open_portability

    console = Console(stdin if stdin is not None else sys.stdin, prompt)
    try:
        if args.command in portability.COMMANDS:
            with open_portability(config, clock) as pops:
                printed: Printed = portability.run(pops, actor_name(), args, console)
        else:
            with open_admin(config, clock) as ops:
                printed = run(ops, actor_name(), args, console, clock)
                if printed.lines is not None:  # streamed while the store is open
                    for line in printed.lines:
                        out.write(line + "\n")
                    return printed.exit_code
    except UsageError as exc:
        _fail("UsageError", str(exc), as_json, out, err)
        return EXIT_USAGE
    except AuthdError as exc:
        _fail(type(exc).__name__, str(exc), as_json, out, err)
        return EXIT_FAILURE
    try:
        code = _show(printed, args, as_json, out, err)
        out.flush()
    except BrokenPipeError:
        # The reader left early (`authctl token add ... --qr | head -1`): the command
        # has done its work; stop writing, and keep Python from reporting the
        # unflushable stdout at exit.
        _detach(out)
        return printed.exit_code
    return code


def _show(
    printed: Printed, args: argparse.Namespace, as_json: bool, out: TextIO, err: TextIO
) -> int:
    """Print a command's result, and its QR code where asked for; the exit code."""
    if printed.qr_uri is not None and args.qr_file:
        try:
            qr.write_file(printed.qr_uri, args.qr_file)
        except OSError as exc:  # the token exists: still print its URI, then fail
            _emit(printed.document, as_json, printed.text, out)
            err.write(f"authctl: {args.qr_file}: cannot write the QR code: {exc.strerror}\n")
            return EXIT_FAILURE
    _emit(printed.document, as_json, printed.text, out)
    if printed.qr_uri is not None and args.qr and not as_json:
        out.write("".join(line + "\n" for line in qr.terminal_lines(printed.qr_uri)))
    return printed.exit_code


def _detach(out: TextIO) -> None:
    """Point a closed stdout at /dev/null, so the interpreter's final flush is quiet."""
    if out is sys.stdout:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)

if __name__ == "__main__":  # pragma: no cover - `python -m authd.authctl`
    sys.exit(main())
