"""Which dropped RADIUS packets reach the log: the first of each kind, then counts.

A gateway whose packets are all dropped (an unknown source address, a pam_radius too
old to send Message-Authenticator, a wrong shared secret) looks dead from both ends
unless the server says why. Every drop is counted in authd_drops_total; the log gets
the first drop per (source address, reason) at once, then at most one summary per
interval with how many followed: a flood costs a line a minute, not a line a packet.
Pure: the caller passes `now` and writes the lines.
"""

from __future__ import annotations

from dataclasses import dataclass

# What an operator should look at, per drop reason (README, Troubleshooting).
EXPLANATIONS = {
    "unknown_client": "source address matches no radius.clients entry",
    "missing_message_authenticator": (
        "no Message-Authenticator; the client must send it (BlastRADIUS, CVE-2024-3596) "
        "or have require_message_authenticator: false"
    ),
    "bad_message_authenticator": "Message-Authenticator does not verify: wrong shared secret?",
    "unsupported_code": "not an Access-Request or Status-Server",
    "overload": "too many requests in flight",
}
MORE_SOURCES = "(other sources)"  # the key for sources past `max_sources`


@dataclass(frozen=True, slots=True)
class DropLine:
    """One log line: the first drop (`count` 1, `seconds` 0) or a summary of `count`
    drops over `seconds`."""

    source: str
    client: str
    reason: str
    count: int
    seconds: float
    first: bool

    @property
    def why(self) -> str:
        """The reason with what it usually means."""
        if self.reason.startswith("malformed_"):
            return f"{self.reason} (breaks RFC 2865 packet rules)"
        explained = EXPLANATIONS.get(self.reason)
        return f"{self.reason} ({explained})" if explained else self.reason


@dataclass(slots=True)
class _Seen:
    client: str
    count: int  # drops since the last line
    since: float  # when the last line was written


class DropLog:
    """Rate limits drop lines per (source, reason); bounded to `max_sources` keys."""

    def __init__(self, interval: float = 60.0, max_sources: int = 1024) -> None:
        self.interval = interval
        self._max_sources = max_sources
        self._seen: dict[tuple[str, str], _Seen] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def note(self, source: str, client: str, reason: str, now: float) -> DropLine | None:
        """Count one drop; the line to write now, if any."""
        key = (source, reason)
        seen = self._seen.get(key)
        if seen is None and len(self._seen) >= self._max_sources:
            key = (MORE_SOURCES, reason)
            seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = _Seen(client, 0, now)
            return DropLine(key[0], client, reason, 1, 0.0, first=True)
        seen.count += 1
        if now - seen.since < self.interval:
            return None
        return self._summary(key, seen, now)

    def flush(self, now: float) -> list[DropLine]:
        """Summaries due by `now` (so a burst that stopped is still told), and forget
        keys quiet for a whole interval: their next drop is logged at once again."""
        lines = []
        for key, seen in list(self._seen.items()):
            if now - seen.since < self.interval:
                continue
            if seen.count:
                lines.append(self._summary(key, seen, now))
            else:
                del self._seen[key]
        return lines

    @staticmethod
    def _summary(key: tuple[str, str], seen: _Seen, now: float) -> DropLine:
        line = DropLine(key[0], seen.client, key[1], seen.count, now - seen.since, first=False)
        seen.count, seen.since = 0, now
        return line
