"""`authctl user import FILE`: users (and one token each) from CSV or JSON lines, through
the same merge as the bundle import: all or nothing, idempotent, --on-conflict rules."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from argon2 import PasswordHasher

from authd.core import otp
from tests.ctl.conftest import CtlEnv

PASSWORD = "correct horse battery"
SEED = secrets.token_bytes(20)
PIN = "4711"


def _file(tmp_path: Path, text: str, name: str = "users.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _hash() -> str:
    return PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORD)


def _show(env: CtlEnv, user: str) -> dict[str, object]:
    shown = env.run("--json", "user", "show", user)
    assert shown.code == 0, shown.err
    doc: dict[str, object] = shown.json()
    return doc


def test_csv_users_sign_in_with_their_password_and_token(ctl_env: CtlEnv, tmp_path: Path) -> None:
    """A CSV line gives a user profile, groups, an argon2id hash (quoted: it holds
    commas) and a TOTP seed: the user then passes the same decision the daemon runs."""
    f = _file(
        tmp_path,
        "name,password_hash,email,groups,secret,digits\n"
        f'alice,"{_hash()}",alice@example.org,vpn;staff,{SEED.hex()},6\n'
        "bob,,,,,\n",
    )
    run = ctl_env.run("--json", "user", "import", f)
    assert run.code == 0, run.err
    assert run.json()["action"] == "user.import"
    assert run.json()["users"] == 2 and run.json()["tokens"] == 1
    alice = _show(ctl_env, "alice")
    assert alice["email"] == "alice@example.org" and alice["groups"] == ["vpn", "staff"]
    assert alice["has_password"] is True and alice["status"] == "active"
    assert _show(ctl_env, "bob")["status"] == "unregistered"
    code = otp.totp(SEED, ctl_env.clock.seconds())
    assert ctl_env.run("test", "alice", stdin=f"{PASSWORD}\n{code}\n").code == 0


def test_json_lines_and_a_second_import_changes_nothing(ctl_env: CtlEnv, tmp_path: Path) -> None:
    """JSON lines (groups as a list, an HOTP token with its serial); importing the same
    file again writes nothing."""
    lines = [
        {"name": "carol", "groups": ["ops"], "secret": SEED.hex(), "type": "hotp",
         "counter": 5, "serial": "HW-1"},
        {"name": "dave", "first_name": "Dave"},
    ]  # fmt: skip
    f = _file(tmp_path, "\n".join(json.dumps(line) for line in lines) + "\n", "users.jsonl")
    first = ctl_env.run("--json", "user", "import", f).json()
    assert first["written"] == 3 and first["unchanged"] == 0
    again = ctl_env.run("--json", "user", "import", f).json()
    assert again["written"] == 0 and again["unchanged"] == 3
    tokens = ctl_env.run("--json", "token", "list", "carol").json()["tokens"]
    assert [(t["serial"], t["type"], t["counter"]) for t in tokens] == [("HW-1", "hotp", 5)]


def test_bad_lines_are_named_and_nothing_is_written(ctl_env: CtlEnv, tmp_path: Path) -> None:
    """Every bad line is reported by number (never with its secret or hash) and no
    user of the file is written; exit 1."""
    f = _file(
        tmp_path,
        "name,password_hash,secret,type\n"
        f"ok,,{SEED.hex()},totp\n"
        "has space,,,\n"
        "weak,,abcd,totp\n"
        "plain,not-a-hash-s3cret,,\n"
        f"ok,,{SEED.hex()},totp\n"
        "notype,,,hotp\n",
    )
    run = ctl_env.run("user", "import", f)
    assert run.code == 1
    for line in ("line 3:", "line 4:", "line 5:", "line 6: user ok also at line 2", "line 7:"):
        assert line in run.err, run.err
    assert "s3cret" not in run.err and SEED.hex() not in run.err
    assert ctl_env.run("--json", "user", "list").json() == {"users": []}


def test_header_and_shape_errors(ctl_env: CtlEnv, tmp_path: Path) -> None:
    """An unknown column, a line with too many fields, a JSON line that is not an object."""
    unknown = ctl_env.run("user", "import", _file(tmp_path, "name,nickname\nx,y\n"))
    assert unknown.code == 1 and "line 1:" in unknown.err
    wide = ctl_env.run("user", "import", _file(tmp_path, "name\nx,y\n", "wide.csv"))
    assert wide.code == 1 and "line 2: 2 fields" in wide.err
    jsonl = ctl_env.run("user", "import", _file(tmp_path, '{"name": "x"}\n[1]\n', "u.jsonl"))
    assert jsonl.code == 1 and "line 2: not a JSON object" in jsonl.err


def test_an_existing_user_keeps_what_the_file_does_not_give(
    ctl_env: CtlEnv, tmp_path: Path
) -> None:
    """Updating a user's e-mail leaves their password, PIN, backup codes, groups and
    token as they were."""
    assert ctl_env.run("user", "add", "erin", "--password-stdin", "--group", "vpn",
                       stdin=PASSWORD + "\n").code == 0  # fmt: skip
    token_file = _file(tmp_path, f"name,secret\nerin,{SEED.hex()}\n")
    assert ctl_env.run("user", "import", token_file).code == 0
    assert ctl_env.run("pin", "set", "erin", stdin=PIN + "\n").code == 0
    assert ctl_env.run("backup-codes", "generate", "erin").code == 0
    before = _show(ctl_env, "erin")
    f = _file(tmp_path, "name,email\nerin,erin@example.org\n", "mail.csv")
    assert ctl_env.run("user", "import", f).code == 0
    after = _show(ctl_env, "erin")
    assert after == {**before, "email": "erin@example.org"}
    code = otp.totp(SEED, ctl_env.clock.seconds())
    assert ctl_env.run("test", "erin", stdin=f"{PASSWORD}\n{PIN}{code}\n").code == 0


def test_on_conflict_refuse_skip_replace(ctl_env: CtlEnv, tmp_path: Path) -> None:
    """A user holding another token here: refused by default (nothing written, not even
    the other users), left alone with skip, given the file's token with replace."""
    assert ctl_env.run("user", "add", "fay").code == 0
    assert ctl_env.run("token", "add", "fay", "--type", "totp", "--serial", "OLD-1").code == 0
    f = _file(tmp_path, f"name,secret,serial\nfay,{SEED.hex()},NEW-1\ngus,,\n")
    refused = ctl_env.run("user", "import", f)
    assert refused.code == 1 and "fay" in refused.err
    assert ctl_env.run("user", "show", "gus").code == 1

    def serials() -> list[str]:
        listed = ctl_env.run("--json", "token", "list", "fay").json()["tokens"]
        return [t["serial"] for t in listed if t["status"] == "active"]

    skipped = ctl_env.run("--json", "user", "import", f, "--on-conflict", "skip")
    assert skipped.code == 0 and skipped.json()["conflicts"]
    assert serials() == ["OLD-1"] and _show(ctl_env, "gus")["status"] == "unregistered"
    replaced = ctl_env.run("user", "import", f, "--on-conflict", "replace")
    assert replaced.code == 0, replaced.err
    assert serials() == ["NEW-1"]
