"""The installed `authctl` console script, end to end in real processes, with codes from
`oathtool` (an independent RFC 6238 implementation) instead of authd's own."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ctl.conftest import CONFIG

AUTHCTL = Path(sys.executable).with_name("authctl")
PASSWORD = "Script-Pa55word"
TIMEOUT = 60


def oathtool() -> str:
    path = shutil.which("oathtool")
    if path is None:
        pytest.fail("oathtool not found: install the Debian package `oathtool`")
    return path


def authctl(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    if not AUTHCTL.exists():
        pytest.fail(f"{AUTHCTL} missing: run `pip install -e .[test]` in the venv")
    return subprocess.run(
        [str(AUTHCTL), *args], input=stdin, capture_output=True, text=True,
        timeout=TIMEOUT, env=env, check=False,
    )  # fmt: skip


def totp_now(secret_b32: str) -> str:
    result = subprocess.run(
        [oathtool(), "--totp", "-b", secret_b32], capture_output=True, text=True,
        timeout=TIMEOUT, check=True,
    )  # fmt: skip
    return result.stdout.strip()


def test_authctl_script_end_to_end(tmp_path: Path) -> None:
    """user add -> token add -> oathtool code accepted by `authctl test`, replay rejected,
    trivial PIN refused, list --json, usage and config errors exit 2. The config is
    found through $AUTHD_CONFIG as the contract says."""
    config = tmp_path / "authd.yaml"
    config.write_text(CONFIG.format(db=tmp_path / "db" / "authd.db"))
    env = {**os.environ, "AUTHD_CONFIG": str(config)}

    added = authctl("user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n", env=env)
    assert added.returncode == 0, added.stderr
    token = authctl("token", "add", "alice", env=env)
    assert token.returncode == 0, token.stderr
    (uri,) = re.findall(r"otpauth://\S+", token.stdout)
    secret = re.search(r"[?&]secret=([A-Z2-7]+)", uri)
    assert secret is not None

    code = totp_now(secret.group(1))
    accepted = authctl("test", "alice", stdin=f"{PASSWORD}\n{code}\n", env=env)
    assert accepted.returncode == 0 and accepted.stdout.startswith("accept"), accepted.stdout
    replay = authctl("test", "alice", stdin=f"{PASSWORD}\n{code}\n", env=env)
    assert replay.returncode == 1 and "replay" in replay.stdout

    pin = authctl("pin", "set", "alice", stdin="1234\n", env=env)
    assert pin.returncode == 1 and "PIN" in pin.stderr and "1234" not in pin.stderr

    listed = authctl("-c", str(config), "--json", "user", "list", "a*")
    assert listed.returncode == 0
    (row,) = json.loads(listed.stdout)["users"]
    assert (row["user"], row["status"], row["tokens"]) == ("alice", "active", 1)
    assert row["last_success"]["client"]

    assert authctl("user", "frobnicate", env=env).returncode == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("store:\n  pool_size: -3\n")
    broken = authctl("-c", str(bad), "user", "list")
    assert broken.returncode == 2
    assert re.match(rf"{re.escape(str(bad))}:2: store.pool_size: ", broken.stderr)


def totp_at(secret_b32: str, at: int, window: int = 0) -> list[str]:
    """oathtool's codes for the step of unix time `at` and the `window` steps after it."""
    result = subprocess.run(
        [oathtool(), "--totp", "-b", secret_b32, "-N", f"@{at}", "-w", str(window)],
        capture_output=True, text=True, timeout=TIMEOUT, check=True,
    )  # fmt: skip
    return result.stdout.split()


def test_authctl_resync_of_a_drifted_token(tmp_path: Path) -> None:
    """`token resync` with oathtool codes of a clock 20 minutes fast re-aligns the token
    (its next code is accepted); the same codes, or a pair starting with a used code,
    are refused with exit 1 and nothing echoed."""
    config = tmp_path / "authd.yaml"
    config.write_text(CONFIG.format(db=tmp_path / "db" / "authd.db"))
    env = {**os.environ, "AUTHD_CONFIG": str(config)}
    assert authctl("user", "add", "bob", "--password-stdin", stdin=PASSWORD + "\n", env=env)
    token = authctl("--json", "token", "add", "bob", env=env)
    assert token.returncode == 0, token.stderr
    secret = re.search(r"[?&]secret=([A-Z2-7]+)", token.stdout)
    serial = json.loads(token.stdout)["token"]["serial"]
    assert secret is not None

    fast = totp_at(secret.group(1), int(time.time()) + 1200, window=3)
    resynced = authctl("--json", "token", "resync", serial, fast[0], fast[1], env=env)
    assert resynced.returncode == 0, resynced.stderr
    assert 39 <= json.loads(resynced.stdout)["drift"] <= 41
    for pair in ((fast[0], fast[1]), (fast[1], fast[2])):
        again = authctl("token", "resync", serial, *pair, env=env)
        assert again.returncode == 1 and "consecutive" in again.stderr
        assert not any(code in again.stderr for code in fast)
    accepted = authctl("test", "bob", stdin=f"{PASSWORD}\n{fast[2]}\n", env=env)
    assert accepted.returncode == 0 and accepted.stdout.startswith("accept"), accepted.stdout
