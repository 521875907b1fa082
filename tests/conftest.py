"""Fixtures shared by the whole suite live in tests/fixtures/, one module per peer."""

pytest_plugins = [
    "tests.fixtures.clock",
    "tests.fixtures.postgres",
    "tests.fixtures.stores",
    "tests.fixtures.slapd",
    "tests.fixtures.radius",
]
