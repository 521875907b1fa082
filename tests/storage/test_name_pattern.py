"""`user list PATTERN`: the index range drawn from a pattern's prefix never drops a
match, and the store answers exactly what a plain Python filter over the names does."""

from __future__ import annotations

import itertools
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authd.core.model import User
from authd.storage.name_pattern import prefix_bounds
from authd.storage.sql import SqlStore

NOW = 1_767_225_600.0
# Characters that are wildcards or escapes in GLOB or LIKE, beside plain ones and the
# code points at the edges a range bound must step over (surrogates, the largest).
_CHARS = ["a", "b", "B", "%", "_", "?", "[", "]", "\\", "é", "\ud7ff", "\ue000", "\U0010ffff"]
_NAMES = sorted(
    {"".join(t) for t in itertools.product(_CHARS[:7], repeat=2)}
    | {"a", "ab", "abc", "a%b", "a_b", "a?b", "a[b]", "a\\b", "é", "\ud7ff", "\ue000x"}
    | {"\U0010ffff", "\U0010ffffa", "a\U0010ffff", "aé", "b", ""}
)
_patterns = st.lists(st.sampled_from([*_CHARS, "*", "*"]), max_size=5).map("".join)


def _matches(pattern: str, name: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, name, re.DOTALL) is not None


@given(pattern=_patterns, name=st.text(st.sampled_from(_CHARS), max_size=5))
def test_prefix_bounds_hold_every_match(pattern: str, name: str) -> None:
    """A name the pattern matches lies within the pattern's range."""
    bounds = prefix_bounds(pattern)
    if bounds is None or not _matches(pattern, name):
        return
    low, high = bounds
    assert low <= name
    assert high is None or name < high


def test_prefix_bounds_of_the_largest_code_point() -> None:
    """A prefix ending in the largest code point bounds by its predecessor's successor;
    one made only of it has no upper bound; a surrogate is never a bound."""
    assert prefix_bounds("a\U0010ffff*") == ("a\U0010ffff", "b")
    assert prefix_bounds("\U0010ffff*") == ("\U0010ffff", None)
    assert prefix_bounds("\ud7ff*") == ("\ud7ff", "\ue000")
    assert prefix_bounds("*a") is None


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pattern=_patterns, limit=st.one_of(st.none(), st.integers(1, 5)))
def test_user_list_matches_a_plain_filter(store: SqlStore, pattern: str, limit: int | None) -> None:
    """Names, order and limit of `list_users` equal a Python filter over every name."""
    if store.get_user("a") is None:
        for name in _NAMES:
            store.add_user(User(name=name, created_at=NOW))
    want = sorted(n for n in _NAMES if _matches(pattern, n))[:limit]
    got = [ov.user.name for ov in store.list_users(pattern, limit)]
    assert got == want
