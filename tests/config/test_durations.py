"""Durations: the units operators write, the bounds, and the exact round trip."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authd.config.durations import MAX_SECONDS, UNITS, format_duration, parse_duration
from authd.config.errors import ConfigValueError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("90d", 90 * 86400.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("45", 45.0),
        (" 7 d ", 7 * 86400.0),
        ("0", 0.0),
        (12, 12.0),
        (0.25, 0.25),
    ],
)
def test_units(text: object, seconds: float) -> None:
    """Every documented unit, a bare number of seconds, and YAML numbers parse."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "s", "10x", "-5s", "1e3", "10 minutes", "1h30m", "٣s", "inf", "nan", "1.s", "never"],
)
def test_rejected_text(text: str) -> None:
    """Malformed text, negatives, other scripts' digits and `never` (not allowed) fail."""
    with pytest.raises(ConfigValueError):
        parse_duration(text)


@pytest.mark.parametrize("value", [True, False, None, [], -1, float("inf"), float("nan"), 10**400])
def test_rejected_values(value: object) -> None:
    """Booleans, non-finite, negative and absurdly large numbers are config errors."""
    with pytest.raises(ConfigValueError):
        parse_duration(value)


def test_never_only_when_allowed() -> None:
    """`never` means None where the field allows it, any case."""
    assert parse_duration("never", allow_never=True) is None
    assert parse_duration("Never", allow_never=True) is None
    with pytest.raises(ConfigValueError, match="not allowed"):
        parse_duration("never")


def test_upper_bound() -> None:
    """The bound keeps values finite: MAX_SECONDS passes, one more fails."""
    assert parse_duration(MAX_SECONDS) == MAX_SECONDS
    with pytest.raises(ConfigValueError, match="longer than"):
        parse_duration(MAX_SECONDS + 1)
    with pytest.raises(ConfigValueError):
        parse_duration("9" * 500 + "d")


@given(st.text())
def test_arbitrary_text_only_raises_config_error(text: str) -> None:
    """Whatever the text, the parser returns a finite duration or raises ConfigValueError."""
    try:
        value = parse_duration(text, allow_never=True)
    except ConfigValueError:
        return
    assert value is None or (math.isfinite(value) and 0 <= value <= MAX_SECONDS)


@given(st.integers(min_value=0, max_value=10**7), st.sampled_from(sorted(UNITS)))
def test_generated_durations_parse_exactly(number: int, unit: str) -> None:
    """`N<unit>` parses to exactly N times the unit (ms is the float nearest N/1000)."""
    expected = number / 1000 if unit == "ms" else float(number * int(UNITS[unit]))
    if expected > MAX_SECONDS:
        with pytest.raises(ConfigValueError):
            parse_duration(f"{number}{unit}")
    else:
        assert parse_duration(f"{number}{unit}") == expected


@given(st.floats(min_value=0, max_value=MAX_SECONDS, allow_nan=False))
def test_format_round_trips(seconds: float) -> None:
    """format_duration writes text that parses back to exactly the same float."""
    assert parse_duration(format_duration(seconds)) == seconds


def test_format_picks_largest_unit() -> None:
    """Messages show 7d, not 604800s."""
    assert format_duration(7 * 86400.0) == "7d"
    assert format_duration(7200.0) == "2h"
    assert format_duration(90.0) == "90s"
    assert format_duration(0.5) == "0.5s"
    assert format_duration(None) == "never"
