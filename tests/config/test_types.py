"""Every field type the loader supports, built from YAML by the generic walker."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from authd.config.model import Config, PrimaryBackend, Secret, TlsConfig

Load = Callable[[str], Config]
Problems = Callable[[str], list[tuple[int, str, str]]]


def test_empty_file_is_all_defaults(load: Load) -> None:
    """An empty document is a valid config: every section takes its defaults."""
    config = load("")
    assert config == Config()
    assert config.source.endswith("authd.yaml")


def test_null_sections_and_lists_take_defaults(load: Load) -> None:
    """`section:` with every key commented out means the defaults, lists mean empty."""
    config = load(
        """
        otp:
        radius:
          clients:
        http:
          api_keys:
        """
    )
    assert config.otp == Config().otp
    assert config.radius.clients == ()
    assert config.http.api_keys == ()


def test_str_int_float_bool(load: Load) -> None:
    """Scalars of each type land in their fields; a float field takes an int."""
    config = load(
        """
        otp:
          issuer: Example Corp
          default_digits: 8
          pin:
            allow_trivial: true
        http:
          rate_limits:
            per_user:
              rate: 2
            per_source:
              rate: 0.5
        """
    )
    assert config.otp.issuer == "Example Corp"
    assert config.otp.default_digits == 8
    assert config.otp.pin.allow_trivial is True
    assert config.http.rate_limits.per_user.rate == 2.0
    assert isinstance(config.http.rate_limits.per_user.rate, float)
    assert config.http.rate_limits.per_source.rate == 0.5


def test_partial_section_keeps_its_own_defaults(load: Load) -> None:
    """Giving one key of a nested section keeps the section's (not the class's) defaults."""
    config = load("http: {rate_limits: {per_source: {rate: 5}}}")
    assert config.http.rate_limits.per_source.rate == 5.0
    assert config.http.rate_limits.per_source.burst == 100  # RateLimitsConfig's default
    assert config.http.rate_limits.per_user == Config().http.rate_limits.per_user


def test_str_field_keeps_text_as_written(load: Load) -> None:
    """A plain scalar in a text field is the text typed: 0123 stays 0123, not 83."""
    config = load("otp: {issuer: 0123}\nselfservice: {alias: 2024}")
    assert config.otp.issuer == "0123"
    assert config.selfservice.alias == "2024"


def test_int_field_rejects_bool_float_and_text(problems: Problems) -> None:
    """`true`, `4.5` and `"4"` are not integers (bool is not an int here)."""
    found = problems(
        """
        auth_threads: true
        store:
          pool_size: 4.5
        radius:
          workers: "4"
        """
    )
    assert found == [
        (2, "auth_threads", "expected an integer, got true/false"),
        (4, "store.pool_size", "expected an integer, got a number"),
        (6, "radius.workers", "expected an integer, got text; remove the quotes"),
    ]


def test_bool_field_rejects_text(problems: Problems) -> None:
    """`enabled: "yes"` (quoted) is text, not a boolean."""
    assert problems('radius: {enabled: "yes"}') == [
        (1, "radius.enabled", "expected true/false, got text; remove the quotes")
    ]


def test_literal(load: Load, problems: Problems) -> None:
    """Literal fields accept their values and name the choices otherwise, with a hint."""
    assert load("logging: {format: json}").logging.format == "json"
    assert problems("logging: {format: jsn}") == [
        (1, "logging.format", "'jsn' is not one of text, json; did you mean 'json'?")
    ]
    assert problems("logging: {level: [info]}") == [
        (1, "logging.level", "expected one of debug, info, warning, error, got a list")
    ]


def test_optional_dataclass(load: Load, secret_file: Callable[..., str]) -> None:
    """`X | None` sections: absent or null is None, a mapping builds X."""
    assert load("http: {tls: null}").http.tls is None
    cert = secret_file("c.pem", "cert")
    key = secret_file("k.pem", "key")
    config = load(f"http: {{tls: {{cert_file: {cert}, key_file: {key}}}}}")
    assert config.http.tls == TlsConfig(cert_file=cert, key_file=key)


def test_tuple_of_dataclasses_and_strings(load: Load) -> None:
    """Lists of sections and lists of strings become tuples."""
    config = load(
        """
        policy:
          groups:
            - group: admins
            - group: guests
              enforcement: optional
        radius:
          listen: ["127.0.0.1:1812", "[::1]:1812"]
        """
    )
    assert [(g.group, g.enforcement) for g in config.policy.groups] == [
        ("admins", "required"),
        ("guests", "optional"),
    ]
    assert config.radius.listen == ("127.0.0.1:1812", "[::1]:1812")


def test_tuple_rejects_scalar(problems: Problems) -> None:
    """A single string where a list is expected is an error, not a one-item list."""
    assert problems("radius: {listen: '127.0.0.1:1812'}") == [
        (1, "radius.listen", "expected a list, got text")
    ]


def test_dict_of_str(load: Load, problems: Problems) -> None:
    """dict[str, str] keeps the mapping; a list value inside is reported by key path."""
    base = """
        primary:
          backends:
            - type: ldap
              name: dir
              servers: [{url: "ldap://127.0.0.1:389"}]
              user_search: {base: "dc=example,dc=com"}
              profile_attributes:
                email: mail
                phone: %s
        """
    config = load(base % "telephoneNumber")
    assert config.primary.backends[0].profile_attributes == {
        "email": "mail",
        "phone": "telephoneNumber",
    }
    assert problems(base % "[a, b]") == [
        (10, "primary.backends[0].profile_attributes.phone", "expected text, got a list")
    ]


def test_secret_inline(load: Load) -> None:
    """An inline secret becomes a Secret whose repr hides it."""
    config = load(
        """
        radius:
          clients:
            - {name: a, address: 127.0.0.1, secret: "s3cr3t-inline"}
        """
    )
    secret = config.radius.clients[0].secret
    assert secret == Secret("s3cr3t-inline")
    assert "s3cr3t-inline" not in repr(config)


def test_optional_secret_null(load: Load) -> None:
    """`bind_password: null` on a backend without bind_dn is simply no password."""
    config = load(
        """
        primary:
          backends:
            - type: ldap
              servers: [{url: "ldaps://ldap.example.com"}]
              user_search: {base: "dc=example,dc=com"}
              bind_password: null
        """
    )
    assert config.primary.backends[0].bind_password is None


def test_durations_in_fields(load: Load, problems: Problems) -> None:
    """Duration fields take units, bare seconds and `never` where allowed."""
    config = load(
        "otp: {totp: {skew: 1m}, lockout: {auto_unlock_after: never}}\n"
        "radius: {reject_delay: 500ms, duplicate_window: 10}"
    )
    assert config.otp.totp.skew == 60.0
    assert config.otp.lockout.auto_unlock_after is None
    assert config.radius.reject_delay == 0.5
    assert config.radius.duplicate_window == 10.0
    assert problems("radius: {challenge_ttl: never}") == [
        (1, "radius.challenge_ttl", "`never` is not allowed here; give a duration")
    ]


def test_minimum_and_maximum(problems: Problems) -> None:
    """Bounds from meta(): ints show numbers, durations show durations."""
    found = problems(
        """
        store: {pool_size: 0}
        auth_threads: 1000
        otp:
          totp: {skew: 10m}
          lockout: {auto_unlock_after: 0}
        """
    )
    assert found == [
        (2, "store.pool_size", "must be at least 1, got 0"),
        (3, "auth_threads", "must be at most 256, got 1000"),
        (5, "otp.totp.skew", "must be at most 5m, got 10m"),
        (6, "otp.lockout.auto_unlock_after", "must be at least 1s, got 0s"),
    ]


def test_sqlite_needs_a_pool_of_two(problems: Problems, load: Load) -> None:
    """SQLite's writer keeps one connection of store.pool_size for good: a pool of one
    is refused with the reason; PostgreSQL takes it."""
    found = problems('store: {url: "sqlite:///var/lib/authd/authd.db", pool_size: 1}')
    assert found == [
        (1, "store.pool_size", "SQLite needs at least 2: the writer keeps one connection, "
         "reads and other writes share the others"),
    ]
    assert load('store: {url: "postgresql://authd@db/authd", pool_size: 1}').store.pool_size == 1


def test_relative_paths_resolve_against_config_folder(
    load: Load, tmp_path: Path, secret_file: Callable[..., str]
) -> None:
    """keys.file, sqlite paths, CA and dictionary files are relative to the config file."""
    secret_file("dictionary", "ATTRIBUTE User-Name 1 string\n")
    secret_file("ca.pem", "ca")
    config = load(
        """
        store: {url: "sqlite:///data/authd.db?timeout=5"}
        keys: {file: keys/keys.json}
        radius: {dictionary: dictionary}
        primary:
          backends:
            - type: ldap
              servers: [{url: "ldaps://ldap.example.com"}]
              user_search: {base: "dc=example,dc=com"}
              ca_file: ca.pem
        """
    )
    assert config.store.url == f"sqlite:///{tmp_path}/data/authd.db?timeout=5"
    assert config.keys.file == str(tmp_path / "keys" / "keys.json")
    assert config.radius.dictionary == str(tmp_path / "dictionary")
    assert config.primary.backends[0].ca_file == str(tmp_path / "ca.pem")


@pytest.mark.parametrize("url", ["sqlite:////var/lib/authd/authd.db", "postgresql://a@h/db"])
def test_absolute_and_postgres_urls_unchanged(load: Load, url: str) -> None:
    """Absolute SQLite paths and PostgreSQL URLs are kept as written."""
    assert load(f'store: {{url: "{url}"}}').store.url == url


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite:///", "sqlite:///?mode=ro"])
def test_in_memory_sqlite_rejected(problems: Problems, url: str) -> None:
    """The store is shared by threads: an in-memory SQLite database cannot work."""
    assert problems(f'store: {{url: "{url}"}}') == [
        (1, "store.url", "SQLite needs a file path (sqlite:///PATH), not memory")
    ]


def test_source_is_not_settable_from_yaml(problems: Problems) -> None:
    """`source` is set by the loader; the YAML cannot override it."""
    assert problems("source: /etc/passwd") == [(1, "source", "unknown key; did you mean 'store'?")]


def test_yaml_merge_keys(load: Load) -> None:
    """`<<: *anchor` merges work, explicit keys win over merged ones."""
    config = load(
        """
        radius:
          clients:
            - &first {name: a, address: 10.0.0.0/8, otp_mode: challenge, secret: s1}
            - <<: *first
              name: b
              address: 10.1.0.0/16
        """
    )
    second = config.radius.clients[1]
    assert (second.name, second.address, second.otp_mode) == ("b", "10.1.0.0/16", "challenge")
    assert second.secret == Secret("s1")


def test_resolved_paths_are_absolute(load: Load) -> None:
    """Even a bare file name becomes an absolute path, so the daemon's cwd never matters."""
    assert os.path.isabs(load("keys: {file: k.json}").keys.file)


def test_backends_list_replaces_default_chain(load: Load) -> None:
    """A backends list given in YAML replaces the default chain, items start from defaults."""
    config = load("primary: {backends: [{type: local, name: mine}]}")
    assert config.primary.backends == (PrimaryBackend(type="local", name="mine"),)
