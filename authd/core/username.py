"""What a typed user name names, before any lookup: surrounding white space dropped,
and the realm forms gateways add (`REALM\\user`, `user@REALM`) stripped for the realms
a front-end is configured with, as FreeRADIUS's ntdomain and suffix realms do with
`strip`.

This only removes what is around a name. Who the user is stays the authority's word:
a directory entry's own name attribute, or the store's exact name for a local user.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

NT_DOMAIN_SEPARATOR = "\\"
REALM_SEPARATOR = "@"
# An equality item of an LDAP filter template that compares an attribute with the typed
# name (RFC 4515 §3: `(attr=value)`, attr a descriptor per RFC 4512 §1.4).
_COMPARED_WITH_USER = re.compile(r"\(([A-Za-z][A-Za-z0-9-]*)=\{user\}\)")


def realm_problem(realm: str) -> str | None:
    """Why `realm` cannot be a configured realm name (safe to show), or None."""
    if not realm or realm != realm.strip():
        return "a realm is a non-empty name without surrounding spaces"
    if NT_DOMAIN_SEPARATOR in realm or REALM_SEPARATOR in realm:
        return "a realm name contains no '\\' and no '@'"
    if not realm.isprintable():
        return "a realm name is printable text"
    return None


def realm_set(realms: Iterable[str]) -> frozenset[str]:
    """Configured realm names as `map_user_name` compares them: NetBIOS domains and
    DNS names are case-insensitive."""
    return frozenset(r.casefold() for r in realms)


def map_user_name(typed: str, realms: frozenset[str]) -> str | None:
    """The name to look up for `typed`, or None when it names no user here.

    Without realms, only surrounding white space goes (a directory ignores it too, and
    local names hold none). With realms (from `realm_set`), `REALM\\user` and
    `user@REALM` lose a listed realm; a name carrying any other realm maps to no user,
    so a foreign realm can never reach a local record of the same short name.
    """
    name = typed.strip()
    if realms:
        domain, sep, rest = name.partition(NT_DOMAIN_SEPARATOR)
        if sep:
            if domain.strip().casefold() not in realms:
                return None
            name = rest.strip()
        local, sep, realm = name.rpartition(REALM_SEPARATOR)
        if sep:
            if realm.strip().casefold() not in realms:
                return None
            name = local.strip()
        if NT_DOMAIN_SEPARATOR in name or REALM_SEPARATOR in name:
            return None
    return name or None


def name_attribute(filter_template: str, configured: str = "") -> str | None:
    """The directory attribute whose value is the user's name in authd: `configured`,
    else the first one the user filter compares with `{user}`. None when the filter
    compares none, or not the configured one: the entry found for a name must be
    found again by its own name (token_storage: ldap, authctl), so that attribute has
    to be one the filter matches on."""
    compared = _COMPARED_WITH_USER.findall(filter_template)
    if not configured:
        return compared[0] if compared else None
    wanted = configured.casefold()
    return configured if any(a.casefold() == wanted for a in compared) else None
