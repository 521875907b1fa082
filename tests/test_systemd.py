"""sd_notify: datagrams reach a real unix socket; nothing happens without systemd;
watchdog and reload messages; the unit passes systemd-analyze."""

import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool

from authd.config.errors import ConfigErrors, ConfigProblem
from authd.config.model import Config
from authd.service import AuthdService
from authd.systemd import Watchdog, notify, watchdog_interval


def test_notify_without_socket_is_a_no_op() -> None:
    """Outside systemd there is no NOTIFY_SOCKET and notify() reports it sent nothing."""
    assert notify("READY=1", environ={}) is False


def test_notify_sends_state_to_socket(tmp_path: Path) -> None:
    """The state string arrives verbatim as one datagram on $NOTIFY_SOCKET."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(2)
        assert notify("READY=1", environ={"NOTIFY_SOCKET": path}) is True
        assert server.recv(64) == b"READY=1"


def test_notify_abstract_socket() -> None:
    """An '@' address means the Linux abstract namespace (sd_notify(3))."""
    name = f"authd-test-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(2)
        notify("STOPPING=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert server.recv(64) == b"STOPPING=1"


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    """A datagram socket standing in for systemd's, and the environment naming it."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.setblocking(False)
        yield server, {"NOTIFY_SOCKET": path}


def received(server: socket.socket) -> list[str]:
    """Every datagram waiting on `server`, in order."""
    out = []
    while True:
        try:
            out.append(server.recv(4096).decode())
        except BlockingIOError:
            return out


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    """sd_watchdog_enabled(3): ping at half the timeout, only the process systemd names."""
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 42) is None
    assert watchdog_interval({}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}, 42) is None


def test_watchdog_pings_from_the_reactor_until_stopped(
        notify_socket: tuple[socket.socket, dict[str, str]]) -> None:
    """WATCHDOG=1 reaches the socket at start and every half interval, and stops cleanly."""
    server, environ = notify_socket
    clock = Clock()
    dog = Watchdog(clock, watchdog_interval({"WATCHDOG_USEC": "30000000"}, 1),
                   send=lambda state: notify(state, environ))
    dog.startService()
    assert received(server) == ["WATCHDOG=1"]
    clock.advance(14.9)
    assert received(server) == []
    clock.advance(0.1)
    clock.advance(15)
    assert received(server) == ["WATCHDOG=1", "WATCHDOG=1"]
    dog.stopService()
    clock.advance(60)
    assert received(server) == []
    assert clock.getDelayedCalls() == []


def test_no_watchdog_without_watchdog_usec() -> None:
    """Outside a unit with WatchdogSec= nothing is scheduled."""
    clock = Clock()
    sent: list[str] = []
    dog = Watchdog(clock, watchdog_interval({}, 1), send=sent.append)
    dog.startService()
    clock.advance(3600)
    dog.stopService()
    assert sent == [] and clock.getDelayedCalls() == []


def _service(environ: dict[str, str], refuse: bool) -> AuthdService:
    class Part:
        def startService(self) -> None: ...  # noqa: N802
        def stopService(self) -> None: ...  # noqa: N802

        def prepare(self, config: Config) -> Callable[[], None]:
            if refuse:
                raise ConfigErrors([ConfigProblem("/etc/authd/authd.yaml", 3,
                                                  "radius.port", "must be 1-65535")])
            return lambda: None

    pool = ThreadPool(minthreads=0, maxthreads=1, name="test-notify")
    return AuthdService(pool, [Part()], lambda config: (lambda: None), close_store=lambda: None,
                        notify=lambda state: notify(state, environ),
                        monotonic_usec=lambda: 123456789)


def test_reload_is_bracketed_by_reloading_and_ready(
        notify_socket: tuple[socket.socket, dict[str, str]]) -> None:
    """A reload tells systemd RELOADING=1 with MONOTONIC_USEC, then READY=1."""
    server, environ = notify_socket
    assert _service(environ, refuse=False).reload(Config) is True
    assert received(server) == ["RELOADING=1\nMONOTONIC_USEC=123456789",
                                "READY=1\nSTATUS=config reloaded"]


def test_refused_reload_reaches_systemctl_status(
        notify_socket: tuple[socket.socket, dict[str, str]]) -> None:
    """A refused reload still ends in READY=1 (the old config serves) with the reason."""
    server, environ = notify_socket
    assert _service(environ, refuse=True).reload(Config) is False
    reloading, ready = received(server)
    assert reloading.startswith("RELOADING=1\n")
    assert ready == ("READY=1\nSTATUS=reload refused: "
                     "/etc/authd/authd.yaml:3: radius.port: must be 1-65535")


UNIT = Path(__file__).resolve().parents[1] / "systemd" / "authd.service"


def _unit_copy(tmp_path: Path) -> Path:
    """The unit with /opt/authd/venv pointing at this venv, so verify finds ExecStart."""
    copy = tmp_path / "authd.service"
    copy.write_text(UNIT.read_text().replace("/opt/authd/venv", sys.prefix))
    return copy


def _systemd_analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: apt-get install -y systemd")
    return subprocess.run(["systemd-analyze", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)


def test_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit and warns about nothing in it."""
    copy = _unit_copy(tmp_path)
    result = _systemd_analyze("verify", str(copy), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "authd.service" not in result.stderr, result.stderr


def test_unit_security_exposure_at_most_1_5(tmp_path: Path) -> None:
    """The hardening keeps systemd-analyze's exposure score at 1.5 or below."""
    copy = _unit_copy(tmp_path)
    result = _systemd_analyze("security", "--offline=yes", "--no-pager", copy.name,
                              cwd=tmp_path)
    found = re.search(r"Overall exposure level for authd\.service: ([0-9.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 1.5, result.stdout


def test_unit_keeps_watchdog_and_descriptor_limit() -> None:
    """The reactor pings only if the unit asks for it; many connections need descriptors."""
    text = UNIT.read_text()
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    assert re.search(r"^LimitNOFILE=65536$", text, re.M)
    assert re.search(r"^Type=notify$", text, re.M)


def test_daemon_reads_only_its_own_proc_entries() -> None:
    """ProcSubset=pid leaves only /proc/PID (and /proc/self): every /proc path in the
    daemon's code must be under /proc/self, or it silently reads nothing in the unit."""
    package = Path(__file__).resolve().parents[1] / "authd"
    paths = {(source.name, found)
             for source in package.rglob("*.py")
             for found in re.findall(r"[\"'](/proc/[^\"']*)", source.read_text())}
    assert paths, "the daemon reads /proc (kernel drops, worker pinning)"
    assert [p for p in paths if not p[1].startswith("/proc/self/")] == []
