"""PostgreSQL connections none of whose waits outlasts `store.timeout`.

The server's own limits (statement_timeout, lock_timeout) need a server that runs: a
stopped or unreachable one (SIGSTOP, a frozen VM, a dropped route) still accepts TCP
in its kernel and answers nothing, and psycopg would wait forever. So every wait of a
`BoundedConnection` (connect, each statement's answer, BEGIN, COMMIT, ROLLBACK) is cut
on the client at `timeout`, and at what is left of the thread's `budget()` if one is
open: a request's store waits together stay within what its client will wait for.
Only time spent waiting on the server counts against a budget: a directory bind or a
password hash between two statements of the same decision has bounds of its own.
A cut wait leaves the connection unusable (mid-protocol): it is closed at once. The
server then rolls back whatever transaction it still had open, so a write whose COMMIT
was never sent is never committed later, however long the server stayed stopped.

Not compiled (setup.py HOT_PATH): it subclasses psycopg's Connection.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import psycopg
from psycopg import waiting
from psycopg.abc import AdaptContext, PQGen
from psycopg.adapt import AdaptersMap
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from authd.core.errors import StoreTimeout

RV = TypeVar("RV")

# psycopg's own poll interval (psycopg.connection._WAIT_INTERVAL): how often a wait
# wakes to notice Ctrl-C.
_POLL = 0.1


class _Budget:
    """Seconds this thread may still wait on the server (`budget`)."""

    __slots__ = ("left",)

    def __init__(self, left: float) -> None:
        self.left = left


_budget: ContextVar[_Budget | None] = ContextVar("authd_store_budget", default=None)
# A longer limit per wait than the connection's timeout (`patience`).
_patience: ContextVar[float | None] = ContextVar("authd_store_patience", default=None)


@contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Every wait on a BoundedConnection in this thread until the block ends, together,
    at most `seconds` (each also at most its connection's timeout). Budgets do not
    nest: inside one, another only lowers what is left of it."""
    outer = _budget.get()
    if outer is not None:
        outer.left = min(outer.left, seconds)
        yield
        return
    token = _budget.set(_Budget(seconds))
    try:
        yield
    finally:
        _budget.reset(token)


@contextmanager
def outside_budget() -> Iterator[None]:
    """The thread's budget set aside for the block: for work that sends nothing but
    still passes through `BoundedConnection.wait` (a pool's rollback of an idle
    connection), which must not be refused because the request's time is spent."""
    token = _budget.set(None)
    try:
        yield
    finally:
        _budget.reset(token)


def _spent(started: float) -> None:
    """Count the time since `started` (a wait on the server) against the budget."""
    current = _budget.get()
    if current is not None:
        current.left -= time.monotonic() - started


@contextmanager
def patience(seconds: float) -> Iterator[None]:
    """Each wait in this thread until the block ends may take up to `seconds` instead of
    its connection's timeout: for schema upgrades at start-up, not for requests."""
    token = _patience.set(seconds)
    try:
        yield
    finally:
        _patience.reset(token)


def time_left(timeout: float) -> float:
    """How long the next wait may take: `timeout` (or the `patience` in force), or what
    is left of the budget when that is less."""
    limit = _patience.get() or timeout
    current = _budget.get()
    return limit if current is None else min(limit, current.left)


def bounded_conninfo(conninfo: str, timeout: float) -> str:
    """`conninfo` with `server_options(timeout)` added to any options it has."""
    params = conninfo_to_dict(conninfo)
    own = str(params.get("options") or "")
    params["options"] = f"{own} {server_options(timeout)}".strip()
    return make_conninfo("", **params)


def server_options(timeout: float) -> str:
    """libpq `options` so that a running server gives up too: a statement or a lock wait
    (a row another node holds) is cancelled there a little before the client would cut
    it, so the connection (its prepared statements) stays usable."""
    ms = max(1, int(timeout * 900))
    return f"-c statement_timeout={ms} -c lock_timeout={ms}"


class BudgetedQueuePool(QueuePool):
    """SQLAlchemy's QueuePool whose wait for a free connection (all of them lent) is cut
    like a BoundedConnection's waits: at its timeout, or at what is left of the
    thread's `budget()`, and counted against that budget (a new connection's connect
    counts twice: conservative, and only until the pool is full). For both backends:
    a request queued behind busy connections is still answered in its time."""

    @property
    def _timeout(self) -> float:
        return max(0.0, time_left(self._limit))

    @_timeout.setter
    def _timeout(self, value: float) -> None:
        self._limit = value

    def _do_get(self) -> ConnectionPoolEntry:
        started = time.monotonic()
        try:
            return super()._do_get()
        finally:
            _spent(started)


class BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every wait is bounded: open it with `open`."""

    timeout = 2.0  # per wait; set by `open`

    @classmethod
    def open(
        cls,
        conninfo: str,
        timeout: float,
        *,
        autocommit: bool,
        context: AdaptContext | None = None,
    ) -> BoundedConnection:
        """Connect within `time_left(timeout)` seconds, with `server_options(timeout)`.
        psycopg's own `connect` rounds connect_timeout to whole seconds, at least 2
        (libpq's rule), so this does what it does with a float timeout: its connection
        generator, then autocommit and the adapters of `context` (SQLAlchemy's)."""
        seconds = time_left(timeout)
        if seconds <= 0:
            raise StoreTimeout("no time left to connect to the database")
        started = time.monotonic()
        try:
            gen = cls._connect_gen(bounded_conninfo(conninfo, timeout))
            conn = waiting.wait_conn(gen, interval=_POLL, timeout=seconds)
        except psycopg.errors._WaitTimeout:
            raise psycopg.errors.ConnectionTimeout("connection timeout expired") from None
        finally:
            _spent(started)
        conn.timeout = timeout
        if context is not None:
            conn._adapters = AdaptersMap(context.adapters)  # as psycopg's connect(context=)
        if autocommit:
            conn.autocommit = True
        return conn

    def wait(self, gen: PQGen[RV], interval: float = _POLL, timeout: float | None = None) -> RV:
        """psycopg runs every exchange with the server through here."""
        left = time_left(self.timeout)
        if timeout is not None:
            left = min(left, timeout)
        if left <= 0:
            self.pgconn.finish()  # nothing sent: the connection is dropped all the same
            raise psycopg.errors.ConnectionTimeout("store.timeout passed before the query")
        started = time.monotonic()
        try:
            return super().wait(gen, interval, left)
        except psycopg.errors._WaitTimeout:
            # Mid-protocol: unusable. Closing it makes the server roll back what is open.
            self.pgconn.finish()
            raise psycopg.errors.ConnectionTimeout("no answer within store.timeout") from None
        finally:
            _spent(started)
