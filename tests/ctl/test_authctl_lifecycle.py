"""authctl lifecycle commands on a real SQLite store: `user set`, `user passwd`,
`user delete`, `apikey new`, and `--json` / `-c` placed after the verb."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

from authd.config.model import ApiKey
from authd.rest.apikeys import ApiKeyRing
from tests.ctl.conftest import CtlEnv
from tests.ctl.test_authctl import PASSWORD, add_user_with_token, code_now

NEW_PASSWORD = "N3w-Batt3ry-Staple"


def test_json_and_config_accepted_after_the_verb(ctl_env: CtlEnv) -> None:
    """`user list --json` and `user show alice -c FILE --json` work as users type them."""
    add_user_with_token(ctl_env)
    listed = ctl_env.run("user", "list", "--json")
    assert listed.code == 0 and listed.json()["users"][0]["user"] == "alice"
    shown = ctl_env.run("user", "show", "alice", "-c", str(ctl_env.config), "--json")
    assert shown.code == 0 and shown.json()["user"] == "alice"
    assert ctl_env.run("status", "--json").json()["ok"] is True


def test_user_set_changes_only_given_fields(ctl_env: CtlEnv) -> None:
    """`user set` overwrites the given fields and groups, keeps the others, and the
    audit row names the fields changed but not their values."""
    assert ctl_env.run("user", "add", "bob", "--email", "b@x.org", "--phone", "+431").code == 0
    run = ctl_env.run(
        "user", "set", "bob", "--email", "bob@example.org", "--group", "vpn", "--group", "ops",
        "--json",
    )  # fmt: skip
    assert run.code == 0, run.err
    doc = run.json()
    assert (doc["email"], doc["phone"]) == ("bob@example.org", "+431")
    assert doc["groups"] == ["vpn", "ops"]
    cleared = ctl_env.run("user", "set", "bob", "--no-groups", "--json").json()
    assert cleared["groups"] == [] and cleared["email"] == "bob@example.org"
    events = ctl_env.run("audit", "--user", "bob", "--json").json()["events"]
    details = [e["detail"] for e in events if e["action"] == "user.set"]
    assert details == ["groups", "email,groups"]
    assert "bob@example.org" not in json.dumps(events)
    assert ctl_env.run("user", "set", "bob").code == 2  # nothing to change
    assert ctl_env.run("user", "set", "nobody", "--email", "x@y").code == 1


def test_user_passwd_replaces_the_password(ctl_env: CtlEnv) -> None:
    """After `user passwd --password-stdin` the old password fails and the new one works."""
    seed, _ = add_user_with_token(ctl_env)
    run = ctl_env.run("user", "passwd", "alice", "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert run.code == 0, run.err
    old = ctl_env.run("test", "alice", stdin=f"{PASSWORD}\n{code_now(ctl_env, seed)}\n")
    assert old.code == 1
    ctl_env.clock.advance(30)
    new = ctl_env.run("test", "alice", stdin=f"{NEW_PASSWORD}\n{code_now(ctl_env, seed)}\n")
    assert new.code == 0, new.out
    assert ctl_env.run("user", "passwd", "alice", "--password-stdin", stdin="\n").code == 1
    assert ctl_env.run("user", "passwd", "alice").code == 2  # --password-stdin is required
    assert NEW_PASSWORD not in json.dumps(ctl_env.run("audit", "--json").json())


def test_user_delete_revokes_tokens_and_is_audited(ctl_env: CtlEnv) -> None:
    """Delete: the user is gone, their token stays listed as revoked and unassigned (its
    serial cannot be reused), PIN and backup codes go, and the audit trail says who."""
    seed, serial = add_user_with_token(ctl_env)
    assert ctl_env.run("pin", "set", "alice", stdin="73925186\n").code == 0
    assert ctl_env.run("backup-codes", "generate", "alice").code == 0
    run = ctl_env.run("user", "delete", "alice", "--json")
    assert run.code == 0 and run.json() == {
        "action": "user.delete",
        "subject": "alice",
        "result": "ok",
    }
    assert ctl_env.run("user", "show", "alice").code == 1
    token = ctl_env.run("token", "show", serial, "--json").json()
    assert (token["status"], token["user"]) == ("revoked", None)
    assert ctl_env.run("token", "assign", serial, "bob").code == 1
    # Same name again: a new user with nothing of the old registration.
    assert ctl_env.run("user", "add", "alice").code == 0
    fresh = ctl_env.run("user", "show", "alice", "--json").json()
    assert (fresh["has_pin"], fresh["backup_codes_left"], fresh["tokens"]) == (False, 0, [])
    events = ctl_env.run("audit", "--json").json()["events"]
    deleted = [e for e in events if e["action"] == "user.delete"]
    assert len(deleted) == 1 and deleted[0]["user"] == "alice"
    assert deleted[0]["actor"].startswith("authctl:") and deleted[0]["result"] == "ok"
    assert ctl_env.run("user", "delete", "nobody").code == 1


def test_apikey_new_prints_key_once_with_config_lines(ctl_env: CtlEnv) -> None:
    """`apikey new` prints a random key and a `key_sha256` entry that admits exactly it;
    the audit row names the key and scopes, never the key."""
    run = ctl_env.run("apikey", "new", "vpn", "--scope", "validate", "--scope", "admin", "--json")
    assert run.code == 0, run.err
    doc = run.json()
    key = doc["key"]
    assert len(key) >= 40 and doc["key_sha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert f'key_sha256: "{doc["key_sha256"]}"' in doc["config"]
    assert "scopes: [validate, admin]" in doc["config"]
    ring = ApiKeyRing.from_config(
        [ApiKey(name="vpn", key_sha256=doc["key_sha256"], scopes=("validate", "admin"))]
    )
    found = ring.identify(f"Bearer {key}".encode())
    assert found is not None and found.allows("admin")
    other = ctl_env.run("apikey", "new", "vpn", "--scope", "validate", "--json").json()
    assert other["key"] != key
    text = ctl_env.run("apikey", "new", "portal", "--scope", "selfservice-admin")
    assert text.code == 0 and "- name: portal" in text.out
    audit = json.dumps(ctl_env.run("audit", "--json").json())
    assert key not in audit and "vpn [validate admin]" in audit
    assert ctl_env.run("apikey", "new", "vpn", "--scope", "root").code == 2
    assert ctl_env.run("apikey", "new", "bad name", "--scope", "validate").code == 1


def test_apikey_new_key_file_is_0600_and_never_overwritten(ctl_env: CtlEnv, tmp_path: Path) -> None:
    """`--key-file PATH` writes the key there 0600 and prints a key_file entry that the
    daemon's key ring accepts; an existing file is refused and left alone."""
    path = tmp_path / "appliance.key"
    doc = ctl_env.run("apikey", "new", "app", "--scope", "validate", "--key-file", str(path),
                      "--json").json()  # fmt: skip
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == doc["key"]
    assert f"key_file: {path}" in doc["config"]
    ring = ApiKeyRing.from_config([ApiKey(name="app", key_file=str(path))])
    assert ring.identify(f"Bearer {doc['key']}".encode()) is not None
    again = ctl_env.run("apikey", "new", "app", "--scope", "validate", "--key-file", str(path))
    assert again.code == 1 and path.read_text().strip() == doc["key"]
