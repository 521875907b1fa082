"""Who may provision tokens in the portal (`selfservice.groups`)."""

from __future__ import annotations

from collections.abc import Iterable

EVERYONE = "*"


def may_self_provision(groups: Iterable[str], allow: Iterable[str], deny: Iterable[str]) -> bool:
    """Allowed when `allow` names `*` or one of the user's groups, and `deny` names
    neither. `allow: []` is nobody; `deny: ["*"]` is nobody too (deny wins)."""
    mine = set(groups)
    allowed = set(allow)
    denied = set(deny)
    if EVERYONE in denied or mine & denied:
        return False
    return EVERYONE in allowed or bool(mine & allowed)
