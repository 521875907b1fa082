"""`authd serve`'s /metrics reports the real size of each bounded in-memory table
(authd_cache_entries) after RADIUS and HTTP requests."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import time
import urllib.request
from pathlib import Path

from authd.crypto import Keyring
from authd.radius import codec
from authd.storage.sql import SqlStore
from tests.fixtures.radius import PASSWORD, access_request, add_local_user, exchange, totp
from tests.integration.test_daemon import Daemon, daemon_factory, write_config
from tests.ports import free_ports

__all__ = ["daemon_factory"]  # the fixture, used by name

API_KEY = "cache-gauge-test-key-0123456789abcdef"


def cache_entries(http_port: int) -> dict[str, float]:
    """authd_cache_entries by cache, as one scrape shows them."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.findall(r'^authd_cache_entries\{cache="([a-z_]+)"\} (\S+)$', text, re.M)
    return {name: float(value) for name, value in found}


def validate(http_port: int, user: str, password: str) -> str:
    body = json.dumps({"user": user, "password": password}).encode()
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{http_port}/api/v1/validate", body, headers), timeout=5) as response:
        return str(json.load(response)["result"])


def test_cache_gauges_count_what_requests_left_behind(
        tmp_path: Path, daemon_factory: list[Daemon]) -> None:
    """After three RADIUS requests from one source (one accept) and two HTTP rejects for
    two names, the gauges read 3 remembered replies, 1 client lookup, 1 opened seed,
    1 user's habits, 1 source bucket, 2 user buckets and 2 failure delays; the
    directory tables are not exported without a directory."""
    radius_port, http_port = free_ports(2)
    config = tmp_path / "authd.yaml"
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    write_config(config, radius_port, http_port, f"""\
  api_keys:
    - name: gauge-test
      key_sha256: "{digest}"
      scopes: [validate]
""")
    config.write_text(config.read_text().replace(
        "radius:\n", "radius:\n  reject_delay: 0s\n", 1))
    (tmp_path / "state").mkdir()
    keyring = Keyring.load_or_create(str(tmp_path / "state" / "keys.json"))
    store = SqlStore.open(f"sqlite:///{tmp_path / 'state' / 'authd.db'}", keyring)
    try:
        add_local_user(store, "alice", PASSWORD)
    finally:
        store.close()
    daemon = Daemon(config, tmp_path / "notify")
    daemon_factory.append(daemon)
    assert daemon.next_state() == "READY=1"

    secret = "a-long-enough-test-secret"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        source = s.getsockname()
    answers = []
    for user, password in (("alice", PASSWORD + totp(time.time())), ("alice", PASSWORD),
                           ("nobody", PASSWORD)):
        data, _ = access_request(user, password, secret, identifier=len(answers))
        reply = exchange(data, radius_port, timeout=10, source=source)
        assert reply is not None
        answers.append(reply[0])
    assert answers == [codec.ACCESS_ACCEPT, codec.ACCESS_REJECT, codec.ACCESS_REJECT]
    assert validate(http_port, "carol", "wrong") == "reject"
    assert validate(http_port, "dave", "wrong") == "reject"

    entries = cache_entries(http_port)
    assert entries == {
        "radius_duplicates": 3,
        "radius_client_lookups": 1,
        "radius_drop_log": 0,
        "opened_seeds": 1,
        "signin_habits": 1,
        "http_source_buckets": 1,
        "http_user_buckets": 2,
        "http_failure_backoff": 2,
    }
