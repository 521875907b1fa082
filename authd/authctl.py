"""`authctl [-c FILE] [--json] <noun> <verb> ...`: the operator CLI (CONTRACT).

Exit 0 ok, 1 failure (not found, refused, rejected test, store down), 2 usage or config
error. With `--json` every command, failures included, prints one JSON document on
stdout. Works beside a running daemon: the store serialises writers (SQLite WAL with
BEGIN IMMEDIATE, PostgreSQL transactions), so no daemon round-trip is needed.
"""

from __future__ import annotations

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


def _draw_qr(uri: str, out: TextIO) -> None:
    import segno  # imported here: only `token add --qr` needs it

    segno.make(uri, error="m").terminal(out=out, compact=True)


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

    from authd.ctl.wiring import open_admin  # after the config: its imports are heavier

    console = Console(stdin if stdin is not None else sys.stdin, prompt)
    try:
        with open_admin(config, clock) as ops:
            printed: Printed = run(ops, actor_name(), args, console, clock)
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
    _emit(printed.document, as_json, printed.text, out)
    if printed.qr_uri is not None and not as_json:
        _draw_qr(printed.qr_uri, out)
    return printed.exit_code


if __name__ == "__main__":  # pragma: no cover - `python -m authd.authctl`
    sys.exit(main())
