"""From a parsed authctl command line to one `AdminOps` call and its printable result.

Secrets typed by the operator (password, PIN, the password and OTP of `test`) are read
here, from the terminal without echo or from stdin when it is not a terminal, and
handed straight to AdminOps; they are never put on the command line, where `ps` and
shell history would see them.
"""

from __future__ import annotations

import argparse
import getpass
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from authd.admin import AdminOps, Done, TestResult, TokenInfo, UserSummary, audit_json
from authd.auth.interfaces import AuditFilter
from authd.core.errors import InvalidInput
from authd.ctl import render
from authd.ctl.parser import UsageError
from authd.ctl.timespec import parse_since
from authd.storage.recovery import Issue

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class JsonResult(Protocol):
    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Printed:
    """What a command prints: `document` for --json, `text` otherwise, and its exit code."""

    document: Any
    text: str
    exit_code: int = EXIT_OK
    qr_uri: str | None = None  # `token add --qr/--qr-file`: the one QR code to draw
    lines: Iterable[str] | None = None  # JSON lines, streamed instead of a document


class Console:
    """Where secrets come from: no-echo prompts on a terminal, else one line each."""

    def __init__(self, stdin: TextIO, prompt: Callable[[str], str] = getpass.getpass) -> None:
        self._stdin = stdin
        self._prompt = prompt

    def interactive(self) -> bool:
        try:
            return self._stdin.isatty()
        except ValueError:  # closed stream
            return False

    def secret(self, prompt: str, *, confirm: bool = False, optional: bool = False) -> str:
        """One secret; `confirm` asks twice on a terminal; empty is refused unless
        `optional`. Messages never repeat what was typed."""
        if self.interactive():
            value = self._prompt(prompt)
            if confirm and value and self._prompt("again: ") != value:
                raise InvalidInput("the two entries differ")
        else:
            line = self._stdin.readline()
            if not line and not optional:
                raise InvalidInput(f"expected a line on stdin ({prompt.rstrip(': ')})")
            value = line.removesuffix("\n").removesuffix("\r")
        if not value and not optional:
            raise InvalidInput(f"{prompt.rstrip(': ')} is empty")
        return value


def _one(result: JsonResult, text: str, exit_code: int = EXIT_OK) -> Printed:
    return Printed(result.to_json(), text, exit_code)


def _users(rows: list[UserSummary]) -> Printed:
    return Printed({"users": [r.to_json() for r in rows]}, render.user_list(rows))


def _tokens(rows: list[TokenInfo]) -> Printed:
    return Printed({"tokens": [t.to_json() for t in rows]}, render.token_list(rows))


def _test(ops: AdminOps, actor: str, args: argparse.Namespace, console: Console) -> Printed:
    password = console.secret("Password: ")
    code = console.secret("OTP (empty if typed after the password): ", optional=True)
    result: TestResult = ops.test_auth(actor, args.user, password, code or None)
    return _one(result, render.test_result(result), EXIT_OK if result.accepted else EXIT_FAILURE)


def _export(
    ops: AdminOps, actor: str, args: argparse.Namespace, now: Callable[[], float]
) -> Printed:
    """`audit --export`: JSON lines, streamed page by page (whatever --json says)."""
    if args.before_id is not None:
        raise UsageError("--before-id pages the listing; --export returns every match")
    at = now()
    where = AuditFilter(
        user=args.user,
        action=args.action,
        result=args.result,
        client=args.client,
        since=parse_since(args.since, at) if args.since is not None else None,
        until=parse_since(args.until, at) if args.until is not None else None,
    )
    lines = (
        json.dumps(audit_json(e), sort_keys=True, separators=(",", ":"))
        for e in ops.iter_audit(actor, where)
    )
    return Printed(None, "", lines=lines)


def run(
    ops: AdminOps,
    actor: str,
    args: argparse.Namespace,
    console: Console,
    now: Callable[[], float],
) -> Printed:
    """Run `args.command`; AdminOps errors propagate to the caller (exit 1)."""
    cmd: str = args.command
    if cmd == "user.add":
        password = console.secret("Password: ", confirm=True) if args.password_stdin else None
        detail = ops.add_user(
            actor,
            args.user,
            password=password,
            email=args.email,
            phone=args.phone,
            first_name=args.first_name,
            last_name=args.last_name,
            groups=args.group,
        )
        return _one(detail, f"user {detail.user} added\n\n{render.user_detail(detail)}")
    if cmd == "user.set":
        if args.no_groups and args.group:
            raise UsageError("--no-groups and --group exclude each other")
        fields = (args.email, args.phone, args.first_name, args.last_name, args.group)
        if not args.no_groups and all(f is None for f in fields):
            raise UsageError("nothing to change: give --email, --phone, --first-name, ...")
        detail = ops.set_user(
            actor,
            args.user,
            email=args.email,
            phone=args.phone,
            first_name=args.first_name,
            last_name=args.last_name,
            groups=[] if args.no_groups else args.group,
        )
        return _one(detail, f"user {detail.user} changed\n\n{render.user_detail(detail)}")
    if cmd == "user.passwd":
        done = ops.set_password(actor, args.user, console.secret("Password: ", confirm=True))
        return _one(done, render.done(done))
    if cmd == "apikey.new":
        created = ops.new_api_key(actor, args.name, args.scope, args.key_file)
        return _one(created, render.api_key(created))
    if cmd == "user.list":
        return _users(ops.list_users(actor, args.pattern, args.limit))
    if cmd == "user.remind":
        reminders = ops.remind(actor, dry_run=not args.send)
        verb = "mailed" if reminders.sent else "would mail"
        lines = [f"{verb} {user} <{email}>" for user, email in reminders.users]
        return _one(reminders, "\n".join(lines) or "every user with an address has a token")
    if cmd == "user.show":
        detail = ops.show_user(actor, args.user)
        return _one(detail, render.user_detail(detail))
    simple: dict[str, Callable[[str, str], Done]] = {
        "user.unlock": ops.unlock_user,
        "user.reset": ops.reset_user,
        "user.disable": ops.disable_user,
        "user.enable": ops.enable_user,
        "user.delete": ops.delete_user,
        "pin.remove": ops.remove_pin,
    }
    if cmd in simple:
        done = simple[cmd](actor, args.user)
        return _one(done, render.done(done))
    by_serial: dict[str, Callable[[str, str], Done]] = {
        "token.enable": ops.enable_token,
        "token.disable": ops.disable_token,
        "token.revoke": ops.revoke_token,
        "token.unassign": ops.unassign_token,
    }
    if cmd in by_serial:
        done = by_serial[cmd](actor, args.serial)
        return _one(done, render.done(done))
    if cmd == "token.add":
        added = ops.add_token(
            actor,
            args.user,
            args.type,
            secret_b32=args.secret,
            digits=args.digits,
            period=args.period,
            algorithm=args.algorithm,
            serial=args.serial,
        )
        printed = _one(added, render.token_added(added))
        if args.qr or args.qr_file:
            return Printed(printed.document, printed.text, qr_uri=added.uri)
        return printed
    if cmd == "token.list":
        return _tokens(ops.list_tokens(actor, args.user))
    if cmd == "token.show":
        info = ops.show_token(actor, args.serial)
        return _one(info, render.token_detail(info))
    if cmd == "token.resync":
        info = ops.resync_token(actor, args.serial, args.otp1, args.otp2)
        return _one(info, f"token {info.serial} resynchronised\n\n{render.token_detail(info)}")
    if cmd == "token.assign":
        done = ops.assign_token(actor, args.serial, args.user)
        return _one(done, render.done(done))
    if cmd == "pin.set":
        done = ops.set_pin(actor, args.user, console.secret("PIN: ", confirm=True))
        return _one(done, render.done(done))
    if cmd == "backup-codes.generate":
        codes = ops.generate_backup_codes(actor, args.user)
        return _one(codes, render.backup_code_set(codes))
    if cmd == "audit" and args.verb == "verify":
        verdict = ops.verify_audit(actor)
        return _one(verdict, render.chain_verdict(verdict), EXIT_OK if verdict.ok else EXIT_FAILURE)
    if cmd == "audit" and args.export:
        return _export(ops, actor, args, now)
    if cmd == "audit":
        if args.action or args.result or args.client or args.until:
            raise UsageError("--action, --result, --client and --until go with --export")
        since = parse_since(args.since, now()) if args.since is not None else None
        page = ops.audit(
            actor, user=args.user, since=since, limit=args.limit, before_id=args.before_id
        )
        return _one(page, render.audit_page(page))
    if cmd == "key.rotate":
        rotation = ops.rotate_key(actor)
        return _one(rotation, render.key_rotation(rotation))
    if cmd == "issue.list":
        issues = ops.list_issues(actor, args.status)
        return Printed({"issues": [i.to_json() for i in issues]}, render.issue_list(issues))
    by_id: dict[str, Callable[[str, int], Issue]] = {
        "issue.show": ops.show_issue,
        "issue.approve": ops.approve_issue,
        "issue.reject": ops.reject_issue,
    }
    if cmd in by_id:
        issue = by_id[cmd](actor, args.id)
        return _one(issue, render.issue_detail(issue))
    if cmd == "test":
        return _test(ops, actor, args, console)
    if cmd == "status":
        report = ops.status(actor)
        return _one(report, render.status_report(report), EXIT_OK if report.ok else EXIT_FAILURE)
    raise AssertionError(f"parser produced an unknown command {cmd!r}")
