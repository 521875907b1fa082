"""How one typed string splits into password, PIN and second-factor candidates.

RADIUS PAP carries a single User-Password, so `inline` users type the password followed
by the OTP (with the server-side PIN before or after it) or by a backup code. The split
is ambiguous (passwords may end in digits, PINs have several lengths), so this module
yields every plausible reading; the engine keeps the one whose second factor matches.
Pure: no I/O, no clock, no secrets logged.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

# A backup code, separators included, is never longer than this; bounds the suffix scan.
MAX_BACKUP_TEXT = 32


class SecondKind(enum.StrEnum):
    OTP = "otp"
    BACKUP = "backup"


@dataclass(frozen=True)
class PinRule:
    """Where the user's PIN sits relative to the OTP and how long it may be."""

    position: Literal["before", "after"]
    min_length: int
    max_length: int


@dataclass(slots=True)  # not frozen: see authd.auth.interfaces
class Candidate:
    """One reading of the typed string. Holds secrets: never log or repr the fields."""

    password: str = field(repr=False)
    pin: str = field(repr=False)
    second: str = field(repr=False)
    kind: SecondKind


def _digits(text: str) -> bool:
    # str.isdigit() accepts non-ASCII digits (e.g. Arabic-Indic); OTPs are ASCII only.
    return text.isascii() and text.isdigit()


def _otp_candidates(
    typed: str, with_password: bool, lengths: list[int], pin: PinRule | None
) -> Iterator[Candidate]:
    pin_lengths = range(pin.min_length, pin.max_length + 1) if pin is not None else [0]
    for n in lengths:
        for p in pin_lengths:
            tail_len = n + p
            if tail_len > len(typed) or (not with_password and tail_len != len(typed)):
                continue
            tail = typed[len(typed) - tail_len :]
            if pin is not None and pin.position == "after":
                otp, pin_text = tail[:n], tail[n:]
            else:
                pin_text, otp = tail[:p], tail[p:]
            if not _digits(otp) or (p and not _digits(pin_text)):
                continue
            yield Candidate(typed[: len(typed) - tail_len], pin_text, otp, SecondKind.OTP)


def _backup_candidates(
    typed: str, with_password: bool, normalize: Callable[[str], str | None]
) -> Iterator[Candidate]:
    if not with_password:
        code = normalize(typed)
        if code is not None:
            yield Candidate("", "", code, SecondKind.BACKUP)
        return
    # Shortest suffix first: a longer one that still normalises only adds separators
    # taken from the end of the password ("pass-" + "k7wq9-xhem3-tfab2").
    for n in range(1, min(MAX_BACKUP_TEXT, len(typed)) + 1):
        code = normalize(typed[len(typed) - n :])
        if code is not None:
            yield Candidate(typed[: len(typed) - n], "", code, SecondKind.BACKUP)


def split_candidates(
    typed: str,
    *,
    with_password: bool,
    otp_lengths: Iterable[int],
    pin: PinRule | None,
    backup_code: Callable[[str], str | None] | None = None,
) -> Iterator[Candidate]:
    """Every plausible (password, PIN, second factor) reading of `typed`.

    with_password: the string starts with the password (first factor `chain`, inline);
    otherwise it is exactly [PIN+]OTP or a backup code. otp_lengths: the digit counts of
    the user's tokens. pin: the user's PIN rule, None when the user has no PIN. A backup
    code never carries a PIN (CONTRACT: "password followed by a backup code").
    backup_code: normalises a backup code or returns None when the text is not one;
    None when the user has no backup codes left. OTP readings come first, longest OTP
    first, then shortest PIN first; backup readings last, shortest suffix first.
    """
    lengths = sorted({n for n in otp_lengths if n > 0}, reverse=True)
    yield from _otp_candidates(typed, with_password, lengths, pin)
    if backup_code is not None:
        yield from _backup_candidates(typed, with_password, backup_code)


def default_password(typed: str, otp_length: int, pin_length: int = 0) -> str:
    """The likeliest password when no reading matched: `typed` minus an OTP of the
    default length (and a PIN of `pin_length`), so a wrong OTP after a right password
    still counts as a second-factor failure for lockout."""
    return typed[: max(0, len(typed) - otp_length - pin_length)]
