"""`authctl status` (issue 4: authctl reports a directory it cannot reach) and audit
paging with `--before-id`: AdminOps against fakes, then the CLI on SQLite, then a real
slapd, up and behind a closed port."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from twisted.internet.task import Clock

from authd.admin import AdminOps
from authd.config.model import Config, PrimaryBackend, PrimaryConfig
from tests.ctl.conftest import CONFIG, CtlEnv
from tests.ctl.test_authctl_ldap import LDAP_SECTION
from tests.fakes import FakeBackend, FakeKeyring, FakeStore
from tests.fixtures.slapd import Slapd

ACTOR = "authctl:tester"
# Tight timeouts so a dead server costs well under the test's bound.
FAST = """\
      connect_timeout: 0.5s
      operation_timeout: 0.5s
"""
# A dead directory must be reported within this many seconds (connect + operation).
BOUND_S = 5.0


class FakeDirectory:
    """`Directory.status()` as AdminOps reads it: a fixed (url, usable now) list."""

    def __init__(self, servers: list[tuple[str, bool]]) -> None:
        self.servers = servers

    def status(self) -> list[tuple[str, bool]]:
        return list(self.servers)


class FakeLdapBackend(FakeBackend):
    """A FakeBackend with a `directory`, as LdapBackend has one."""

    def __init__(self, name: str, servers: list[tuple[str, bool]], unreachable: bool) -> None:
        super().__init__(name, unreachable=unreachable)
        self.directory = FakeDirectory(servers)


def _config(*backends: PrimaryBackend) -> Config:
    return replace(Config(), primary=PrimaryConfig(backends=backends))


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A 127.0.0.1 port bound but not listening: connects are refused, and no other
    process can take the port while the test runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


# ---------------------------------------------------------------- AdminOps with fakes
def test_status_lists_store_backends_and_servers_in_config_order(clock: Clock) -> None:
    """Store first, then each configured backend in order; a local backend shares the
    store's state; an LDAP backend lists its servers; everything up means ok."""
    store = FakeStore()
    corp = FakeLdapBackend("corp", [("ldap://a:389", True), ("ldap://b:389", True)], False)
    config = _config(
        PrimaryBackend(type="local", name="local"), PrimaryBackend(type="ldap", name="corp")
    )
    report = AdminOps(config, store, FakeKeyring(), clock.seconds, backends=[corp]).status(ACTOR)
    rows = [(c.component, c.kind, c.state, c.detail) for c in report.components]
    assert rows == [
        ("store", "store", "ok", "sqlite"),
        ("local", "backend", "ok", "local users, kept in the store"),
        ("corp", "backend", "ok", "ldap, 2 server(s)"),
        ("corp server", "server", "ok", "ldap://a:389"),
        ("corp server", "server", "ok", "ldap://b:389"),
    ]
    assert report.ok
    assert store.calls == ["ping"]  # one ping; a read appends no audit event


def test_status_reports_failures_by_type_never_by_message(clock: Clock) -> None:
    """A store down and a directory down are "error: <exception type>"; the exception
    messages (which could quote a secret) appear nowhere; nothing is audited."""
    store = FakeStore()
    store.down = True
    corp = FakeLdapBackend("corp", [("ldap://a:389", False)], unreachable=True)
    config = _config(
        PrimaryBackend(type="local", name="local"), PrimaryBackend(type="ldap", name="corp")
    )
    report = AdminOps(config, store, FakeKeyring(), clock.seconds, backends=[corp]).status(ACTOR)
    states = {(c.component, c.detail): c.state for c in report.components}
    assert states[("store", "sqlite")] == "error: StoreUnavailable"
    assert states[("local", "local users, kept in the store")] == "error: StoreUnavailable"
    assert states[("corp", "ldap, 1 server(s)")] == "error: ConnectionError"
    assert states[("corp server", "ldap://a:389")] == "error: unreachable"
    assert not report.ok and report.to_json()["ok"] is False
    text = str(report.to_json()) + repr(report)
    assert "fake store is down" not in text and "corp unreachable" not in text
    assert store.calls == ["ping"]  # pinged once (local reuses it); no audit append


def test_status_detail_never_shows_the_store_url() -> None:
    """A PostgreSQL URL may carry a password: the store row shows only its scheme."""
    config = replace(
        Config(), store=replace(Config().store, url="postgresql://authd:hunter2@db/authd")
    )
    report = AdminOps(config, FakeStore(), FakeKeyring(), lambda: 0.0).status(ACTOR)
    assert report.components[0].detail == "postgresql"
    assert "hunter2" not in str(report.to_json())


# ---------------------------------------------------------------- authctl on SQLite
def test_cli_status_store_only_exits_0(ctl_env: CtlEnv) -> None:
    """The default config (SQLite, local users): a table naming store and local backend,
    all ok, exit 0."""
    run = ctl_env.run("status")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].split() == ["COMPONENT", "STATE", "DETAIL"]
    assert lines[1].split()[:3] == ["store", "ok", "sqlite"]
    assert lines[2].split()[:2] == ["local", "ok"]
    assert lines[-1] == "all reachable"


def test_cli_status_json_shape(ctl_env: CtlEnv) -> None:
    """--json prints one document: `ok` and one object per component with fixed keys."""
    run = ctl_env.run("--json", "status")
    assert run.code == 0
    doc = run.json()
    assert doc["ok"] is True
    assert [c["component"] for c in doc["components"]] == ["store", "local"]
    for c in doc["components"]:
        assert set(c) == {"component", "kind", "state", "detail", "ok"}
        assert c["state"] == "ok" and c["ok"] is True


def test_cli_status_is_not_audited(ctl_env: CtlEnv) -> None:
    """Looking at the status leaves no trace in the audit trail."""
    ctl_env.run("status")
    assert ctl_env.run("--json", "audit").json()["events"] == []


# ---------------------------------------------------------------- audit paging
def test_audit_pages_with_before_id(ctl_env: CtlEnv) -> None:
    """--limit 2 then --before-id <hint> walks 5 events newest first without overlap or
    gap; a full page prints the next --before-id, the last page does not."""
    for i in range(5):
        assert ctl_env.run("user", "add", f"u{i}").code == 0
    seen: list[str] = []
    before: int | None = None
    for _ in range(5):  # bounded: 3 pages expected
        args = ["--json", "audit", "--limit", "2"]
        if before is not None:
            args += ["--before-id", str(before)]
        doc = ctl_env.run(*args).json()
        seen += [e["user"] for e in doc["events"]]
        before = doc["next_before_id"]
        if before is None:
            break
    assert seen == ["u4", "u3", "u2", "u1", "u0"]
    first = ctl_env.run("audit", "--limit", "2")
    hint = ctl_env.run("--json", "audit", "--limit", "2").json()["next_before_id"]
    assert f"older events: authctl audit --before-id {hint}" in first.out
    last = ctl_env.run("audit", "--limit", "2", "--before-id", str(hint - 2))
    assert last.code == 0 and "u0" in last.out and "--before-id" not in last.out


def test_audit_before_id_must_be_positive(ctl_env: CtlEnv) -> None:
    """--before-id 0 or a word is a usage error (exit 2)."""
    assert ctl_env.run("audit", "--before-id", "0").code == 2
    assert ctl_env.run("audit", "--before-id", "x").code == 2


# ---------------------------------------------------------------- a real slapd
def _ldap_config(ctl_env: CtlEnv, slapd: Slapd, url: str) -> None:
    section = LDAP_SECTION.format(
        url=url,
        bind_dn=slapd.service_dn,
        bind_password=slapd.service_password,
        people=slapd.people,
    )
    ctl_env.config.write_text(CONFIG.format(db=ctl_env.db) + section + FAST)


@pytest.mark.integration
def test_cli_status_slapd_up(ctl_env: CtlEnv, slapd: Slapd) -> None:
    """With slapd answering, the LDAP backend and its server are ok: exit 0."""
    _ldap_config(ctl_env, slapd, slapd.url)
    run = ctl_env.run("--json", "status")
    assert run.code == 0, run.out
    rows = {(c["component"], c["detail"]): c["state"] for c in run.json()["components"]}
    assert rows[("corp", "ldap, 1 server(s)")] == "ok"
    assert rows[("corp server", slapd.url)] == "ok"
    assert slapd.service_password not in run.out


@pytest.mark.integration
def test_cli_status_closed_port_exits_1_naming_the_server(
    ctl_env: CtlEnv, slapd: Slapd, closed_port: int
) -> None:
    """A directory behind a closed port: exit 1 within BOUND_S, the table names the
    server's URL and why (connection refused), and neither output holds the service
    password."""
    url = f"ldap://127.0.0.1:{closed_port}"
    _ldap_config(ctl_env, slapd, url)
    started = time.monotonic()
    run = ctl_env.run("status")
    elapsed = time.monotonic() - started
    assert run.code == 1, run.out
    assert elapsed < BOUND_S
    server_rows = [line.split() for line in run.out.splitlines() if url in line]
    assert server_rows == [["corp", "server", "error:", "connection", "refused", url]]
    backend_rows = [line.split() for line in run.out.splitlines() if line.startswith("corp ")]
    assert backend_rows[0][:3] == ["corp", "error:", "DirectoryUnavailable"]
    assert run.out.splitlines()[-1] == "NOT all reachable"
    assert slapd.service_password not in run.out + run.err


@pytest.mark.integration
def test_cli_status_failover_names_only_the_dead_server(
    ctl_env: CtlEnv, slapd: Slapd, closed_port: int
) -> None:
    """Dead first server, live second: the backend answers (ok) but the dead server is
    named with its reason, and status exits 1 since not everything is reachable."""
    dead = f"ldap://127.0.0.1:{closed_port}"
    _ldap_config(ctl_env, slapd, dead)
    ctl_env.config.write_text(
        ctl_env.config.read_text().replace(
            f"        - url: {dead}\n", f"        - url: {dead}\n        - url: {slapd.url}\n"
        )
    )
    run = ctl_env.run("--json", "status")
    assert run.code == 1
    rows = {(c["component"], c["detail"]): c["state"] for c in run.json()["components"]}
    assert rows[("corp", "ldap, 2 server(s)")] == "ok"
    assert rows[("corp server", dead)] == "error: connection refused"
    assert rows[("corp server", slapd.url)] == "ok"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("server", "ca", "password", "why"),
    [
        ("ldaps", "other", None, "TLS: server certificate not trusted (self-signed "
                                 "certificate in certificate chain)"),
        ("unnamed", "own", None, "TLS: the server certificate does not name this host"),
        ("ldap", "own", "not-the-Service-pw-7", "service account bind: invalid credentials "
                                                "(result 49)"),
    ],
    ids=["untrusted-ca", "host-name", "service-bind"],
)
def test_status_and_test_say_why_a_server_failed(
    ctl_env: CtlEnv, slapd: Slapd, server: str, ca: str, password: str | None, why: str
) -> None:
    """A directory that fails TLS trust, the host name check or the service bind is
    reported with that reason by `status` (exit 1) and by `test`, never with a password."""
    url = {"ldaps": slapd.ldaps_url, "unnamed": slapd.ldaps_url_unnamed, "ldap": slapd.url}[server]
    section = LDAP_SECTION.format(
        url=url, bind_dn=slapd.service_dn, bind_password=password or slapd.service_password,
        people=slapd.people,
    )
    ca_file = slapd.pki.other_ca_file if ca == "other" else slapd.pki.ca_file
    ctl_env.config.write_text(
        CONFIG.format(db=ctl_env.db) + section + FAST + f"      ca_file: {ca_file}\n")
    run = ctl_env.run("--json", "status")
    assert run.code == 1, run.out
    rows = {(c["component"], c["detail"]): c["state"] for c in run.json()["components"]}
    assert rows[("corp server", url)] == f"error: {why}"
    tested = ctl_env.run("--json", "test", "nobody", stdin="pw\n123456\n")
    assert tested.code == 1
    assert tested.json()["directory_problems"] == [f"corp {url}: {why}"]
    text = ctl_env.run("test", "nobody", stdin="pw\n123456\n").out
    assert f"directory: corp {url}: {why}" in text
    for secret in (slapd.service_password, password or slapd.service_password):
        assert secret not in run.out + run.err + tested.out + tested.err + text
