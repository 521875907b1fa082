"""authctl's data-portability commands: `export`, `import`, `token import`, `user import`.

Passphrases and PSKC passwords come from stdin (a no-echo prompt on a terminal) or a
file, never from the command line, where `ps` and shell history would see them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets

from authd.core.errors import InvalidInput
from authd.ctl.commands import Console, Printed
from authd.ctl.portability_args import COMMANDS as COMMANDS
from authd.portability.bundle import Protector
from authd.portability.merge import OnConflict
from authd.portability.ops import PortabilityOps
from authd.token_import.pskc import Protection

MAX_INPUT = 2**31  # bytes of a bundle or token file


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_INPUT + 1)
    except OSError as e:
        raise InvalidInput(f"{path}: cannot read the {what}: {e.strerror}") from None
    if len(data) > MAX_INPUT:
        raise InvalidInput(f"{path}: the {what} is too large")
    return data


def _first_line(path: str) -> str:
    lines = _read(path, "secret file").decode("utf-8").splitlines()
    return lines[0] if lines else ""


def _protector(args: argparse.Namespace, console: Console, *, confirm: bool) -> Protector:
    if args.key_file:
        return Protector.from_key_file(args.key_file)
    if args.passphrase_file:
        return Protector.from_passphrase(_first_line(args.passphrase_file))
    return Protector.from_passphrase(console.secret("Bundle passphrase: ", confirm=confirm))


def _pskc_key(path: str) -> bytes:
    raw = _read(path, "key file")
    text = raw.strip()
    with contextlib.suppress(ValueError):
        key = bytes.fromhex(text.decode("ascii"))
        if len(key) in (16, 24, 32):
            return key
    if len(raw) in (16, 24, 32):
        return raw
    raise InvalidInput(f"{path}: a PSKC key is 16, 24 or 32 bytes (hex or raw)")


def _write_new(path: str, data: bytes) -> None:
    """0600 from the start; written beside the target and renamed into place, so a
    reader never sees half a bundle."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise InvalidInput(f"{path}: cannot write the bundle: {e.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def run(ops: PortabilityOps, actor: str, args: argparse.Namespace, console: Console) -> Printed:
    cmd: str = args.command
    if cmd == "export":
        protector = _protector(args, console, confirm=True)
        exported = ops.export_bundle(actor, protector)
        _write_new(args.out, exported.data)
        doc = {**exported.to_json(), "file": args.out}
        return Printed(
            doc, f"exported {exported.users} users and {exported.tokens} tokens to {args.out}"
        )
    if cmd in ("import", "user.import"):
        if cmd == "import":
            result = ops.import_bundle(
                actor,
                _read(args.file, "bundle"),
                _protector(args, console, confirm=False),
                OnConflict(args.on_conflict),
                adopt_hash_key=args.adopt_hash_key,
            )
        else:
            result = ops.import_users(
                actor, _read(args.file, "users file"), OnConflict(args.on_conflict)
            )
        lines = [
            f"imported {result.users} users and {result.tokens} tokens: "
            f"{result.written} records written, {result.unchanged} already up to date"
        ]
        if result.conflicts:
            lines.append(f"conflicts ({result.on_conflict}):")
            lines += [f"  {c}" for c in result.conflicts]
        if result.adopted_hash_key:
            lines.append("the bundle's hash key is now in the key file: restart running daemons")
        return Printed(result.to_json(), "\n".join(lines))
    if cmd == "token.import":
        if args.key_file:
            protection = Protection(key=_pskc_key(args.key_file))
        elif args.password_file:
            protection = Protection(password=_first_line(args.password_file))
        elif args.password_stdin:
            protection = Protection(password=console.secret("PSKC password: "))
        else:
            protection = Protection()
        done = ops.import_tokens(actor, _read(args.file, "token file"), args.format, protection)
        return Printed(done.to_json(), f"imported {done.count} unassigned tokens ({done.format})")
    raise AssertionError(f"not a portability command: {cmd!r}")
