"""match_totp / match_hotp / resync: window, replay, drift and resync rules, including
Hypothesis properties that hold for any seed, time, skew and token state."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authd.core.errors import InvalidInput
from authd.core.model import Algorithm, Token, TokenStatus, TokenType
from authd.core.otp import (
    TotpMatch,
    hotp,
    match_hotp,
    match_totp,
    resync_hotp,
    resync_totp,
    time_step,
    totp,
)

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a step boundary for periods 30 and 60
SEED = b"12345678901234567890"

seeds = st.binary(min_size=10, max_size=64)
algorithms = st.sampled_from(list(Algorithm))
digit_counts = st.sampled_from([6, 8])
periods = st.sampled_from([30, 60])
nows = st.floats(min_value=1e9, max_value=4e9, allow_nan=False)
skews = st.floats(min_value=0, max_value=300, allow_nan=False)


def totp_token(**kw: object) -> Token:
    fields: dict[str, object] = {"serial": "T1", "type": TokenType.TOTP, "seed": SEED}
    fields.update(kw)
    return Token(**fields)  # type: ignore[arg-type]


def hotp_token(**kw: object) -> Token:
    fields: dict[str, object] = {"serial": "H1", "type": TokenType.HOTP, "seed": SEED}
    fields.update(kw)
    return Token(**fields)  # type: ignore[arg-type]


def code_at(token: Token, step: int) -> str:
    return hotp(token.seed, step, token.digits, token.algorithm)


# ---------------------------------------------------------------- match_totp examples
def test_current_code_matches_with_zero_drift() -> None:
    """The code shown now matches at the current step, with drift 0."""
    token = totp_token()
    assert match_totp(token, totp(SEED, NOW), NOW, 30) == TotpMatch(time_step(NOW, 30), 0)


def test_skew_window_edges() -> None:
    """skew 30 s at period 30 admits exactly one step each way; the next one is refused."""
    token = totp_token()
    s = time_step(NOW, 30)
    assert match_totp(token, code_at(token, s - 1), NOW, 30) == TotpMatch(s - 1, -1)
    assert match_totp(token, code_at(token, s + 1), NOW, 30) == TotpMatch(s + 1, 1)
    assert match_totp(token, code_at(token, s - 2), NOW, 30) is None
    assert match_totp(token, code_at(token, s + 2), NOW, 30) is None


def test_partial_step_skew_rounds_up_and_zero_skew_is_exact() -> None:
    """ceil(skew/period): 31 s reaches two steps at period 30; skew 0 only the current."""
    token = totp_token()
    s = time_step(NOW, 30)
    assert match_totp(token, code_at(token, s - 2), NOW, 31) == TotpMatch(s - 2, -2)
    assert match_totp(token, code_at(token, s - 1), NOW, 0) is None
    assert match_totp(token, code_at(token, s), NOW, 0) == TotpMatch(s, 0)


def test_replay_of_last_step_and_earlier_refused() -> None:
    """RFC 6238 §5.2: once step s is stored as last_step, s and earlier steps are refused."""
    s = time_step(NOW, 30)
    token = totp_token(last_step=s)
    assert match_totp(token, code_at(token, s), NOW, 30) is None
    assert match_totp(token, code_at(token, s - 1), NOW, 30) is None
    assert match_totp(token, code_at(token, s + 1), NOW, 30) == TotpMatch(s + 1, 1)


def test_remembered_drift_moves_the_window() -> None:
    """A token whose clock runs 5 steps fast works once drift=5 is remembered, and the
    returned drift stays relative to the step of `now`, not to the old drift."""
    s = time_step(NOW, 30)
    fast = code_at(totp_token(), s + 5)
    assert match_totp(totp_token(), fast, NOW, 30) is None
    assert match_totp(totp_token(drift=5), fast, NOW, 30) == TotpMatch(s + 5, 5)
    assert match_totp(totp_token(drift=5), code_at(totp_token(), s), NOW, 30) is None


@pytest.mark.parametrize(
    "code", ["", "12345", "1234567", "12345a", " 12345", "١٢٣٤٥٦", "12 456", "123456\n"]
)
def test_code_not_exactly_token_digits_ascii_refused(code: str) -> None:
    """Only exactly token.digits ASCII digits are compared (no trimming, no Unicode digits)."""
    assert match_totp(totp_token(), code, NOW, 300) is None
    assert match_hotp(hotp_token(), code, 100) is None


def test_eight_digit_and_sha512_token() -> None:
    """digits, algorithm and period come from the token."""
    seed = bytes(range(64))
    token = totp_token(seed=seed, digits=8, algorithm=Algorithm.SHA512, period=60)
    code = totp(seed, NOW, 60, 8, Algorithm.SHA512)
    assert match_totp(token, code, NOW, 60) == TotpMatch(time_step(NOW, 60), 0)
    assert match_totp(token, code[:6], NOW, 60) is None


def test_inactive_wrong_type_or_seedless_tokens_never_match() -> None:
    """Fail closed: a disabled/revoked token, an HOTP token, or an empty seed matches nothing."""
    code = totp(SEED, NOW)
    for status in (TokenStatus.DISABLED, TokenStatus.REVOKED):
        assert match_totp(totp_token(status=status), code, NOW, 30) is None
    assert match_totp(hotp_token(), code, NOW, 30) is None
    assert match_totp(totp_token(seed=b""), totp(b"", NOW), NOW, 30) is None
    assert match_hotp(totp_token(), hotp(SEED, 0), 10) is None
    assert match_hotp(hotp_token(status=TokenStatus.DISABLED), hotp(SEED, 0), 10) is None


def test_negative_skew_or_look_ahead_is_a_caller_error() -> None:
    """A negative window is a bug, not an empty window: it raises."""
    with pytest.raises(InvalidInput):
        match_totp(totp_token(), totp(SEED, NOW), NOW, -1)
    with pytest.raises(InvalidInput):
        match_totp(totp_token(), totp(SEED, NOW), NOW, math.inf)
    with pytest.raises(InvalidInput):
        match_hotp(hotp_token(), hotp(SEED, 0), -1)


def test_code_matching_two_steps_burns_the_later() -> None:
    """When one code matches several candidate steps (1 digit makes that certain), the latest
    is returned, so storing it refuses the same code at every earlier step too."""
    token = totp_token(digits=1)
    s = time_step(NOW, 30)
    window = [code_at(token, k) for k in range(s - 10, s + 11)]
    code = next(c for c in window if window.count(c) > 1)
    m = match_totp(token, code, NOW, 300)
    assert m is not None
    assert m.step == max(k for k in range(s - 10, s + 11) if code_at(token, k) == code)
    assert match_totp(dataclasses.replace(token, last_step=m.step), code, NOW, 300) is None


def test_match_does_not_mutate_token() -> None:
    """Matching only finds a step; the token (frozen) is the same object, unchanged."""
    token = totp_token()
    before = dataclasses.asdict(token)
    match_totp(token, totp(SEED, NOW), NOW, 30)
    assert dataclasses.asdict(token) == before


# ---------------------------------------------------------------- match_hotp examples
def test_hotp_look_ahead_edges() -> None:
    """Counters token.counter..counter+look_ahead match; one further does not; earlier never."""
    token = hotp_token(counter=5)
    assert match_hotp(token, hotp(SEED, 5), 3) == 5
    assert match_hotp(token, hotp(SEED, 8), 3) == 8
    assert match_hotp(token, hotp(SEED, 9), 3) is None
    assert match_hotp(token, hotp(SEED, 4), 3) is None
    assert match_hotp(token, hotp(SEED, 5), 0) == 5


# ---------------------------------------------------------------- resync examples
def test_resync_totp_far_drift() -> None:
    """Two consecutive codes from a clock 2 hours slow re-align the token: the step of the
    second code and its drift come back."""
    s = time_step(NOW, 30)
    token = totp_token(drift=0, last_step=-1)
    c1, c2 = code_at(token, s - 240), code_at(token, s - 239)
    assert match_totp(token, c2, NOW, 30) is None
    assert resync_totp(token, c1, c2, NOW, 12 * 3600) == TotpMatch(s - 239, -239)
    assert resync_totp(token, c1, c2, NOW, 3600) is None  # outside a 1-hour window


def test_resync_totp_window_edges() -> None:
    """Both codes must lie within ±window: with 300 s at period 30 (10 steps each way) the
    outermost inside pairs are found and the pairs straddling either edge are not."""
    s = time_step(NOW, 30)
    t = totp_token()
    assert resync_totp(t, code_at(t, s + 9), code_at(t, s + 10), NOW, 300) == TotpMatch(s + 10, 10)
    assert resync_totp(t, code_at(t, s - 10), code_at(t, s - 9), NOW, 300) == TotpMatch(s - 9, -9)
    assert resync_totp(t, code_at(t, s + 10), code_at(t, s + 11), NOW, 300) is None
    assert resync_totp(t, code_at(t, s - 11), code_at(t, s - 10), NOW, 300) is None


def test_resync_hotp_window_edges() -> None:
    """Counters c and c+1 must both lie in [counter, counter + window]."""
    token = hotp_token(counter=10)
    assert resync_hotp(token, hotp(SEED, 19), hotp(SEED, 20), 10) == 20
    assert resync_hotp(token, hotp(SEED, 20), hotp(SEED, 21), 10) is None
    assert resync_hotp(token, hotp(SEED, 10), hotp(SEED, 11), 10) == 11
    assert resync_hotp(token, hotp(SEED, 9), hotp(SEED, 10), 10) is None


def test_resync_totp_ignores_old_drift_but_respects_last_step() -> None:
    """The search is around `now` whatever drift is remembered, but never returns a step at
    or before last_step (that would re-open used codes)."""
    s = time_step(NOW, 30)
    token = totp_token(drift=40)
    c1, c2 = code_at(token, s - 3), code_at(token, s - 2)
    assert resync_totp(token, c1, c2, NOW, 300) == TotpMatch(s - 2, -2)
    used = dataclasses.replace(token, last_step=s - 2)
    assert resync_totp(used, c1, c2, NOW, 300) is None


def test_resync_refuses_swapped_or_gapped_codes() -> None:
    """Codes in the wrong order, or two steps apart, are not consecutive."""
    s = time_step(NOW, 30)
    t = totp_token()
    assert resync_totp(t, code_at(t, s + 1), code_at(t, s), NOW, 300) is None
    assert resync_totp(t, code_at(t, s), code_at(t, s + 2), NOW, 300) is None
    h = hotp_token(counter=10)
    assert resync_hotp(h, hotp(SEED, 51), hotp(SEED, 50), 100) is None
    assert resync_hotp(h, hotp(SEED, 50), hotp(SEED, 52), 100) is None


def test_resync_hotp_returns_counter_of_second_code() -> None:
    """c, c+1 found within the window: the result is c+1; beyond the window or before the
    current counter, nothing."""
    token = hotp_token(counter=10)
    assert resync_hotp(token, hotp(SEED, 500), hotp(SEED, 501), 1000) == 501
    assert resync_hotp(token, hotp(SEED, 500), hotp(SEED, 501), 490) is None
    assert resync_hotp(token, hotp(SEED, 5), hotp(SEED, 6), 1000) is None


def test_resync_wrong_type_or_shape_refused() -> None:
    """resync of the wrong token type or of badly shaped codes finds nothing."""
    s = time_step(NOW, 30)
    assert resync_totp(hotp_token(), hotp(SEED, s), hotp(SEED, s + 1), NOW, 300) is None
    assert resync_hotp(totp_token(), hotp(SEED, 1), hotp(SEED, 2), 10) is None
    assert resync_hotp(hotp_token(), "12345", hotp(SEED, 2), 10) is None


# ---------------------------------------------------------------- properties
@st.composite
def totp_tokens(draw: st.DrawFn) -> Token:
    return totp_token(
        seed=draw(seeds),
        algorithm=draw(algorithms),
        digits=draw(digit_counts),
        period=draw(periods),
        drift=draw(st.integers(-20, 20)),
    )


@given(token=totp_tokens(), now=nows, skew=skews, data=st.data())
def test_prop_code_accepted_at_most_once(
    token: Token, now: float, skew: float, data: st.DataObject
) -> None:
    """A genuine code from inside the window is accepted; once the caller stores the
    returned step (compare-and-set), the same code is refused at the same time and, at any
    later time, can only match a *later* step that really has those digits (a new code)."""
    reach = math.ceil(skew / token.period)
    centre = time_step(now, token.period) + token.drift
    step = centre + data.draw(st.integers(-reach, reach), label="offset")
    code = code_at(token, step)
    m = match_totp(token, code, now, skew)
    assert m is not None and m.step >= step
    used = dataclasses.replace(token, last_step=m.step, drift=m.drift)
    assert match_totp(used, code, now, skew) is None
    for later in (now + token.period, now + skew, now + 2 * skew):
        again = match_totp(used, code, later, skew)
        assert again is None or (again.step > m.step and code_at(token, again.step) == code)


@given(
    token=totp_tokens(),
    now=nows,
    skew=skews,
    last_back=st.integers(-1, 15),
    code=st.one_of(st.integers(-15, 15), st.text("0123456789", min_size=6, max_size=8)),
)
def test_prop_every_accept_is_sound(
    token: Token, now: float, skew: float, last_back: int, code: int | str
) -> None:
    """For genuine codes near the window and arbitrary digit strings alike: an accepted
    step lies within ceil(skew/period) of the drifted current step, is after last_step,
    really produces the code, and drift is measured from the step of `now`; a genuine code
    inside the window and after last_step is never refused."""
    current = time_step(now, token.period)
    centre = current + token.drift
    reach = math.ceil(skew / token.period)
    token = dataclasses.replace(token, last_step=centre - last_back)
    text = code_at(token, centre + code) if isinstance(code, int) else code
    m = match_totp(token, text, now, skew)
    if isinstance(code, int) and abs(code) <= reach and centre + code > token.last_step:
        assert m is not None
    if m is None:
        return
    assert abs(m.step - centre) <= reach
    assert m.step > token.last_step
    assert code_at(token, m.step) == text
    assert m.drift == m.step - current


@given(
    token=totp_tokens(),
    now=nows,
    skew=skews,
    beyond=st.integers(1, 50),
    sign=st.sampled_from([-1, 1]),
)
def test_prop_nothing_outside_window(
    token: Token, now: float, skew: float, beyond: int, sign: int
) -> None:
    """A code from a step outside the window is refused, unless the same digits also happen
    to be the code of a step inside it (then that inside step is what matches)."""
    reach = math.ceil(skew / token.period)
    centre = time_step(now, token.period) + token.drift
    outside = centre + sign * (reach + beyond)
    code = code_at(token, outside)
    m = match_totp(token, code, now, skew)
    assert m is None or (abs(m.step - centre) <= reach and code_at(token, m.step) == code)


@given(token=totp_tokens(), now=nows, drift=st.integers(-500, 500))
def test_prop_drift_remembered_moves_window(token: Token, now: float, drift: int) -> None:
    """A device `drift` steps off is accepted with skew 0 exactly when that drift is
    remembered, and the match reports the same drift back."""
    current = time_step(now, token.period)
    code = code_at(token, current + drift)
    remembered = dataclasses.replace(token, drift=drift)
    assert match_totp(remembered, code, now, 0) == TotpMatch(current + drift, drift)
    if drift != 0:
        stale = dataclasses.replace(token, drift=0)
        m = match_totp(stale, code, now, 0)
        assert m is None or code_at(token, current) == code  # only a digit collision


@given(
    seed=seeds,
    start=st.integers(0, 10**6),
    look_ahead=st.integers(0, 20),
    presses=st.lists(st.integers(-5, 30), min_size=1, max_size=12),
)
def test_prop_hotp_never_goes_backward(
    seed: bytes, start: int, look_ahead: int, presses: list[int]
) -> None:
    """Applying each match as counter = c + 1 (for codes from anywhere around the counter),
    the counter only grows, every accepted counter was within the look-ahead, and no code
    is accepted twice for the same counter."""
    token = hotp_token(seed=seed, counter=start)
    accepted: set[int] = set()
    for press in presses:
        code = hotp(seed, max(0, start + press))
        c = match_hotp(token, code, look_ahead)
        if c is None:
            continue
        assert token.counter <= c <= token.counter + look_ahead
        assert hotp(seed, c) == code
        assert c not in accepted
        accepted.add(c)
        new = dataclasses.replace(token, counter=c + 1)
        assert new.counter > token.counter
        again = match_hotp(new, code, look_ahead)
        assert again is None or again > c  # only a later counter with the same digits
        token = new


def _oracle_pairs(gen: list[str], code1: str, code2: str) -> list[int]:
    return [i for i in range(len(gen) - 1) if gen[i] == code1 and gen[i + 1] == code2]


@given(
    token=totp_tokens(),
    now=nows,
    window=st.floats(min_value=0, max_value=1800, allow_nan=False),
    a=st.integers(-70, 70),
    b=st.integers(-70, 70),
)
@settings(max_examples=200)
def test_prop_totp_resync_agrees_with_brute_force(
    token: Token, now: float, window: float, a: int, b: int
) -> None:
    """For codes of steps a and b around now, resync answers exactly what a brute-force
    search of consecutive pairs inside ±window finds: consecutive genuine codes are found
    when inside the window, anything else only by a real digit coincidence."""
    current = time_step(now, token.period)
    reach = math.ceil(window / token.period)
    code1, code2 = code_at(token, current + a), code_at(token, current + b)
    lo = current - reach
    codes = [code_at(token, s) for s in range(lo, current + reach + 1)]
    pairs = [lo + i + 1 for i in _oracle_pairs(codes, code1, code2)]
    pairs = [s for s in pairs if s > token.last_step]
    got = resync_totp(token, code1, code2, now, window)
    if pairs:
        assert got == TotpMatch(pairs[-1], pairs[-1] - current)
    else:
        assert got is None
    if b == a + 1 and abs(a) <= reach and abs(b) <= reach:
        assert got is not None and got.step >= current + b


@given(
    seed=seeds,
    counter=st.integers(0, 10**6),
    window=st.integers(1, 200),
    a=st.integers(-10, 220),
    b=st.integers(-10, 220),
)
def test_prop_hotp_resync_agrees_with_brute_force(
    seed: bytes, counter: int, window: int, a: int, b: int
) -> None:
    """HOTP resync finds c, c+1 in [counter, counter+window] exactly as brute force does,
    returns c+1, and never a counter before the current one."""
    token = hotp_token(seed=seed, counter=counter)
    code1, code2 = hotp(seed, max(0, counter + a)), hotp(seed, max(0, counter + b))
    codes = [hotp(seed, c) for c in range(counter, counter + window + 1)]
    pairs = [counter + i + 1 for i in _oracle_pairs(codes, code1, code2)]
    got = resync_hotp(token, code1, code2, window)
    assert got == (pairs[-1] if pairs else None)
    if got is not None:
        assert got >= counter + 1
    if b == a + 1 and a >= 0 and b <= window:
        assert got is not None and got >= counter + b


def test_hotp_twin_codes_take_the_earliest_counter() -> None:
    """When two counters in the look-ahead window show the same code, the earlier one is
    taken (RFC 4226 §7.2), so the token's next code is still accepted afterwards."""
    seed = b"12345678901234567890"
    token = Token(serial="H", type=TokenType.HOTP, seed=seed, digits=1, counter=0)
    codes = [hotp(seed, c, digits=1) for c in range(12)]
    first_twin = next(i for i in range(1, 12) if codes[i] in codes[:i])
    earliest = codes.index(codes[first_twin])
    assert match_hotp(token, codes[first_twin], look_ahead=11) == earliest
    advanced = dataclasses.replace(token, counter=earliest + 1)
    assert match_hotp(advanced, codes[earliest + 1], look_ahead=0) == earliest + 1


@given(
    seed=seeds,
    digits=st.integers(1, 8),
    period=periods,
    drift=st.integers(-5, 5),
    last=st.integers(-3, 8),
    skew=st.integers(0, 200),
    offset=st.integers(-8, 8),
)
@settings(max_examples=300)
def test_prop_totp_early_exit_agrees_with_brute_force(
    seed: bytes, digits: int, period: int, drift: int, last: int, skew: int, offset: int
) -> None:
    """match_totp (latest step first, stops at the first hit) answers exactly what
    computing every candidate would: the latest matching step after last_step. With
    1-2 digits twins are common, so the order of the search is really exercised."""
    now = NOW + 7
    current = time_step(now, period)
    token = totp_token(
        seed=seed, digits=digits, period=period, drift=drift, last_step=current + last - 4
    )
    code = code_at(token, current + offset)
    centre, reach = current + drift, math.ceil(skew / period)
    steps = range(max(0, centre - reach), max(0, centre + reach + 1))
    hits = [s for s in steps if code_at(token, s) == code and s > token.last_step]
    got = match_totp(token, code, now, skew)
    assert got == (TotpMatch(hits[-1], hits[-1] - current) if hits else None)


@given(
    seed=seeds,
    digits=st.integers(1, 8),
    counter=st.integers(0, 10**6),
    look_ahead=st.integers(0, 40),
    offset=st.integers(-5, 45),
)
@settings(max_examples=300)
def test_prop_hotp_early_exit_agrees_with_brute_force(
    seed: bytes, digits: int, counter: int, look_ahead: int, offset: int
) -> None:
    """match_hotp (expected counter first, stops at the first hit) answers exactly the
    earliest matching counter of the whole window, or None."""
    token = hotp_token(seed=seed, counter=counter, digits=digits)
    code = hotp(seed, max(0, counter + offset), digits)
    window = range(counter, counter + look_ahead + 1)
    hits = [c for c in window if hotp(seed, c, digits) == code]
    assert match_hotp(token, code, look_ahead) == (hits[0] if hits else None)
