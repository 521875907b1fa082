"""glibc's mmap threshold is fixed at start where the C library is glibc, and left
alone elsewhere."""

from __future__ import annotations

import os

import pytest

from authd import allocator


class _FakeLibc:
    def __init__(self, answer: int) -> None:
        self.calls: list[tuple[int, int]] = []
        self._answer = answer

    class _Fn:
        def __init__(self, owner: _FakeLibc) -> None:
            self._owner = owner
            self.argtypes: object = None
            self.restype: object = None

        def __call__(self, option: int, value: int) -> int:
            self._owner.calls.append((option, value))
            return self._owner._answer

    @property
    def mallopt(self) -> _FakeLibc._Fn:
        return _FakeLibc._Fn(self)


def test_the_threshold_is_fixed_on_glibc() -> None:
    """This machine (Debian) runs glibc: the real mallopt accepts the option."""
    assert os.confstr("CS_GNU_LIBC_VERSION"), "tests run on Debian, whose C library is glibc"
    assert allocator.fix_mmap_threshold(environ={}) is True
    fake = _FakeLibc(answer=1)
    other_tunable = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    assert allocator.fix_mmap_threshold(fake, environ=other_tunable) is True
    assert fake.calls == [(-3, 128 * 1024)]


def test_nothing_is_changed_where_the_c_library_is_not_glibc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """musl and others: glibc's option number could mean something else there."""
    monkeypatch.setattr(allocator.os, "confstr", lambda name: None)
    fake = _FakeLibc(answer=1)
    assert allocator.fix_mmap_threshold(fake, environ={}) is False
    assert fake.calls == []


@pytest.mark.parametrize("environ", [
    {"MALLOC_MMAP_THRESHOLD_": "262144"},
    {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=262144"},
])
def test_an_operators_own_threshold_is_kept(environ: dict[str, str]) -> None:
    """glibc read the environment at start; mallopt would silently replace that choice."""
    fake = _FakeLibc(answer=1)
    assert allocator.fix_mmap_threshold(fake, environ=environ) is False
    assert fake.calls == []


def test_a_refused_or_missing_mallopt_is_reported_not_raised() -> None:
    assert allocator.fix_mmap_threshold(_FakeLibc(answer=0), environ={}) is False
    assert allocator.fix_mmap_threshold(object(), environ={}) is False
