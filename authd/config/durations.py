"""Durations as operators write them: `30s`, `10m`, `2h`, `90d`, `500ms`, or seconds.

Parsed through `Decimal` so `500ms` is exactly the float nearest 0.5, and bounded so no
input can overflow or produce inf/nan. `format_duration` is the inverse used in messages
and by `authctl`: `parse_duration(format_duration(x)) == x` for every value accepted.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

from authd.config.errors import ConfigValueError

#: Seconds per unit; the unit names are part of the config file format.
UNITS: dict[str, Decimal] = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}

#: No setting needs more than this; the bound keeps every value a finite float.
MAX_SECONDS = 100 * 365 * 86400

NEVER = "never"

# ASCII digits only: str.isdigit() and \d accept other scripts' digits.
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)[ \t]*(ms|s|m|h|d)?", re.ASCII)
_EXAMPLE = "write e.g. 30s, 10m, 2h, 90d, 500ms or a number of seconds"


def _show(text: str) -> str:
    """A short, quoted rendering of what was written (durations are never secret)."""
    return repr(text if len(text) <= 32 else text[:29] + "...")


def _checked(seconds: Decimal | float | int, shown: str) -> float:
    if isinstance(seconds, float) and not math.isfinite(seconds):
        raise ConfigValueError(f"{shown} is not a finite duration")
    if seconds < 0:
        raise ConfigValueError(f"{shown} is negative; durations are zero or more")
    if seconds > MAX_SECONDS:
        raise ConfigValueError(f"{shown} is longer than {MAX_SECONDS // 86400}d")
    return float(seconds)


def parse_duration(value: object, *, allow_never: bool = False) -> float | None:
    """Seconds as a float, or None for `never` (only when allow_never).

    Accepts an int/float (seconds) or a string; raises only ConfigValueError.
    """
    if isinstance(value, bool):
        raise ConfigValueError(f"expected a duration, got true/false; {_EXAMPLE}")
    if isinstance(value, int | float):
        return _checked(value, repr(value))
    if not isinstance(value, str):
        raise ConfigValueError(f"expected a duration; {_EXAMPLE}")
    text = value.strip()
    if text.lower() == NEVER:
        if allow_never:
            return None
        raise ConfigValueError("`never` is not allowed here; give a duration")
    match = _DURATION.fullmatch(text)
    if match is None:
        hint = ", or never" if allow_never else ""
        raise ConfigValueError(f"{_show(text)} is not a duration; {_EXAMPLE}{hint}")
    number, unit = match.group(1), match.group(2) or "s"
    if len(number) > 400:  # bounds the work; far beyond any meaningful precision
        raise ConfigValueError(f"{_show(text)} has too many digits")
    try:
        seconds = Decimal(number) if unit == "s" else Decimal(number) * UNITS[unit]
    except InvalidOperation as exc:  # unreachable with the pattern above; fail closed
        raise ConfigValueError(f"{_show(text)} is not a duration") from exc
    return _checked(seconds, _show(text))


def format_duration(seconds: float | None) -> str:
    """The shortest text that `parse_duration` reads back as exactly `seconds`."""
    if seconds is None:
        return NEVER
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError("durations are finite and not negative")
    if float(seconds).is_integer():
        whole = int(seconds)
        for unit in ("d", "h", "m"):
            size = int(UNITS[unit])
            if whole and whole % size == 0:
                return f"{whole // size}{unit}"
        return f"{whole}s"
    # repr() is the shortest string that round-trips; Decimal avoids exponent notation.
    return f"{Decimal(repr(seconds)):f}s"
