"""The decision test world's fixtures (tests/world.py) for this directory."""

from tests.world import fake_world, paused_or_not_world, sqlite_world, world

__all__ = ["fake_world", "paused_or_not_world", "sqlite_world", "world"]
