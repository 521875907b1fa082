"""Helpers for config tests: write a YAML file (and secret files) into tmp_path."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from authd.config.errors import ConfigErrors
from authd.config.model import Config
from authd.config.parse import load_config


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], str]:
    """Write dedented YAML to tmp_path/authd.yaml and return its path."""

    def write(text: str) -> str:
        path = tmp_path / "authd.yaml"
        path.write_text(textwrap.dedent(text))
        return str(path)

    return write


@pytest.fixture
def secret_file(tmp_path: Path) -> Callable[..., str]:
    """Write a file with the given content and mode; return its absolute path."""

    def write(name: str, content: str, mode: int = 0o600) -> str:
        path = tmp_path / name
        path.write_text(content)
        os.chmod(path, mode)
        return str(path)

    return write


@pytest.fixture
def load(write_config: Callable[[str], str]) -> Callable[[str], Config]:
    """Write YAML and load it in one step."""

    def run(text: str) -> Config:
        return load_config(write_config(text))

    return run


@pytest.fixture
def problems(write_config: Callable[[str], str]) -> Callable[[str], list[tuple[int, str, str]]]:
    """Write YAML that must fail; return its problems as (line, path, message)."""

    def run(text: str) -> list[tuple[int, str, str]]:
        with pytest.raises(ConfigErrors) as info:
            load_config(write_config(text))
        return [(p.line, p.path, p.message) for p in info.value.problems]

    return run
