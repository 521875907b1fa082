"""RFC 5080 §2.2.2 duplicate detection: one evaluation per request, however often it is
retransmitted.

Keyed by (source address, source port, Identifier, Request Authenticator). While a
request is being decided a duplicate is dropped; once answered, duplicates within the
window get the byte-identical cached reply. Expiry is a pure function of `now`
(STYLE pattern 2): no timers, entries are swept lazily in arrival order.
"""

from __future__ import annotations

import enum
from collections import deque

Key = tuple[str, int, int, bytes]


class Seen(enum.Enum):
    NEW = "new"
    IN_PROGRESS = "in_progress"
    ANSWERED = "answered"


# Stored for a request that was decided but could not be answered (no real reply is
# empty): a retransmission is dropped, never decided again.
NO_REPLY = b""
_ABSENT = b"absent"  # a sentinel no stored reply is identical to (compared with `is`)
_NEW: tuple[Seen, None] = (Seen.NEW, None)
_IN_PROGRESS: tuple[Seen, None] = (Seen.IN_PROGRESS, None)


class DuplicateCache:
    """Bounded cache of requests in progress and replies sent.

    `max_entries` and `max_bytes` (the replies' octets) bound memory under a flood:
    past either, the oldest answered entries are forgotten early (a very late
    retransmit is then evaluated again, and a used OTP is still refused by the store,
    so this never turns into a second accept). Replies are mostly under 100 octets, but
    a Proxy-State echo can make one 4,096 (RFC 2865 §3): 200,000 of those would be
    800 MB without `max_bytes`.
    """

    def __init__(
        self, window: float, max_entries: int = 200_000, max_bytes: int = 32 * 2**20
    ) -> None:
        self.window = window
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._replies: dict[Key, bytes | None] = {}  # None: in progress
        self._expiry: deque[tuple[float, Key]] = deque()
        self._bytes = 0  # octets of the replies held

    def __len__(self) -> int:
        return len(self._replies)

    @property
    def reply_bytes(self) -> int:
        """Octets of the replies held (at most `max_bytes`)."""
        return self._bytes

    def check(self, key: Key, now: float) -> tuple[Seen, bytes | None]:
        """Classify a request; NEW marks it in progress (the caller must then call
        `answered` or `forget`)."""
        exp = self._expiry
        if exp and exp[0][0] <= now:
            self._sweep(now)
        # A new key is the common case: a sentinel lookup, not a raised KeyError.
        reply = self._replies.get(key, _ABSENT)
        if reply is _ABSENT:
            self._replies[key] = None
            return _NEW
        if reply is None:
            return _IN_PROGRESS
        return Seen.ANSWERED, reply

    def answered(self, key: Key, reply: bytes, now: float) -> None:
        """Remember the reply sent for `key` until now + window."""
        if self.window <= 0:
            self._replies.pop(key, None)
            return
        earlier = self._replies.get(key)  # a reply, when an answer is replaced
        self._replies[key] = reply
        self._bytes += len(reply) - (0 if earlier is None else len(earlier))
        self._expiry.append((now + self.window, key))
        if len(self._replies) > self.max_entries or self._bytes > self.max_bytes:
            self._evict_oldest()

    def forget(self, key: Key) -> None:
        """Drop an in-progress entry (the request was not answered: a retransmit may retry)."""
        if self._replies.get(key, b"") is None:
            del self._replies[key]

    def _sweep(self, now: float) -> None:
        exp = self._expiry
        replies = self._replies
        while exp and exp[0][0] <= now:
            _, key = exp.popleft()
            # An entry re-answered later has a later expiry queued; remove only when
            # the stored reply is not in progress again.
            reply = replies.get(key)
            if reply is not None:
                del replies[key]
                self._bytes -= len(reply)

    def _evict_oldest(self) -> None:
        exp = self._expiry
        replies = self._replies
        while exp and (len(replies) > self.max_entries or self._bytes > self.max_bytes):
            _, key = exp.popleft()
            reply = replies.get(key)
            if reply is not None:
                del replies[key]
                self._bytes -= len(reply)
