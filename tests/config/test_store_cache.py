"""`store.cache_size`: SQLite's page cache per connection, in MiB."""

from __future__ import annotations

from collections.abc import Callable

from authd.config.model import Config

Load = Callable[[str], Config]
Problems = Callable[[str], list[tuple[int, str, str]]]


def test_cache_size_is_read_and_bounded(load: Load, problems: Problems) -> None:
    """`store.cache_size` is MiB with a default; 0 is refused with its line."""
    assert Config().store.cache_size == 64
    assert load("store: {cache_size: 256}").store.cache_size == 256
    assert problems("store: {cache_size: 0}") == [
        (1, "store.cache_size", "must be at least 1, got 0")
    ]
