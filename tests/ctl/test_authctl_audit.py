"""`authctl audit --export`: JSON lines, oldest first, filtered by user, action, result,
client and time."""

from __future__ import annotations

import json
import sqlite3

from tests.ctl.conftest import CtlEnv
from tests.ctl.test_authctl import PASSWORD, add_user_with_token, code_now


def _lines(env: CtlEnv, *args: str) -> list[dict[str, object]]:
    run = env.run("audit", "--export", *args)
    assert run.code == 0, run.err
    return [json.loads(line) for line in run.out.splitlines()]


def test_export_is_json_lines_with_every_filter(ctl_env: CtlEnv) -> None:
    """Each line is one event; --action, --result, --client, --user, --since and --until
    narrow it and combine; the order is oldest first."""
    seed, _ = add_user_with_token(ctl_env)  # user.add, token.add at T
    ctl_env.clock.advance(3600)
    ctl_env.run("test", "alice", stdin=f"{PASSWORD}\n000000\n")  # auth reject at T+1h
    ctl_env.clock.advance(3600)
    ctl_env.run("test", "alice", stdin=f"{PASSWORD}\n{code_now(ctl_env, seed)}\n")  # accept
    assert ctl_env.run("user", "add", "alice").code == 1  # user.add error at T+2h

    every = _lines(ctl_env)
    assert [e["action"] for e in every] == ["user.add", "token.add", "auth", "auth", "user.add"]
    assert [e["id"] for e in every] == sorted(e["id"] for e in every)  # type: ignore[type-var]
    assert [e["result"] for e in _lines(ctl_env, "--action", "auth")] == ["reject", "accept"]
    assert [e["action"] for e in _lines(ctl_env, "--result", "error")] == ["user.add"]
    clients = {e["client"] for e in every if e["action"] == "auth"}
    assert len(clients) == 1
    (client,) = clients
    by_client = _lines(ctl_env, "--client", str(client), "--result", "accept")
    assert [e["action"] for e in by_client] == ["auth"]
    assert [e["action"] for e in _lines(ctl_env, "--since", "30m", "--user", "alice")] == [
        "auth",
        "user.add",
    ]
    assert [e["action"] for e in _lines(ctl_env, "--until", "90m")] == ["user.add", "token.add"]
    assert _lines(ctl_env, "--user", "nobody") == []
    # --json changes nothing for an export; filters without --export are a usage error.
    assert ctl_env.run("audit", "--export", "--json").out == ctl_env.run("audit", "--export").out
    assert ctl_env.run("audit", "--action", "auth").code == 2


def test_audit_verify_exit_codes(ctl_env: CtlEnv) -> None:
    """With audit.hash_chain on, `audit verify` exits 0 on an intact trail (decisions
    from `test` included) and 1 naming the first bad row once a row is edited; with the
    chain off it exits 1 saying so."""
    assert ctl_env.run("audit", "verify").code == 1  # the shipped default: off
    chained = ctl_env.config.with_name("chained.yaml")
    chained.write_text(ctl_env.config.read_text() + "audit:\n  hash_chain: true\n")
    add_user_with_token(ctl_env)  # written before the chain: outside it
    ctl_env.run("test", "alice", stdin=f"{PASSWORD}\n000000\n", config_path=chained)
    ctl_env.run("user", "set", "alice", "--phone", "+431", config_path=chained)
    ok = ctl_env.run("audit", "verify", "--json", config_path=chained)
    assert ok.code == 0 and ok.json()["ok"] is True and ok.json()["checked"] == 2
    assert "OK: 2 rows" in ctl_env.run("audit", "verify", config_path=chained).out

    with sqlite3.connect(ctl_env.db) as db:  # an edit behind authd's back
        db.execute("UPDATE audit SET result = 'accept' WHERE action = 'auth'")
        (bad_id,) = db.execute("SELECT id FROM audit WHERE action = 'auth'").fetchone()
    broken = ctl_env.run("audit", "verify", "--json", config_path=chained)
    assert broken.code == 1 and broken.json()["bad_id"] == bad_id
    assert f"BROKEN at row {bad_id}" in ctl_env.run("audit", "verify", config_path=chained).out
