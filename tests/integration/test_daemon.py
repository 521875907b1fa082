"""`authd serve` as operators run it: a real process, READY=1 over $NOTIFY_SOCKET after
the listeners bind, SIGHUP reload (a bad file keeps the old config), SIGTERM exits 0,
and the example config starts as-is."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import free_port, free_ports

REPO = Path(__file__).resolve().parents[2]
AUTHD = [sys.executable, "-m", "authd"]


def write_config(path: Path, radius_port: int, http_port: int, extra: str = "") -> None:
    path.write_text(f"""\
store:
  url: sqlite:///state/authd.db
keys:
  file: state/keys.json
radius:
  listen: ["127.0.0.1:{radius_port}"]
  clients:
    - name: loopback
      address: 127.0.0.1/32
      secret: "a-long-enough-test-secret"
http:
  listen: ["127.0.0.1:{http_port}"]
{extra}""")


class Daemon:
    """A running `authd serve` with a notify socket to read its state messages."""

    def __init__(self, config: Path, notify_path: Path) -> None:
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(notify_path))
        self.notify.settimeout(20)
        env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
        self.proc = subprocess.Popen(
            [*AUTHD, "serve", "-c", str(config)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def next_state(self) -> str:
        return self.notify.recv(256).decode()

    def output(self) -> str:
        self.proc.wait(timeout=20)
        assert self.proc.stdout is not None
        return self.proc.stdout.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.notify.close()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.close()


def wait_for_workers(daemon: Daemon, count: int, timeout: float = 20) -> list[int]:
    """The daemon's worker processes (its children), once `count` of them exist."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(daemon.proc.pid)],
                             capture_output=True, text=True).stdout
        pids = [int(pid) for pid in out.split()]
        if len(pids) >= count or time.monotonic() > deadline:
            assert len(pids) == count, pids
            return pids
        time.sleep(0.1)  # waiting for a process to appear, not for a clock


def start_with_two_workers(
        section: str, tmp_path: Path, daemon_factory: list[Daemon]) -> tuple[Daemon, int]:
    """The daemon with `<section>.workers: 2`, once READY=1; returns it and its HTTP port."""
    radius_port, http_port = free_ports(2)
    config = tmp_path / "authd.yaml"
    write_config(config, radius_port, http_port)
    head = f"{section}:\n"
    config.write_text(config.read_text().replace(head, f"{head}  workers: 2\n", 1))
    daemon = Daemon(config, tmp_path / "notify")
    daemon_factory.append(daemon)
    assert daemon.next_state() == "READY=1"
    return daemon, http_port


def http_get(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return int(response.status)


def test_serve_ready_reload_and_terminate(tmp_path: Path, daemon_factory: list[Daemon]) -> None:
    """READY=1 comes once both listeners answer (and /metrics shows the SQLite WAL); a
    bad SIGHUP config is refused and the daemon keeps serving; a good one is taken;
    SIGTERM sends STOPPING=1 and exits 0."""
    radius_port, http_port = free_ports(2)
    config = tmp_path / "authd.yaml"
    write_config(config, radius_port, http_port)
    daemon = Daemon(config, tmp_path / "notify")
    daemon_factory.append(daemon)

    assert daemon.next_state() == "READY=1"
    assert http_get(http_port, "/healthz") == 200
    assert oct((tmp_path / "state" / "keys.json").stat().st_mode & 0o777) == "0o600"
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    for name in ("wal_bytes", "wal_pending_frames", "checkpoint_lag_seconds"):
        assert f"\nauthd_store_{name} " in metrics, name

    config.write_text(config.read_text() + "radius:\n  nonsense: 1\n")
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.next_state().startswith("RELOADING=1\nMONOTONIC_USEC=")
    refused = daemon.next_state()
    assert refused.startswith("READY=1\nSTATUS=reload refused: "), refused
    assert "authd.yaml:13: radius: duplicate key" in refused
    assert daemon.proc.poll() is None, "a bad reload must not stop the daemon"
    assert http_get(http_port, "/healthz") == 200

    write_config(config, radius_port, http_port, "otp:\n  lockout:\n    max_attempts: 3\n")
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.next_state().startswith("RELOADING=1\n")
    assert daemon.next_state() == "READY=1\nSTATUS=config reloaded"
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.next_state() == "STOPPING=1"
    out = daemon.output()
    assert daemon.proc.returncode == 0, out
    assert "reload refused" in out
    assert "config reloaded" in out
    assert "a-long-enough-test-secret" not in out


def test_bind_failure_exits_non_zero_without_ready(tmp_path: Path,
                                                   daemon_factory: list[Daemon]) -> None:
    """A port already taken makes start-up fail: exit 1, never READY=1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        config = tmp_path / "authd.yaml"
        write_config(config, free_port(), taken.getsockname()[1])
        daemon = Daemon(config, tmp_path / "notify")
        daemon_factory.append(daemon)
        daemon.notify.settimeout(0.2)
        out = daemon.output()
        assert daemon.proc.returncode == 1, out
        assert "could not start" in out
        with pytest.raises(socket.timeout):
            daemon.next_state()


def test_check_config_reports_problems_and_exit_codes(tmp_path: Path) -> None:
    """check-config exits 0 on a good file and 2 with FILE:LINE lines on a bad one."""
    good = tmp_path / "good.yaml"
    write_config(good, 11812, 18080)
    ok = subprocess.run([*AUTHD, "check-config", "-c", str(good)], capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("otp:\n  lockout:\n    max_attempts: many\nradius:\n  listen: 5\n"
                   "nonsense: true\n")
    res = subprocess.run([*AUTHD, "check-config", "-c", str(bad)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.startswith(str(bad))]
    assert len(lines) == 3, res.stderr
    assert lines[0].startswith(f"{bad}:3: otp.lockout.max_attempts:")


def test_check_config_fails_when_a_daemon_dependency_is_missing(tmp_path: Path) -> None:
    """check-config (the unit's ExecStartPre) imports what serve imports: an install
    without pyOpenSSL exits 1 naming it, instead of passing and letting serve crash."""
    good = tmp_path / "good.yaml"
    write_config(good, 11812, 18080)
    blocked = ("import sys; sys.modules['OpenSSL'] = None; from authd.cli import main; "
               f"sys.exit(main(['check-config', '-c', {str(good)!r}]))")
    res = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "needs OpenSSL, which is not installed" in res.stderr
    assert "OK" not in res.stdout


def test_example_config_starts_as_is(tmp_path: Path, daemon_factory: list[Daemon]) -> None:
    """conf/authd.yaml, copied with its relative paths, starts on a fresh machine."""
    conf = tmp_path / "conf"
    conf.mkdir()
    shutil.copy(REPO / "conf" / "authd.yaml", conf / "authd.yaml")
    for name in os.listdir(REPO / "conf"):
        if name != "authd.yaml" and (REPO / "conf" / name).is_file():
            shutil.copy(REPO / "conf" / name, conf / name)
    check = subprocess.run([*AUTHD, "check-config", "-c", str(conf / "authd.yaml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr


def test_radius_workers_share_the_port_and_stop_with_the_main_process(
        tmp_path: Path, daemon_factory: list[Daemon]) -> None:
    """`radius.workers: 2` starts one worker process next to the main one; both bind the
    RADIUS port (SO_REUSEPORT), READY=1 comes once, SIGTERM ends them all with exit 0."""
    daemon, _ = start_with_two_workers("radius", tmp_path, daemon_factory)
    workers = wait_for_workers(daemon, 1)
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.next_state() == "STOPPING=1"
    out = daemon.output()
    assert daemon.proc.returncode == 0, out
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or \
            "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_http_workers_serve_the_same_port(tmp_path: Path,
                                          daemon_factory: list[Daemon]) -> None:
    """`http.workers: 2` (RADIUS left at one process) starts one worker that answers HTTP
    on the shared port: fresh connections reach both processes' pids."""
    daemon, http_port = start_with_two_workers("http", tmp_path, daemon_factory)
    (worker,) = wait_for_workers(daemon, 1)
    deadline = time.monotonic() + 20

    def listening_pids() -> set[int]:
        out = subprocess.run(["ss", "-Htlnp", f"sport = :{http_port}"],
                             capture_output=True, text=True).stdout
        return {int(p) for p in re.findall(r"pid=(\d+)", out)}

    while listening_pids() != {daemon.proc.pid, worker} and time.monotonic() < deadline:
        time.sleep(0.1)  # the worker binds after it has started
    assert listening_pids() == {daemon.proc.pid, worker}
    assert all(http_get(http_port, "/healthz") == 200 for _ in range(20))
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.next_state() == "STOPPING=1"
    out = daemon.output()
    assert daemon.proc.returncode == 0, out


def test_json_logs_one_object_per_line_without_twisted_chatter(
        tmp_path: Path, daemon_factory: list[Daemon]) -> None:
    """`logging.format: json` from start to stop: every line parses as JSON, Twisted's
    "starting on"/"Starting factory"/"Port Closed" lines are gone, and a packet dropped
    for lack of Message-Authenticator is told with its source and reason."""
    radius_port, http_port = free_ports(2)
    config = tmp_path / "authd.yaml"
    write_config(config, radius_port, http_port, "logging:\n  format: json\n")
    daemon = Daemon(config, tmp_path / "notify")
    daemon_factory.append(daemon)
    assert daemon.next_state() == "READY=1"
    assert http_get(http_port, "/healthz") == 200
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nas:
        # An Access-Request with no attributes at all: no Message-Authenticator.
        nas.sendto(b"\x01\x07\x00\x14" + os.urandom(16), ("127.0.0.1", radius_port))
    assert http_get(http_port, "/healthz") == 200  # the datagram was read by now
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.next_state() == "STOPPING=1"
    out = daemon.output()
    assert daemon.proc.returncode == 0, out
    lines = [json.loads(line) for line in out.splitlines()]
    messages = [line["message"] for line in lines]
    assert not [m for m in messages if re.search(r"starting on|Starting|Stopping|Closed\)", m)]
    assert "authd stopped" in messages
    [drop] = [line for line in lines if line.get("reason") == "missing_message_authenticator"]
    assert drop["source"] == "127.0.0.1" and drop["level"] == "warn"
