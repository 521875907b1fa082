"""How decisions meet the store: together (`Batched`: one read statement and one write
transaction for many) or one by one (`OneByOne`). Both run the same decision code
(authd/decision) and give the same answers and rows for the same requests; batching
only saves work. The scheduler (`threaded.py`) uses either through `Decisions`.

Batched, in two phases per batch:
1. reads and planning under one `BatchingStore.decision_reads` block (the users' rows
   read ahead in one statement, no write lock), each
   decision ending as a `Planned` write or a `Pending` blocking step (first factor,
   directory lookup, challenge State), which goes back to the scheduler to run outside
   any transaction and returns in a later batch;
2. every `Planned` write in ONE `commit_decisions` transaction, and only then the answers.
So a store's write lock is held for the writes alone, and two worker processes (or
nodes) compute side by side instead of taking turns.

Exactness does not rest on the reads: every write is conditional (compare-and-set on
step/counter, conditional DELETE of a backup code, failures `+1 RETURNING`, the lock
re-checked), so a code used meanwhile by another process or node is a lost CAS: REPLAY,
as between concurrent threads. Within a batch a user appears once (a second request of
theirs starts the next batch, whose reads see the first's write), so this process's
decisions for one user still see each other's writes, as if decided one by one. If the
batch's transaction fails it is rolled back (nothing of it committed or answered) and
each write is committed again alone (the same compare-and-set: exact either way).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

from twisted.logger import Logger

from authd.auth.interfaces import AuthRequest, BatchingStore, Decision, DecisionCommit
from authd.decision.attempt import Pending
from authd.decision.engine import Engine
from authd.decision.plan import DecisionStats, Planned
from authd.decision.request import store_key

log = Logger(namespace="authd.batching.batch")

# A request and the time it is decided at, or a decision whose blocking step has run.
Item = tuple[AuthRequest, float] | Pending
# A decision and its stats, or the exception that failed it (already audited).
Result = tuple[Decision, DecisionStats] | BaseException
# Decisions per batch: bounds the latency a batch adds (~0.1 ms of decision each).
BATCH_SIZE = 64


class Decisions(Protocol):
    """What the scheduler runs decisions with."""

    engine: Engine
    pauses: bool  # blocking steps come back as Pending, for the scheduler to run
    batch_size: int  # items worth handing to one decide_many call

    def decide_many(self, items: Sequence[Item]) -> list[Result | Pending]:
        """Each item's result, in order, committed when this returns, or (`pauses`) its
        Pending step. A raised exception fails every item (nothing was committed)."""
        ...

    def time_budget(self, seconds: float) -> AbstractContextManager[None]:
        """Bounds the store waits of one decide_many call together."""
        ...


def _request(item: Item) -> tuple[AuthRequest, float]:
    return (item.request, item.now) if isinstance(item, Pending) else item


class OneByOne:
    """Each request decided whole (its blocking step included) and committed alone:
    for stores that gain nothing from batches (tokens held in a directory), and the
    reference the batched results are tested against."""

    pauses = False
    batch_size = 1

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def decide_many(self, items: Sequence[Item]) -> list[Result | Pending]:
        out: list[Result | Pending] = []
        for item in items:
            if isinstance(item, Pending):  # the scheduler queues none: `pauses` is False
                raise TypeError("OneByOne decides requests whole; it never pauses one")
            req, now = item
            try:
                out.append(self.engine.decide_with_stats(req, now))
            except Exception as e:  # audited by decide_with_stats
                out.append(e)
        return out

    def time_budget(self, seconds: float) -> AbstractContextManager[None]:
        return nullcontext()


class Batched:
    """Decisions in batches on a `BatchingStore` (see the module doc)."""

    pauses = True
    batch_size = BATCH_SIZE

    def __init__(self, engine: Engine, store: BatchingStore) -> None:
        if engine.store is not store:
            raise ValueError("the engine must read the store that commits its batches")
        self.engine = engine
        self._store = store

    def time_budget(self, seconds: float) -> AbstractContextManager[None]:
        return self._store.time_budget(seconds)

    def decide_many(self, items: Sequence[Item]) -> list[Result | Pending]:
        out: list[Result | Pending] = []
        rest = list(items)
        while rest:
            batch, names = _distinct_users(rest)
            out.extend(self._batch(batch, names))
            rest = rest[len(batch) :]
        return out

    def _batch(self, batch: list[Item], names: list[str]) -> list[Result | Pending]:
        """Phase 1 (reads and plans), then phase 2 (one commit), for users that differ;
        `names`: whom the new requests' reads are for."""
        steps: list[Planned | Pending | BaseException] = []
        try:
            with self._store.decision_reads(names):
                for item in batch:
                    steps.append(self._plan(item))
        except Exception as e:  # the reads failed: nothing of the batch was written
            return self._failed(batch, e)
        planned = [s for s in steps if isinstance(s, Planned)]
        their_items = [b for b, s in zip(batch, steps, strict=True) if isinstance(s, Planned)]
        answers = iter(self._commit(planned, their_items))
        out: list[Result | Pending] = []
        for step in steps:
            out.append(next(answers) if isinstance(step, Planned) else step)
        return out

    def _failed(self, batch: list[Item], error: Exception) -> list[Result | Pending]:
        """Every decision of a batch whose reads failed fails with them, audited (one
        audit write tried: against a hung store each would wait for its timeout)."""
        write = True
        for item in batch:
            write = self.engine.record_failure(*_request(item), error, write)
        return [error] * len(batch)

    def _plan(self, item: Item) -> Planned | Pending | BaseException:
        """One decision up to its write (or its blocking step); an error is audited
        and returned, and fails only this decision."""
        try:
            if isinstance(item, Pending):
                return item.finish()
            return self.engine.begin(*item)
        except Exception as e:
            self.engine.record_failure(*_request(item), e)
            return e

    def _commit(self, planned: list[Planned], items: list[Item]) -> list[Result]:
        """Every write in one transaction, then the answers; rolled back, each write
        again alone. The transaction's time is shared out evenly (store_seconds)."""
        if not planned:
            return []
        clock = time.perf_counter
        begin = clock()
        try:
            commits = self._store.commit_decisions([p.write for p in planned])
        except Exception as e:  # rolled back: none of it is committed or answered
            log.debug(
                "decision batch rolled back ({error}); committing its writes one by one",
                error=type(e).__name__,  # only the type: the text may quote values
            )
            return [self._alone(p, item) for p, item in zip(planned, items, strict=True)]
        share = (clock() - begin) / len(planned)
        return [p.settle(c, share) for p, c in zip(planned, commits, strict=True)]

    def _alone(self, planned: Planned, item: Item) -> Result:
        begin = time.perf_counter()
        try:
            commit: DecisionCommit = self._store.commit_decisions([planned.write])[0]
        except Exception as e:
            self.engine.record_failure(*_request(item), e)
            return e
        return planned.settle(commit, time.perf_counter() - begin)


def _distinct_users(items: list[Item]) -> tuple[list[Item], list[str]]:
    """The longest prefix of `items` (at most BATCH_SIZE, at least one) in which no
    user comes twice (a user's next decision must read this one's write), and the
    names its new requests read."""
    seen: set[str] = set()
    taken: list[Item] = []
    names: list[str] = []
    for item in items[:BATCH_SIZE]:
        pending = isinstance(item, Pending)
        key = item.name if isinstance(item, Pending) else store_key(item[0])
        if key is not None:  # None: a malformed name, read by no one
            if key in seen:
                break
            seen.add(key)
            if not pending:
                names.append(key)
        taken.append(item)
    return taken, names
