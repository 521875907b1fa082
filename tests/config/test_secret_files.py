"""`NAME_file` secrets and private key files: read once, owner-only, never echoed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from authd.config.model import Config, Secret

Load = Callable[[str], Config]
Problems = Callable[[str], list[tuple[int, str, str]]]
SecretFile = Callable[..., str]

CLIENT = """
radius:
  clients:
    - name: a
      address: 127.0.0.1
      {key}: {value}
"""


def test_secret_file_is_read_and_stripped(load: Load, secret_file: SecretFile) -> None:
    """The file's content minus its trailing newline becomes the Secret."""
    path = secret_file("radius.secret", "from-a-file\n")
    config = load(CLIENT.format(key="secret_file", value=path))
    assert config.radius.clients[0].secret == Secret("from-a-file")


def test_relative_secret_file(load: Load, secret_file: SecretFile) -> None:
    """A relative secret_file is found next to the config file, whatever the cwd."""
    secret_file("radius.secret", "relative\r\n")
    config = load(CLIENT.format(key="secret_file", value="radius.secret"))
    assert config.radius.clients[0].secret == Secret("relative")


def test_bind_password_file(load: Load, secret_file: SecretFile) -> None:
    """Any secret_file field works by the NAME_file rule, e.g. bind_password_file."""
    path = secret_file("bind.pw", "bind-pw")
    config = load(
        f"""
        primary:
          backends:
            - type: ldap
              servers: [{{url: "ldap://127.0.0.1"}}]
              user_search: {{base: "dc=x"}}
              bind_dn: "cn=svc,dc=x"
              bind_password_file: {path}
        """
    )
    assert config.primary.backends[0].bind_password == Secret("bind-pw")


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o660, 0o602])
def test_group_or_world_access_rejected(
    problems: Problems, secret_file: SecretFile, mode: int
) -> None:
    """A secret file others can read (or write) is an error naming file and mode."""
    path = secret_file("radius.secret", "leaky-content-xyz", mode)
    found = problems(CLIENT.format(key="secret_file", value=path))
    assert len(found) == 1
    line, key_path, message = found[0]
    assert (line, key_path) == (6, "radius.clients[0].secret_file")
    assert path in message
    assert f"{mode:04o}" in message
    assert "leaky-content-xyz" not in message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_modes_accepted(load: Load, secret_file: SecretFile, mode: int) -> None:
    """0600 and 0400 are fine."""
    path = secret_file("radius.secret", "fine", mode)
    assert load(CLIENT.format(key="secret_file", value=path)).radius.clients[0].secret


def test_missing_secret_file(problems: Problems, tmp_path: Path) -> None:
    """A missing file names the absolute path it looked for."""
    found = problems(CLIENT.format(key="secret_file", value="missing.secret"))
    assert found == [
        (
            6,
            "radius.clients[0].secret_file",
            f"cannot read {tmp_path / 'missing.secret'}: No such file or directory",
        )
    ]


def test_secret_and_secret_file_both_given(problems: Problems, secret_file: SecretFile) -> None:
    """Both forms at once is ambiguous: one problem, the inline value not repeated."""
    path = secret_file("radius.secret", "file-secret")
    found = problems(
        f"""
        radius:
          clients:
            - name: a
              address: 127.0.0.1
              secret: inline-secret-value
              secret_file: {path}
        """
    )
    assert found == [(6, "radius.clients[0].secret", "give either secret or secret_file, not both")]


def test_empty_and_non_regular_files(
    problems: Problems, secret_file: SecretFile, tmp_path: Path
) -> None:
    """An empty file (or only a newline) and a directory are not secrets."""
    path = secret_file("empty.secret", "\n")
    assert problems(CLIENT.format(key="secret_file", value=path)) == [
        (6, "radius.clients[0].secret_file", f"{path} is empty")
    ]
    folder = tmp_path / "dir.secret"
    folder.mkdir(mode=0o700)
    assert problems(CLIENT.format(key="secret_file", value=folder)) == [
        (6, "radius.clients[0].secret_file", f"{folder} is not a regular file")
    ]


def test_empty_inline_secret(problems: Problems) -> None:
    """`secret: ""` is not a secret."""
    assert problems(CLIENT.format(key="secret", value='""')) == [
        (6, "radius.clients[0].secret", "is empty")
    ]


def test_api_key_file_must_be_private(
    load: Load, problems: Problems, secret_file: SecretFile
) -> None:
    """http.api_keys[].key_file resolves to an absolute path and must be owner-only."""
    good = secret_file("good.key", "k" * 32)
    config = load("http: {api_keys: [{name: a, key_file: good.key, scopes: [validate]}]}")
    assert config.http.api_keys[0].key_file == good
    bad = secret_file("bad.key", "k" * 32, 0o644)
    found = problems(f"http: {{api_keys: [{{name: a, key_file: {bad}}}]}}")
    assert found == [
        (
            1,
            "http.api_keys[0].key_file",
            f"{bad} is readable or writable by group or others (mode 0644); chmod 600 it",
        )
    ]


def test_secret_file_not_utf8(problems: Problems, tmp_path: Path) -> None:
    """A binary file is reported without its bytes."""
    path = tmp_path / "bin.secret"
    path.write_bytes(b"\xff\xfe\x00secret")
    os.chmod(path, 0o600)
    assert problems(CLIENT.format(key="secret_file", value=path)) == [
        (6, "radius.clients[0].secret_file", f"{path} is not UTF-8 text")
    ]
