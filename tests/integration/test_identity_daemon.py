"""User-name variants end to end: `authd serve` with slapd as the first factor,
radclient as the NAS and HTTP clients on /api/v1/validate and /api/v1/otp/check.
carol is `optional` (she has a token), dave `required` (vpn group); every spelling a
gateway may send is that user or no one, and the store and audit hold only their
entries' names."""

from __future__ import annotations

import hashlib
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authd.core.model import Token, TokenType
from authd.core.otp import hotp
from authd.crypto import Keyring
from authd.storage.sql import SqlStore
from tests.fixtures.slapd import PASSWORDS, Slapd
from tests.integration.test_ldap_radius import SECRET, Daemon, radclient
from tests.ports import free_ports

pytestmark = pytest.mark.integration

SEEDS = {"carol": b"carol-seed-0123456789", "dave": b"dave-seed-01234567890"}
API_KEY = secrets.token_urlsafe(32)


def config_text(slapd: Slapd, radius_port: int, http_port: int) -> str:
    key_sha256 = hashlib.sha256(API_KEY.encode()).hexdigest()
    return f"""\
store:
  url: sqlite:///state/authd.db
keys:
  file: keys.json
policy:
  enforcement: optional
  groups:
    - group: vpn
      enforcement: required
primary:
  backends:
    - type: ldap
      name: corp-ldap
      servers:
        - url: {slapd.url}
      bind_dn: "{slapd.service_dn}"
      bind_password_file: ldap-bind.secret
      user_search:
        base: "{slapd.people}"
        filter: "(uid={{user}})"
        name_attribute: uid
      groups:
        mode: memberof
        nested: true
radius:
  listen: ["127.0.0.1:{radius_port}"]
  reject_delay: 0s
  clients:
    - name: nas
      address: 127.0.0.1/32
      secret: "{SECRET}"
      realms: [CORP, example.org]
http:
  listen: ["127.0.0.1:{http_port}"]
  realms: [CORP, example.org]
  api_keys:
    - name: appliance
      key_sha256: "{key_sha256}"
      scopes: [validate]
  rate_limits:
    per_user: {{rate: 100, burst: 100}}
    failure_delay: 0s
"""


@dataclass
class Node:
    daemon: Daemon
    radius_port: int
    http_port: int
    folder: Path
    keyring: Keyring
    counters: dict[str, int]

    def code(self, user: str) -> str:
        """The user's next HOTP code (each used once)."""
        counter = self.counters[user]
        self.counters[user] += 1
        return hotp(SEEDS[user], counter, 6)

    def radius(self, user: str, password: str) -> str:
        out = radclient(self.radius_port, user, password, self.folder)
        for answer in ("Access-Accept", "Access-Reject", "Access-Challenge"):
            if f"Received {answer}" in out:
                return answer
        raise AssertionError(f"no answer from authd: {out}")

    def http(self, path: str, body: dict[str, str]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
                return dict(json.load(response))
        except urllib.error.HTTPError as e:
            raise AssertionError(f"HTTP {e.code}: {e.read()!r}") from None

    def store_view(self) -> tuple[list[str], set[str]]:
        """(user names in the store, user names in the audit), read while authd runs;
        rows about no user (the daemon's config.load) are left out."""
        sql = SqlStore.open(f"sqlite:///{self.folder / 'state' / 'authd.db'}", self.keyring)
        try:
            names = sorted(o.user.name for o in sql.list_users())
            return names, {e.user for e in sql.query_audit(limit=10_000) if e.user}
        finally:
            sql.close()


@pytest.fixture(scope="module")
def node(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One authd with carol and dave enrolled (HOTP tokens in the SQLite store)."""
    folder = tmp_path_factory.mktemp("identity")
    (folder / "state").mkdir()
    secret_file = folder / "ldap-bind.secret"
    secret_file.write_text(slapd.service_password + "\n")
    secret_file.chmod(0o600)
    keyring = Keyring.load_or_create(str(folder / "keys.json"))
    sql = SqlStore.open(f"sqlite:///{folder / 'state' / 'authd.db'}", keyring)
    for user, seed in SEEDS.items():
        sql.ensure_user(user, "corp-ldap", 0.0)
        sql.add_token(Token(serial=f"ID-{user}", type=TokenType.HOTP, seed=seed, user=user))
    sql.close()
    radius_port, http_port = free_ports(2)
    config = folder / "authd.yaml"
    config.write_text(config_text(slapd, radius_port, http_port))
    daemon = Daemon(config)
    daemon.wait_ready()
    try:
        yield Node(daemon, radius_port, http_port, folder, keyring, {u: 0 for u in SEEDS})
    finally:
        daemon.stop()


SPELLINGS = ["{u}", "{U}", "{C}", " {u}", "{u} ", "CORP\\{u}", "corp\\{U}", "{u}@example.org"]


def spellings(user: str) -> list[str]:
    return [s.format(u=user, U=user.upper(), C=user.capitalize()) for s in SPELLINGS]


def test_radius_optional_never_skips_the_token_of_a_variant(node: Node) -> None:
    """carol (optional, has a token): her password alone is refused under every
    spelling; password + code is accepted under every spelling, each code once."""
    for typed in spellings("carol"):
        assert node.radius(typed, PASSWORDS["carol"]) == "Access-Reject", typed
        code = node.code("carol")
        assert node.radius(typed, PASSWORDS["carol"] + code) == "Access-Accept", typed
        assert node.radius("carol", PASSWORDS["carol"] + code) == "Access-Reject", typed


def test_radius_required_accepts_a_variant_with_password_and_code(node: Node) -> None:
    """dave (required): password + code under every spelling is accepted as dave, never
    refused as a user without a token; a foreign realm is no one."""
    for typed in spellings("dave"):
        assert node.radius(typed, PASSWORDS["dave"] + node.code("dave")) == "Access-Accept", typed
    for typed in ("OTHER\\dave", "dave@evil.example"):
        assert node.radius(typed, PASSWORDS["dave"] + node.code("dave")) == "Access-Reject"


def test_http_variants_are_the_user(node: Node) -> None:
    """HTTP: carol's password alone under a variant is a challenge (her code is due), not
    an accept; password + otp and otp/check accept every spelling as that user; a
    foreign realm is rejected."""
    for typed in spellings("carol"):
        alone = node.http("/api/v1/validate", {"user": typed, "password": PASSWORDS["carol"]})
        assert alone["result"] == "challenge", typed
        both = {"user": typed, "password": PASSWORDS["carol"], "otp": node.code("carol")}
        assert node.http("/api/v1/validate", both)["result"] == "accept", typed
        wrong = {"user": typed, "otp": "000000"}
        assert node.http("/api/v1/otp/check", wrong)["result"] == "reject", typed
    for typed in spellings("dave"):
        only = {"user": typed, "otp": node.code("dave")}
        assert node.http("/api/v1/otp/check", only)["result"] == "accept", typed
    foreign = {"user": "carol@evil.example", "password": PASSWORDS["carol"]}
    assert node.http("/api/v1/validate", foreign)["result"] == "reject"


def test_no_stray_users_and_the_audit_names_the_entries(node: Node) -> None:
    """After every spelling above (run first in this module): the store holds carol and
    dave only, and audit rows name them (or, for a foreign realm, the name as sent)."""
    node.radius("CAROL", PASSWORDS["carol"] + node.code("carol"))
    names, audited = node.store_view()
    assert names == ["carol", "dave"]
    assert audited - {"carol", "dave"} <= {"OTHER\\dave", "dave@evil.example", "carol@evil.example"}
    assert {"carol", "dave"} <= audited
