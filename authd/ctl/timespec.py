"""`--since T` for `authctl audit`: an ISO 8601 time, or a duration meaning "that long ago".

Durations use the config file's syntax (`30m`, `2h`, `7d`, `500ms`, plain seconds) so an
operator learns one notation. An ISO time without a zone is local time, like the times
authctl prints.
"""

from __future__ import annotations

from datetime import datetime

from authd.config.durations import parse_duration
from authd.config.errors import ConfigValueError
from authd.ctl.parser import UsageError


def parse_since(text: str, now: float) -> float:
    """POSIX seconds for `text`; raises UsageError (exit 2) when it is neither form."""
    text = text.strip()
    try:
        ago = parse_duration(text)
    except ConfigValueError:
        ago = None
    if ago is not None:
        return now - ago
    try:
        # Python 3.11 reads full ISO 8601 here, including a trailing `Z`.
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--since {text!r}: give an ISO 8601 time (2026-01-31T08:00) "
            "or a duration ago (30m, 2h, 7d)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # naive: local time
    return when.timestamp()
