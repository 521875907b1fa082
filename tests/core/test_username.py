"""What a typed user name names before any lookup: spaces and configured realms go,
foreign realms name no one; and which directory attribute is the user's name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authd.core.username import map_user_name, name_attribute, realm_problem, realm_set

REALMS = realm_set(["CORP", "corp.example.com"])

# Name characters as a directory holds them: no realm separators, no outer spaces.
NAME = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), blacklist_characters="\\@"),
    min_size=1,
    max_size=20,
)
REALM = st.sampled_from(["CORP", "corp", "Corp.Example.COM", "corp.example.com"])
SPACES = st.text(" \t", max_size=3)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("alice", "alice"),
        ("  alice\t", "alice"),
        ("CORP\\alice", "alice"),
        ("corp\\alice", "alice"),
        ("alice@corp.example.com", "alice"),
        ("alice@CORP", "alice"),
        ("CORP\\ alice @corp.example.com", "alice"),
        ("OTHER\\alice", None),
        ("alice@evil.example", None),
        ("CORP\\alice\\x", None),
        ("CORP\\", None),
        ("@corp", None),
        ("   ", None),
    ],
)
def test_realms_are_stripped_and_foreign_ones_name_no_one(typed: str, expected: str | None) -> None:
    """Listed realms (either form, any case) are stripped; any other realm maps to none."""
    assert map_user_name(typed, REALMS) == expected


def test_without_realms_names_are_looked_up_as_sent() -> None:
    """No realms configured: only surrounding spaces go; `\\` and `@` stay (a directory
    may match userPrincipalName)."""
    assert map_user_name(" alice@corp.example.com ", frozenset()) == "alice@corp.example.com"
    assert map_user_name("CORP\\alice", frozenset()) == "CORP\\alice"


@given(name=NAME, realm=REALM, before=SPACES, after=SPACES, form=st.sampled_from(["nt", "upn"]))
def test_every_realm_form_of_a_name_maps_to_that_name(
    name: str, realm: str, before: str, after: str, form: str
) -> None:
    """Property: a name wrapped in spaces and a configured realm, in either form and any
    case, maps back to exactly that name."""
    typed = f"{realm}\\{name}" if form == "nt" else f"{name}@{realm}"
    assert map_user_name(before + typed + after, REALMS) == name


@given(typed=st.text(max_size=30))
def test_a_mapped_name_carries_no_realm_and_maps_to_itself(typed: str) -> None:
    """Property: with realms configured, what comes out holds no realm separator, no
    surrounding space, and is a fixed point (mapping twice changes nothing)."""
    mapped = map_user_name(typed, REALMS)
    if mapped is not None:
        assert "\\" not in mapped and "@" not in mapped
        assert mapped == mapped.strip() and mapped
        assert map_user_name(mapped, REALMS) == mapped


@given(name=NAME, realm=st.text(max_size=10).filter(lambda r: r.strip().casefold() not in REALMS))
def test_a_foreign_realm_never_reaches_the_short_name(name: str, realm: str) -> None:
    """Property: `user@OTHER` and `OTHER\\user` never map to `user` (a local record of
    the same short name stays out of reach)."""
    assert map_user_name(f"{name}@{realm}", REALMS) != name
    assert map_user_name(f"{realm}\\{name}", REALMS) != name


@pytest.mark.parametrize(
    ("template", "configured", "expected"),
    [
        ("(uid={user})", "", "uid"),
        ("(&(objectClass=user)(sAMAccountName={user}))", "", "sAMAccountName"),
        (
            "(|(sAMAccountName={user})(userPrincipalName={user}))",
            "userprincipalname",
            "userprincipalname",
        ),
        ("(sAMAccountName={user})", "userPrincipalName", None),
        ("(cn=*{user}*)", "", None),
    ],
)
def test_the_name_attribute_is_one_the_filter_matches_on(
    template: str, configured: str, expected: str | None
) -> None:
    """The default is the first attribute compared with {user}; a configured one must be
    compared too, or an entry found could not be found again by its own name."""
    assert name_attribute(template, configured) == expected


@pytest.mark.parametrize("realm", ["", " CORP", "a@b", "A\\B", "x\ty"])
def test_unusable_realm_names_are_refused(realm: str) -> None:
    """A realm must be a plain name: no separators, spaces around or control characters."""
    assert realm_problem(realm) is not None
