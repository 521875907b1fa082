"""The loader never crashes and never leaks: any input gives a Config or ConfigErrors."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authd.config.errors import ConfigErrors
from authd.config.model import Config
from authd.config.parse import parse_config

SOURCE = "/nonexistent-authd-test/authd.yaml"


def _keys(cls: type) -> set[str]:
    hints = typing.get_type_hints(cls)
    out: set[str] = set()
    for f in dataclasses.fields(cls):
        out |= {f.name, f"{f.name}_file"}
        for arg in (hints[f.name], *typing.get_args(hints[f.name])):
            if dataclasses.is_dataclass(arg) and isinstance(arg, type):
                out |= _keys(arg)
    return out


SCHEMA_KEYS = sorted(_keys(Config))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "never",
            "10m",
            "500ms",
            "127.0.0.1:1812",
            "10.0.0.0/8",
            "ldap://h",
            "sqlite:///x.db",
            "postgresql://h/db",
            "inline",
            "ldap",
            "validate",
        ]
    ),
)
KEYS = st.one_of(st.sampled_from(SCHEMA_KEYS), st.text(max_size=8))
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=6)
    ),
    max_leaves=40,
)
TOKENS = st.sampled_from(
    [
        "\n",
        "  ",
        "- ",
        ": ",
        "{",
        "}",
        "[",
        "]",
        ",",
        "&a ",
        "*a",
        "<<: ",
        "!!int ",
        "!!binary ",
        "!!python/object:os.system ",
        "!!str ",
        "!custom ",
        "'",
        '"',
        "#",
        "|",
        ">",
        "?",
        "~",
        "otp:",
        "radius:",
        "clients:",
        "secret:",
        "skew:",
        "listen:",
        "http:",
        "1",
        "0x1F",
        "1e999",
        "never",
        "10m",
        "yes",
        "---",
        "...",
        "%YAML 1.1",
        "\t",
        "\\",
    ]
)


def _check(text: str | bytes) -> None:
    try:
        config = parse_config(text, source=SOURCE)
    except ConfigErrors as errors:
        assert errors.problems
        for problem in errors.problems:
            assert problem.file == SOURCE
            assert problem.line >= 0
            assert problem.path and problem.message
        return
    assert isinstance(config, Config)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(DOCUMENTS.map(lambda d: {"radius": d} if isinstance(d, list) else d))
def test_arbitrary_documents(document: object) -> None:
    """Random YAML documents using schema keys only ever yield Config or ConfigErrors."""
    _check(yaml.safe_dump(document))


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["otp", "radius", "http", "store", "primary", "policy", "selfservice", "logging"]
        ),
        DOCUMENTS,
        max_size=4,
    )
)
def test_arbitrary_sections(document: dict[str, object]) -> None:
    """Random content under the real section names never crashes the loader."""
    _check(yaml.safe_dump(document))


@settings(deadline=None)
@given(st.lists(TOKENS, max_size=40).map("".join))
def test_arbitrary_yaml_syntax(text: str) -> None:
    """Token soup (anchors, merges, tags, flow and block syntax) never crashes the loader."""
    _check(text)


@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    """Arbitrary bytes (bad encodings, control characters) never crash the loader."""
    _check(data)


def test_recursive_alias_and_merge_loops() -> None:
    """Self-referencing anchors and merge loops are problems, not hangs or crashes."""
    _check("otp: &a {pin: *a}\n")
    _check("a: &a {<<: *a}\n")
    _check("radius: &r {clients: [*r]}\n")


def test_deep_nesting() -> None:
    """Nesting deeper than the parser's recursion is a problem, not a crash."""
    _check("x: " + "[" * 5000 + "]" * 5000)


def test_billion_laughs_is_cheap() -> None:
    """Aliases are never expanded beyond the schema, so an alias bomb costs nothing."""
    lines = ['a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 20)]
    with pytest.raises(ConfigErrors):
        parse_config("\n".join(lines) + "\nradius: {listen: *a19}\n", source=SOURCE)


# ---------------------------------------------------------------- secrets never leak
SECRET_CASES = [
    'radius: {{clients: [{{name: a, address: 127.0.0.1, secret: ["{s}"]}}]}}',
    'radius: {{clients: [{{name: a, address: 127.0.0.1, secret: {{"{s}": 1}}}}]}}',
    'radius: {{clients: [{{name: a, address: 127.0.0.1, secret: "{s}", secret_file: x}}]}}',
    'radius: {{clients: [{{name: a, address: 127.0.0.1, secret: !!binary "{s}"}}]}}',
    'radius: {{clients: [{{name: a, address: "bad", secret: "{s}", otp_mode: x}}]}}',
    'radius: {{clients: [{{name: a, address: 127.0.0.1, secrett: "{s}"}}]}}',
    'radius:\n  clients:\n    - secret: "{s}\n',
    'radius:\n  clients:\n    - secret: "{s}\\q"\n',
    'store: {{url: "mysql://root:{s}@db/authd"}}',
    'store: {{url: "postgresql://root:{s}@db/authd"}}\nauth_threads: 0',
    "primary: {{backends: [{{type: ldap, bind_password: '{s}'}}]}}",
    "primary: {{backends: [{{type: local, bind_password: ['{s}']}}]}}",
    'http: {{api_keys: [{{name: a, key_sha256: "{s}", key_file: x}}]}}',
    'http: {{api_keys: [{{name: a, key_sha256: "{s}"}}]}}',
]


@settings(deadline=None)
@given(
    st.sampled_from(SECRET_CASES),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=12, max_size=40),
)
def test_secrets_never_in_error_text(template: str, secret: str) -> None:
    """Whatever is wrong around a secret, the problems never repeat it."""
    with pytest.raises(ConfigErrors) as info:
        parse_config(template.format(s=secret), source=SOURCE)
    assert secret not in str(info.value)
    assert secret not in repr(info.value.problems)


def test_secret_file_content_never_in_errors_or_repr(
    tmp_path: Path, secret_file: Callable[..., str]
) -> None:
    """A secret read from a file shows neither in problems (bad mode) nor in the repr."""
    path = secret_file("s.secret", "file-secret-content-123", 0o644)
    text = f"radius: {{clients: [{{name: a, address: 127.0.0.1, secret_file: {path}}}]}}"
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, source=str(tmp_path / "authd.yaml"))
    assert "file-secret-content-123" not in str(info.value)
    Path(path).chmod(0o600)
    config = parse_config(text, source=str(tmp_path / "authd.yaml"))
    assert "file-secret-content-123" not in repr(config)
    assert "file-secret-content-123" not in str(config)
