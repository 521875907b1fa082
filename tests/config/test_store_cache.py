"""`store.cache_size` and `store.mmap_size`: SQLite's page cache and memory map, MiB."""

from __future__ import annotations

from collections.abc import Callable

from authd.config.model import Config

Load = Callable[[str], Config]
Problems = Callable[[str], list[tuple[int, str, str]]]


def test_cache_size_is_read_and_bounded(load: Load, problems: Problems) -> None:
    """Both are MiB with defaults; values out of bounds are refused with their line."""
    assert (Config().store.cache_size, Config().store.mmap_size) == (64, 2047)
    assert load("store: {cache_size: 256, mmap_size: 0}").store.cache_size == 256
    assert problems("store: {cache_size: 0, mmap_size: 4096}") == [
        (1, "store.cache_size", "must be at least 1, got 0"),
        (1, "store.mmap_size", "must be at most 2047, got 4096"),
    ]
