"""Fixtures for the HTTP front-end tests: a live app on loopback per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rest.harness import App, start_app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    """The HTTP front-end with wide limits, users alice (TOTP) and hank (HOTP)."""
    a = start_app(tmp_path)
    a.add_user("alice", token="totp")
    a.add_user("hank", token="hotp")
    try:
        yield a
    finally:
        a.close()
    assert a.clock.getDelayedCalls() == []
