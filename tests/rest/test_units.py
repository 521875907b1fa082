"""Pure pieces of the HTTP front-end, without a server: token buckets and the failure
backoff (functions of an explicit `now`), body/query schemas, client addresses, API keys."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authd.config.model import ApiKey
from authd.core.errors import Conflict
from authd.core.ratelimit import FailureBackoff, TokenBucket
from authd.rest.apikeys import ApiKeyConfigError, ApiKeyRing
from authd.rest.clientaddr import client_address, parse_networks
from authd.rest.errors import ApiError, from_exception, too_many
from authd.rest.routes import Router, split_path
from authd.rest.validation import BodySchema, Field, QuerySchema

T0 = 1_767_225_600.0


def test_bucket_spends_burst_then_refills_at_rate() -> None:
    """burst tokens at once, then one per 1/rate seconds; the wait is exact."""
    b = TokenBucket(rate=2.0, burst=3)
    assert [b.take("k", T0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("k", T0) == pytest.approx(0.5)
    assert b.take("k", T0 + 0.5) == 0.0
    assert b.take("k", T0 + 0.5) == pytest.approx(0.5)
    assert b.take("other", T0) == 0.0  # keys are independent


def test_bucket_clock_going_backwards_mints_nothing() -> None:
    """A clock stepped back must not refill a bucket."""
    b = TokenBucket(rate=1.0, burst=1)
    assert b.take("k", T0) == 0.0
    assert b.take("k", T0 - 100) > 0
    assert b.take("k", T0 + 0.5) == pytest.approx(0.5)


def test_bucket_rate_zero_never_refills() -> None:
    """rate 0: the burst is all there ever is (Retry-After is then capped)."""
    b = TokenBucket(rate=0.0, burst=1)
    assert b.take("k", T0) == 0.0
    assert b.take("k", T0 + 1e6) == float("inf")
    assert too_many("source", float("inf")).headers == (("Retry-After", "3600"),)


def test_bucket_memory_is_bounded_and_idle_keys_go_first() -> None:
    """A flood of distinct keys never grows the table past max_keys; a refilled (idle)
    bucket is dropped before a busy one."""
    b = TokenBucket(rate=1.0, burst=2, max_keys=3)
    b.take("busy", T0)
    b.take("busy", T0)
    b.take("idle", T0)
    b.take("x", T0)
    assert len(b) == 3
    b.take("new", T0 + 1.5)  # "idle" and "x" are full again by now; "busy" is not
    assert len(b) <= 3
    assert b.take("busy", T0 + 1.5) == 0.0 and b.take("busy", T0 + 1.5) > 0
    for i in range(10_000):
        b.take(f"flood{i}", T0 + 2)
    assert len(b) == 3


def test_full_bucket_table_frees_an_eighth_at_once_least_recent_first() -> None:
    """A full table of busy keys drops its least recently used eighth on the next new
    key, so the following new keys need no pass over the table (O(1) each in a flood)."""
    b = TokenBucket(rate=0.001, burst=1, max_keys=800)
    for i in range(800):
        b.take(f"k{i}", T0)  # each bucket now empty: none is idle
    b.take("k0", T0 + 1)  # k0 becomes the most recently used
    b.take("new0", T0 + 1)
    assert len(b) == 800 - 100 + 1
    assert b.peek("k0", T0 + 1) > 0  # kept: still empty
    assert b.peek("k1", T0 + 1) == 0.0 and b.peek("k100", T0 + 1) == 0.0  # dropped
    assert b.peek("k101", T0 + 1) > 0  # kept
    for i in range(1, 100):
        b.take(f"new{i}", T0 + 1)
    assert len(b) == 800
    b.take("one-more", T0 + 1)
    assert len(b) == 701


def test_full_backoff_table_frees_an_eighth_at_once_least_recent_first() -> None:
    """As for buckets: a full table of live delays drops its least recently failed
    eighth on the next new key, then takes that many new keys without a pass."""
    f = FailureBackoff(base=10.0, cap=60.0, max_keys=800)
    for i in range(800):
        f.failure(f"k{i}", T0)
    f.failure("new0", T0 + 1)
    assert len(f) == 701
    assert f.state("k99", T0 + 1) is None and f.state("k100", T0 + 1) is not None
    for i in range(1, 100):
        f.failure(f"new{i}", T0 + 1)
    assert len(f) == 800


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 10)), max_size=60))
def test_bucket_never_allows_more_than_burst_plus_rate_times_elapsed(
    events: list[tuple[str, float]],
) -> None:
    """Property: per key, granted <= burst + rate * (time span), for any request times."""
    b = TokenBucket(rate=2.0, burst=3)
    granted: dict[str, list[float]] = {}
    for key, offset in sorted(events, key=lambda e: e[1]):
        if b.take(key, T0 + offset) == 0.0:
            granted.setdefault(key, []).append(offset)
    for times in granted.values():
        assert len(times) <= 3 + 2.0 * (times[-1] - times[0]) + 1e-9


def test_backoff_doubles_to_the_cap_and_success_resets() -> None:
    """Waits 1, 2, 4, 4 after consecutive failures; a success forgets them."""
    f = FailureBackoff(base=1.0, cap=4.0)
    assert f.wait("u", T0) == 0.0
    assert [f.failure("u", T0 + i * 10) for i in range(4)] == [1.0, 2.0, 4.0, 4.0]
    assert f.wait("u", T0 + 30) == 4.0
    assert f.state("u", T0 + 30).failures == 4  # type: ignore[union-attr]
    f.success("u")
    assert f.wait("u", T0 + 30) == 0.0 and f.state("u", T0 + 30) is None


def test_backoff_forgets_after_quiet_period_and_is_bounded() -> None:
    """A key quiet for forget_after starts over; the table never exceeds max_keys."""
    f = FailureBackoff(base=1.0, cap=8.0, forget_after=60.0, max_keys=2)
    f.failure("u", T0)
    f.failure("u", T0 + 1)
    assert f.failure("u", T0 + 200) == 1.0
    for i in range(100):
        f.failure(f"k{i}", T0 + 300)
    assert len(f) == 2


def test_schema_rejects_unknown_wrong_and_long() -> None:
    """Bodies must be objects with known fields of the right types and lengths."""
    schema = BodySchema(
        (Field("a", required=True, max_length=3), Field("n", kind="integer", maximum=5))
    )
    assert schema.parse(b'{"a":"xyz","n":5}') == {"a": "xyz", "n": 5}
    for raw in (
        b'{"a":"xyzw"}',
        b'{"a":"x","b":1}',
        b'{"n":1}',
        b'{"a":"x","n":true}',
        b'{"a":"x","n":6}',
        b'{"a":"x","n":1.5}',
        b'"a"',
        b'{"a":"x","a":"y"}',
        b'{"a":"x","n":Infinity}',
        b"[" * 100_000,
    ):
        with pytest.raises(ApiError) as err:
            schema.parse(raw)
        assert err.value.status == 400


def test_query_schema_converts_and_rejects() -> None:
    """Query values are converted to their kind; repeats and unknowns are 400."""
    q = QuerySchema((Field("limit", kind="integer", minimum=1), Field("since", kind="number")))
    assert q.parse({b"limit": [b"5"], b"since": [b"1.5"]}) == {"limit": 5, "since": 1.5}
    for args in (
        {b"limit": [b"1", b"2"]},
        {b"other": [b"1"]},
        {b"limit": [b"1_0"]},
        {b"limit": [b"0"]},
        {b"since": [b"nan"]},
    ):
        with pytest.raises(ApiError):
            q.parse(args)


def test_router_decodes_segments_once() -> None:
    """%2F inside a segment stays inside it; bad UTF-8 is refused."""
    assert split_path(b"/api/v1/admin/users/a%2Fb/unlock") == (
        "api",
        "v1",
        "admin",
        "users",
        "a/b",
        "unlock",
    )
    assert split_path(b"/x/%ff") is None
    with pytest.raises(ValueError):
        Router([_route("GET", "/a"), _route("GET", "/a")])


def _route(method: str, path: str) -> object:
    from authd.rest.routes import Reply, Route

    return Route(method, path, lambda call: Reply(), "op" + path, "", "t")


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    """XFF is walked from the right past trusted proxies; spoofed left-most entries and
    untrusted peers are ignored; garbage stops the walk."""
    proxies = parse_networks(["10.0.0.0/8", "::1"])
    xff = [b"6.6.6.6, 198.51.100.4, 10.1.1.1"]
    assert client_address("192.0.2.1", xff, proxies) == "192.0.2.1"
    assert client_address("10.0.0.2", xff, proxies) == "198.51.100.4"
    assert client_address("10.0.0.2", [b"not-an-ip"], proxies) == "10.0.0.2"
    assert client_address("::1", [b"2001:db8::5"], proxies) == "2001:db8::5"
    assert client_address("::ffff:192.0.2.9", None, proxies) == "192.0.2.9"
    assert client_address("10.0.0.2", [b"10.2.2.2"], proxies) == "10.2.2.2"


def test_api_keys_by_hash_or_file(tmp_path: Path) -> None:
    """A key is found by its SHA-256 (config hash or file), in any header case; scopes
    come along; wrong schemes and unknown keys find nothing; the ring's repr has names
    only."""
    key_file = tmp_path / "k"
    key_file.write_text("file-key-0123456789abcdef\n")
    ring = ApiKeyRing.from_config(
        [
            ApiKey(name="a", key_sha256=hashlib.sha256(b"hash-key-0123456789").hexdigest()),
            ApiKey(name="b", key_file=str(key_file), scopes=("admin", "validate")),
        ]
    )
    assert ring.identify(b"Bearer hash-key-0123456789").name == "a"  # type: ignore[union-attr]
    found = ring.identify(b"bearer file-key-0123456789abcdef")
    assert found is not None and found.allows("admin") and found.name == "b"
    for header in (None, b"Basic hash-key-0123456789", b"Bearer ", b"Bearer nope"):
        assert ring.identify(header) is None
    assert "key" not in repr(ring).replace("ApiKeyRing", "")


@pytest.mark.parametrize(
    "key",
    [
        ApiKey(name="x", key_sha256="abc"),
        ApiKey(name="x"),
        ApiKey(name="x", key_sha256="0" * 64, key_file="/k"),
        ApiKey(name="x", key_sha256="0" * 64, scopes=("root",)),
        ApiKey(name="x", key_file="/nonexistent/authd.key"),
    ],
)
def test_unusable_api_key_config_is_refused(key: ApiKey) -> None:
    """Bad hashes, missing keys, both sources, unknown scopes, unreadable files: refused
    with the key's name in the message."""
    with pytest.raises(ApiKeyConfigError, match="'x'"):
        ApiKeyRing.from_config([key])


def test_unknown_exceptions_become_bare_500() -> None:
    """Anything unexpected maps to 500 internal, the message never copied."""
    err = from_exception(KeyError("seed=JBSWY3DP"))
    assert (err.status, err.body()) == (500, {"error": "internal", "detail": "internal error"})


def test_a_lost_resync_race_is_a_409_conflict() -> None:
    """Conflict (the token moved on, nothing written) maps to 409 with the reason kept
    and the quoted serial left out."""
    err = from_exception(Conflict("token 'TOTP0A1B' moved on while resyncing; resync again"))
    assert err.status == 409 and err.body()["error"] == "conflict"
    assert "moved on" in err.body()["detail"] and "TOTP0A1B" not in err.body()["detail"]
