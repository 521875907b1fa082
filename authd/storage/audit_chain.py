"""An HMAC chain over audit rows: each row's seal is HMAC(key, previous hash, the row),
so an edited, deleted or inserted row breaks every link after it (`authctl audit
verify`, exit 1 with the first bad row).

Sealing runs inside the transaction that writes the rows, after them, through the same
`Run` the decision hot path uses: rows with an id above the head's `last_id` get the
next positions, and the head moves on, all committed together or not at all.
- SQLite: writers are serialised by BEGIN IMMEDIATE, so ids grow in commit order.
- PostgreSQL: `lock_head` (SELECT ... FOR UPDATE on the one head row) must run FIRST in
  the transaction, before any audit INSERT, so that ids are drawn in chain order across
  connections and nodes. That lock serialises every audit-writing transaction of every
  node: the price of the chain (and why it is off by default).

The key is derived from the key file's hash key: whoever can write the database but not
read the key file cannot re-seal an edit. Limits: someone holding the key file can
rebuild the chain; cutting rows off the newest end and rewinding the head is seen only
against a head recorded elsewhere (`authctl audit verify` prints it: keep a copy).
Pruning (`prune_sealed`) deletes a prefix of the chain and records the last deleted
link as the anchor verification starts from.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from authd.storage.hot_path import Run
from authd.storage.schema import audit, audit_chain, audit_seal

_A, _S, _H = audit.c, audit_seal.c, audit_chain.c
# The row fields a seal covers, in this order (id included: a row moved is a row changed).
ROW_COLUMNS = (_A.id, _A.at, _A.actor, _A.action, _A.result, _A.user, _A.client, _A.source,
               _A.reason, _A.detail)  # fmt: skip

_HEAD = select(_H.seq, _H.hash, _H.last_id, _H.anchor_seq, _H.anchor_hash).where(_H.id == 1)
_LOCK_HEAD = _HEAD.with_for_update()  # SQLite compiles it without FOR UPDATE
_NEW_ROWS = select(*ROW_COLUMNS).where(_A.id > bindparam("p_last")).order_by(_A.id)
_NEW_ROWS_CAPPED = _NEW_ROWS.limit(bindparam("p_limit"))
_ADD_SEAL = insert(audit_seal).values(
    audit_id=bindparam("p_id"), seq=bindparam("p_seq"), hash=bindparam("p_hash")
)
_MOVE_HEAD = (
    update(audit_chain)
    .where(_H.id == 1)
    .values(seq=bindparam("p_seq"), hash=bindparam("p_hash"), last_id=bindparam("p_last"))
)
_SKIP_TO = update(audit_chain).where(_H.id == 1).values(last_id=bindparam("p_last"))
_MAX_ID = select(func.max(_A.id))
# The chain in order, each seal with its row (NULL columns: the row is gone).
_WALK = (
    select(_S.seq, _S.hash, _S.audit_id, *ROW_COLUMNS)
    .select_from(audit_seal.outerjoin(audit, _A.id == _S.audit_id))
    .where(_S.seq > bindparam("p_after"), _S.seq <= bindparam("p_upto"))
    .order_by(_S.seq)
    .limit(bindparam("p_limit"))
)
# An unsealed row inside the sealed range: inserted behind the chain's back.
_STRAY = (
    select(_A.id)
    .select_from(audit.outerjoin(audit_seal, _S.audit_id == _A.id))
    .where(_A.id > bindparam("p_lo"), _A.id <= bindparam("p_hi"), _S.audit_id.is_(None))
    .order_by(_A.id)
    .limit(1)
)
_OLDEST = (
    select(_S.seq, _S.hash, _S.audit_id, _A.at)
    .select_from(audit_seal.join(audit, _A.id == _S.audit_id))
    .where(_S.seq > bindparam("p_after"))
    .order_by(_S.seq)
    .limit(bindparam("p_limit"))
)
_FIRST_SEALED = select(func.min(_S.audit_id))
_DROP_ROW = delete(audit).where(_A.id == bindparam("p_id"))
_DROP_SEALS = delete(audit_seal).where(_S.seq <= bindparam("p_seq"))
_MOVE_ANCHOR = (
    update(audit_chain)
    .where(_H.id == 1)
    .values(anchor_seq=bindparam("p_seq"), anchor_hash=bindparam("p_hash"))
)
_PRE_CHAIN = (
    select(_A.id)
    .where(_A.at < bindparam("p_before"), _A.id < bindparam("p_below"))
    .order_by(_A.id)
    .limit(bindparam("p_limit"))
)

WALK_PAGE = 1000


class ConnRun:
    """`Run` over a SQLAlchemy connection, for the chain's work outside the hot path
    (append by authctl, prune, verify, catch-up), with the same statements."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def __call__(self, stmt: Any, params: dict[str, Any]) -> Any:
        return self._conn.execute(stmt, params)

    def many(self, stmt: Any, params: Sequence[dict[str, Any]]) -> None:
        if params:
            self._conn.execute(stmt, list(params))


def chain_key(hash_key: bytes) -> bytes:
    """The chain's own key, derived so that it is never the PIN/backup-code key."""
    return hmac.new(hash_key, b"authd audit chain v1", hashlib.sha256).digest()


def link(key: bytes, prev: str, seq: int, row: Sequence[Any]) -> str:
    """HMAC-SHA256 over the previous hash, the position and the row's fields (JSON)."""
    canonical = json.dumps([seq, *row], separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, f"{prev}\n{canonical}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str
    last_id: int
    anchor_seq: int
    anchor_hash: str


def _head(row: Sequence[Any]) -> Head:
    return Head(int(row[0]), str(row[1]), int(row[2]), int(row[3]), str(row[4]))


def lock_head(run: Run) -> Head:
    """The head, locked until the transaction ends (PostgreSQL; SQLite holds its write
    lock already). Call before writing audit rows."""
    return _head(run(_LOCK_HEAD, {}).fetchone())


def newest_id(run: Run) -> int:
    """The highest audit id now: rows above it, once the caller wrote, are its own."""
    found = run(_MAX_ID, {}).fetchone()[0]
    return int(found or 0)


def seal(
    run: Run, key: bytes, head: Head, limit: int | None = None, after: int | None = None
) -> int:
    """Seal the rows with ids above `after` (default: `head.last_id`), at most `limit`,
    and move the head; returns how many. Inside the transaction that wrote them, after
    `lock_head`. A writer passes the `newest_id` it saw before writing, so a row slipped
    in behind the chain's back is never sealed by the next writer: it stays unsealed
    inside the chain's range, where `verify` reports it."""
    last = head.last_id if after is None else max(after, head.last_id)
    if limit is None:
        rows = run(_NEW_ROWS, {"p_last": last}).fetchall()
    else:
        rows = run(_NEW_ROWS_CAPPED, {"p_last": last, "p_limit": limit}).fetchall()
    if not rows:
        return 0
    seq, prev, seals = head.seq, head.hash, []
    for row in rows:
        seq += 1
        prev = link(key, prev, seq, tuple(row))
        seals.append({"p_id": row[0], "p_seq": seq, "p_hash": prev})
    run.many(_ADD_SEAL, seals)
    run(_MOVE_HEAD, {"p_seq": seq, "p_hash": prev, "p_last": rows[-1][0]})
    return len(rows)


def start_or_catch_up(run: Run, key: bytes, batch: int) -> int:
    """At store open with the chain on: a chain never used starts after the rows already
    there (they predate it); a chain used before seals what was written while it was
    off, `batch` rows per call (the caller repeats while this returns `batch`)."""
    head = lock_head(run)
    if head.seq == 0:
        run(_SKIP_TO, {"p_last": max(newest_id(run), head.last_id)})
        return 0
    return seal(run, key, head, batch)


@dataclass(frozen=True)
class Verdict:
    """`audit verify`: ok, or the first bad row (its audit id) and what is wrong."""

    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    bad_id: int | None = None
    problem: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "bad_id": self.bad_id,
            "problem": self.problem,
        }


def verify(run: Run, key: bytes) -> Verdict:
    """Walk the chain from the anchor to the head, a page at a time, in the caller's
    read snapshot. The first row whose position skips (rows deleted), whose row is gone,
    or whose seal does not match (row edited) is reported; then the head itself; then
    unsealed rows hiding inside the sealed range."""
    head = _head(run(_HEAD, {}).fetchone())
    expected, prev, checked, last_id = head.anchor_seq + 1, head.anchor_hash, 0, None
    first_id: int | None = None

    def bad(audit_id: int | None, problem: str) -> Verdict:
        return Verdict(False, checked, head.seq, head.hash, audit_id, problem)

    while expected <= head.seq:
        page = run(_WALK, {"p_after": expected - 1, "p_upto": head.seq, "p_limit": WALK_PAGE})
        rows = page.fetchall()
        if not rows:
            return bad(last_id, f"chain positions {expected}..{head.seq} are missing")
        for r in rows:
            seq, stored, audit_id, row = int(r[0]), str(r[1]), int(r[2]), tuple(r[3:])
            if seq != expected:
                gap = f"positions {expected}..{seq - 1}"
                return bad(audit_id, f"rows deleted before this one ({gap})")
            if row[0] is None:
                return bad(audit_id, "row deleted")
            prev = link(key, prev, seq, row)
            if not hmac.compare_digest(prev, stored):
                return bad(audit_id, "row changed (its seal does not match)")
            first_id = audit_id if first_id is None else first_id
            last_id, checked, expected = audit_id, checked + 1, expected + 1
    if prev != head.hash:
        return bad(last_id, "the head does not match the last row")
    if first_id is not None:
        stray = run(_STRAY, {"p_lo": first_id, "p_hi": head.last_id}).fetchone()
        if stray is not None:
            return bad(int(stray[0]), "row inserted without a seal")
    return Verdict(True, checked, head.seq, head.hash)


def prune_sealed(run: Run, before: float, batch: int) -> int:
    """Retention with the chain on, in the caller's write transaction: rows from before
    the chain first (oldest ids, `at < before`), else the oldest chain positions while
    their `at` is before `before`. The last deleted link becomes the anchor, so the rest
    still verifies. Deletes at most `batch` rows."""
    head = lock_head(run)
    first = run(_FIRST_SEALED, {}).fetchone()[0]
    below = int(first) if first is not None else head.last_id + 1
    old = [r[0] for r in run(_PRE_CHAIN, {"p_before": before, "p_below": below,
                                          "p_limit": batch}).fetchall()]  # fmt: skip
    if old:
        run.many(_DROP_ROW, [{"p_id": i} for i in old])
        return len(old)
    doomed: list[Any] = []
    for r in run(_OLDEST, {"p_after": head.anchor_seq, "p_limit": batch}).fetchall():
        if r[3] >= before:
            break  # a prefix only: the chain stays contiguous
        doomed.append(r)
    if not doomed:
        return 0
    last = doomed[-1]
    run.many(_DROP_ROW, [{"p_id": r[2]} for r in doomed])
    run(_DROP_SEALS, {"p_seq": last[0]})
    run(_MOVE_ANCHOR, {"p_seq": last[0], "p_hash": last[1]})
    return len(doomed)
