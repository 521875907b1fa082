"""core/split.py: every plausible reading of a typed string, and only plausible ones."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from authd.core.backup_codes import normalize_code
from authd.core.split import (
    Candidate,
    PinRule,
    SecondKind,
    default_password,
    split_candidates,
)


def readings(typed: str, **kw: object) -> list[tuple[str, str, str, str]]:
    opts: dict = {"with_password": True, "otp_lengths": [6], "pin": None}
    opts.update(kw)
    return [(c.password, c.pin, c.second, c.kind.value) for c in split_candidates(typed, **opts)]


def test_password_then_otp() -> None:
    """Without a PIN, the OTP is the trailing digits of each token length."""
    assert readings("secret123456") == [("secret", "", "123456", "otp")]
    assert readings("secret12345678", otp_lengths=[6, 8]) == [
        ("secret", "", "12345678", "otp"),
        ("secret12", "", "345678", "otp"),
    ]


def test_non_digit_tail_gives_nothing() -> None:
    """A tail that is not ASCII digits is no OTP (Arabic-Indic digits included)."""
    assert readings("secret12a456") == []
    assert readings("secret" + "\u0661" * 6) == []


def test_pin_before_and_after() -> None:
    """PIN lengths min..max are tried on the right side of the OTP."""
    before = PinRule("before", 4, 5)
    assert readings("pw9876123456", pin=before) == [("pw", "9876", "123456", "otp")]
    got = readings("pw19876123456", pin=before)
    assert ("pw1", "9876", "123456", "otp") in got and ("pw", "19876", "123456", "otp") in got
    after = PinRule("after", 4, 4)
    assert readings("pw1234569876", pin=after) == [("pw", "9876", "123456", "otp")]


def test_without_password_is_exact() -> None:
    """first_factor none / challenge answer: the whole string is [PIN+]OTP, nothing else."""
    assert readings("123456", with_password=False) == [("", "", "123456", "otp")]
    assert readings("x123456", with_password=False) == []
    rule = PinRule("before", 4, 8)
    assert readings("9876123456", with_password=False, pin=rule) == [("", "9876", "123456", "otp")]


def test_backup_code_readings() -> None:
    """Backup codes are read from the shortest suffix that normalises (separators inside
    the code are fine; the password keeps its own trailing characters)."""
    code = "k7wq9-xhem3-tfab2"
    got = readings("pass-" + code, otp_lengths=[], backup_code=normalize_code)
    assert got[0] == ("pass-", "", "k7wq9xhem3tfab2", "backup")
    assert readings(
        code.upper(), with_password=False, otp_lengths=[], backup_code=normalize_code
    ) == [("", "", "k7wq9xhem3tfab2", "backup")]
    assert readings("pass-" + code, otp_lengths=[]) == []


def test_candidate_repr_hides_secrets() -> None:
    """A Candidate never shows password, PIN or code in its repr."""
    c = Candidate("hunter2", "9876", "123456", SecondKind.OTP)
    assert "hunter2" not in repr(c) and "9876" not in repr(c) and "123456" not in repr(c)


def test_default_password() -> None:
    """The fallback reading strips the default OTP length (and a PIN length)."""
    assert default_password("secret123456", 6) == "secret"
    assert default_password("secret9876123456", 6, 4) == "secret"
    assert default_password("12", 6) == ""


@given(st.text(max_size=40), st.lists(st.sampled_from([6, 7, 8]), max_size=3))
def test_readings_reassemble(typed: str, lengths: list[int]) -> None:
    """Every OTP reading glues back to exactly what was typed."""
    rule = PinRule("after", 4, 6)
    for c in split_candidates(typed, with_password=True, otp_lengths=lengths, pin=rule):
        assert c.password + c.second + c.pin == typed
        assert c.second.isdigit() and len(c.second) in lengths
