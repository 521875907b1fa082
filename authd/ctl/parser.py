"""The `authctl` command line: exactly the contract's nouns and verbs, nothing more.

Each verb's parser sets `command` to a dotted name ("user.add", "token.resync") that
`authd.ctl.commands` dispatches on; options map one to one onto `AdminOps` arguments.
`status` is a noun of its own, added to the contract's set. `export`, `import`,
`token import` and `user import` live in `authd.ctl.portability`. Anything else is a
usage error from argparse (exit 2).
"""

from __future__ import annotations

import argparse
from typing import TypeAlias

from authd import __version__
from authd.ctl import portability_args as portability
from authd.ctl import qr
from authd.storage.recovery import STATUSES

_Subs: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class UsageError(Exception):
    """A command line that parses but makes no sense (bad --since, ...): exit 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The full parser; `exit_on_error` stays on: argparse prints usage and exits 2."""
    parser = argparse.ArgumentParser(
        prog="authctl",
        description="authd operator CLI; works on the daemon's store while it runs.",
    )
    parser.add_argument("--version", action="version", version=f"authctl {__version__}")
    parser.add_argument(
        "-c", "--config", metavar="FILE",
        help="config file (default: $AUTHD_CONFIG or /etc/authd/authd.yaml)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    nouns = parser.add_subparsers(dest="noun", required=True, metavar="NOUN")
    _user(nouns)
    _token(nouns)
    _pin(nouns)
    _backup_codes(nouns)
    _audit(nouns)
    _key(nouns)
    _apikey(nouns)
    _issue(nouns)
    _test(nouns)
    _status(nouns)
    portability.add_parsers(nouns)
    return parser


def _global_options(p: argparse.ArgumentParser) -> None:
    """`-c` and `--json` after the verb too, as users type them (`user list --json`).

    SUPPRESS leaves the top-level value alone unless the option appears here."""
    p.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS, help="config file")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")


def _verbs(nouns: _Subs, noun: str, help_text: str) -> _Subs:
    p = nouns.add_parser(noun, help=help_text)
    _global_options(p)
    return p.add_subparsers(dest="verb", required=True, metavar="VERB")


def _noun(nouns: _Subs, noun: str, command: str, help_text: str) -> argparse.ArgumentParser:
    """A noun without verbs (audit, test, status)."""
    p = nouns.add_parser(noun, help=help_text)
    p.set_defaults(command=command)
    _global_options(p)
    return p


def _cmd(verbs: _Subs, name: str, command: str, help_text: str) -> argparse.ArgumentParser:
    p = verbs.add_parser(name, help=help_text)
    p.set_defaults(command=command)
    _global_options(p)
    return p


def _user(nouns: _Subs) -> None:
    verbs = _verbs(
        nouns,
        "user",
        "users: add, set, passwd, delete, list, show, unlock, reset, disable, enable, import",
    )
    add = _cmd(verbs, "add", "user.add", "add a local user")
    add.add_argument("user")
    _password_stdin(add, required=False)
    _profile_options(add, default="")
    add.set_defaults(group=[])
    change = _cmd(verbs, "set", "user.set", "change profile fields; others stay as they are")
    change.add_argument("user")
    _profile_options(change, default=None)
    change.add_argument(
        "--no-groups", action="store_true", help="remove every group (with no --group)"
    )
    passwd = _cmd(verbs, "passwd", "user.passwd", "set a local password")
    passwd.add_argument("user")
    _password_stdin(passwd, required=True)
    _cmd(verbs, "delete", "user.delete", "delete: tokens revoked, codes and PIN gone").add_argument(
        "user"
    )
    lst = _cmd(verbs, "list", "user.list", "list users")
    lst.add_argument("pattern", nargs="?", help="`*` wildcard, case-sensitive")
    lst.add_argument("--limit", type=_positive_int)
    for verb, text in (
        ("show", "show one user"),
        ("unlock", "clear failures and lock"),
        ("reset", "remove tokens, backup codes and PIN"),
        ("disable", "reject every login of the user"),
        ("enable", "undo disable"),
    ):
        _cmd(verbs, verb, f"user.{verb}", text).add_argument("user")
    portability.add_user_import(verbs)
    remind = _cmd(verbs, "remind", "user.remind", "mail users without a token the portal's address")
    # A dry run unless told to send: mail to every user is not undone.
    mode = remind.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="only list whom it would mail "
                      "(the default)")
    mode.add_argument("--send", action="store_true", help="mail them")


def _qr_file(path: str) -> str:
    try:
        qr.file_kind(path)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return path


def _password_stdin(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument(
        "--password-stdin",
        action="store_true",
        required=required,
        help="read the password from stdin (prompted twice on a terminal)",
    )


def _profile_options(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--email", default=default)
    p.add_argument("--phone", default=default)
    p.add_argument("--first-name", default=default)
    p.add_argument("--last-name", default=default)
    p.add_argument(
        "--group", action="append", metavar="G", help="group membership (repeat for several)"
    )


def _apikey(nouns: _Subs) -> None:
    verbs = _verbs(nouns, "apikey", "HTTP API keys: new")
    new = _cmd(verbs, "new", "apikey.new", "a fresh random key, printed once, with config lines")
    new.add_argument("name")
    new.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=("validate", "admin", "selfservice-admin"),
        help="repeat for several",
    )
    new.add_argument(
        "--key-file", metavar="PATH", default="", help="write the key there (0600) for key_file"
    )


def _token(nouns: _Subs) -> None:
    verbs = _verbs(
        nouns,
        "token",
        "OATH tokens: add, list, show, enable, disable, revoke, resync, assign, unassign",
    )
    add = _cmd(verbs, "add", "token.add", "enroll a token; prints its otpauth:// URI once")
    add.add_argument("user")
    add.add_argument("--type", choices=("totp", "hotp"), default="totp", type=str.lower)
    add.add_argument("--secret", metavar="B32", help="base32 seed (default: a fresh random one)")
    add.add_argument(
        "--digits", type=int, choices=(6, 8), help="code length (default: otp.default_digits)"
    )
    add.add_argument("--period", type=int, default=30, help="TOTP step in seconds")
    add.add_argument(
        "--algorithm", choices=("SHA1", "SHA256", "SHA512"), default="SHA1", type=str.upper
    )
    add.add_argument("--serial", help="serial number (default: TOTP/HOTP + 8 hex digits)")
    add.add_argument("--qr", action="store_true", help="also print a QR code for the URI")
    add.add_argument(
        "--qr-file", metavar="PATH", type=_qr_file,
        help="also write the QR code to PATH (.png or .svg; created 0600: it holds the secret)",
    )
    lst = _cmd(verbs, "list", "token.list", "list tokens (of one user)")
    lst.add_argument("user", nargs="?")
    for verb, text in (
        ("show", "show one token"),
        ("enable", "enable a disabled token"),
        ("disable", "disable a token (can be enabled again)"),
        ("revoke", "revoke a token for good"),
        ("unassign", "detach a token from its user"),
    ):
        _cmd(verbs, verb, f"token.{verb}", text).add_argument("serial")
    resync = _cmd(verbs, "resync", "token.resync", "re-align a drifted token")
    resync.add_argument("serial")
    resync.add_argument("otp1")
    resync.add_argument("otp2")
    assign = _cmd(verbs, "assign", "token.assign", "give a token to a user")
    assign.add_argument("serial")
    assign.add_argument("user")
    portability.add_token_import(verbs)


def _pin(nouns: _Subs) -> None:
    verbs = _verbs(nouns, "pin", "server-side PINs: set, remove")
    _cmd(verbs, "set", "pin.set", "set a PIN (read from stdin)").add_argument("user")
    _cmd(verbs, "remove", "pin.remove", "remove the PIN").add_argument("user")


def _backup_codes(nouns: _Subs) -> None:
    verbs = _verbs(nouns, "backup-codes", "single-use backup codes: generate")
    _cmd(
        verbs,
        "generate",
        "backup-codes.generate",
        "print a new set once; the old set stops working",
    ).add_argument("user")


def _issue(nouns: _Subs) -> None:
    verbs = _verbs(nouns, "issue", "access-recovery requests from the portal")
    listing = _cmd(verbs, "list", "issue.list", "the requests, oldest first")
    listing.add_argument("--status", choices=STATUSES, help="only requests in this status")
    for verb, text in (
        ("show", "one request"),
        ("approve", "approve an open request (lost token: disables the user's tokens)"),
        ("reject", "reject an open request"),
    ):
        _cmd(verbs, verb, f"issue.{verb}", text).add_argument("id", type=_positive_int)


def _audit(nouns: _Subs) -> None:
    p = _noun(nouns, "audit", "audit", "the audit trail, newest first; `audit verify`")
    p.add_argument(
        "verb", nargs="?", choices=("verify",), help="check the hash chain; exit 1 if broken"
    )
    p.add_argument("--user")
    p.add_argument(
        "--since", metavar="T", help="ISO 8601 time, or a duration ago such as 30m, 2h, 7d"
    )
    p.add_argument("--until", metavar="T", help="only events before T (same forms as --since)")
    p.add_argument("--action", help="e.g. auth, user.delete, config.reload")
    p.add_argument("--result", help="accept, reject, challenge, ok, error")
    p.add_argument("--client", help="the RADIUS client or front-end name")
    p.add_argument(
        "--export", action="store_true", help="every matching event, oldest first, as JSON lines"
    )
    p.add_argument("--limit", type=_positive_int, default=100)
    p.add_argument(
        "--before-id",
        metavar="N",
        type=_positive_int,
        help="only events older than id N (the next page: the id the previous page names)",
    )


def _key(nouns: _Subs) -> None:
    verbs = _verbs(nouns, "key", "data keys: rotate")
    _cmd(verbs, "rotate", "key.rotate", "new data key; every seed is re-encrypted")


def _test(nouns: _Subs) -> None:
    p = _noun(nouns, "test", "test", "run the daemon's decision for a user")
    p.add_argument("user")


def _status(nouns: _Subs) -> None:
    _noun(nouns, "status", "status", "can this node reach its store and directories? exit 1 if not")
