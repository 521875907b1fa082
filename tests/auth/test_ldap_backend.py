"""LdapBackend and group logic without a server: a hand-written fake Directory."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import pytest

from authd.auth.groups import (
    GroupResolver,
    domain_base,
    group_filter,
    may_self_provision,
    rdn_value,
)
from authd.auth.ldap_primary import (
    Directory,
    DirectoryEntry,
    DirectoryUnavailable,
    LdapBackend,
    _FairSlots,
    user_filter,
)
from authd.config.model import (
    GroupSearch,
    LdapServer,
    PrimaryBackend,
    SelfServiceGroups,
    UserSearch,
)

PEOPLE = "ou=people,dc=x"
GROUPS = "ou=groups,dc=x"


class FakeDirectory(Directory):
    """Answers from a dict of entries; records every search and bind; can be 'down'."""

    def __init__(
        self,
        config: PrimaryBackend,
        entries: dict[str, dict[str, tuple[str, ...]]],
        passwords: dict[str, str],
    ) -> None:
        super().__init__(config)
        self.entries = entries
        self.passwords = passwords
        self.searches: list[str] = []
        self.binds: list[str] = []
        self.down = False

    def search(
        self,
        base: str,
        filter: str,
        attributes: list[str],
        *,
        scope: str = "sub",
        size_limit: int = 0,
    ) -> list[DirectoryEntry]:
        if self.down:
            raise DirectoryUnavailable("fake directory is down")
        self.searches.append(filter)
        out = []
        for dn, attrs in self.entries.items():
            if dn.endswith(base) and _matches(filter, attrs):
                out.append(DirectoryEntry(dn, {k.lower(): v for k, v in attrs.items()}))
        return out

    def bind(self, dn: str, password: str) -> bool:
        if self.down:
            raise DirectoryUnavailable("fake directory is down")
        self.binds.append(dn)
        return self.passwords.get(dn) == password


def _matches(filt: str, attrs: dict[str, tuple[str, ...]]) -> bool:
    """Just enough filter logic for these tests: (a=v) and (|(a=v)(b=w)...)."""
    parts = filt[3:-1].strip("()").split(")(") if filt.startswith("(|") else [filt.strip("()")]
    for part in parts:
        name, _, value = part.partition("=")
        if value in attrs.get(name, ()):
            return True
    return False


def config(**kw: Any) -> PrimaryBackend:
    base = PrimaryBackend(
        type="ldap",
        name="fake",
        servers=(LdapServer("ldap://192.0.2.1"),),
        user_search=UserSearch(base=PEOPLE),
        groups=GroupSearch(base=GROUPS, cache_ttl=0),
    )
    return replace(base, **kw)


def directory(cfg: PrimaryBackend) -> FakeDirectory:
    entries = {
        f"uid=ann,{PEOPLE}": {
            "uid": ("ann",),
            "mail": ("ann@x",),
            "memberOf": (f"cn=ops,{GROUPS}",),
        },
        f"cn=ops,{GROUPS}": {"cn": ("ops",), "member": (f"uid=ann,{PEOPLE}",)},
        f"cn=it,{GROUPS}": {"cn": ("it",), "member": (f"cn=ops,{GROUPS}",)},
        f"cn=all,{GROUPS}": {"cn": ("all",), "member": (f"cn=it,{GROUPS}",)},
        f"cn=loop,{GROUPS}": {"cn": ("loop",), "member": (f"cn=all,{GROUPS}", f"cn=loop,{GROUPS}")},
    }
    entries[f"cn=all,{GROUPS}"]["member"] += (f"cn=loop,{GROUPS}",)  # a cycle
    return FakeDirectory(cfg, entries, {f"uid=ann,{PEOPLE}": "pw"})


def test_empty_password_never_binds() -> None:
    """Fail closed: the user is known but an empty password costs no bind at all."""
    cfg = config()
    d = directory(cfg)
    r = LdapBackend(cfg, directory=d).authenticate("ann", "")
    assert (r.known, r.ok) == (True, False) and d.binds == []


def test_directory_down_is_unreachable_not_rejected_silently() -> None:
    """An unreachable directory is reported as such, so the engine applies failmode."""
    cfg = config()
    d = directory(cfg)
    d.down = True
    b = LdapBackend(cfg, directory=d)
    assert b.authenticate("ann", "pw").unreachable
    assert b.lookup("ann").unreachable


def test_over_long_or_empty_user_is_unknown_without_a_search() -> None:
    """Absurd user names are refused before they reach the directory."""
    cfg = config()
    d = directory(cfg)
    b = LdapBackend(cfg, directory=d)
    assert not b.authenticate("", "pw").known
    assert not b.authenticate("a" * 300, "pw").known
    assert d.searches == []


def test_nested_groups_follow_cycles_and_stop() -> None:
    """The upward walk finds every ancestor once, even around a membership cycle."""
    cfg = config(groups=GroupSearch(base=GROUPS, nested=True, cache_ttl=0))
    b = LdapBackend(cfg, directory=directory(cfg))
    assert b.authenticate("ann", "pw").groups == ("all", "it", "loop", "ops")


def test_group_resolver_search_mode() -> None:
    """mode search finds direct groups by member filter, without memberOf."""
    cfg = config()
    r = GroupResolver(
        directory(cfg), GroupSearch(mode="search", base=GROUPS, filter="(member={dn})"), PEOPLE
    )
    assert r.resolve(f"uid=ann,{PEOPLE}", "ann", ()) == ("ops",)


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("alice", "(uid=alice)"),
        ("*", "(uid=\\2a)"),
        ("a)(uid=*", "(uid=a\\29\\28uid=\\2a)"),
        ("x\x00", "(uid=x\\00)"),
        ("back\\slash", "(uid=back\\5cslash)"),
    ],
)
def test_user_filter_escapes_rfc4515(user: str, expected: str) -> None:
    """Every filter metacharacter, NUL included, becomes a \\XX escape."""
    assert user_filter("(uid={user})", user) == expected


def test_group_filter_escapes_dn_and_user() -> None:
    """DNs with escapes of their own are escaped again for the filter."""
    assert (
        group_filter("(|(member={dn})(memberUid={user}))", "uid=a\\2A,dc=x", "a*")
        == "(|(member=uid=a\\5c2A,dc=x)(memberUid=a\\2a))"
    )


def test_group_base_defaults_to_the_domain() -> None:
    """Without groups.base, groups are searched from the dc= suffix of the user base."""
    assert domain_base("ou=people,dc=example,dc=org") == "dc=example,dc=org"
    assert domain_base("ou=people,o=corp") == "ou=people,o=corp"


def test_rdn_value_unescapes() -> None:
    """Group names from memberOf DNs come out readable."""
    assert rdn_value("cn=vpn\\2C eu,ou=g,dc=x") == "vpn, eu"
    assert rdn_value("cn=staff,ou=g") == "staff"


@pytest.mark.parametrize(
    ("allow", "deny", "groups", "expected"),
    [
        (("*",), (), (), True),  # all users
        (("vpn",), (), ("vpn",), True),  # members only
        (("vpn",), (), ("other",), False),
        (("*",), ("contractors",), ("contractors",), False),  # all except members
        (("*",), ("contractors",), ("staff",), True),
        ((), (), ("vpn",), False),  # nobody
        (("vpn",), ("*",), ("vpn",), False),
    ],
)
def test_self_provisioning_rule(
    allow: tuple[str, ...], deny: tuple[str, ...], groups: tuple[str, ...], expected: bool
) -> None:
    """selfservice.groups: all, members only, all except members, nobody; deny wins."""
    assert may_self_provision(groups, SelfServiceGroups(allow=allow, deny=deny)) is expected


def test_fair_slots_hand_a_released_slot_to_the_waiter() -> None:
    """A thread that releases cannot barge back in ahead of one already waiting (the
    starvation scripts/bench/ldap measured with threading.Semaphore)."""
    slots = _FairSlots(1)
    assert slots.acquire(0)
    got = threading.Event()
    waiter = threading.Thread(target=lambda: slots.acquire(5) and got.set())
    waiter.start()
    while not slots._waiters:  # the waiter is queued
        threading.Event().wait(0.001)
    slots.release()
    assert not slots.acquire(0)  # handed over, not free
    waiter.join(5)
    assert got.is_set()
    slots.release()
    assert slots.acquire(0)
    assert not slots.acquire(0.01)
