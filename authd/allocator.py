"""glibc's malloc with a fixed mmap threshold, so that large blocks go back to the
system when freed.

By default glibc raises its mmap threshold each time a mapped block is freed (up to 32
MiB); later blocks of that size then come from the heap. A daemon that rebuilds large
blocks over and over (most likely the tables of dicts with 100,000 entries as bounded
caches churn) grows that heap in steps: a 5-minute soak grew 295 -> 313 MiB with the
default, and stayed flat with the threshold fixed (docs/PERFORMANCE.md). Setting the
threshold with mallopt also turns the adjustment off.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024  # glibc's starting value, kept fixed


def _is_glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError, AttributeError):
        return False


def fix_mmap_threshold(libc: Any = None) -> bool:
    """Fix the threshold where the C library is glibc; True when it was set. Elsewhere
    (musl, macOS) nothing is changed: the option number is glibc's own."""
    if not _is_glibc():
        return False
    try:
        mallopt = (libc if libc is not None else ctypes.CDLL(None)).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1)
