"""conf/authd.yaml: the shipped example loads as-is and documents every key."""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Iterator
from pathlib import Path

from authd.config.model import Config, RadiusConfig, Secret
from authd.config.parse import load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "conf" / "authd.yaml"


def _field_names(cls: type) -> Iterator[str]:
    """Every YAML key of the schema, nested sections and list items included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        yield f.name
        for arg in (hints[f.name], *typing.get_args(hints[f.name])):
            if dataclasses.is_dataclass(arg) and isinstance(arg, type):
                yield from _field_names(arg)


def test_example_loads() -> None:
    """The example starts as-is: SQLite and keys under ../var, one loopback client."""
    config = load_config(str(EXAMPLE))
    assert config.store.url == f"sqlite:///{REPO / 'var' / 'authd.db'}"
    assert config.keys.file == str(REPO / "var" / "keys.json")
    assert [b.type for b in config.primary.backends] == ["local"]
    (client,) = config.radius.clients
    assert (client.name, client.address, client.otp_mode) == ("localhost", "127.0.0.1/32", "inline")
    assert client.require_message_authenticator is True
    assert client.secret == Secret("authd-example-loopback-secret")
    assert config.radius.listen == ("127.0.0.1:1812",)
    assert config.http.listen == ("127.0.0.1:8080",)
    assert config.http.api_keys == ()
    assert config.selfservice.enabled is False


def test_example_shows_the_defaults() -> None:
    """Sections the example spells out carry exactly the model's defaults (no drift)."""
    config = load_config(str(EXAMPLE))
    defaults = Config()
    for section in ("otp", "policy", "local_users", "logging", "selfservice"):
        assert getattr(config, section) == getattr(defaults, section), section
    assert config.primary.failmode == defaults.primary.failmode
    assert config.auth_threads == defaults.auth_threads
    assert config.store.pool_size == defaults.store.pool_size
    assert config.http == dataclasses.replace(defaults.http)
    radius_defaults = dataclasses.replace(RadiusConfig(), clients=config.radius.clients)
    assert config.radius == radius_defaults


def test_example_mentions_every_key() -> None:
    """Every key of the schema appears in the example, set or commented out."""
    text = EXAMPLE.read_text()
    missing = sorted(
        {name for name in _field_names(Config) if not re.search(rf"\b{name}(_file)?:", text)}
    )
    assert missing == []
