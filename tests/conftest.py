"""Fixtures shared by the whole suite live in tests/fixtures/, one module per peer."""

pytest_plugins = [
    "tests.fixtures.clock",
    "tests.fixtures.postgres",
    "tests.fixtures.stores",
    "tests.fixtures.slapd",
    "tests.fixtures.radius",
    "tests.fixtures.pools",
    "tests.fixtures.radsec",
    "tests.fixtures.logs",
]


def pytest_configure(config: object) -> None:
    """Refuse to test stale compiled modules: an extension module (setup.py compiles the
    hot path in place) older than its source would silently run the old code."""
    from pathlib import Path

    import pytest

    package = Path(__file__).resolve().parents[1] / "authd"
    stale = [
        str(source.relative_to(package.parent))
        for compiled in package.rglob("*.so")
        if (source := compiled.with_name(compiled.name.split(".", 1)[0] + ".py")).exists()
        and source.stat().st_mtime > compiled.stat().st_mtime
    ]
    if stale:
        pytest.exit(
            f"compiled modules are older than their sources ({', '.join(sorted(stale))}): "
            "run scripts/test, which rebuilds them, or .venv/bin/pip install -e .",
            returncode=4,
        )


def pytest_unconfigure(config: object) -> None:
    """Fail fast, not hang: a test that leaves a non-daemon thread running (a Twisted
    ThreadPool not stopped) would make the interpreter wait for it at exit forever."""
    import os
    import sys
    import threading

    leftovers = [t for t in threading.enumerate()
                 if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    for thread in leftovers:
        thread.join(timeout=5)
    alive = [t.name for t in leftovers if t.is_alive()]
    if alive:
        sys.stderr.write(f"\nERROR: tests left threads running: {', '.join(alive)}\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)
