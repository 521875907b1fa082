"""Hypothesis: whatever a client sends, decide() answers and never raises."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authd.auth.interfaces import AuthRequest, Decision, Outcome
from authd.core.model import TokenType
from tests.fakes import FakeBackend, FakeStore
from tests.world import HASH_KEY, NOW, PASSWORD, World


def make_world() -> World:
    w = World(FakeStore(), HASH_KEY, FakeBackend("dir"))
    w.user()
    w.token()
    w.token(type=TokenType.HOTP, digits=8)
    w.pin()
    w.backup_codes()
    return w


WORLD = make_world()
ENGINE = WORLD.engine()

texts = st.one_of(
    st.text(max_size=300),
    st.text(alphabet="0123456789", max_size=20),
    st.builds(lambda s: PASSWORD + s, st.text(alphabet="0123456789-abcxyz", max_size=24)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    user=st.one_of(st.just("alice"), st.text(max_size=300)),
    password=texts,
    otp=st.one_of(st.none(), texts),
    state=st.one_of(st.none(), st.binary(max_size=40)),
    first_factor=st.sampled_from(["chain", "none", "bogus"]),
    otp_mode=st.sampled_from(["inline", "challenge", "auto", ""]),
    offset=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
)
def test_decide_never_raises(
    user: str,
    password: str,
    otp: str | None,
    state: bytes | None,
    first_factor: str,
    otp_mode: str,
    offset: float,
) -> None:
    """Arbitrary user names, passwords, codes, states and modes give a Decision; a
    reject always carries the generic message or the enrolment hint, never input."""
    req = AuthRequest(
        user=user,
        password=password,
        frontend="radius",
        client="vpn",
        source="192.0.2.9",
        otp=otp,
        state=state,
        first_factor=first_factor,
        otp_mode=otp_mode,
    )
    d = ENGINE.decide(req, NOW + offset)
    assert isinstance(d, Decision)
    if d.outcome is Outcome.REJECT:
        assert d.message == "Authentication failed"
    if d.outcome is Outcome.ACCEPT:
        assert d.user == "alice"
