"""The decision hot path on raw DB-API connections: the few statements every decision
runs, without SQLAlchemy's per-statement machinery (~40 µs of Python per statement
through Core, against ~3-15 µs for the statement itself on SQLite).

The statements are `storage/sql.py`'s own prebuilt SQLAlchemy statements, compiled once
to SQL text per dialect, so the SQL is written in one place. The connections are the
SQLAlchemy engine's own, checked out of its pool (`store.pool_size`) for one call or
one batch and returned right after, so the pool bounds every connection the process
opens (the SQLite writer stays checked out for good, one slot of the pool). A thread
never holds two of them at once, so however many threads decide, none waits for a
connection that a waiting thread holds: more threads than connections only queue, each
wait bounded by store.timeout.

SQLite (`SqliteHotPath`): concurrent write phases of this process share one BEGIN
IMMEDIATE ... COMMIT (group commit: a leader runs every queued write phase, in order,
in one transaction; each caller gets its own result only after that COMMIT);
`write_all()` commits a batch of write phases in one transaction.
PostgreSQL (`PgHotPath`): one transaction per write phase or per batch (pipelined);
psycopg prepares the statements server-side after their first uses.

Exactness does not move: every write phase is the same conditional statements
(compare-and-set, `+1 RETURNING`, conditional DELETE) evaluated by the database inside
the transaction. The in-process lock only chooses which of *our* threads talks to SQLite
next, so they queue on a mutex instead of on SQLite's sleeping busy handler (1..100 ms
naps); other processes and `authctl` are still arbitrated by SQLite's write lock.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, Generic, Protocol, TypeVar

import psycopg
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql import ClauseElement
from twisted.logger import Logger

from authd.core.errors import StoreTimeout, StoreUnavailable
from authd.storage.pg_bounded import outside_budget, time_left

log = Logger(namespace="authd.storage.hot_path")

T = TypeVar("T")

_SQLITE = sqlite_dialect.dialect(paramstyle="named")
_PG = psycopg_dialect.dialect()
_MAX_BATCH = 256
_BEGIN_BACKOFF_MAX = 0.002  # seconds between BEGIN IMMEDIATE retries against other processes
# The WAL is emptied (TRUNCATE checkpoint) once it holds more than this, and trimmed to it
# when it starts over (journal_size_limit): SQLite's own automatic checkpoint size.
WAL_LIMIT_BYTES = 4 * 1024 * 1024
# How long a TRUNCATE checkpoint waits for readers of old frames (it blocks our writes).
_TRUNCATE_WAIT = 0.2


def _unavailable(e: sqlite3.Error | psycopg.Error) -> StoreUnavailable:
    """Only the error class: messages may quote values."""
    return StoreUnavailable(f"database error: {type(e).__name__}")


def _checkout(engine: Engine) -> PoolProxiedConnection:
    """A connection from the engine's pool, waiting at most its pool_timeout
    (store.timeout) for one to come back. Errors as sql.py's: the class alone (the
    text may quote the URL)."""
    try:
        return engine.raw_connection()
    except PoolTimeout:
        raise StoreUnavailable("database error: pool exhausted") from None
    except DBAPIError as e:
        raise StoreUnavailable(f"database error: {type(e.orig).__name__}") from None


class Run(Protocol):
    """Executes prebuilt statements inside the caller's write transaction."""

    def __call__(self, stmt: Any, params: dict[str, Any]) -> Any:
        """One statement; its DB-API cursor (rowcount, fetchone)."""

    def many(self, stmt: Any, params: Sequence[dict[str, Any]]) -> None:
        """One statement for each parameter set (executemany: one call, no result)."""


class _Compiled:
    __slots__ = ("defaults", "sql", "stmt")

    def __init__(self, stmt: ClauseElement, dialect: Dialect) -> None:
        # Kept: `_Statements` finds this by id(stmt), which a freed statement would hand
        # on to the next object allocated there.
        self.stmt = stmt
        compiled = stmt.compile(dialect=dialect)
        self.sql = str(compiled)
        # Literals SQLAlchemy turned into binds (e.g. status = 'active'); ours are p_*.
        self.defaults = {k: v for k, v in compiled.params.items() if not k.startswith("p_")}


class _Runner:
    """`Run` on one DB-API connection (sqlite3 or psycopg) and its compiled statements."""

    __slots__ = ("_conn", "_statements")

    def __init__(self, conn: Any, statements: _Statements) -> None:
        self._conn = conn
        self._statements = statements

    def __call__(self, stmt: Any, params: dict[str, Any]) -> Any:
        c = self._statements.get(stmt)
        return self._conn.execute(c.sql, {**c.defaults, **params} if c.defaults else params)

    def many(self, stmt: Any, params: Sequence[dict[str, Any]]) -> None:
        if not params:
            return
        c = self._statements.get(stmt)
        rows = [{**c.defaults, **p} for p in params] if c.defaults else params
        cursor = self._conn.cursor()
        try:
            cursor.executemany(c.sql, rows)
        finally:
            cursor.close()


class _Statements:
    """Compiled SQL per statement object (the module-level statements of sql.py: compiled
    once and kept for good, each with the statement it came from)."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._compiled: dict[int, _Compiled] = {}

    def get(self, stmt: ClauseElement) -> _Compiled:
        found = self._compiled.get(id(stmt))
        if found is None:
            found = self._compiled[id(stmt)] = _Compiled(stmt, self._dialect)
        return found


class _Job(Generic[T]):
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[Run], T]) -> None:
        self.fn = fn
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None


def _driver(raw: PoolProxiedConnection) -> Any:
    """The DB-API connection (sqlite3 or psycopg) under a pool checkout."""
    conn = raw.driver_connection
    if conn is None:  # invalidated meanwhile; the caller returns the checkout
        raise StoreUnavailable("database error: connection lost")
    return conn


def _checkpoint(conn: sqlite3.Connection, mode: str) -> tuple[int, int, int]:
    row = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
    return int(row[0]), int(row[1]), int(row[2])  # busy, frames in the WAL, frames copied


def _wal_bytes(path: str) -> int:
    try:
        return os.stat(path + "-wal").st_size
    except OSError:  # no WAL file (yet, or any more)
        return 0


class _Checkpointer:
    """Copies the WAL back into the database file, so that no decision's COMMIT does it.
    SQLite's automatic checkpoint runs inside the commit that crosses 1,000 WAL pages: it
    copies them and fsyncs the file while that batch's answers wait (measured under
    scripts/bench/radius, one core, 64 in flight: p99 ~13 ms with it, ~10-11 ms without).

    A background thread runs a PASSIVE checkpoint at most every `interval` seconds after
    commits. PASSIVE never waits, but copies only frames no reader still needs, and the
    WAL starts over from its beginning only when it was copied whole while no reader and
    no writer used it: under continuous writes, or reads in overlapping snapshots
    (worker processes, authctl), that never happens and the WAL grows without bound
    (measured: 150-200 MB in 4 s, database 13 MB). So once the WAL file passes `limit`
    bytes, the writer empties it itself with `truncate()`, between two of its write
    transactions (TRUNCATE: it waits up to `wait` seconds for the readers of old frames
    to finish; new readers read the database file). A failed background checkpoint
    (a full disk: the database file cannot grow) is retried every `retry` seconds,
    commits or not."""

    def __init__(
        self,
        path: str,
        engine: Engine,
        *,
        interval: float = 0.1,
        limit: int = WAL_LIMIT_BYTES,
        wait: float = _TRUNCATE_WAIT,
        retry: float = 1.0,
    ) -> None:
        self._path = path
        self._engine = engine  # its pool lends the connection of each checkpoint
        self._interval = interval
        self._limit = limit
        self._wait = wait
        self._retry = retry
        self._wake = threading.Event()
        self._stopping = False
        # One checkpoint at a time: SQLite answers a second one BUSY at once, unwaited.
        self._running = threading.Lock()
        self._state = threading.Lock()  # the three fields below
        self._pending_frames = 0  # WAL frames not copied, at the last checkpoint
        self._dirty_since: float | None = None  # monotonic: first commit not yet copied
        self._commits = 0
        # not `_thread`: mypyc (setup.py) names the field `__thread`, a C keyword
        self._worker = threading.Thread(
            target=self._run, name="authd-wal-checkpoint", daemon=True
        )
        self._worker.start()

    def committed(self) -> None:
        """A write transaction committed: the WAL grew."""
        with self._state:
            self._commits += 1
            if self._dirty_since is None:
                self._dirty_since = time.monotonic()
        self._wake.set()

    def status(self) -> tuple[int, int, float]:
        """(WAL file bytes, frames not yet copied, seconds the oldest of them has
        waited: 0 when none wait), for /metrics. No database call."""
        size = _wal_bytes(self._path)
        with self._state:
            since = self._dirty_since
            pending = self._pending_frames
        return size, pending, 0.0 if since is None else time.monotonic() - since

    def over_limit(self) -> bool:
        """Whether the WAL file has grown past `limit` (one stat(), no database call)."""
        return _wal_bytes(self._path) > self._limit

    def truncate(self, conn: sqlite3.Connection) -> None:
        """Empty the WAL on `conn`, the writer's connection outside any transaction of
        ours (its busy timeout is 0 otherwise). Still-busy readers after `wait`
        seconds: nothing happens (the WAL grows on meanwhile). Database errors (a full
        disk) propagate: the caller does not write either."""
        if not self._running.acquire(timeout=self._wait):
            return
        try:
            with self._state:
                commits = self._commits
            conn.execute(f"PRAGMA busy_timeout={int(self._wait * 1000)}")
            try:
                self._settle(_checkpoint(conn, "TRUNCATE"), commits)
            finally:
                conn.execute("PRAGMA busy_timeout=0")
        finally:
            self._running.release()

    def _settle(self, result: tuple[int, int, int], commits: int) -> bool:
        """Record a checkpoint's result; whether frames are left to copy."""
        busy, frames, copied = result
        done = busy == 0 and copied == frames
        with self._state:
            self._pending_frames = max(0, frames - copied)
            if done and self._commits == commits:  # nothing committed meanwhile
                self._dirty_since = None
        return not done

    def _passive(self) -> bool:
        """One PASSIVE checkpoint (it never waits for a lock) on a connection of the
        pool, returned right after."""
        raw = _checkout(self._engine)
        try:
            with self._running:
                with self._state:
                    commits = self._commits
                return self._settle(_checkpoint(_driver(raw), "PASSIVE"), commits)
        finally:
            raw.close()

    def _run(self) -> None:
        left = False
        while True:
            self._wake.wait(self._retry if left else None)
            if self._stopping:
                return
            self._wake.clear()
            try:
                left = self._passive()
            except (sqlite3.Error, StoreUnavailable) as e:  # retried after `retry` s or a commit
                log.warn("WAL checkpoint failed: {error}", error=str(e) or type(e).__name__)
                left = True
            time.sleep(self._interval)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._worker.join(timeout=5)


class SqliteHotPath:
    """Readers from the engine's pool, one call each, and one group-committing writer
    connection (checked out of the pool on the first write, kept until `close`) on the
    database file at `path` (already created and migrated by `SqlStore.open`). The
    engine's connections are set up by sql.py (WAL, busy timeout, autocommit)."""

    def __init__(self, engine: Engine, path: str, busy_seconds: float) -> None:
        self._engine = engine
        self._path = path
        self._busy_seconds = busy_seconds
        self._statements = _Statements(_SQLITE)
        self._pending: list[_Job[Any]] = []
        self._pending_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._writer_raw: PoolProxiedConnection | None = None
        self._writer: sqlite3.Connection | None = None
        self._checkpointer: _Checkpointer | None = None
        self._wal_limit = WAL_LIMIT_BYTES
        self._closed = False

    # ---------------------------------------------------------------- reads
    def read(self, stmt: ClauseElement, params: dict[str, Any]) -> list[Any]:
        """All rows of one SELECT, in autocommit: WAL gives it a consistent snapshot
        without any lock a writer waits for."""
        if self._closed:
            raise StoreUnavailable("store is closed")
        c = self._statements.get(stmt)
        raw = _checkout(self._engine)
        try:
            return _driver(raw).execute(c.sql, {**c.defaults, **params}).fetchall()
        except sqlite3.Error as e:
            raise _unavailable(e) from e
        finally:
            raw.close()

    # ---------------------------------------------------------------- writes
    def write(self, fn: Callable[[Run], T]) -> T:
        """Run `fn(run)` inside a write transaction shared with whatever other threads
        queued meanwhile; return its result once that transaction has committed."""
        job: _Job[T] = _Job(fn)
        with self._pending_lock:
            self._pending.append(job)
        while not job.done:
            with self._commit_lock:
                if not job.done:  # nobody took it yet: lead a batch (ours, unless capped)
                    with self._pending_lock:
                        batch = self._pending[:_MAX_BATCH]
                        del self._pending[:_MAX_BATCH]
                    self._commit(batch)
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def write_all(self, fns: Sequence[Callable[[Run], T]]) -> list[T]:
        """Every `fn(run)` in order in ONE write transaction (BEGIN IMMEDIATE ... COMMIT)
        on the writer connection; their results only once it has committed. Any error
        rolls all of them back and propagates (StoreUnavailable for a database error):
        the caller retries them one by one if it wants to."""
        jobs: list[_Job[T]] = [_Job(fn) for fn in fns]
        with self._commit_lock:
            try:
                return self._transaction(jobs)
            except sqlite3.Error as e:
                raise _unavailable(e) from e

    def _begin(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, waiting for other processes' writers in short naps (this
        connection has busy_timeout 0: SQLite's own handler naps up to 100 ms)."""
        deadline = time.monotonic() + self._busy_seconds
        nap = 0.00002
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as e:
                if e.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
            time.sleep(nap)
            nap = min(nap * 2, _BEGIN_BACKOFF_MAX)

    def _commit(self, batch: list[_Job[Any]]) -> None:
        """One transaction for the whole batch; if it fails, each job is retried alone
        so one bad write phase cannot fail its neighbours. Every job of the batch ends
        done; results are published only after COMMIT returned."""
        try:
            results = self._transaction(batch)
        except Exception as e:
            if len(batch) > 1:
                for job in batch:
                    self._commit([job])
                return
            batch[0].error = _unavailable(e) if isinstance(e, sqlite3.Error) else e
            batch[0].done = True
            return
        for job, result in zip(batch, results, strict=True):
            job.result, job.done = result, True

    def _writer_conn(self) -> sqlite3.Connection:
        """The writer: a connection of the pool, kept (under the commit lock) until
        `close` or until it breaks; never returned to the pool, as its settings are
        its own (busy timeout 0: `_begin` waits; no automatic checkpoint)."""
        if self._writer is not None:
            return self._writer
        if self._closed:
            raise StoreUnavailable("store is closed")
        raw = _checkout(self._engine)
        try:
            conn: sqlite3.Connection = _driver(raw)
            conn.execute("PRAGMA busy_timeout=0")
            # Checkpoints run in the background (_Checkpointer), not in our commits.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            # When the WAL starts over, its file shrinks back to this size.
            conn.execute(f"PRAGMA journal_size_limit={self._wal_limit}")
        except BaseException:
            raw.invalidate()
            raise
        self._writer_raw, self._writer = raw, conn
        if self._checkpointer is None:
            self._checkpointer = _Checkpointer(self._path, self._engine, limit=self._wal_limit)
        return conn

    def _drop_writer(self) -> None:
        """Close the writer for good (its connection leaves the pool, which may open
        another in its place)."""
        raw, self._writer_raw, self._writer = self._writer_raw, None, None
        if raw is not None:
            raw.invalidate()

    def _transaction(self, batch: list[_Job[Any]]) -> list[Any]:
        conn = self._writer_conn()
        checkpointer = self._checkpointer
        if checkpointer is not None and checkpointer.over_limit():
            # In a gap between our write transactions: see _Checkpointer. If the WAL
            # cannot be emptied for want of space, this write fails too (fail closed)
            # instead of taking the space the checkpoint needs; writes resume by
            # themselves once space returns.
            checkpointer.truncate(conn)
        run = _Runner(conn, self._statements)
        self._begin(conn)
        try:
            results = [job.fn(run) for job in batch]
            conn.execute("COMMIT")
            if self._checkpointer is not None:
                self._checkpointer.committed()
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:  # the connection is broken: open a new one next time
                    self._drop_writer()
            raise
        return results

    def wal_status(self) -> tuple[int, int, float]:
        """`_Checkpointer.status()`; before our first write, the WAL's size alone."""
        checkpointer = self._checkpointer
        return (_wal_bytes(self._path), 0, 0.0) if checkpointer is None else checkpointer.status()

    def close(self) -> None:
        """Stop the checkpointer and close the writer; the readers are the pool's (the
        store disposes of it after this)."""
        with self._commit_lock:
            self._closed = True
            self._drop_writer()
            checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:  # not under the lock: its TRUNCATE may wait for it
            checkpointer.stop()


class _Lent:
    """A psycopg connection of the pool, lent for one `with` block in autocommit and
    given back as SQLAlchemy lent it. One broken meanwhile (closed by a cut wait, a lost
    server) leaves the pool, which opens a new one when needed. (A class, not a
    generator: ~4 µs less a call.)"""

    __slots__ = ("_conn", "_raw", "_timeout")

    def __init__(self, raw: PoolProxiedConnection, timeout: float) -> None:
        self._raw = raw
        self._timeout = timeout
        try:
            self._conn: psycopg.Connection[Any] = _driver(raw)
        except BaseException:
            raw.close()
            raise

    def __enter__(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if not conn.closed:
            self._idle_setting(True)
            if conn.prepare_threshold != 1:
                conn.prepare_threshold = 1  # prepare from the second use on
        return conn

    def __exit__(self, *exc: object) -> None:
        conn = self._conn
        if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self._raw.invalidate()
            return
        self._idle_setting(False)
        if time_left(self._timeout) > 0:
            self._raw.close()
        else:
            with outside_budget():  # the pool's reset: a rollback, nothing sent when idle
                self._raw.close()

    def _idle_setting(self, autocommit: bool) -> None:
        """Switch autocommit on the idle connection: psycopg sends nothing for it, but
        passes through BoundedConnection.wait, which a spent budget would refuse."""
        if time_left(self._timeout) > 0:
            self._conn.autocommit = autocommit
        else:
            with outside_budget():
                self._conn.autocommit = autocommit


class PgHotPath:
    """psycopg connections of the engine's pool, one per call (a read, a write phase,
    a batch), in autocommit while lent (a read is one round trip; a write phase is one
    explicit transaction). Every wait is cut at `timeout`, or at what is left of the
    thread's `pg_bounded.budget()` (sql.py opens them as `BoundedConnection`s); a write
    is committed only if the budget is not spent when its statements have answered,
    and a write cut short is never committed later (see storage/pg_bounded.py)."""

    def __init__(self, engine: Engine, timeout: float) -> None:
        self._engine = engine
        self._timeout = timeout
        self._statements = _Statements(_PG)
        self._closed = False

    def _conn(self) -> _Lent:
        """A connection of the pool for a `with` block (see _Lent)."""
        if self._closed:
            raise StoreUnavailable("store is closed")
        return _Lent(_checkout(self._engine), self._timeout)

    def _failed(self, conn: psycopg.Connection[Any], e: psycopg.Error) -> StoreUnavailable:
        """A broken connection is closed, so that it leaves the pool."""
        if isinstance(e, psycopg.OperationalError):
            conn.close()
        return _unavailable(e)

    def _may_commit(self, conn: psycopg.Connection[Any]) -> None:
        """Before COMMIT: past the budget, the caller has answered (or is about to
        answer) reject, so the transaction is dropped with its connection instead."""
        if time_left(self._timeout) <= 0:
            conn.close()  # the server rolls back
            raise StoreTimeout("the request's store time ran out before COMMIT")

    def read(self, stmt: ClauseElement, params: dict[str, Any]) -> list[Any]:
        c = self._statements.get(stmt)
        with self._conn() as conn:
            try:
                return conn.execute(c.sql, {**c.defaults, **params}).fetchall()
            except psycopg.Error as e:
                raise self._failed(conn, e) from e

    def write(self, fn: Callable[[Run], T]) -> T:
        """Run `fn(run)` in one transaction; its result is returned after COMMIT."""
        with self._conn() as conn:
            try:
                with conn.transaction():
                    result = fn(_Runner(conn, self._statements))
                    self._may_commit(conn)
                return result
            except psycopg.Error as e:
                raise self._failed(conn, e) from e

    def execute_one(self, sql: str, params: dict[str, Any]) -> Any:
        """One statement in a transaction of its own, committed when this returns, and
        its first row. Not in autocommit: a statement sent to a server that then stopped
        would run and commit when it resumes, long after its request was rejected; COMMIT
        is sent only within the budget. (Measured on loopback, 400 writes: three round
        trips cost ~60-100 µs more client CPU than one, ~100-200 µs against ~95-130;
        psycopg's pipeline mode, two round trips, cost more still: ~350 µs of CPU.)"""
        with self._conn() as conn:
            try:
                with conn.transaction():
                    row = conn.execute(sql, params).fetchone()
                    self._may_commit(conn)
                return row
            except psycopg.Error as e:
                raise self._failed(conn, e) from e

    def execute_all(self, statements: Sequence[tuple[str, dict[str, Any]]]) -> list[Any]:
        """Each statement in order in ONE transaction, and the first row of each, returned
        after COMMIT; any error rolls back all of them. Pipeline mode: BEGIN and every
        statement go out together and their answers come back together, then COMMIT
        (sent only within the budget): two round trips for the batch instead of one per
        statement and two more for BEGIN and COMMIT. A run of the same statement is one
        executemany (one call into psycopg, not one per statement)."""
        with self._conn() as conn:
            try:
                with conn.pipeline() as pipeline, conn.transaction():
                    cursors = []
                    for sql, run in itertools.groupby(statements, key=itemgetter(0)):
                        cursor = conn.cursor()
                        cursor.executemany(sql, [params for _, params in run], returning=True)
                        cursors.append(cursor)
                    pipeline.sync()
                    rows = []
                    for cursor in cursors:
                        rows.append(cursor.fetchone())
                        while cursor.nextset():
                            rows.append(cursor.fetchone())
                    self._may_commit(conn)
                return rows
            except psycopg.Error as e:
                raise self._failed(conn, e) from e

    def close(self) -> None:
        """Refuse further calls; the connections are the pool's (disposed of by the
        store after this)."""
        self._closed = True
