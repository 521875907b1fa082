"""`authctl issue list|show|approve|reject`: the operator's side of restore access, on
the store authctl shares with the daemon, at the test's Clock; the optional notice to
an operator address goes to a real SMTP server (aiosmtpd)."""

from __future__ import annotations

from email import message_from_bytes

import yaml

from authd.config.parse import load_config
from authd.ctl.wiring import open_admin
from authd.storage.recovery import Issue
from tests.ctl.conftest import CtlEnv
from tests.ctl.test_remind import Inbox, inbox  # noqa: F401 (the SMTP sink fixture)

USER_ACTOR = "selfservice:alice"


def _ask(env: CtlEnv, kind: str = "token", user: str = "alice") -> Issue:
    """A request as the portal queues it once the user proved who they are."""
    with open_admin(load_config(str(env.config)), env.clock.seconds) as ops:
        ops = ops.from_source("192.0.2.7")
        issue = ops.open_issue(f"selfservice:{user}", user, kind)
        ops.notify_issue(f"selfservice:{user}", issue)
        return issue


def _alice(env: CtlEnv) -> None:
    assert env.run("user", "add", "alice").code == 0
    assert env.run("token", "add", "alice", "--type", "totp", "--serial", "T1").code == 0


def test_list_and_show_in_text_and_json(ctl_env: CtlEnv) -> None:
    """The queue oldest first, filtered by status; one request in full."""
    _alice(ctl_env)
    first = _ask(ctl_env)
    _ask(ctl_env, "mail")
    listed = ctl_env.run("issue", "list")
    assert listed.code == 0 and f"#{first.id}" in listed.out and "token" in listed.out
    doc = ctl_env.run("--json", "issue", "list", "--status", "open").json()
    assert [(i["kind"], i["status"], i["source"]) for i in doc["issues"]] == [
        ("token", "open", "192.0.2.7"), ("mail", "open", "192.0.2.7")]
    shown = ctl_env.run("--json", "issue", "show", str(first.id))
    assert shown.code == 0 and shown.json()["user"] == "alice"
    assert ctl_env.run("issue", "show", "999").code == 1


def test_approve_lost_token_disables_the_tokens_and_grants_the_portal(
    ctl_env: CtlEnv,
) -> None:
    """Approval: tokens disabled, a grant until now + recovery_grant_ttl, audited."""
    _alice(ctl_env)
    issue = _ask(ctl_env)
    approved = ctl_env.run("--json", "issue", "approve", str(issue.id)).json()
    ttl = load_config(str(ctl_env.config)).selfservice.recovery_grant_ttl
    assert approved["status"] == "approved" and approved["decided_by"].startswith("authctl:")
    assert approved["grant_until"] == ctl_env.clock.seconds() + ttl
    token = ctl_env.run("--json", "token", "show", "T1").json()
    assert token["status"] == "disabled"
    again = ctl_env.run("issue", "approve", str(issue.id))
    assert again.code == 1 and "not open" in again.err
    events = ctl_env.run("--json", "audit", "--user", "alice").json()["events"]
    assert {"issue.open", "issue.approve", "token.disable"} <= {e["action"] for e in events}


def test_reject_keeps_the_tokens(ctl_env: CtlEnv) -> None:
    """Rejection closes the request and changes nothing else."""
    _alice(ctl_env)
    issue = _ask(ctl_env)
    rejected = ctl_env.run("issue", "reject", str(issue.id))
    assert rejected.code == 0 and "rejected" in rejected.out
    assert ctl_env.run("--json", "token", "show", "T1").json()["status"] == "active"


def test_a_new_request_mails_the_operator_address(
    ctl_env: CtlEnv, inbox: tuple[Inbox, int]  # noqa: F811
) -> None:
    """selfservice.recovery_notify gets one mail per request, naming user and kind,
    never a secret."""
    handler, port = inbox
    config = yaml.safe_load(ctl_env.config.read_text())
    config["selfservice"] = {"recovery_notify": "helpdesk@example.com"}
    config["smtp"] = {"host": "127.0.0.1", "port": port, "security": "none",
                      "from_address": "authd@example.com"}
    ctl_env.config.write_text(yaml.safe_dump(config))
    _alice(ctl_env)
    issue = _ask(ctl_env)
    assert [to for to, _ in handler.messages] == [["helpdesk@example.com"]]
    body = message_from_bytes(handler.messages[0][1]).get_payload()
    assert "alice" in body and f"authctl issue show {issue.id}" in body
