"""Human output of authctl: aligned columns for lists, `key: value` blocks for single
records, times in local ISO 8601. (`--json` bypasses this: results have `to_json()`.)

Nothing here sees a secret except the one-time URI and backup codes, which the command
prints on purpose; hashes never reach these functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from authd.admin import (
    AuditPage,
    BackupCodeSet,
    Done,
    KeyRotation,
    StatusReport,
    TestResult,
    TokenAdded,
    TokenInfo,
    UserDetail,
    UserSummary,
)
from authd.core.model import LastSeen
from authd.rest.apikeys import NewApiKey
from authd.storage.audit_chain import Verdict
from authd.storage.recovery import Issue


def local_time(at: float | None) -> str:
    """Local ISO 8601 with offset, to the second; `-` for never, `never` for infinity."""
    if at is None:
        return "-"
    if math.isinf(at):
        return "never"
    return datetime.fromtimestamp(at).astimezone().isoformat(timespec="seconds")


def seen(value: LastSeen | None) -> str:
    """`time source client` as one cell; empty parts left out."""
    if value is None:
        return "-"
    return " ".join(p for p in (local_time(value.at), value.source, value.client) if p)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(widths[i]) for i, c in enumerate(cells[:-1])]
        return "  ".join([*padded, cells[-1]]).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def user_list(rows: Sequence[UserSummary]) -> str:
    return table(
        ("USER", "STATUS", "TOKENS", "LAST ATTEMPT", "LAST SUCCESS"),
        [
            (r.user, r.status, str(r.tokens), seen(r.last_attempt), seen(r.last_success))
            for r in rows
        ],
    )


def _block(pairs: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in pairs) + 1
    return "\n".join(f"{(k + ':').ljust(width)} {v}" for k, v in pairs)


def user_detail(u: UserDetail) -> str:
    lock = "no"
    if u.locked:
        lock = f"until {local_time(u.locked_until)}"
    name = " ".join(p for p in (u.first_name, u.last_name) if p)
    text = _block(
        [
            ("user", u.user),
            ("source", u.source),
            ("status", u.status),
            ("disabled", "yes" if u.disabled else "no"),
            ("locked", lock),
            ("failures", str(u.failures)),
            ("password", "set" if u.has_password else "-"),
            ("pin", "set" if u.has_pin else "-"),
            ("backup codes", f"{u.backup_codes_left} left"),
            ("name", name or "-"),
            ("email", u.email or "-"),
            ("phone", u.phone or "-"),
            ("groups", ", ".join(u.groups) or "-"),
            ("last attempt", seen(u.last_attempt)),
            ("last success", seen(u.last_success)),
            ("created", local_time(u.created_at)),
        ]
    )
    if u.tokens:
        text += "\n\n" + token_list(u.tokens)
    return text


def _param(t: TokenInfo) -> str:
    if t.type == "totp":
        drift = f" drift {t.drift:+d}" if t.drift else ""
        return f"{t.period}s{drift}"
    return f"counter {t.counter}"


def token_list(tokens: Sequence[TokenInfo]) -> str:
    return table(
        ("SERIAL", "TYPE", "USER", "STATUS", "ALGORITHM", "DIGITS", "PERIOD/COUNTER", "CREATED"),
        [
            (
                t.serial,
                t.type,
                t.user or "-",
                t.status,
                t.algorithm,
                str(t.digits),
                _param(t),
                local_time(t.created_at),
            )
            for t in tokens
        ],
    )


def token_detail(t: TokenInfo) -> str:
    pairs = [
        ("serial", t.serial),
        ("type", t.type),
        ("user", t.user or "-"),
        ("status", t.status),
        ("algorithm", t.algorithm),
        ("digits", str(t.digits)),
    ]
    if t.type == "totp":
        pairs += [("period", f"{t.period}s"), ("drift", f"{t.drift or 0:+d} steps")]
    else:
        pairs.append(("next counter", str(t.counter)))
    pairs += [("description", t.description or "-"), ("created", local_time(t.created_at))]
    return _block(pairs)


def token_added(added: TokenAdded) -> str:
    t = added.token
    return (
        f"token {t.serial} ({t.type}, {t.digits} digits, {t.algorithm}) added for {t.user}\n"
        f"{added.uri}"
    )


def backup_code_set(codes: BackupCodeSet) -> str:
    head = f"backup codes for {codes.user} (each works once; any older set no longer works):"
    return "\n".join([head, *codes.codes])


def audit_page(page: AuditPage) -> str:
    """The events, then how to get the older ones when this page was full."""
    text = table(
        ("ID", "TIME", "ACTOR", "ACTION", "RESULT", "USER", "CLIENT", "SOURCE", "REASON",
         "DETAIL"),
        [
            (
                str(e.id or ""),
                local_time(e.at),
                e.actor,
                e.action,
                e.result,
                e.user or "-",
                e.client or "-",
                e.source or "-",
                e.reason or "-",
                e.detail or "-",
            )
            for e in page.events
        ],
    )  # fmt: skip
    if page.next_before_id is not None:
        text += f"\n\nolder events: authctl audit --before-id {page.next_before_id}"
    return text


def done(d: Done) -> str:
    return f"{d.action} {d.subject}: ok"


def key_rotation(k: KeyRotation) -> str:
    return f"new data key {k.key_id}; {k.reencrypted} seed(s) re-encrypted"


def test_result(r: TestResult) -> str:
    """Outcome first (what the user would get), then the operator-only internal reason."""
    lines = [r.outcome, f"reason: {r.reason} (internal; never sent to a client)"]
    if r.message:
        lines.append(f"message: {r.message}")
    if r.groups:
        lines.append(f"groups: {', '.join(r.groups)}")
    lines += [f"directory: {problem}" for problem in r.directory_problems]
    return "\n".join(lines)


def status_report(report: StatusReport) -> str:
    """One row per store, backend and LDAP server, then a verdict line."""
    text = table(
        ("COMPONENT", "STATE", "DETAIL"),
        [(c.component, c.state, c.detail or "-") for c in report.components],
    )
    verdict = "all reachable" if report.ok else "NOT all reachable"
    return f"{text}\n\n{verdict}"


def api_key(k: NewApiKey) -> str:
    where = f"written to {k.key_file} (0600)" if k.key_file else "shown this once, keep it"
    return (
        f"API key {k.name!r}, {where}:\n\n  {k.key}\n\n"
        f"Add under `http: api_keys:` in the config, then reload (SIGHUP):\n\n"
        f"{k.config_lines()}"
    )


def chain_verdict(v: Verdict) -> str:
    head = f"head: position {v.head_seq}, {v.head_hash}"
    if v.ok:
        return f"audit chain OK: {v.checked} rows verified\n{head}  (keep a copy elsewhere)"
    return f"audit chain BROKEN at row {v.bad_id}: {v.problem}\n{head}"


def issue_list(rows: Sequence[Issue]) -> str:
    if not rows:
        return "no requests"
    return "\n".join(
        f"#{i.id}  {i.status:<10} {i.kind:<8} {i.user}  {local_time(i.created_at)}  {i.source}"
        for i in rows
    )


def issue_detail(i: Issue) -> str:
    pairs = [
        ("issue", f"#{i.id}"),
        ("user", i.user),
        ("lost", i.kind),
        ("status", i.status),
        ("from", i.source or "-"),
        ("asked", local_time(i.created_at)),
        ("decided", local_time(i.decided_at)),
        ("by", i.decided_by or "-"),
    ]
    if i.grant_until is not None:
        pairs.append(("portal until", local_time(i.grant_until)))
    return _block(pairs)
