"""`radius.workers: 2` as operators run it: a real `authd serve` with its worker process,
one gateway (one source port), the real engine and SQLite store.

Checks what the design promises: both processes serve one gateway's requests, a
retransmit gets the byte-identical reply and does not consume a second code, and each
process sits on its own core when `radius.pin_workers` is on and the cores exist, and
one scrape of /metrics shows the sum over both processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from authd.core.model import Token, TokenType, User
from authd.core.otp import hotp
from authd.crypto import Keyring
from authd.radius import codec
from authd.storage.sql import SqlStore
from tests.ports import free_ports

REPO = Path(__file__).resolve().parents[2]
SECRET = b"workers-test-secret-0123456789ab"
USERS = 24
pytestmark = pytest.mark.integration


def _udp_sockets_on(port: int) -> int:
    with open("/proc/net/udp") as f:
        return sum(1 for line in f if line.split()[1].endswith(f":{port:04X}"))


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


class Daemon:
    """`authd serve` with radius.workers: 2 on free ports; seeds of the HOTP users."""

    def __init__(self, tmp: Path, pin: bool) -> None:
        self.radius_port, self.http_port = free_ports(2)
        store = SqlStore.open(
            f"sqlite:///{tmp / 'authd.db'}", Keyring.load_or_create(str(tmp / "keys.json"))
        )
        self.seeds: list[bytes] = []
        for u in range(USERS):
            seed = os.urandom(20)
            store.add_user(User(name=f"u{u:02d}", source="local"))
            store.add_token(
                Token(serial=f"S{u:02d}", type=TokenType.HOTP, seed=seed, user=f"u{u:02d}")
            )
            self.seeds.append(seed)
        store.close()
        cfg = tmp / "authd.yaml"
        cfg.write_text(f"""
store:
  url: "sqlite:///{tmp / "authd.db"}"
keys:
  file: "{tmp / "keys.json"}"
http:
  listen: ["127.0.0.1:{self.http_port}"]
radius:
  listen: ["127.0.0.1:{self.radius_port}"]
  workers: 2
  pin_workers: {"true" if pin else "false"}
  reject_delay: 0s
  clients:
    - name: gateway
      address: 127.0.0.1/32
      secret: "{SECRET.decode()}"
      first_factor: none
""")
        self.log = open(tmp / "authd.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "authd", "serve", "-c", str(cfg)],
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while _udp_sockets_on(self.radius_port) < 2 or len(_children(self.proc.pid)) < 1:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = (tmp / "authd.log").read_text(errors="replace")[-2000:]
                raise AssertionError(f"authd with two workers did not start: {log}")
            time.sleep(0.05)
        self.pids = [self.proc.pid, *_children(self.proc.pid)]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self.log.close()
        return code

    def metric_total(self, line_start: str, want: float) -> float:
        """The sample once /metrics shows `want` or after 10 s: the worker's share
        arrives with its next snapshot, written once a second."""
        deadline = time.monotonic() + 10
        while (value := self.metric(line_start)) != want and time.monotonic() < deadline:
            time.sleep(0.2)  # waiting for the worker's periodic write, not for a clock
        return value

    def worker_snapshot(self, family: str, code: str) -> float:
        """The worker's own count, from the snapshot it hands to the main process."""
        environ = Path(f"/proc/{self.pids[1]}/environ").read_bytes().split(b"\0")
        [directory] = [e.split(b"=", 1)[1].decode() for e in environ
                       if e.startswith(b"AUTHD_METRICS_DIR=")]
        data = json.loads((Path(directory) / "process-1.json").read_text())
        [found] = [f for f in data if f["name"] == family]
        return sum(v for _, labels, v in found["samples"] if labels.get("code") == code)

    def metric(self, line_start: str) -> float:
        """A sample of /metrics, summed over the main process and its worker."""
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback
            for line in resp.read().decode().splitlines():
                if line.startswith(line_start):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture
def daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    d = Daemon(tmp_path, pin=getattr(request, "param", True))
    try:
        yield d
    finally:
        assert d.stop() == 0


def _ask(sock: socket.socket, datagram: bytes, port: int) -> bytes:
    sock.sendto(datagram, ("127.0.0.1", port))
    return sock.recv(4096)


def test_one_gateway_is_served_by_both_workers_and_retransmits_hit_the_cache(
    daemon: Daemon,
) -> None:
    """From one source port, every request is a real accept, the main process answers
    some but not all of them (the worker answers the rest), and a retransmit returns
    the identical reply without being evaluated again (the code is not consumed twice)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(10)
    try:
        sent: list[tuple[bytes, bytes, bytes]] = []
        for u, seed in enumerate(daemon.seeds):
            auth = os.urandom(16)
            attrs = [
                (codec.USER_NAME, f"u{u:02d}".encode()),
                (codec.USER_PASSWORD, codec.encode_password(hotp(seed, 0).encode(), SECRET, auth)),
            ]
            datagram = codec.encode_request(codec.ACCESS_REQUEST, u, auth, SECRET, attrs)
            reply = _ask(sock, datagram, daemon.radius_port)
            assert reply[0] == codec.ACCESS_ACCEPT and codec.verify_reply(reply, auth, SECRET)
            sent.append((datagram, auth, reply))
        for datagram, _, reply in sent[:4]:
            assert _ask(sock, datagram, daemon.radius_port) == reply
        accepts = 'authd_radius_replies_total{code="Access-Accept"}'
        assert daemon.metric_total(accepts, USERS) == USERS, "one scrape shows both"
        served_by_worker = daemon.worker_snapshot("authd_radius_replies", "Access-Accept")
        assert 0 < served_by_worker < USERS, "one process answered the whole gateway"
        # The retransmitted codes stay consumed: a fresh request with the same code fails.
        auth = os.urandom(16)
        attrs = [
            (codec.USER_NAME, b"u00"),
            (
                codec.USER_PASSWORD,
                codec.encode_password(hotp(daemon.seeds[0], 0).encode(), SECRET, auth),
            ),
        ]
        again = codec.encode_request(codec.ACCESS_REQUEST, 200, auth, SECRET, attrs)
        assert _ask(sock, again, daemon.radius_port)[0] == codec.ACCESS_REJECT
    finally:
        sock.close()


def test_each_process_is_pinned_to_its_own_core(daemon: Daemon) -> None:
    """radius.pin_workers: the main process on the first allowed core, the worker on the
    second; with fewer than two cores nobody is pinned."""
    cores = sorted(os.sched_getaffinity(0))
    placed = [os.sched_getaffinity(pid) for pid in daemon.pids]
    if len(cores) >= 2:
        assert placed == [{cores[0]}, {cores[1]}]
    else:
        assert all(p == set(cores) for p in placed)


@pytest.mark.parametrize("daemon", [False], indirect=True)
def test_pin_workers_false_leaves_placement_to_the_scheduler(daemon: Daemon) -> None:
    """radius.pin_workers: false keeps every process on all the cores it was given."""
    cores = os.sched_getaffinity(0)
    assert [os.sched_getaffinity(pid) for pid in daemon.pids] == [cores, cores]
