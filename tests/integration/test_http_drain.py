"""SIGTERM drains HTTP as it drains RADIUS: a real `authd serve` whose `/validate` is
held in a directory bind (this test's own slapd, stopped with SIGSTOP) when SIGTERM
arrives still writes the whole answer for the code it consumed, then exits 0."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import time
from pathlib import Path

import pytest

from authd.core.model import Token, TokenType, User
from authd.core.otp import hotp
from authd.crypto import Keyring
from authd.storage.sql import SqlStore
from tests.fixtures.slapd import PASSWORDS, start_slapd
from tests.integration.test_daemon import Daemon, daemon_factory, write_config
from tests.ports import free_ports

pytestmark = pytest.mark.integration
__all__ = ["daemon_factory"]  # the fixture, used by name

KEY = "drain-test-key-0123456789abcdef"
SEED = bytes(range(20))


def in_flight(port: int, frontends: tuple[str, ...] = ("http",)) -> float:
    """authd_requests_in_flight of `frontends`, summed, as /metrics shows it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    wanted = {f'authd_requests_in_flight{{frontend="{f}"}}' for f in frontends}
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.partition(" ")[0] in wanted
    )


def test_sigterm_during_an_http_request_still_answers_it(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    """The request is in flight (the in-flight gauge says so) while the directory is
    stopped; SIGTERM, then SIGCONT: the client gets `200 accept` in full (the code is
    used, so the answer must reach it) and the daemon exits 0."""
    slapd = start_slapd(tmp_path / "slapd", log_stats=False)
    try:
        state = tmp_path / "state"
        state.mkdir()
        store = SqlStore.open(
            f"sqlite:///{state / 'authd.db'}", Keyring.load_or_create(str(state / "keys.json"))
        )
        store.add_user(User(name="alice", source="dir"))
        store.add_token(Token(serial="H-alice", type=TokenType.HOTP, seed=SEED, user="alice"))
        store.close()
        radius_port, http_port = free_ports(2)
        config = tmp_path / "authd.yaml"
        write_config(config, radius_port, http_port)
        digest = hashlib.sha256(KEY.encode()).hexdigest()
        text = config.read_text().replace(
            "http:\n",
            f"http:\n  api_keys:\n    - name: appliance\n      key_sha256: \"{digest}\"\n"
            "      scopes: [validate]\n",
            1,
        )
        config.write_text(text + f"""\
primary:
  backends:
    - type: ldap
      name: dir
      servers:
        - url: {slapd.url}
      ca_file: {slapd.pki.ca_file}
      bind_dn: "{slapd.service_dn}"
      bind_password: "{slapd.service_password}"
      user_search:
        base: "{slapd.people}"
        filter: "(uid={{user}})"
      connect_timeout: 20s
      operation_timeout: 20s
      request_timeout: 30s
""")
        daemon = Daemon(config, tmp_path / "notify")
        daemon_factory.append(daemon)
        assert daemon.next_state() == "READY=1"

        body = json.dumps(
            {"user": "alice", "password": PASSWORDS["alice"], "otp": hotp(SEED, 0, 6)}
        )
        os.kill(slapd.process.pid, signal.SIGSTOP)
        try:
            client = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
            client.request(
                "POST",
                "/api/v1/validate",
                body,
                {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
            )
            deadline = time.monotonic() + 20
            while in_flight(http_port) < 1:  # waiting for the request to arrive, not a clock
                assert time.monotonic() < deadline, "the request never reached the engine"
                time.sleep(0.05)
            daemon.proc.send_signal(signal.SIGTERM)
            assert daemon.next_state() == "STOPPING=1"
        finally:
            os.kill(slapd.process.pid, signal.SIGCONT)
        try:
            response = client.getresponse()
        except (OSError, http.client.HTTPException) as lost:
            raise AssertionError(f"answer lost; the daemon said:\n{daemon.output()}") from lost
        assert (response.status, json.loads(response.read())) == (200, {"result": "accept"})
        client.close()
        assert daemon.proc.wait(timeout=30) == 0, daemon.output()
    finally:
        slapd.stop()
