"""PIN policy and keyed PIN hashing."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authd.config.model import PinConfig
from authd.core.errors import InvalidInput
from authd.core.pin import check_pin_policy, hash_pin, is_trivial, verify_pin

KEY = b"p" * 32
DEFAULT = PinConfig()  # 4..8 digits, trivial refused


@pytest.mark.parametrize(
    "pin",
    ["0000", "1111", "99999999", "1234", "4321", "0123", "3210", "7890", "0987", "12345678",
     "87654321", "1212", "6969", "123123", "2580", "0852", "1004", "2000", "147258"],
)  # fmt: skip
def test_trivial_pins_refused(pin: str) -> None:
    """Same digit, runs (also wrapping 9-0), repeated blocks and very common PINs are refused
    by default and allowed with allow_trivial."""
    assert is_trivial(pin)
    assert check_pin_policy(pin, DEFAULT) is not None
    assert check_pin_policy(pin, PinConfig(allow_trivial=True)) is None


@pytest.mark.parametrize("pin", ["4827", "9051", "73914", "20481632", "1243"])
def test_ordinary_pins_accepted(pin: str) -> None:
    """PINs with no pattern pass the default policy."""
    assert not is_trivial(pin)
    assert check_pin_policy(pin, DEFAULT) is None


@pytest.mark.parametrize("pin", ["", "48a7", "48 27", "४८२७", "48²7", "-4827", "4827\n"])
def test_non_digits_refused(pin: str) -> None:
    """Only ASCII digits: no letters, blanks, signs, Unicode or superscript digits."""
    assert check_pin_policy(pin, PinConfig(allow_trivial=True)) == (
        "PIN must consist of digits 0-9 only"
    )


def test_length_limits() -> None:
    """min_length and max_length are inclusive bounds."""
    cfg = PinConfig(min_length=5, max_length=6, allow_trivial=True)
    assert check_pin_policy("4827", cfg) == "PIN must have at least 5 digits"
    assert check_pin_policy("48271", cfg) is None
    assert check_pin_policy("482719", cfg) is None
    assert check_pin_policy("4827193", cfg) == "PIN must have at most 6 digits"


@given(st.text(max_size=12))
def test_prop_policy_accepts_only_what_it_promises(pin: str) -> None:
    """Whatever the policy accepts is 4..8 ASCII digits and not trivial; reasons never
    contain the PIN itself."""
    reason = check_pin_policy(pin, DEFAULT)
    if reason is None:
        assert re.fullmatch(r"[0-9]{4,8}", pin)
        assert not is_trivial(pin)
    elif len(pin) >= 3:
        assert pin not in reason


@given(st.integers(0, 9), st.integers(4, 8))
def test_prop_all_same_digit_always_trivial(digit: int, length: int) -> None:
    """Every all-same-digit PIN of every allowed length is refused."""
    assert check_pin_policy(str(digit) * length, DEFAULT) is not None


@given(st.integers(0, 9), st.integers(4, 8), st.sampled_from([1, -1]))
def test_prop_runs_always_trivial(start: int, length: int, direction: int) -> None:
    """Every ascending or descending run (wrapping 9-0) is refused."""
    pin = "".join(str((start + direction * i) % 10) for i in range(length))
    assert check_pin_policy(pin, DEFAULT) is not None


def test_hash_and_verify() -> None:
    """A PIN verifies against its own hash only: not another PIN, user, key or format."""
    stored = hash_pin("4827", KEY, "alice")
    assert re.fullmatch(r"h1:[0-9a-f]{64}", stored)
    assert verify_pin("4827", stored, KEY, "alice")
    assert not verify_pin("4828", stored, KEY, "alice")
    assert not verify_pin("4827", stored, KEY, "bob")
    assert not verify_pin("4827", stored, b"q" * 32, "alice")
    assert not verify_pin("4827", stored.removeprefix("h1:"), KEY, "alice")
    assert not verify_pin("4827", "h2:" + stored[3:], KEY, "alice")
    assert not verify_pin("", hash_pin("", KEY, "alice"), KEY, "alice")
    assert not verify_pin("4827", "", KEY, "alice")
    assert not verify_pin("4827", "h1:ü", KEY, "alice")


def test_equal_pins_of_two_users_hash_differently() -> None:
    """The user name salts the hash, and the encoding keeps (user, pin) splits apart."""
    assert hash_pin("4827", KEY, "alice") != hash_pin("4827", KEY, "bob")
    assert hash_pin("14827", KEY, "a") != hash_pin("4827", KEY, "a1")
    assert "4827" not in hash_pin("4827", KEY, "alice")


def test_empty_key_refused() -> None:
    """Hashing without a pepper is refused (it would make the PIN space searchable offline)."""
    with pytest.raises(InvalidInput):
        hash_pin("4827", b"", "alice")
    assert not verify_pin("4827", hash_pin("4827", KEY, "alice"), b"", "alice")
