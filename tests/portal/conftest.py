"""A live portal per test: the HTTP test app with the portal mounted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.portal.harness import start_portal
from tests.rest.harness import App


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    """Users alice (TOTP, seed SEED) and nora (no token), password PASSWORD."""
    a = start_portal(tmp_path)
    # Session and enrollment times read this clock; start it at the engine's (real) time.
    a.clock.advance(time.time() - a.clock.seconds())
    a.add_user("alice", token="totp")
    a.add_user("nora", token=None)
    try:
        yield a
    finally:
        a.close()
    assert a.clock.getDelayedCalls() == []
