"""Group membership from a directory: `memberOf` values or a group search, optionally
following nested groups, plus the self-provisioning allow/deny rule.

Nested groups are followed by walking up level by level (one OR-search per level, a
bounded depth), which works on OpenLDAP and Active Directory alike; AD's
`1.2.840.113556.1.4.1941` rule is unknown to OpenLDAP.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from authd.config.model import GroupSearch, SelfServiceGroups

if TYPE_CHECKING:
    from authd.auth.ldap_primary import Directory

MAX_DEPTH = 8  # levels of nesting followed; deeper chains are cut, cycles are harmless
MAX_GROUPS = 1000
BATCH = 50  # group DNs per OR-filter

_HEX_ESCAPE = re.compile(r"\\([0-9a-fA-F]{2})|\\(.)")


def rdn_value(dn: str) -> str:
    """The (unescaped) value of a DN's first RDN: `cn=vpn\\2C eu,ou=g` -> `vpn, eu`."""
    try:
        value = parse_dn(dn, escape=False, strip=True)[0][1]
    except Exception:  # ldap3 raises several types for a malformed DN
        return ""
    raw = _HEX_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)) if m.group(1) else m.group(2), value)
    return raw


def domain_base(dn: str) -> str:
    """The trailing `dc=` part of a DN (`ou=people,dc=example,dc=org` ->
    `dc=example,dc=org`): where groups are searched when `groups.base` is not set."""
    try:
        rdns = parse_dn(dn, escape=False, strip=True)
    except Exception:  # ldap3 raises several types for a malformed DN
        return dn
    tail: list[str] = []
    for attr, value, _ in reversed(rdns):
        if attr.lower() != "dc":
            break
        tail.insert(0, f"{attr}={value}")
    return ",".join(tail) or dn


def group_filter(template: str, dn: str, user: str) -> str:
    """A group filter with `{dn}` and `{user}` escaped per RFC 4515."""
    return template.replace("{dn}", escape_filter_chars(dn)).replace(
        "{user}", escape_filter_chars(user)
    )


class GroupResolver:
    """Names of the groups a user belongs to, per `primary.backends[].groups`."""

    def __init__(self, directory: Directory, config: GroupSearch, user_base: str) -> None:
        self._directory = directory
        self._config = config
        self._base = config.base or domain_base(user_base)

    def resolve(self, dn: str, user: str, member_of: Sequence[str]) -> tuple[str, ...]:
        """Sorted, de-duplicated group names. `member_of` is the user's memberOf values."""
        names: dict[str, str] = {}  # group DN (lower) -> name
        if self._config.mode == "memberof":
            for group_dn in member_of:
                names[group_dn.lower()] = rdn_value(group_dn)
            frontier = list(member_of)
        else:
            found = self._search([group_filter(self._config.filter, dn, user)])
            names.update({g.lower(): n for g, n in found})
            frontier = [g for g, _ in found]
        if self._config.nested:
            seen = set(names)
            for _ in range(MAX_DEPTH):
                if not frontier or len(seen) >= MAX_GROUPS:
                    break
                parents = self._search([group_filter(self._config.filter, g, "") for g in frontier])
                frontier = []
                for group_dn, name in parents:
                    if group_dn.lower() not in seen:
                        seen.add(group_dn.lower())
                        names[group_dn.lower()] = name
                        frontier.append(group_dn)
        return tuple(sorted({n for n in names.values() if n}))

    def _search(self, filters: list[str]) -> list[tuple[str, str]]:
        """(dn, name) of the groups matching any of `filters`, in batches."""
        out: list[tuple[str, str]] = []
        attr = self._config.name_attribute
        for i in range(0, len(filters), BATCH):
            batch = filters[i : i + BATCH]
            filt = batch[0] if len(batch) == 1 else "(|" + "".join(batch) + ")"
            for entry in self._directory.search(self._base, filt, [attr]):
                out.append((entry.dn, entry.first(attr) or rdn_value(entry.dn)))
        return out


def may_self_provision(groups: Iterable[str], rule: SelfServiceGroups) -> bool:
    """`selfservice.groups`: deny wins over allow; `*` means everyone.

    allow [*] deny []: all users; allow [g]: members only; allow [*] deny [g]: all
    except members; allow []: nobody.
    """
    member = set(groups)
    if "*" in rule.deny or member & set(rule.deny):
        return False
    return "*" in rule.allow or bool(member & set(rule.allow))
