"""radius.tls in the config file: check-config reports RadSec problems with their line,
the same checks the listener runs at start and on reload."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from authd.config.model import Config
from tests.fixtures.radsec import RadsecWorld, make_world

Problems = Callable[[str], list[tuple[int, str, str]]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> RadsecWorld:
    return make_world(tmp_path_factory.mktemp("radsec-config"))


def _yaml(world: RadsecWorld, client: str, key_file: str = "") -> str:
    return (
        "radius:\n"
        "  tls:\n"
        f"    cert_file: {world.server.cert_file}\n"
        f"    key_file: {key_file or world.server.key_file}\n"
        f"    ca_file: {world.ca.ca_file}\n"
        "    clients:\n"
        f"      - {client}\n"
    )


def test_valid_radsec_section_loads(world: RadsecWorld, load: Callable[[str], Config]) -> None:
    """A complete section parses into frozen objects, defaults filled in."""
    config = load(_yaml(world, '{name: nas, subject: "CN=nas,O=Example", otp_mode: challenge}'))
    tls = config.radius.tls
    assert tls is not None and tls.listen == ("127.0.0.1:2083",)
    assert tls.clients[0].otp_mode == "challenge"
    assert tls.idle_timeout == 120.0


def test_radsec_client_without_rule_or_with_address(world: RadsecWorld, problems: Problems) -> None:
    """A client needs a certificate rule; address and secret have no meaning here."""
    found = problems(_yaml(world, "{name: nas, address: 10.0.0.1, secret: x}"))
    assert (
        7,
        "radius.tls.clients[0].address",
        "RadSec clients are matched by certificate",
    ) in found
    assert (
        7,
        "radius.tls.clients[0].secret",
        "the RadSec secret is fixed: radsec (RFC 6614)",
    ) in found
    found = problems(_yaml(world, "{name: nas}"))
    assert [(line, path) for line, path, _ in found] == [(7, "radius.tls.clients[0]")]


def test_key_not_matching_certificate_is_reported(world: RadsecWorld, problems: Problems) -> None:
    """The files themselves are checked: a key of another certificate is refused."""
    found = problems(_yaml(world, '{name: nas, san: ["DNS:nas.example.org"]}', world.nas.key_file))
    assert [(path, "not a usable" in why) for _, path, why in found] == [
        ("radius.tls.cert_file", True)
    ]


def test_bad_san_and_fingerprint_are_reported(world: RadsecWorld, problems: Problems) -> None:
    """Rule syntax errors name the client entry."""
    found = problems(_yaml(world, '{name: nas, san: ["nas.example.org"]}'))
    assert found[0][1] == "radius.tls.clients[0]"
    assert "DNS:" in found[0][2]


def test_world_key_is_private(world: RadsecWorld) -> None:
    """The generated server key is 0600, as radius.tls.key_file requires."""
    assert Path(world.server.key_file).stat().st_mode & 0o077 == 0
