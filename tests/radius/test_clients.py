"""Client matching by source address, config checks, secrets kept out of sight."""

from __future__ import annotations

import pytest

from authd.config.model import ReplyAttribute
from authd.radius.clients import ClientConfigError, build_client_table
from authd.radius.codec import RadiusDictionary
from tests.fixtures.logs import Logged
from tests.fixtures.radius import SECRET, client_config, radius_config

DICT = RadiusDictionary()


def test_most_specific_network_wins() -> None:
    """A /32 inside a /24 gets its own secret whatever the config order."""
    cfg = radius_config(
        client_config("lan", "10.0.0.0/24", "lan-secret-0123456789"),
        client_config("fw", "10.0.0.5", "fw-secret-0123456789ab"),
    )
    table = build_client_table(cfg, DICT)
    assert table.match("10.0.0.5").name == "fw"  # type: ignore[union-attr]
    assert table.match("10.0.0.6").name == "lan"  # type: ignore[union-attr]
    assert table.match("10.0.1.1") is None
    assert table.match("not-an-ip") is None


def test_ipv6_and_v4_mapped_sources() -> None:
    """IPv6 clients match; an IPv4-mapped IPv6 source matches the IPv4 client."""
    cfg = radius_config(
        client_config("v4", "192.0.2.0/24"),
        client_config("v6", "2001:db8::/32", "v6-secret-0123456789abc"),
    )
    table = build_client_table(cfg, DICT)
    assert table.match("::ffff:192.0.2.9").name == "v4"  # type: ignore[union-attr]
    assert table.match("2001:db8::1").name == "v6"  # type: ignore[union-attr]


def test_every_problem_is_reported_at_once_without_secrets() -> None:
    """Bad address, missing secret, unknown reply attribute, duplicate name: one error
    listing all of them, and no secret in the message."""
    cfg = radius_config(
        client_config("a", "300.1.1.1"),
        client_config("b", "10.0.0.1", ""),
        client_config(
            "c",
            "10.0.0.2",
            reply_attributes=(ReplyAttribute(group="g", attribute="No-Such-Attr", value="x"),),
        ),
        client_config("d", "10.0.0.3"),
        client_config("d", "10.0.0.4"),
    )
    with pytest.raises(ClientConfigError) as err:
        build_client_table(cfg, DICT)
    msg = str(err.value)
    for part in ("radius client a", "radius client b", "No-Such-Attr", "d: duplicate"):
        assert part in msg
    assert SECRET not in msg


def test_weak_secret_warns_without_revealing_it(logged: Logged) -> None:
    """Secrets of 12 octets or less draw a warning that names the client, not the secret."""
    build_client_table(radius_config(client_config("weak", secret="short-pw")), DICT)
    assert any("weak" in line for line in logged.lines("authd.radius.clients"))
    assert "short-pw" not in logged.text


def test_client_repr_hides_secret() -> None:
    """A Client's repr (e.g. in a traceback) never shows the shared secret."""
    table = build_client_table(radius_config(), DICT)
    assert SECRET not in repr(table.clients[0])
