"""`user list` patterns (`*` the only wildcard, case-sensitive) as SQL conditions that
an index on the user name serves: the literal prefix before the first `*` becomes a
range in byte order, and the pattern itself (GLOB on SQLite, LIKE on PostgreSQL)
keeps the match exact within it.

Byte order: SQLite's BINARY collation and PostgreSQL's "C" compare UTF-8 bytes, and
UTF-8 byte order is code point order, so a range on code points is a range on bytes.
"""

from __future__ import annotations

_MAX_CODE_POINT = 0x10FFFF
# Code points UTF-8 cannot carry: no stored name holds one, so a bound skips them.
_SURROGATES = range(0xD800, 0xE000)


def glob_escape(pattern: str) -> str:
    """`*` stays a wildcard; GLOB's other metacharacters become literals via [x]."""
    return "".join(f"[{ch}]" if ch in "?[" else ch for ch in pattern)


def like_escape(pattern: str) -> str:
    """`*` becomes `%`; literal `%`, `_` and the escape char are escaped with `\\`."""
    out = []
    for ch in pattern:
        if ch in "\\%_":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        else:
            out.append(ch)
    return "".join(out)


def _successor(prefix: str) -> str | None:
    """The smallest string above every string that starts with `prefix`, or None when
    there is none (a prefix made only of the largest code point)."""
    while prefix:
        last = ord(prefix[-1]) + 1
        if last in _SURROGATES:
            last = _SURROGATES.stop
        if last <= _MAX_CODE_POINT:
            return prefix[:-1] + chr(last)
        prefix = prefix[:-1]
    return None


def prefix_bounds(pattern: str) -> tuple[str, str | None] | None:
    """(low, high): every name the pattern matches is >= low and, with high, < high;
    None when the pattern starts with `*` (no range: the caller scans, up to its limit).
    A pattern without `*` is one name: the caller compares for equality instead."""
    prefix = pattern.partition("*")[0]
    if not prefix:
        return None
    return prefix, _successor(prefix)
