"""`authctl user remind`: users without a token get the portal's address by mail, sent
to a real SMTP server (aiosmtpd) on loopback; `--dry-run` only lists them."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from email import message_from_bytes
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.ctl.conftest import CtlEnv

PORTAL = "https://mfa.example.com/selfservice/default/"


class Inbox:
    """An aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append((list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    with socket.socket() as probe:  # aiosmtpd's start() cannot use port 0
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def _configure(env: CtlEnv, port: int) -> None:
    env.config.write_text(
        env.config.read_text()
        + f"""\
selfservice:
  public_url: {PORTAL}
smtp:
  host: 127.0.0.1
  port: {port}
  security: none
  from_address: authd@example.com
"""
    )


def test_remind_mails_users_without_a_token(
    ctl_env: CtlEnv, inbox: tuple[Inbox, int]
) -> None:
    """A dry run by default (explicit `--dry-run` too) mails nothing; `--send` mails only
    users with an address and no active token; each mail names the portal; each
    reminder is audited."""
    handler, port = inbox
    _configure(ctl_env, port)
    assert ctl_env.run("user", "add", "nora", "--email", "nora@example.com").code == 0
    assert ctl_env.run("user", "add", "alice", "--email", "alice@example.com").code == 0
    assert ctl_env.run("user", "add", "ghost").code == 0  # no address
    assert ctl_env.run("token", "add", "alice", "--type", "totp").code == 0
    dry = ctl_env.run("--json", "user", "remind", "--dry-run")
    assert dry.code == 0 and dry.json() == {
        "sent": False,
        "users": [{"user": "nora", "email": "nora@example.com"}],
    }
    default = ctl_env.run("--json", "user", "remind")
    assert default.code == 0 and default.json() == dry.json()
    assert handler.messages == []
    sent = ctl_env.run("user", "remind", "--send")
    assert sent.code == 0 and "mailed nora <nora@example.com>" in sent.out
    assert [to for to, _ in handler.messages] == [["nora@example.com"]]
    mail = message_from_bytes(handler.messages[0][1])
    assert mail["From"] == "authd@example.com" and PORTAL in mail.get_payload()
    audit = ctl_env.run("--json", "audit", "--user", "nora")
    assert any(e["action"] == "user.remind" for e in audit.json()["events"])


def test_remind_without_a_mail_server_fails_and_says_so(ctl_env: CtlEnv) -> None:
    """No smtp.host: nothing can be sent, exit 1 with the reason."""
    assert ctl_env.run("user", "add", "nora", "--email", "nora@example.com").code == 0
    failed = ctl_env.run("user", "remind", "--send")
    assert failed.code == 1 and "smtp.host is not set" in failed.err
