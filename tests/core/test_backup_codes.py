"""Backup codes: entropy, alphabet, normal form, keyed hash, and no confusion with OTPs."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authd.core.backup_codes import (
    ALPHABET,
    CODE_LENGTH,
    generate_codes,
    hash_code,
    normalize_code,
)
from authd.core.errors import InvalidInput
from authd.core.otp import MAX_DIGITS, MIN_DIGITS, is_code_shaped

KEY = b"k" * 32
PRINTED = re.compile(r"^[a-z2-9]{5}-[a-z2-9]{5}-[a-z2-9]{5}$")


def test_alphabet_has_no_look_alikes_and_enough_entropy() -> None:
    """No 0/O/1/l/I (in either case) and at least 60 bits per code."""
    assert not set("0oO1lLiI") & set(ALPHABET)
    assert len(set(ALPHABET)) == len(ALPHABET)
    assert CODE_LENGTH * math.log2(len(ALPHABET)) >= 60


def test_generated_codes_printed_in_groups_and_distinct() -> None:
    """A set has the requested number of distinct codes, each in the grouped printed form."""
    codes = generate_codes(50)
    assert len(codes) == 50 == len(set(codes))
    assert all(PRINTED.match(c) for c in codes)
    assert all(set(c.replace("-", "")) <= set(ALPHABET) for c in codes)


def test_generated_codes_use_the_whole_alphabet() -> None:
    """The CSPRNG draw reaches every symbol (2000 codes x 15 symbols: all 31 appear)."""
    symbols = set("".join(generate_codes(2000)).replace("-", ""))
    assert symbols == set(ALPHABET)


def test_generate_refuses_empty_set() -> None:
    """A set of zero codes is a caller bug."""
    with pytest.raises(InvalidInput):
        generate_codes(0)


@pytest.mark.parametrize("variant", [str.upper, lambda c: c.replace("-", " "),
                                     lambda c: c.replace("-", ""), lambda c: f" {c} "])  # fmt: skip
def test_normalize_accepts_how_people_type(variant: Callable[[str], str]) -> None:
    """Upper case, spaces instead of dashes, no separators, surrounding blanks: one normal form."""
    code = generate_codes(1)[0]
    assert normalize_code(variant(code)) == code.replace("-", "")


@pytest.mark.parametrize(
    "text", ["", "123456", "12345678", "1234567890", "k7wq9-xhem3-tfab", "k7wq9-xhem3-tfab2x",
             "k7wq9-xhem3-tfa0b", "k7wq9-xhem3-tfa1b", "k7wq9-xhem3-tfalb", "k7wq9_xhem3_tfab2",
             "k" * 200]
)  # fmt: skip
def test_normalize_refuses_non_codes(text: str) -> None:
    """OTPs, wrong lengths, look-alike symbols and foreign separators are not backup codes."""
    assert normalize_code(text) is None


@given(st.text(max_size=40))
def test_prop_never_both_otp_and_backup_code(text: str) -> None:
    """No string is both code-shaped (any 1..10 digits) and a backup code, and normalising
    is idempotent."""
    normal = normalize_code(text)
    if normal is not None:
        assert normalize_code(normal) == normal
        assert not any(is_code_shaped(text, d) for d in range(MIN_DIGITS, MAX_DIGITS + 1))
        assert not any(is_code_shaped(normal, d) for d in range(MIN_DIGITS, MAX_DIGITS + 1))


@given(st.integers(0, 10**10 - 1), st.sampled_from(range(MIN_DIGITS, MAX_DIGITS + 1)))
def test_prop_otp_strings_are_never_backup_codes(value: int, digits: int) -> None:
    """Every OTP-shaped string, with or without dashes/spaces, normalises to None."""
    otp = str(value % 10**digits).zfill(digits)
    assert normalize_code(otp) is None
    assert normalize_code(" ".join(otp)) is None


@given(st.lists(st.sampled_from(ALPHABET), min_size=CODE_LENGTH, max_size=CODE_LENGTH))
def test_prop_round_trip_through_printed_form(symbols: list[str]) -> None:
    """Any normal form survives print (grouped, upper case) -> normalise unchanged."""
    normal = "".join(symbols)
    printed = "-".join(normal[i : i + 5] for i in range(0, CODE_LENGTH, 5)).upper()
    assert normalize_code(printed) == normal


def test_hash_code_format_and_normalisation() -> None:
    """`h1:` + 64 hex; the printed and typed spellings of one code hash the same; another
    key or another code hashes differently; the hash does not contain the code."""
    code = generate_codes(1)[0]
    h = hash_code(code, KEY)
    assert re.fullmatch(r"h1:[0-9a-f]{64}", h)
    assert hash_code(code.upper().replace("-", " "), KEY) == h
    assert hash_code(code, b"x" * 32) != h
    other = generate_codes(1)[0]
    assert hash_code(other, KEY) != h
    assert code.replace("-", "") not in h


def test_hash_code_refuses_non_codes_and_empty_key() -> None:
    """Hashing something that is not a backup code, or with no pepper, is refused without
    echoing the input."""
    with pytest.raises(InvalidInput) as info:
        hash_code("123456", KEY)
    assert "123456" not in str(info.value)
    with pytest.raises(InvalidInput):
        hash_code(generate_codes(1)[0], b"")
