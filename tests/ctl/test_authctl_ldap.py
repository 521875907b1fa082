"""authctl with a real slapd: a directory user is enrolled before their first login, and
`authctl test` then runs the LDAP bind plus the OTP, like the daemon."""

from __future__ import annotations

import pytest

from authd.core import otp
from tests.ctl.conftest import CONFIG, CtlEnv, seed_from_uri
from tests.fixtures.slapd import PASSWORDS, Slapd
from tests.integration.test_ldap_tokens import clear_tokens

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


TOKENS_IN_LDAP = """\
  token_storage: ldap
"""


def test_every_command_works_with_tokens_in_the_directory(ctl_env: CtlEnv, slapd: Slapd) -> None:
    """With `token_storage: ldap` every authctl command works (as the admin API does):
    the token record lands in the user's directory entry, and status, test, token, pin,
    backup-codes, user, key and audit commands all act on it."""
    clear_tokens(slapd)
    section = LDAP_SECTION.format(url=slapd.url, bind_dn=slapd.service_dn,
                                  bind_password=slapd.service_password, people=slapd.people)
    config = CONFIG.format(db=ctl_env.db).replace("store:\n", "store:\n" + TOKENS_IN_LDAP)
    ctl_env.config.write_text(
        config + section + f"      token_attribute: {slapd.token_attribute}\n")
    try:
        _every_command(ctl_env, slapd)
    finally:
        clear_tokens(slapd)


def _every_command(ctl: CtlEnv, slapd: Slapd) -> None:
    password = PASSWORDS["bob"]
    reasons: list[str] = []

    def test(code: str) -> int:
        run = ctl.run("--json", "test", "bob", stdin=f"{password}\n{code}\n")
        reasons.append(run.json()["reason"])
        return int(run.code)

    def code_at(seed: bytes, ahead: float = 0) -> str:
        return otp.totp(seed, ctl.clock.seconds() + ahead)

    assert ctl.run("status").code == 0
    added = ctl.run("--json", "token", "add", "bob")
    assert added.code == 0, added.err
    seed, serial = seed_from_uri(added.json()["otpauth_uri"]), added.json()["token"]["serial"]
    assert serial in slapd.ldapsearch(slapd.user_dn("bob"), "(objectClass=*)",
                                      slapd.token_attribute)
    assert [t["serial"] for t in ctl.run("--json", "token", "list", "bob").json()["tokens"]] \
        == [serial]
    assert ctl.run("--json", "token", "show", serial).json()["user"] == "bob"
    assert test(code_at(seed)) == 0
    assert ctl.run("token", "disable", serial).code == 0
    assert test(code_at(seed, 30)) == 1
    assert ctl.run("token", "enable", serial).code == 0
    fast = 3 * 3600  # the token's clock runs 3 h ahead; accepted codes then go step by step
    resync = ctl.run("token", "resync", serial, code_at(seed, fast), code_at(seed, fast + 30))
    assert resync.code == 0, resync.err
    assert test(code_at(seed, fast + 60)) == 0, str(reasons)
    assert ctl.run("pin", "set", "bob", stdin="4821\n").code == 0
    assert test(code_at(seed, fast + 90)) == 1  # the PIN is now required
    assert test("4821" + code_at(seed, fast + 90)) == 0, str(reasons)
    assert ctl.run("pin", "remove", "bob").code == 0
    codes = ctl.run("--json", "backup-codes", "generate", "bob").json()["codes"]
    assert test(codes[0]) == 0 and test(codes[0]) == 1
    for _ in range(3):  # max_attempts: 3
        test("000000")
    assert ctl.run("--json", "user", "show", "bob").json()["status"] == "locked"
    assert ctl.run("user", "unlock", "bob").code == 0
    assert ctl.run("user", "disable", "bob").code == 0
    assert test(code_at(seed, fast + 120)) == 1
    assert ctl.run("user", "enable", "bob").code == 0
    assert test(code_at(seed, fast + 120)) == 0, str(reasons)
    assert "bob" in [u["user"] for u in ctl.run("--json", "user", "list").json()["users"]]
    rotated = ctl.run("--json", "key", "rotate")
    assert rotated.code == 0 and rotated.json()["reencrypted"] >= 1
    assert test(code_at(seed, fast + 150)) == 0, str(reasons)
    assert ctl.run("token", "unassign", serial).code == 0
    assert ctl.run("token", "assign", serial, "carol").code == 0
    assert ctl.run("--json", "token", "list", "carol").json()["tokens"][0]["serial"] == serial
    assert ctl.run("token", "revoke", serial).code == 0
    assert ctl.run("user", "reset", "carol").code == 0
    assert ctl.run("--json", "token", "list", "carol").json() == {"tokens": []}
    actions = {e["action"] for e in ctl.run("--json", "audit", "--limit", "100").json()["events"]}
    assert {"token.add", "pin.set", "key.rotate", "user.reset", "auth"} <= actions


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
