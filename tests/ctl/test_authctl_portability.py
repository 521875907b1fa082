"""`authctl export`, `import` and `token import` in-process on SQLite stores: secrets
from stdin or files only, bundle file 0600, exit codes, JSON shapes."""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path

from tests.ctl.conftest import CONFIG, CtlEnv
from tests.token_import.pskc_samples import FIGURE6, FIGURE6_KEY, FIGURE7, FIGURE7_PASSWORD

PASSPHRASE = "move-me-to-site-b please"
SEED = secrets.token_bytes(20)


def second_site(env: CtlEnv, tmp_path: Path) -> Path:
    """Another config (own database and key file) beside the first."""
    site = tmp_path / "b"
    site.mkdir()
    config = site / "authd.yaml"
    config.write_text(CONFIG.format(db=site / "authd.db"))
    return config


def test_token_import_csv_then_assign(ctl_env: CtlEnv, tmp_path: Path) -> None:
    """CSV tokens land unassigned, `token assign` gives one to a user, and its code
    from oathtool's algorithm works there."""
    f = tmp_path / "box.csv"
    f.write_text(f"serial,secret,type,digits,period/counter\nBOX1,{SEED.hex()},totp,6,30\n")
    run = ctl_env.run("--json", "token", "import", str(f), "--format", "csv")
    assert run.code == 0, run.err
    assert run.json() == {"action": "token.import", "imported": 1, "format": "csv"}
    assert ctl_env.run("--json", "token", "show", "BOX1").json()["user"] is None
    assert ctl_env.run("user", "add", "dora").code == 0
    assert ctl_env.run("token", "assign", "BOX1", "dora").code == 0
    assert ctl_env.run("--json", "token", "show", "BOX1").json()["user"] == "dora"


def test_token_import_bad_rows_exit_1_and_nothing_imported(ctl_env: CtlEnv, tmp_path: Path) -> None:
    """A file with a bad row is refused whole, naming the line; exit 1."""
    f = tmp_path / "box.csv"
    f.write_text(f"A,{SEED.hex()},totp\nB,abc,totp\n")
    run = ctl_env.run("token", "import", str(f), "--format", "csv")
    assert run.code == 1 and "line 2:" in run.err
    assert ctl_env.run("--json", "token", "list").json() == {"tokens": []}


def test_token_import_pskc_key_file_and_password(ctl_env: CtlEnv, tmp_path: Path) -> None:
    """RFC 6030 figure 6 with --key-file (hex), figure 7 with --password-stdin; the
    second import of the same serial is refused as a duplicate."""
    fig6, fig7, key = tmp_path / "f6.xml", tmp_path / "f7.xml", tmp_path / "psk.hex"
    fig6.write_bytes(FIGURE6)
    fig7.write_bytes(FIGURE7)
    key.write_text(FIGURE6_KEY.hex() + "\n")
    assert (
        ctl_env.run("token", "import", str(fig6), "--format", "pskc", "--key-file", str(key)).code
        == 0
    )
    again = ctl_env.run(
        "token", "import", str(fig7), "--format", "pskc", "--password-stdin",
        stdin=FIGURE7_PASSWORD + "\n",
    )  # fmt: skip
    assert again.code == 1 and "987654321" in again.err and "already" in again.err
    doc = ctl_env.run("--json", "token", "show", "987654321").json()
    assert (doc["type"], doc["digits"], doc["user"]) == ("hotp", 8, None)


def test_export_import_between_two_sites(ctl_env: CtlEnv, tmp_path: Path) -> None:
    """Export (passphrase on stdin) writes a 0600 bundle; the other site imports it
    with --adopt-hash-key (PIN under site A's pepper); a second import writes
    nothing; a wrong passphrase exits 1."""
    assert ctl_env.run("user", "add", "erin").code == 0
    secret = base64.b32encode(SEED).decode()
    assert ctl_env.run("token", "add", "erin", "--secret", secret).code == 0
    assert ctl_env.run("pin", "set", "erin", stdin="73925186\n").code == 0
    out = tmp_path / "site.bundle"
    run = ctl_env.run("--json", "export", "--out", str(out), stdin=PASSPHRASE + "\n")
    assert run.code == 0, run.err
    assert run.json()["users"] == 1 and stat.S_IMODE(os.stat(out).st_mode) == 0o600
    site_b = second_site(ctl_env, tmp_path)
    wrong = ctl_env.run("import", str(out), stdin="not the passphrase!\n", config_path=site_b)
    assert wrong.code == 1 and "wrong passphrase" in wrong.err
    first = ctl_env.run("--json", "import", str(out), "--adopt-hash-key",
                        stdin=PASSPHRASE + "\n", config_path=site_b)  # fmt: skip
    assert first.code == 0, first.err
    assert first.json()["adopted_hash_key"] is True
    second = ctl_env.run("--json", "import", str(out), stdin=PASSPHRASE + "\n", config_path=site_b)
    assert second.json()["written"] == 0
    shown = ctl_env.run("--json", "user", "show", "erin", config_path=site_b).json()
    assert shown["has_pin"] is True and shown["tokens"][0]["user"] == "erin"


def test_import_conflict_lists_and_exit_1(ctl_env: CtlEnv, tmp_path: Path) -> None:
    """Same user with another token at the target: refused with the list (exit 1);
    --on-conflict replace resolves it."""
    assert ctl_env.run("user", "add", "finn").code == 0
    assert ctl_env.run("token", "add", "finn", "--serial", "A-1").code == 0
    out = tmp_path / "a.bundle"
    key = tmp_path / "bundle.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    assert ctl_env.run("export", "--out", str(out), "--key-file", str(key)).code == 0
    site_b = second_site(ctl_env, tmp_path)
    assert ctl_env.run("user", "add", "finn", config_path=site_b).code == 0
    assert ctl_env.run("token", "add", "finn", "--serial", "B-1", config_path=site_b).code == 0
    refused = ctl_env.run("import", str(out), "--key-file", str(key), config_path=site_b)
    assert refused.code == 1 and "user finn: tokens here (B-1) differ" in refused.err
    ok = ctl_env.run("import", str(out), "--key-file", str(key), "--on-conflict", "replace",
                     config_path=site_b)  # fmt: skip
    assert ok.code == 0 and "conflicts (replace)" in ok.out
    tokens = ctl_env.run("--json", "token", "list", "finn", config_path=site_b).json()["tokens"]
    assert [t["serial"] for t in tokens] == ["A-1"]
