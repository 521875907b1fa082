"""glibc's malloc with a fixed mmap threshold, so that large blocks go back to the
system when freed.

By default glibc raises its mmap threshold each time a mapped block is freed (up to 32
MiB); later blocks of that size then come from the heap. A daemon that rebuilds large
blocks over and over (most likely the tables of dicts with 100,000 entries as bounded
caches churn) grows that heap in steps: a 5-minute soak grew 295 -> 313 MiB with the
default, and stayed flat with the threshold fixed (docs/PERFORMANCE.md). Setting the
threshold with mallopt also turns the adjustment off. An operator who set the threshold
in the environment (`MALLOC_MMAP_THRESHOLD_` or the `glibc.malloc.mmap_threshold`
tunable) keeps it.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from typing import Any

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024  # glibc's starting value, kept fixed


def _is_glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError, AttributeError):
        return False


def _operator_chose(environ: Mapping[str, str]) -> bool:
    return ("MALLOC_MMAP_THRESHOLD_" in environ
            or "glibc.malloc.mmap_threshold" in environ.get("GLIBC_TUNABLES", ""))


def fix_mmap_threshold(libc: Any = None, environ: Mapping[str, str] = os.environ) -> bool:
    """Fix the threshold where the C library is glibc; True when it was set. Elsewhere
    (musl, macOS) nothing is changed: the option number is glibc's own. Nor when the
    environment already chose a threshold: glibc applied it at start."""
    if not _is_glibc() or _operator_chose(environ):
        return False
    try:
        mallopt = (libc if libc is not None else ctypes.CDLL(None)).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1)
