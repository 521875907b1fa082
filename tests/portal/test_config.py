"""The portal's config keys: parsed with their defaults, bad values refused at once."""

from __future__ import annotations

import pytest

from authd.config.errors import ConfigErrors
from authd.config.parse import parse_config
from authd.portal.access import may_self_provision

SOURCE = "/etc/authd/authd.yaml"


def test_portal_keys_parse() -> None:
    """Durations, action order and token types come through as written."""
    config = parse_config(
        "selfservice: {enabled: true, actions: [backup_codes, enroll], pending_ttl: 5m,"
        " session_idle: 2m, session_max: 1h, token_types: [totp]}",
        SOURCE,
    )
    portal = config.selfservice
    assert portal.actions == ("backup_codes", "enroll")
    assert (portal.pending_ttl, portal.session_idle, portal.session_max) == (300, 120, 3600)
    assert portal.token_types == ("totp",)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("actions: [enroll, fly]", "unknown action 'fly'"),
        ("actions: [enroll, enroll]", "lists an action twice"),
        ("token_types: [sms]", "unknown token type 'sms'"),
        ("listen: ['10.0.0.1:8080']", "is not one of http.listen"),
    ],
)
def test_bad_portal_keys_are_refused(text: str, problem: str) -> None:
    """An action or token type the portal does not have is a config error."""
    with pytest.raises(ConfigErrors) as caught:
        parse_config(f"selfservice: {{enabled: true, {text}}}", SOURCE)
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("groups", "allow", "deny", "expected"),
    [
        ((), ("*",), (), True),
        (("staff",), ("staff",), (), True),
        (("guests",), ("staff",), (), False),
        (("staff", "contractors"), ("*",), ("contractors",), False),
        (("staff",), (), (), False),
        (("staff",), ("*",), ("*",), False),
    ],
)
def test_who_may_self_provision(
    groups: tuple[str, ...], allow: tuple[str, ...], deny: tuple[str, ...], expected: bool
) -> None:
    """All, members of groups, all except members, nobody: deny wins over allow."""
    assert may_self_provision(groups, allow, deny) is expected


def test_smtp_needs_a_from_address() -> None:
    """A mail server without a From: address is a config error; the password may come
    from a file like every secret."""
    with pytest.raises(ConfigErrors) as caught:
        parse_config("smtp: {host: mail.example.com}", SOURCE)
    assert "smtp.from_address" in str(caught.value)
    config = parse_config("smtp: {host: mail.example.com, from_address: a@example.com}", SOURCE)
    assert (config.smtp.port, config.smtp.security) == (587, "starttls")
