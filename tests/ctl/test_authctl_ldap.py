"""authctl with a real slapd: a directory user is enrolled before their first login, and
`authctl test` then runs the LDAP bind plus the OTP, like the daemon."""

from __future__ import annotations

import pytest

from authd.core import otp
from tests.ctl.conftest import CONFIG, CtlEnv, seed_from_uri
from tests.fixtures.slapd import PASSWORDS, Slapd

pytestmark = pytest.mark.integration

LDAP_SECTION = """\
primary:
  backends:
    - type: local
      name: local
    - type: ldap
      name: corp
      servers:
        - url: {url}
      bind_dn: "{bind_dn}"
      bind_password: "{bind_password}"
      user_search:
        base: "{people}"
        filter: "(uid={{user}})"
"""


def test_directory_user_enrolled_then_tested(ctl_env: CtlEnv, slapd: Slapd) -> None:
    """`token add alice` finds alice in LDAP and records her (source `corp`, profile and
    groups from the directory); `test` binds to LDAP and checks the code; a user the
    directory does not know cannot be enrolled."""
    ctl_env.config.write_text(
        CONFIG.format(db=ctl_env.db)
        + LDAP_SECTION.format(url=slapd.url, bind_dn=slapd.service_dn,
                              bind_password=slapd.service_password, people=slapd.people)
    )  # fmt: skip
    added = ctl_env.run("--json", "token", "add", "alice")
    assert added.code == 0, added.err
    seed = seed_from_uri(added.json()["otpauth_uri"])
    shown = ctl_env.run("--json", "user", "show", "alice").json()
    assert (shown["source"], shown["email"], shown["has_password"]) == (
        "corp",
        "alice@example.org",
        False,
    )
    code = otp.totp(seed, ctl_env.clock.seconds())
    run = ctl_env.run("--json", "test", "alice", stdin=f"{PASSWORDS['alice']}\n{code}\n")
    assert run.code == 0, run.out
    assert "vpn" in run.json()["groups"]
    wrong = ctl_env.run("test", "alice", stdin=f"not-her-password\n{code}\n")
    assert wrong.code == 1
    assert ctl_env.run("token", "add", "mallory").code == 1


def test_a_variant_of_a_directory_name_is_that_user(ctl_env: CtlEnv, slapd: Slapd) -> None:
    """`token add CAROL` enrols carol (the entry's uid), not a second user `CAROL`;
    `test Carol` is carol and needs her code; the store holds only carol."""
    ctl_env.config.write_text(
        CONFIG.format(db=ctl_env.db)
        + LDAP_SECTION.format(url=slapd.url, bind_dn=slapd.service_dn,
                              bind_password=slapd.service_password, people=slapd.people)
    )  # fmt: skip
    added = ctl_env.run("--json", "token", "add", "CAROL")
    assert added.code == 0, added.err
    assert added.json()["token"]["user"] == "carol"
    seed = seed_from_uri(added.json()["otpauth_uri"])
    assert ctl_env.run("test", "Carol", stdin=f"{PASSWORDS['carol']}\n\n").code == 1
    code = otp.totp(seed, ctl_env.clock.seconds())
    run = ctl_env.run("--json", "test", "Carol", stdin=f"{PASSWORDS['carol']}\n{code}\n")
    assert (run.code, run.json()["user"]) == (0, "carol"), run.out
    listed = ctl_env.run("--json", "user", "list").json()
    assert [u["user"] for u in listed["users"]] == ["carol"]
