"""RADIUS end-to-end with an LDAP user: `authd serve` (the real daemon and wiring),
slapd for the password, groups and (token_storage: ldap) the token record, radclient
(freeradius-utils) as the NAS, oathtool for the code."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from authd.auth.ldap_primary import LdapBackend
from authd.core.model import Token, TokenType
from authd.crypto import Keyring
from authd.storage.ldap_attrs import LdapTokenStore
from authd.storage.sql import SqlStore
from tests.fixtures.slapd import PASSWORDS, Slapd
from tests.integration.test_ldap_primary import make_config
from tests.integration.test_ldap_tokens import clear_tokens
from tests.ports import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SECRET = "ldap-e2e-radius-secret-0123456789"
SEED = b"12345678901234567890"


def need(program: str, package: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.fail(
            f"{program} not found: install it with `apt-get install {package}`", pytrace=False
        )
    return path


def config_text(slapd: Slapd, radius_port: int, keys: Path) -> str:
    return f"""\
store:
  url: sqlite:///state/authd.db
  token_storage: ldap
keys:
  file: {keys}
primary:
  backends:
    - type: ldap
      name: corp-ldap
      servers:
        - url: {slapd.url}
      start_tls: true
      ca_file: {slapd.pki.ca_file}
      bind_dn: "{slapd.service_dn}"
      bind_password_file: ldap-bind.secret
      user_search:
        base: "{slapd.people}"
        filter: "(uid={{user}})"
      groups:
        mode: memberof
        base: "{slapd.groups}"
        nested: true
      token_attribute: {slapd.token_attribute}
radius:
  listen: ["127.0.0.1:{radius_port}"]
  reject_delay: 0s
  clients:
    - name: nas
      address: 127.0.0.1/32
      secret: "{SECRET}"
      reply_attributes:
        - group: staff
          attribute: Filter-Id
          value: "{{group}}-acl"
http:
  enabled: false
"""


class Daemon:
    """`authd serve` with a notify socket, so the test knows when listeners are bound."""

    def __init__(self, config: Path) -> None:
        notify = config.parent / "notify"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(notify))
        self.notify.settimeout(30)
        env = dict(os.environ, NOTIFY_SOCKET=str(notify))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "authd", "serve", "-c", str(config)],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self) -> None:
        try:
            state = self.notify.recv(256).decode()
        except TimeoutError:
            state = "timeout"
        if state != "READY=1":
            self.stop()
            raise AssertionError(f"authd did not become ready ({state}): {self.output}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        assert self.proc.stdout is not None
        self.output = self.proc.stdout.read()
        self.notify.close()

    output = ""


def start_node(slapd: Slapd, folder: Path, keys: Path) -> tuple[Daemon, int]:
    """One authd node in `folder` (own SQLite store), sharing the key file `keys`."""
    (folder / "state").mkdir(parents=True)
    secret_file = folder / "ldap-bind.secret"
    secret_file.write_text(slapd.service_password + "\n")
    secret_file.chmod(0o600)
    port = free_port()
    config = folder / "authd.yaml"
    config.write_text(config_text(slapd, port, keys))
    d = Daemon(config)
    d.wait_ready()
    return d, port


@pytest.fixture
def nodes(slapd: Slapd, tmp_path: Path) -> Iterator[list[tuple[Daemon, int]]]:
    """Two authd nodes on free UDP ports, one directory, alice's TOTP token in her
    directory entry (added through the token store, as authctl would)."""
    clear_tokens(slapd)
    keys = tmp_path / "keys.json"
    keyring = Keyring.load_or_create(str(keys))
    sql = SqlStore.open(f"sqlite:///{tmp_path / 'enrol.db'}", keyring)
    backend = LdapBackend(make_config(slapd, token_attribute=slapd.token_attribute))
    LdapTokenStore(sql, backend, keyring).add_token(
        Token(serial="E2E-TOTP-1", type=TokenType.TOTP, seed=SEED, user="alice")
    )
    backend.close()
    sql.close()
    started: list[tuple[Daemon, int]] = []
    try:
        for name in ("node1", "node2"):
            started.append(start_node(slapd, tmp_path / name, keys))
        yield started
    finally:
        for d, _ in started:
            d.stop()
        clear_tokens(slapd)


def start_radclient(port: int, user: str, password: str, tmp: Path) -> subprocess.Popen[str]:
    prog = need("radclient", "freeradius-utils")
    infile = tmp / f"request-{port}.txt"
    infile.write_text(
        f'User-Name = "{user}"\nUser-Password = "{password}"\nMessage-Authenticator = 0x00\n'
    )
    return subprocess.Popen(
        [prog, "-x", "-r", "1", "-t", "3", "-f", str(infile), f"127.0.0.1:{port}", "auth", SECRET],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def radclient(port: int, user: str, password: str, tmp: Path) -> str:
    out, _ = start_radclient(port, user, password, tmp).communicate(timeout=30)
    return out


def oathtool_code() -> str:
    prog = need("oathtool", "oathtool")
    return subprocess.run(
        [prog, "--totp", SEED.hex()], capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def test_radius_end_to_end_with_an_ldap_user(
    nodes: list[tuple[Daemon, int]], slapd: Slapd, tmp_path: Path
) -> None:
    """radclient -> authd -> slapd (StartTLS bind, nested groups, token in the entry):
    password+code accepts with the group's reply attribute; the same code again, a
    wrong password, and an unknown user are rejected."""
    d, port = nodes[0]
    code = oathtool_code()
    out = radclient(port, "alice", PASSWORDS["alice"] + code, tmp_path)
    assert "Received Access-Accept" in out, out
    assert 'Filter-Id = "staff-acl"' in out, out
    replay = radclient(port, "alice", PASSWORDS["alice"] + code, tmp_path)
    assert "Received Access-Reject" in replay, replay
    assert "Received Access-Reject" in radclient(port, "alice", "wrong" + code, tmp_path)
    assert "Received Access-Reject" in radclient(port, "mallory", "x" + code, tmp_path)
    # The accepted step is recorded in the directory, as ciphertext only.
    entry = slapd.ldapsearch(slapd.user_dn("alice"), "(objectClass=*)", slapd.token_attribute)
    assert "E2E-TOTP-1|v1:" in entry
    d.stop()
    assert d.proc.returncode == 0, d.output
    for secret in (PASSWORDS["alice"], slapd.service_password, SECRET):
        assert secret not in d.output


def test_two_nodes_accept_a_code_once(
    nodes: list[tuple[Daemon, int]], slapd: Slapd, tmp_path: Path
) -> None:
    """The same password+code sent at once to two authd nodes sharing the directory
    (separate stores, no shared memory): exactly one Access-Accept."""
    code = oathtool_code()
    procs = [
        start_radclient(port, "alice", PASSWORDS["alice"] + code, tmp_path) for _, port in nodes
    ]
    outputs = [p.communicate(timeout=30)[0] for p in procs]
    accepts = sum("Received Access-Accept" in out for out in outputs)
    rejects = sum("Received Access-Reject" in out for out in outputs)
    assert (accepts, rejects) == (1, 1), outputs
