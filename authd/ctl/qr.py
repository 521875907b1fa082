"""QR codes for `authctl token add --qr` / `--qr-file`: the otpauth:// URI, which holds the
token's secret, as a picture an authenticator app scans.

Scanners want dark modules on a light ground with a light quiet zone around (ISO/IEC
18004: four modules). A terminal draws in its own colours, so an uncoloured code scans
on one theme only (on a light one it comes out inverted); the terminal code therefore
sets both colours on every character, the quiet zone included. Files are PNG or SVG by
extension, with an opaque light background, and 0600 since they hold the secret.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import segno

QUIET_ZONE = 4  # modules of light margin (ISO/IEC 18004 §6.3.8)
FILE_KINDS = {".png": "png", ".svg": "svg"}
# Black on bright white, set explicitly (SGR 30/107), reset at the end of every line so
# the background does not bleed into the rest of the terminal.
_COLOURS = "\x1b[30;107m"
_RESET = "\x1b[0m"
# Two module rows per character row: (top dark, bottom dark) -> block character.
_HALF_BLOCKS = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}


def _code(uri: str) -> segno.QRCode:
    import segno  # here: only the commands that draw a code pay for the import

    return segno.make(uri, error="m")


def modules(uri: str) -> list[list[bool]]:
    """The code's modules (True = dark), quiet zone included, row by row."""
    rows = _code(uri).matrix_iter(scale=1, border=QUIET_ZONE)
    return [[bool(m) for m in row] for row in rows]


def terminal_lines(uri: str) -> list[str]:
    """The code as text lines for a terminal: Unicode half blocks, two module rows per
    line, in explicit dark-on-light colours so it scans on light and dark themes."""
    grid = modules(uri)
    if len(grid) % 2:
        grid.append([False] * len(grid[0]))  # a light row under the last one
    return [
        _COLOURS
        + "".join(_HALF_BLOCKS[top, bottom] for top, bottom in zip(upper, lower, strict=True))
        + _RESET
        for upper, lower in zip(grid[::2], grid[1::2], strict=True)
    ]


def file_kind(path: str) -> str:
    """`png` or `svg` from the file name; ValueError for any other extension."""
    kind = FILE_KINDS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise ValueError(f"{path}: a QR code file ends in .png or .svg")
    return kind


def write_file(uri: str, path: str) -> None:
    """Write the code to `path` (PNG or SVG by extension), created or truncated 0600:
    the picture holds the token's secret. OSError when it cannot be written."""
    kind = file_kind(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode otherwise
    with os.fdopen(fd, "wb") as out:
        _code(uri).save(out, kind=kind, scale=8, border=QUIET_ZONE, dark="#000", light="#fff")
