"""A runnable authctl setup per test: a config file, its SQLite store and key file in
tmp_path, and `ctl(...)`, which runs `authctl.main` in-process at an injected time."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from twisted.internet.task import Clock

from authd import authctl

CONFIG = """\
# authctl test config: SQLite and key file next to it, cheap argon2 (tests only).
store:
  url: sqlite:///{db}
keys:
  file: keys/keys.json
otp:
  lockout:
    max_attempts: 3
    auto_unlock_after: never
  backup_codes:
    count: 5
local_users:
  password_hash:
    time_cost: 1
    memory_cost_kib: 8192
"""


@dataclass
class Run:
    """One authctl run: exit code and what it printed."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class CtlEnv:
    config: Path
    db: Path
    keys: Path
    clock: Clock
    run: Callable[..., Run]


def seed_from_uri(uri: str) -> bytes:
    """The seed an authenticator app would read from an otpauth:// URI."""
    secret = parse_qs(urlparse(uri).query)["secret"][0]
    return base64.b32decode(secret + "=" * (-len(secret) % 8))


@pytest.fixture
def ctl_env(tmp_path: Path, clock: Clock, capsys: pytest.CaptureFixture[str]) -> CtlEnv:
    """A config in tmp_path and a runner for `authctl -c CONFIG ARGS...` with `stdin` text
    and the test's Clock as the time; output is captured with capsys."""
    db = tmp_path / "db" / "authd.db"
    config = tmp_path / "authd.yaml"
    config.write_text(CONFIG.format(db=db))

    def run(*args: str, stdin: str = "", config_path: Path | None = None) -> Run:
        capsys.readouterr()  # drop anything printed before this run
        code = authctl.main(
            ["-c", str(config_path or config), *args],
            stdin=io.StringIO(stdin),
            clock=clock.seconds,
            prompt=_no_terminal,
        )
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return CtlEnv(config, db, tmp_path / "keys" / "keys.json", clock, run)


def _no_terminal(prompt: str) -> str:
    raise AssertionError("tests feed stdin; no terminal prompt expected")
