"""`authctl` in-process on a real SQLite store: commands, output shapes, exit codes, and
that no secret reaches the audit trail or the database in clear."""

from __future__ import annotations

import base64
import re
from datetime import datetime, timedelta

import pytest

from authd.core import otp
from authd.ctl.parser import UsageError
from authd.ctl.timespec import parse_since
from tests.ctl.conftest import CtlEnv, seed_from_uri

PASSWORD = "Corr3ct-Horse!"
PIN = "73925186"  # 8 digits: long enough not to turn up by chance in hex hashes


def add_user_with_token(env: CtlEnv, user: str = "alice", *extra: str) -> tuple[bytes, str]:
    """A local user with a password and a TOTP token; returns (seed, serial)."""
    assert env.run("user", "add", user, "--password-stdin", stdin=PASSWORD + "\n").code == 0
    added = env.run("--json", "token", "add", user, *extra)
    assert added.code == 0, added.err
    doc = added.json()
    return seed_from_uri(doc["otpauth_uri"]), doc["token"]["serial"]


def code_now(env: CtlEnv, seed: bytes, ahead: int = 0) -> str:
    return otp.totp(seed, env.clock.seconds() + ahead)


def test_user_add_reads_password_from_stdin_and_show(ctl_env: CtlEnv) -> None:
    """`user add --password-stdin` with profile flags; `user show --json` reports them
    and that a password is set, without any hash."""
    run = ctl_env.run(
        "user", "add", "bob", "--password-stdin", "--email", "bob@example.org",
        "--phone", "+4312345", "--first-name", "Bob", "--last-name", "Builder",
        "--group", "vpn", "--group", "admins", stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert run.code == 0 and "user bob added" in run.out
    doc = ctl_env.run("--json", "user", "show", "bob").json()
    assert doc["has_password"] is True and doc["groups"] == ["vpn", "admins"]
    assert (doc["email"], doc["first_name"], doc["status"]) == (
        "bob@example.org",
        "Bob",
        "unregistered",
    )
    assert "argon2" not in str(doc)


def test_user_add_twice_exits_1_with_json_error(ctl_env: CtlEnv) -> None:
    """A taken name is a failure (exit 1); --json still prints one document."""
    assert ctl_env.run("user", "add", "carol").code == 0
    again = ctl_env.run("--json", "user", "add", "carol")
    assert again.code == 1
    assert again.json()["error"]["type"] == "AlreadyExists"
    assert "carol" in again.err


def test_password_stdin_empty_is_refused(ctl_env: CtlEnv) -> None:
    """An empty line is never stored as a password."""
    run = ctl_env.run("user", "add", "dora", "--password-stdin", stdin="\n")
    assert run.code == 1 and "empty" in run.err
    assert ctl_env.run("user", "show", "dora").code == 1


def test_token_uri_codes_accepted_once_by_test(ctl_env: CtlEnv) -> None:
    """The URI's secret yields a code `authctl test` accepts; the same code again is a
    replay (exit 1, internal reason shown to the operator)."""
    seed, serial = add_user_with_token(ctl_env)
    code = code_now(ctl_env, seed)
    first = ctl_env.run("test", "alice", stdin=f"{PASSWORD}\n{code}\n")
    assert first.code == 0 and first.out.startswith("accept") and "reason: ok" in first.out
    second = ctl_env.run("--json", "test", "alice", stdin=f"{PASSWORD}\n{code}\n")
    assert second.code == 1
    assert (second.json()["result"], second.json()["reason"]) == ("reject", "replay")
    inline = ctl_env.run("test", "alice", stdin=f"{PASSWORD}{code_now(ctl_env, seed, 30)}\n\n")
    assert inline.code == 0, "password with the OTP appended, OTP line left empty"
    wrong = ctl_env.run("test", "alice", stdin=f"wrong-pw\n{code_now(ctl_env, seed, 60)}\n")
    assert wrong.code == 1 and "bad_password" in wrong.out


def test_token_add_options_and_human_output(ctl_env: CtlEnv) -> None:
    """--type hotp --digits 8 --algorithm --serial are honoured and the URI printed once."""
    assert ctl_env.run("user", "add", "erin").code == 0
    run = ctl_env.run(
        "token",
        "add",
        "erin",
        "--type",
        "hotp",
        "--digits",
        "8",
        "--algorithm",
        "sha512",
        "--serial",
        "HW-42",
    )
    assert run.code == 0
    uris = re.findall(r"otpauth://\S+", run.out)
    assert len(uris) == 1 and uris[0].startswith("otpauth://hotp/authd:erin?")
    assert "digits=8" in uris[0] and "algorithm=SHA512" in uris[0] and "counter=0" in uris[0]
    shown = ctl_env.run("--json", "token", "show", "HW-42").json()
    assert (shown["type"], shown["digits"], shown["algorithm"], shown["user"]) == (
        "hotp",
        8,
        "SHA512",
        "erin",
    )


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("token", "add", "nobody"), 1),
        (("token", "show", "NOPE"), 1),
        (("user", "unlock", "nobody"), 1),
        (("token", "add", "x", "--digits", "7"), 2),
        (("token", "add", "x", "--type", "sms"), 2),
        (("user",), 2),
        (("frobnicate",), 2),
        (("import", "f", "--on-conflict", "maybe"), 2),
        (("audit", "--since", "yesterday-ish"), 2),
        (("user", "list", "--limit", "0"), 2),
    ],
)
def test_exit_codes(ctl_env: CtlEnv, args: tuple[str, ...], code: int) -> None:
    """1 for failures (unknown user/serial), 2 for usage errors (argparse or --since)."""
    assert ctl_env.run(*args).code == code


def test_bad_config_exits_2_with_file_line_problems(ctl_env: CtlEnv) -> None:
    """Every config problem is printed as FILE:LINE: key.path: reason, exit 2."""
    bad = ctl_env.config.with_name("bad.yaml")
    bad.write_text("store:\n  pool_size: lots\notp:\n  default_digits: 12\n")
    run = ctl_env.run("user", "list", config_path=bad)
    assert run.code == 2 and run.out == ""
    lines = run.err.strip().splitlines()
    assert len(lines) >= 2
    assert all(re.match(rf"{re.escape(str(bad))}:\d+: \S+: ", line) for line in lines)
    assert any(":2: store.pool_size:" in line for line in lines)
    assert any(":4: otp.default_digits:" in line for line in lines)
    missing = ctl_env.run("--json", "user", "list", config_path=bad.with_name("nope.yaml"))
    assert missing.code == 2 and missing.json()["error"]["type"] == "ConfigErrors"


def test_user_list_wildcard_columns_and_json_shape(ctl_env: CtlEnv) -> None:
    """`*` matches case-sensitively; the table has the contract's columns; --json is
    {"users": [{user, status, source, tokens, last_attempt, last_success}]}."""
    seed, _ = add_user_with_token(ctl_env, "ann")
    for name in ("andy", "Anna", "bert"):
        assert ctl_env.run("user", "add", name).code == 0
    assert ctl_env.run("test", "ann", stdin=f"{PASSWORD}\n{code_now(ctl_env, seed)}\n").code == 0
    table = ctl_env.run("user", "list", "an*")
    header, *rows = table.out.strip().splitlines()
    assert header.split() == ["USER", "STATUS", "TOKENS", "LAST", "ATTEMPT", "LAST", "SUCCESS"]
    assert [r.split()[0] for r in rows] == ["andy", "ann"]
    when = (
        datetime.fromtimestamp(ctl_env.clock.seconds()).astimezone().isoformat(timespec="seconds")
    )
    assert rows[1].split()[:3] == ["ann", "active", "1"] and when in rows[1]
    doc = ctl_env.run("--json", "user", "list", "*n*", "--limit", "2").json()
    assert [u["user"] for u in doc["users"]] == ["Anna", "andy"]
    ann = ctl_env.run("--json", "user", "list", "ann").json()["users"][0]
    assert set(ann) == {"user", "status", "source", "tokens", "last_attempt", "last_success"}
    assert ann["last_success"] == {
        "at": ctl_env.clock.seconds(),
        "source": "",
        "client": ann["last_success"]["client"],
    }
    assert ann["last_success"]["client"]  # the operator who ran `test`


def test_lock_then_unlock(ctl_env: CtlEnv) -> None:
    """Three wrong codes lock the user (auto-unlock: never); even a right code is then
    rejected; `user unlock` lets the next right code in."""
    seed, _ = add_user_with_token(ctl_env)
    for _ in range(3):
        assert ctl_env.run("test", "alice", stdin=f"{PASSWORD}\n000000\n").code == 1
    assert ctl_env.run("--json", "user", "list", "alice").json()["users"][0]["status"] == "locked"
    locked = ctl_env.run(
        "--json", "test", "alice", stdin=f"{PASSWORD}\n{code_now(ctl_env, seed)}\n"
    )
    assert locked.code == 1 and locked.json()["reason"] == "locked"
    assert ctl_env.run("user", "unlock", "alice").code == 0
    ok = ctl_env.run("test", "alice", stdin=f"{PASSWORD}\n{code_now(ctl_env, seed, 30)}\n")
    assert ok.code == 0
    assert ctl_env.run("--json", "user", "show", "alice").json()["status"] == "active"


def test_reset_removes_registration(ctl_env: CtlEnv) -> None:
    """`user reset` drops tokens, backup codes and PIN: status becomes unregistered."""
    add_user_with_token(ctl_env)
    assert ctl_env.run("pin", "set", "alice", stdin=PIN + "\n").code == 0
    assert ctl_env.run("backup-codes", "generate", "alice").code == 0
    assert ctl_env.run("user", "reset", "alice").code == 0
    doc = ctl_env.run("--json", "user", "show", "alice").json()
    assert (doc["status"], doc["tokens"], doc["has_pin"], doc["backup_codes_left"]) == (
        "unregistered",
        [],
        False,
        0,
    )
    assert ctl_env.run("--json", "token", "list", "alice").json() == {"tokens": []}


def test_pin_policy_refusal_and_pin_in_use(ctl_env: CtlEnv) -> None:
    """A trivial PIN is refused (exit 1, rule named, PIN not echoed); a good one is then
    required before the OTP; `pin remove` drops it again."""
    seed, _ = add_user_with_token(ctl_env)
    refused = ctl_env.run("pin", "set", "alice", stdin="1111\n")
    assert refused.code == 1 and "too easy" in refused.err and "1111" not in refused.err
    assert ctl_env.run("pin", "set", "alice", stdin=PIN + "\n").code == 0
    without = ctl_env.run("test", "alice", stdin=f"{PASSWORD}\n{code_now(ctl_env, seed)}\n")
    assert without.code == 1
    with_pin = ctl_env.run(
        "test", "alice", stdin=f"{PASSWORD}\n{PIN}{code_now(ctl_env, seed, 30)}\n"
    )
    assert with_pin.code == 0, with_pin.out
    assert ctl_env.run("pin", "remove", "alice").code == 0
    assert ctl_env.run("--json", "user", "show", "alice").json()["has_pin"] is False


def test_backup_codes_single_use_via_test(ctl_env: CtlEnv) -> None:
    """Each printed backup code works once in `authctl test`; a new set voids the old."""
    add_user_with_token(ctl_env)
    run = ctl_env.run("backup-codes", "generate", "alice")
    codes = run.out.strip().splitlines()[1:]
    assert run.code == 0 and len(codes) == 5
    use = ctl_env.run("--json", "test", "alice", stdin=f"{PASSWORD}\n{codes[0]}\n")
    assert use.code == 0 and use.json()["reason"] == "ok_backup_code"
    assert ctl_env.run("test", "alice", stdin=f"{PASSWORD}\n{codes[0]}\n").code == 1
    fresh = ctl_env.run("--json", "backup-codes", "generate", "alice").json()["codes"]
    assert len(fresh) == 5 and not set(fresh) & set(codes)
    assert ctl_env.run("test", "alice", stdin=f"{PASSWORD}\n{codes[1]}\n").code == 1
    assert ctl_env.run("test", "alice", stdin=f"{PASSWORD}\n{fresh[1]}\n").code == 0


def test_token_lifecycle_resync_assign_and_key_rotate(ctl_env: CtlEnv) -> None:
    """disable blocks the token, enable restores it, resync re-aligns a fast clock,
    unassign/assign move it, key rotate keeps it working, revoke ends it."""
    seed, serial = add_user_with_token(ctl_env)
    assert ctl_env.run("user", "add", "zoe", "--password-stdin", stdin=PASSWORD + "\n").code == 0
    assert ctl_env.run("token", "disable", serial).code == 0
    assert ctl_env.run("test", "alice", stdin=f"{PASSWORD}\n{code_now(ctl_env, seed)}\n").code == 1
    assert ctl_env.run("token", "enable", serial).code == 0
    fast = 3 * 3600  # the token's clock runs 3 h ahead: outside the 30 s skew
    c1, c2 = code_now(ctl_env, seed, fast), code_now(ctl_env, seed, fast + 30)
    assert ctl_env.run("test", "alice", stdin=f"{PASSWORD}\n{c1}\n").code == 1
    resync = ctl_env.run("--json", "token", "resync", serial, c1, c2)
    assert resync.code == 0 and resync.json()["drift"] == 361
    ctl_env.run("user", "unlock", "alice")
    c3 = code_now(ctl_env, seed, fast + 60)
    assert ctl_env.run("test", "alice", stdin=f"{PASSWORD}\n{c3}\n").code == 0
    assert ctl_env.run("token", "unassign", serial).code == 0
    assert ctl_env.run("token", "assign", serial, "zoe").code == 0
    assert ctl_env.run("--json", "token", "list", "zoe").json()["tokens"][0]["serial"] == serial
    rotated = ctl_env.run("--json", "key", "rotate")
    assert rotated.code == 0 and rotated.json()["reencrypted"] == 1
    c4 = code_now(ctl_env, seed, fast + 90)
    assert ctl_env.run("test", "zoe", stdin=f"{PASSWORD}\n{c4}\n").code == 0
    assert ctl_env.run("token", "revoke", serial).code == 0
    assert ctl_env.run("token", "enable", serial).code == 1  # revocation is final


def test_audit_lists_actions_and_no_secret_anywhere(ctl_env: CtlEnv) -> None:
    """After a full enrolment and use, the audit trail names every action, and neither
    it (human or JSON) nor the database files contain the password, seed, PIN, codes."""
    seed, serial = add_user_with_token(ctl_env)
    ctl_env.run("pin", "set", "alice", stdin=PIN + "\n")
    codes = ctl_env.run("--json", "backup-codes", "generate", "alice").json()["codes"]
    code = code_now(ctl_env, seed)
    ctl_env.run("test", "alice", stdin=f"{PASSWORD}\n{PIN}{code}\n")
    ctl_env.run("token", "disable", serial)
    human = ctl_env.run("audit", "--user", "alice")
    doc = ctl_env.run("--json", "audit", "--limit", "50").json()
    actions = [e["action"] for e in doc["events"]]
    for action in (
        "user.add",
        "token.add",
        "pin.set",
        "backup_codes.generate",
        "auth",
        "token.disable",
    ):
        assert action in actions and action in human.out
    assert all(e["actor"].startswith("authctl:") for e in doc["events"])
    secrets_typed = [
        PASSWORD,
        PIN,
        *codes,
        *(c.replace("-", "") for c in codes),
        base64.b32encode(seed).decode().rstrip("="),
    ]
    for secret in [*secrets_typed, code]:
        assert secret not in human.out and secret not in str(doc)
    # The 6-digit OTP is left out here: it would turn up in hex hashes by chance (~1%).
    files = [p.read_bytes().decode("latin-1") for p in ctl_env.db.parent.iterdir()]
    assert len(files) >= 1
    for blob in files:
        for secret in secrets_typed:
            assert secret not in blob
    raw = b"".join(p.read_bytes() for p in ctl_env.db.parent.iterdir())
    assert seed not in raw


def test_audit_since_and_limit(ctl_env: CtlEnv) -> None:
    """--since 2h keeps only recent events; --limit caps the page."""
    assert ctl_env.run("user", "add", "old").code == 0
    ctl_env.clock.advance(3 * 3600)
    assert ctl_env.run("user", "add", "new1").code == 0
    assert ctl_env.run("user", "add", "new2").code == 0
    recent = ctl_env.run("--json", "audit", "--since", "2h").json()["events"]
    assert [e["user"] for e in recent] == ["new2", "new1"]
    assert len(ctl_env.run("--json", "audit", "--limit", "1").json()["events"]) == 1


def test_parse_since_forms() -> None:
    """Durations mean "ago"; ISO 8601 with or without zone; anything else is UsageError."""
    now = 1_767_225_600.0
    assert parse_since("2h", now) == now - 7200
    assert parse_since("90", now) == now - 90
    assert parse_since("2026-01-01T00:00:00Z", now) == now
    assert parse_since("2026-01-01T01:00:00+01:00", now) == now
    naive = datetime(2025, 12, 31, 12, 0).astimezone()
    assert parse_since("2025-12-31T12:00", now) == naive.timestamp()
    assert parse_since("2025-12-31", now) == (naive - timedelta(hours=12)).timestamp()
    with pytest.raises(UsageError):
        parse_since("last tuesday", now)
