"""The users file of `authctl user import`: one user a line, optionally with one OATH
token, as CSV with a header or as JSON lines (one object a line).

Columns (JSON keys): `name` (required), `password_hash` (an argon2id hash, as
`user passwd` stores it), `email`, `phone`, `first_name`, `last_name`, `groups` (CSV:
separated by `;`; JSON: a list), and for a token `secret` (hex or base32) with
optional `type` (totp), `digits` (6), `period` (30), `counter` (0), `algorithm`
(SHA1) and `serial`. An empty or absent value is not given: an existing user keeps
what the store holds for it. Without `serial`, a token's serial is derived from the
user name, so that importing the same file again finds the same token.

Every bad line is reported by number and nothing is imported until the whole file is
right. Secrets and hashes never appear in a problem.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from argon2 import extract_parameters
from argon2.exceptions import InvalidHashError

from authd.admin import check_groups, check_user_name
from authd.core.errors import InvalidInput
from authd.core.model import Token, User
from authd.portability.records import Records, UserRecord
from authd.token_import.csv_rows import csv_lines, parse_secret
from authd.token_import.fields import check_unique, make_token

PROFILE = ("email", "phone", "first_name", "last_name")
TOKEN_FIELDS = ("secret", "type", "digits", "period", "counter", "algorithm", "serial")
COLUMNS = ("name", "password_hash", *PROFILE, "groups", *TOKEN_FIELDS)


class UserFileError(InvalidInput):
    """A users file with problems, each named by line; nothing was imported."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:20]
        more = f"\n... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        super().__init__("users file refused, nothing imported:\n" + "\n".join(shown) + more)


@dataclass(frozen=True)
class UserRow:
    """One line: the user's fields that the line gives, and its token if any."""

    name: str
    given: Mapping[str, Any]  # User field -> value, only those the line sets
    token: Token | None


def default_serial(name: str, kind: str) -> str:
    """`TOTP`/`HOTP` and 16 hex digits of the name's SHA-256: stable across imports."""
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:16].upper()
    return f"{kind.strip().upper() or 'TOTP'}{digest}"


def _texts(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a line gives: stripped text (JSON numbers as text), `groups` as is;
    empty and null ones left out."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "groups" or value is None:
            pass
        elif isinstance(value, str | int) and not isinstance(value, bool):
            value = str(value).strip()
        else:
            raise ValueError(f"{key} must be text")
        if value != "":
            out[key] = value
    return out


def _int(fields: Mapping[str, Any], key: str, default: int) -> int:
    text: str = fields.get(key, "")
    if not text:
        return default
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{key} must be a whole number")
    return int(text)


def _groups(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        groups = [g.strip() for g in value.split(";") if g.strip()]
    elif isinstance(value, list) and all(isinstance(g, str) for g in value):
        groups = value
    else:
        raise ValueError("groups must be a list of names (CSV: separated by ;)")
    try:
        check_groups(groups)
    except InvalidInput as e:
        raise ValueError(str(e)) from None
    return tuple(dict.fromkeys(groups))


def _password_hash(text: str) -> str:
    try:
        params = extract_parameters(text)
    except (InvalidHashError, ValueError):
        params = None
    if params is None or params.type.name != "ID":
        raise ValueError("password_hash must be an argon2id hash ($argon2id$v=19$...)")
    return text


def _row(line: Mapping[str, Any], now: float) -> UserRow:
    unknown = sorted(set(line) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)[:80]}")
    fields = _texts(line)
    name: str = fields.get("name", "")
    try:
        check_user_name(name)
    except InvalidInput as e:
        raise ValueError(str(e)) from None
    given: dict[str, Any] = {k: fields[k] for k in PROFILE if k in fields}
    if "password_hash" in fields:
        given["password_hash"] = _password_hash(fields["password_hash"])
    if "groups" in fields:
        given["groups"] = _groups(fields["groups"])
    token = None
    if "secret" in fields:
        kind = fields.get("type", "totp")
        token = make_token(
            fields.get("serial") or default_serial(name, kind),
            parse_secret(fields["secret"]),
            kind,
            digits=_int(fields, "digits", 6),
            period=_int(fields, "period", 30),
            counter=_int(fields, "counter", 0),
            algorithm=fields.get("algorithm", "SHA1"),
            now=now,
            user=name,
        )
    elif any(k in fields for k in TOKEN_FIELDS):
        raise ValueError("token fields need a secret")
    return UserRow(name, given, token)


def _csv_lines(text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    header: list[str] | None = None
    try:
        for number, fields in csv_lines(text):
            if header is None:
                header = [f.strip().lower() for f in fields]
                bad = [f for f in header if f not in COLUMNS]
                if bad or "name" not in header or len(set(header)) != len(header):
                    raise UserFileError(
                        [f"line {number}: the header names columns of "
                         f"{', '.join(COLUMNS)}, name among them, each once"]
                    )  # fmt: skip
            elif len(fields) != len(header):
                yield number, {"": f"{len(fields)} fields, the header has {len(header)}"}
            else:
                yield number, dict(zip(header, fields, strict=True))
    except ValueError as e:
        raise UserFileError([str(e)]) from None


def _json_lines(text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            yield number, {"": "not a JSON object"}
            continue
        yield number, doc


def parse_users(data: bytes, now: float) -> list[UserRow]:
    """Every line of the file, or UserFileError listing each bad one. JSON lines when
    the first non-blank character is `{`, else CSV."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserFileError(["the file is not UTF-8"]) from None
    lines = _json_lines(text) if text.lstrip().startswith("{") else _csv_lines(text)
    rows: list[tuple[int, UserRow]] = []
    problems: list[str] = []
    first: dict[str, int] = {}
    for number, fields in lines:
        if "" in fields:  # a line that did not parse into fields
            problems.append(f"line {number}: {fields['']}")
            continue
        try:
            row = _row(fields, now)
        except ValueError as e:
            problems.append(f"line {number}: {e}")
            continue
        seen = first.setdefault(row.name, number)
        if seen != number:
            problems.append(f"line {number}: user {row.name} also at line {seen}")
            continue
        rows.append((number, row))
    problems += check_unique([(f"line {n}", r.token) for n, r in rows if r.token is not None])
    if problems:
        raise UserFileError(problems)
    return [r for _, r in rows]


def as_records(rows: list[UserRow], here: Records, now: float) -> Records:
    """The file as import records against what the store holds: a user already here
    keeps every field the file does not give (PIN, backup codes, lock state ...)."""
    users_here = {r.user.name: r for r in here.users}
    users: list[UserRecord] = []
    tokens: list[Token] = []
    for row in rows:
        found = users_here.get(row.name)
        if found is None:
            users.append(UserRecord(User(name=row.name, created_at=now, **row.given)))
        elif all(getattr(found.user, k) == v for k, v in row.given.items()):
            users.append(found)  # as the file says already (the common re-import)
        else:
            users.append(UserRecord(replace(found.user, **row.given), found.backup))
        if row.token is not None:
            tokens.append(row.token)
    return Records(users, tokens)
