"""Problem reporting: every problem at once, each with FILE:LINE: key.path: message."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from authd.config.errors import ConfigErrors, ConfigProblem
from authd.config.parse import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    load_config,
    parse_config,
    resolve_config_path,
)

Problems = Callable[[str], list[tuple[int, str, str]]]


def test_three_mistakes_three_problems(write_config: Callable[[str], str]) -> None:
    """Three independent mistakes give exactly three problems, in line order, formatted."""
    path = write_config(
        """\
        # a comment
        otp:
          totp:
            skew: 3 fortnights
        radius:
          clients:
            - name: vpn
              address: 10.0.0.0/8
              secret: ok-secret
              otp_mode: sometimes
        logging:
          levle: debug
        """
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    problems = info.value.problems
    assert [(p.file, p.line, p.path) for p in problems] == [
        (path, 4, "otp.totp.skew"),
        (path, 10, "radius.clients[0].otp_mode"),
        (path, 12, "logging.levle"),
    ]
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert lines[2] == f"{path}:12: logging.levle: unknown key; did you mean 'level'?"


def test_problem_str_format() -> None:
    """A problem prints as FILE:LINE: key.path: message (the check-config line)."""
    problem = ConfigProblem("/etc/authd/authd.yaml", 7, "radius.clients[0].secret", "missing")
    assert str(problem) == "/etc/authd/authd.yaml:7: radius.clients[0].secret: missing"


def test_unknown_keys_everywhere(problems: Problems) -> None:
    """Unknown keys at the top, in sections and in list items are all reported."""
    found = problems(
        """
        stor: {}
        otp: {isuer: x}
        radius:
          clients:
            - {name: a, address: 127.0.0.1, secret: s, colour: red}
        """
    )
    assert found == [
        (2, "stor", "unknown key; did you mean 'store'?"),
        (3, "otp.isuer", "unknown key; did you mean 'issuer'?"),
        (6, "radius.clients[0].colour", "unknown key"),
    ]


def test_duplicate_key(problems: Problems) -> None:
    """A key given twice is an error naming the first line (YAML would keep the last)."""
    assert problems("auth_threads: 4\nauth_threads: 8\n") == [
        (2, "auth_threads", "duplicate key (first on line 1)")
    ]


def test_non_text_key(problems: Problems) -> None:
    """Mapping keys must be text."""
    assert problems("otp: {1: x}") == [(1, "otp", "keys must be text, not an integer")]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("otp:\n  issuer: [unclosed\n", 3),
        ("a: b\n  c: d\n", 2),
        ("key: 'no end\n", 2),
        ("---\na: 1\n---\nb: 2\n", 3),
        ("x: *nowhere\n", 1),
    ],
)
def test_yaml_syntax_errors(problems: Problems, text: str, line: int) -> None:
    """Syntax errors are ConfigErrors with the parser's line, like any other problem."""
    found = problems(text)
    assert len(found) == 1
    assert found[0][0] == line
    assert found[0][1] == "(yaml)"
    assert found[0][2].startswith("invalid YAML: ")


@pytest.mark.parametrize("data", [b"\xfd not utf-8 \x80", b"a: \x00\x01"])
def test_undecodable_bytes(tmp_path: Path, data: bytes) -> None:
    """Undecodable bytes and control characters are one problem at line 0."""
    path = tmp_path / "authd.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigErrors) as info:
        load_config(str(path))
    assert [(p.line, p.path) for p in info.value.problems] == [(0, "(yaml)")]


def test_utf16_with_bom_is_read(tmp_path: Path) -> None:
    """YAML allows UTF-16 with a byte order mark; so do we."""
    path = tmp_path / "authd.yaml"
    path.write_bytes("auth_threads: 4\n".encode("utf-16"))
    assert load_config(str(path)).auth_threads == 4


def test_top_level_must_be_a_mapping(problems: Problems) -> None:
    """A list or a scalar as the whole document is one problem."""
    assert problems("- a\n- b\n") == [(1, "(yaml)", "expected a mapping, got a list")]


def test_missing_file(tmp_path: Path) -> None:
    """A missing file is reported as FILE:0 like any other problem."""
    path = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    assert str(info.value) == f"{path}:0: (file): cannot read: No such file or directory"


def test_unreadable_file(tmp_path: Path) -> None:
    """A directory (or an unreadable file) is reported the same way."""
    with pytest.raises(ConfigErrors) as info:
        load_config(str(tmp_path))
    assert info.value.problems[0].line == 0
    assert "cannot read" in info.value.problems[0].message


def test_parse_config_from_text(tmp_path: Path) -> None:
    """parse_config validates text as if it were the file `source` (for tests, reload)."""
    config = parse_config("keys: {file: k.json}", source=str(tmp_path / "authd.yaml"))
    assert config.keys.file == str(tmp_path / "k.json")
    assert config.source == str(tmp_path / "authd.yaml")


def test_resolve_config_path() -> None:
    """-c wins, then $AUTHD_CONFIG, then /etc/authd/authd.yaml."""
    assert resolve_config_path("/x.yaml", {CONFIG_ENV: "/y.yaml"}) == "/x.yaml"
    assert resolve_config_path(None, {CONFIG_ENV: "/y.yaml"}) == "/y.yaml"
    assert resolve_config_path(None, {CONFIG_ENV: ""}) == DEFAULT_CONFIG_PATH
    assert resolve_config_path(None, {}) == DEFAULT_CONFIG_PATH == "/etc/authd/authd.yaml"


def test_resolve_config_path_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping the process environment is used."""
    monkeypatch.setenv(CONFIG_ENV, "/from/env.yaml")
    assert resolve_config_path(None) == "/from/env.yaml"
    monkeypatch.delenv(CONFIG_ENV)
    assert resolve_config_path(None) == DEFAULT_CONFIG_PATH


def test_errors_collect_across_sections_and_checks(problems: Problems) -> None:
    """Type errors and cross-field problems come out of the same single pass."""
    found = problems(
        """
        otp:
          pin: {min_length: 9, max_length: 6}
        radius:
          clients:
            - {name: a, address: 10.0.0.0/8}
        auth_threads: many
        """
    )
    assert [(line, path) for line, path, _ in found] == [
        (3, "otp.pin.min_length"),
        (6, "radius.clients[0].secret"),
        (7, "auth_threads"),
    ]


def test_bad_field_does_not_cascade(problems: Problems, tmp_path: Path) -> None:
    """A broken secret_file is one problem, not also "a client needs a secret"."""
    found = problems(
        f"""
        radius:
          clients:
            - name: a
              address: 10.0.0.0/8
              secret_file: {tmp_path / "absent"}
            - not-a-mapping
        """
    )
    assert [(line, path) for line, path, _ in found] == [
        (6, "radius.clients[0].secret_file"),
        (7, "radius.clients[1]"),
    ]


def test_problem_files_are_named_as_given(write_config: Callable[[str], str]) -> None:
    """Problems name the file as it was given to load_config."""
    path = write_config("auth_threads: 0")
    rel = os.path.relpath(path)
    with pytest.raises(ConfigErrors) as info:
        load_config(rel)
    assert str(info.value).startswith(f"{rel}:1: auth_threads: ")
