"""Which benchmark runs may be used: a run counts only if every request got the answer
it was built for (an accept for an accept, a reject for a reject) and none went
unanswered. A run that fails is discarded, said so loudly, and never enters a median or
a ratio: a server that rejects (cheaper) or drops requests must not look fast.

Shared by scripts/bench/radius_bench.py and scripts/bench/http/bench.py; tested in
tests/bench/test_harness.py.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Protocol, TypeVar


class Judged(Protocol):
    """A run as the benchmarks record it: its rate and why it is unusable ('' if not)."""

    @property
    def rps(self) -> float: ...

    @property
    def problem(self) -> str: ...


R = TypeVar("R", bound=Judged)


def problem(sent: int, right: int, wrong: int, lost: int, what: str = "accept") -> str:
    """Why a run is unusable, '' when each of its `sent` requests got its expected answer
    (`right` of them did, `wrong` got another answer, `lost` got none)."""
    faults = []
    if wrong:
        faults.append(f"{wrong} of {sent} answers were not the expected {what}")
    if lost:
        faults.append(f"{lost} of {sent} requests got no answer")
    if not faults and right != sent:
        faults.append(f"{sent - right} of {sent} requests not accounted for")
    return "; ".join(faults)


def shout(name: str, run: int, why: str) -> None:
    """Announce a discarded run on stdout and stderr, where nobody can miss it."""
    line = f"!!! DISCARDED: {name}, run {run}: {why}. Not used for any median or ratio."
    print(line, flush=True)
    if not sys.stdout.isatty() or not sys.stderr.isatty():
        print(line, file=sys.stderr, flush=True)


def median_kept(runs: Sequence[R]) -> R | None:
    """The kept run with the median requests/s (its own latency and CPU with it), or None
    when every run was discarded."""
    kept = sorted((r for r in runs if not r.problem), key=lambda r: r.rps)
    return kept[(len(kept) - 1) // 2] if kept else None


def kept_label(runs: Sequence[Judged]) -> str:
    """'3/3' runs kept, for the tables."""
    return f"{sum(1 for r in runs if not r.problem)}/{len(runs)}"
