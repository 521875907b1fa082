"""authctl's parser entries for `export`, `import`, `token import` and `user import`
(kept apart from `authd.ctl.portability`, which runs them, so the parser stays light)."""

from __future__ import annotations

import argparse

from authd.portability.merge import OnConflict

COMMANDS = frozenset({"export", "import", "token.import", "user.import"})


def add_parsers(nouns: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`export` and `import` (top-level nouns, as the contract names them)."""
    exp = nouns.add_parser("export", help="write an encrypted bundle of users, tokens and state")
    exp.set_defaults(command="export")
    exp.add_argument("--out", required=True, metavar="FILE", help="the bundle (created 0600)")
    _protection(exp, "seal the bundle with")
    imp = nouns.add_parser("import", help="import an encrypted bundle (all or nothing)")
    imp.set_defaults(command="import")
    imp.add_argument("file", metavar="FILE")
    _protection(imp, "open the bundle with")
    _on_conflict(imp, "the bundle's")
    imp.add_argument(
        "--adopt-hash-key", action="store_true",
        help="take the bundle's PIN/backup-code hash key (a site without PINs or codes yet)",
    )  # fmt: skip


def _on_conflict(p: argparse.ArgumentParser, theirs: str) -> None:
    p.add_argument(
        "--on-conflict", choices=[c.value for c in OnConflict], default=OnConflict.REFUSE.value,
        help="a user here with other tokens: refuse the import (default), skip that user, "
        f"or replace it with {theirs}",
    )  # fmt: skip


def add_user_import(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`user import FILE [--on-conflict refuse|skip|replace]`."""
    p = verbs.add_parser(
        "import", help="add or update users (and one token each) from a CSV or JSON-lines file"
    )
    p.set_defaults(command="user.import")
    p.add_argument("file", metavar="FILE")
    _on_conflict(p, "the file's")


def _protection(p: argparse.ArgumentParser, what: str) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--key-file", metavar="FILE", help=f"{what} a 32-byte key from FILE")
    group.add_argument(
        "--passphrase-file", metavar="FILE",
        help=f"{what} the passphrase in FILE (default: read from stdin)",
    )  # fmt: skip


def add_token_import(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`token import FILE --format pskc|csv`."""
    p = verbs.add_parser("import", help="load unassigned tokens from a PSKC or CSV file")
    p.set_defaults(command="token.import")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--format", required=True, choices=("pskc", "csv"), type=str.lower)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--key-file", metavar="FILE", help="PSKC pre-shared AES key (hex or raw)")
    group.add_argument(
        "--password-stdin", action="store_true", help="PSKC PBKDF2 password from stdin"
    )
    group.add_argument("--password-file", metavar="FILE", help="PSKC PBKDF2 password from FILE")
