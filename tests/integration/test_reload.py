"""A refused SIGHUP reload changes nothing, checked by the next decisions of a real
`authd serve` process: the old RADIUS secret, the old lockout threshold and the old API
key stay in force, one log line says why, and `check-config` refuses the same file."""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.radius import SEED, access_request, exchange, totp
from tests.integration.test_daemon import AUTHD, Daemon, daemon_factory  # noqa: F401
from tests.ports import free_ports

OLD_SECRET = "old-radius-secret-0123456789abcdef"
NEW_SECRET = "new-radius-secret-fedcba9876543210"
OLD_KEY = "old-api-key-0123456789abcdefghijkl"
PASSWORD = "correct horse battery"


def config_text(radius_port: int, http_port: int, secret: str, max_attempts: int,
                key_file: str, reply_attribute: str = "Class") -> str:
    return f"""\
store:
  url: sqlite:///state/authd.db
keys:
  file: state/keys.json
local_users:
  password_hash: {{time_cost: 1, memory_cost_kib: 8192, parallelism: 1}}
otp:
  lockout:
    max_attempts: {max_attempts}
radius:
  listen: ["127.0.0.1:{radius_port}"]
  reject_delay: 0s
  clients:
    - name: loopback
      address: 127.0.0.1/32
      secret: "{secret}"
      reply_attributes:
        - {{group: "*", attribute: {reply_attribute}, value: staff}}
http:
  listen: ["127.0.0.1:{http_port}"]
  rate_limits: {{failure_delay: 0s}}
  api_keys:
    - name: appliance
      key_file: {key_file}
      scopes: [validate]
"""


def private_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def wait_for_line(daemon: Daemon, needle: str, timeout: float = 20.0) -> str:
    """Everything the daemon printed up to and including the first line holding
    `needle`, read from the pipe's descriptor (a buffered readline could hold the
    line back where select no longer sees it)."""
    assert daemon.proc.stdout is not None
    fd = daemon.proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
            text = seen.decode(errors="replace")
            at = text.find(needle)
            if at >= 0 and "\n" in text[at:]:
                return text
    pytest.fail(f"no line with {needle!r} within {timeout}s")


def validate(port: int, key: str, body: dict[str, str]) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/validate", data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http://127.0.0.1)
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}


def add_user(config: Path) -> None:
    def authctl(*args: str, stdin: str = "") -> None:
        done = subprocess.run([sys.executable, "-m", "authd.authctl", "-c", str(config), *args],
                              input=stdin, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

    authctl("user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    authctl("token", "add", "alice", "--type", "totp",
            "--secret", base64.b32encode(SEED).decode())


@pytest.mark.parametrize("broken", ["8-byte API key file", "unknown reply attribute"])
def test_refused_reload_keeps_every_setting(
        broken: str, tmp_path: Path, daemon_factory: list[Daemon]) -> None:  # noqa: F811
    """A new file with one unusable part (a too-short API key file, or a reply attribute
    missing from the dictionary) is refused as a whole: check-config says so, and after
    SIGHUP the old secret, old max_attempts and old key decide, with one log line."""
    radius_port, http_port = free_ports(2)
    config = tmp_path / "authd.yaml"
    old_key = private_file(tmp_path / "old.key", OLD_KEY)
    config.write_text(config_text(radius_port, http_port, OLD_SECRET, 3, str(old_key)))
    daemon = Daemon(config, tmp_path / "notify")
    daemon_factory.append(daemon)
    assert daemon.next_state() == "READY=1"
    add_user(config)

    new_key = private_file(tmp_path / "new.key", "short-ke" if broken.startswith("8") else
                           "new-api-key-0123456789abcdefghijkl")
    config.write_text(config_text(
        radius_port, http_port, NEW_SECRET, 2, str(new_key),
        "No-Such-Attribute" if broken.startswith("unknown") else "Class"))
    check = subprocess.run([*AUTHD, "check-config", "-c", str(config)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 2, check.stdout
    assert "http.api_keys[0]" in check.stderr or "radius.clients[0]" in check.stderr
    daemon.proc.send_signal(signal.SIGHUP)
    refused = wait_for_line(daemon, "reload refused")

    # RADIUS: the old secret is answered, the new one is dropped (bad Message-Authenticator).
    assert exchange(access_request("nobody", "x", OLD_SECRET)[0], radius_port) is not None
    assert exchange(access_request("nobody", "x", NEW_SECRET)[0], radius_port, 0.5) is None
    # HTTP: the old key still works; with the old max_attempts (3) two wrong codes do
    # not lock alice, so the right one is accepted.
    now = time.time()
    valid = {totp(now + d) for d in (-30, 0, 30)}
    wrong = next(c for c in ("000000", "111111", "222222") if c not in valid)
    for _ in range(2):
        status, doc = validate(http_port, OLD_KEY, {"user": "alice", "password": PASSWORD,
                                                    "otp": wrong})
        assert (status, doc.get("result")) == (200, "reject")
    status, doc = validate(http_port, OLD_KEY, {"user": "alice", "password": PASSWORD,
                                                "otp": totp(time.time())})
    assert (status, doc.get("result")) == (200, "accept")

    daemon.proc.send_signal(signal.SIGTERM)
    out = refused + daemon.output()
    assert out.count("reload refused") == 1, out
    assert "Traceback" not in out
    for secret in (OLD_SECRET, NEW_SECRET, OLD_KEY, "short-ke"):
        assert secret not in out


def test_start_and_reloads_are_in_the_audit_trail(
    tmp_path: Path, daemon_factory: list[Daemon]  # noqa: F811
) -> None:
    """`authd serve` records config.load; a SIGHUP that changes the RADIUS secret and
    max_attempts records config.reload with those key paths; a refused one is an error
    row. `authctl audit --export --action ...` shows them; no secret in the trail."""
    radius_port, http_port = free_ports(2)
    config = tmp_path / "authd.yaml"
    key = str(private_file(tmp_path / "old.key", OLD_KEY))
    config.write_text(config_text(radius_port, http_port, OLD_SECRET, 3, key))
    daemon = Daemon(config, tmp_path / "notify")
    daemon_factory.append(daemon)
    assert daemon.next_state() == "READY=1"

    def export(action: str, rows_wanted: int) -> list[dict[str, str]]:
        """The rows of `action`, once there are `rows_wanted` (the daemon writes them on
        its audit thread, a moment after the signal): polls another process, bounded."""
        deadline = time.monotonic() + 20
        while True:
            done = subprocess.run(
                [sys.executable, "-m", "authd.authctl", "-c", str(config), "audit", "--export",
                 "--action", action], capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            rows = [json.loads(line) for line in done.stdout.splitlines()]
            if len(rows) >= rows_wanted:
                return rows
            assert time.monotonic() < deadline, f"{action}: {rows}"
            time.sleep(0.2)

    (load,) = export("config.load", 1)
    config.write_text(config_text(radius_port, http_port, NEW_SECRET, 2, key))
    daemon.proc.send_signal(signal.SIGHUP)
    export("config.reload", 1)
    config.write_text(config_text(radius_port, http_port, NEW_SECRET, 2, key, "No-Such-Attr"))
    daemon.proc.send_signal(signal.SIGHUP)
    ok, refused = export("config.reload", 2)

    assert load["result"] == "ok" and load["detail"].startswith("sha256=")
    changed = ok["detail"].split("changed=")[1].split(",")
    assert changed == ["otp.lockout.max_attempts", "radius.clients[0].secret"]
    assert (refused["result"], refused["reason"]) == ("error", "refused")
    text = json.dumps([load, ok, refused])
    assert OLD_SECRET not in text and NEW_SECRET not in text
