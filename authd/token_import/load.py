"""Writing a parsed token file: every token or none."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from authd.core.model import Token


class TokenSink(Protocol):
    """What loading needs of a store (`SqlStore`, `LdapTokenStore`)."""

    def add_tokens(self, new: Sequence[Token]) -> None:
        """All in one transaction; AlreadyExists naming the serials already taken."""
        ...


def load_tokens(store: TokenSink, tokens: Sequence[Token]) -> int:
    """Insert the (unassigned) tokens of one file; returns how many."""
    if tokens:
        store.add_tokens(tokens)
    return len(tokens)
