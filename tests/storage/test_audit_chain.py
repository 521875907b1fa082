"""The audit hash chain (`audit.hash_chain: true`) on SQLite and PostgreSQL: rows are
sealed in the transaction that writes them (one-off appends, decisions, batches,
concurrent writers), and `verify_audit` finds an edited, deleted or inserted row, a cut
newest end, and survives pruning."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from authd.auth.interfaces import AttemptRecord, AuditFilter, DecisionWrite
from authd.core.model import AuditEvent, User
from authd.crypto import Keyring
from authd.storage.sql import SqlStore

T0 = 1_767_225_600.0


@pytest.fixture
def chained(store_url: str, keyring: Keyring) -> Iterator[SqlStore]:
    s = SqlStore.open(store_url, keyring, pool_size=4, audit_chain=True)
    try:
        yield s
    finally:
        s.close()


def _sql(url: str, statement: str, **params: object) -> None:
    """Tamper with the database behind authd's back."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement), params)
    finally:
        engine.dispose()


def _event(i: int, user: str = "alice") -> AuditEvent:
    return AuditEvent(at=T0 + i, actor="authctl:root", action="user.set", result="ok",
                      user=user, detail=f"row {i}")  # fmt: skip


def _decision(i: int) -> DecisionWrite:
    record = AttemptRecord(
        success=True,
        count_failure=False,
        audit=AuditEvent(at=T0 + i, actor="radius:vpn", action="auth", result="accept",
                         user="alice", client="vpn", source="10.0.0.1"),  # fmt: skip
    )
    return DecisionWrite("alice", T0 + i, "10.0.0.1", "vpn", 5, 300, won=record)


def _ids(store: SqlStore) -> list[int]:
    return [e.id or 0 for e in store.export_audit(AuditFilter())]


def _fill(store: SqlStore) -> list[int]:
    store.add_user(User(name="alice"))
    for i in range(4):
        store.append_audit(_event(i))
    store.commit_decision(_decision(4))
    store.commit_decisions([_decision(5), _decision(6)])
    return _ids(store)


def test_every_write_path_is_sealed(chained: SqlStore) -> None:
    """Appends, single decisions and batched decisions all verify, row for row."""
    ids = _fill(chained)
    verdict = chained.verify_audit()
    assert verdict.ok and verdict.checked == len(ids) == 7 and verdict.head_seq == 7


def test_an_edited_row_is_found(chained: SqlStore, store_url: str) -> None:
    """Changing one field of one row breaks that row's seal: verify names its id."""
    ids = _fill(chained)
    _sql(store_url, "UPDATE audit SET result = 'reject' WHERE id = :i", i=ids[4])
    verdict = chained.verify_audit()
    assert (verdict.ok, verdict.bad_id) == (False, ids[4]) and "changed" in verdict.problem


def test_a_deleted_row_is_found(chained: SqlStore, store_url: str) -> None:
    """Deleting a row (with or without its seal) is found at that place."""
    ids = _fill(chained)
    _sql(store_url, "DELETE FROM audit WHERE id = :i", i=ids[2])
    verdict = chained.verify_audit()
    assert (verdict.ok, verdict.bad_id, verdict.problem) == (False, ids[2], "row deleted")
    _sql(store_url, "DELETE FROM audit_seal WHERE audit_id = :i", i=ids[2])
    verdict = chained.verify_audit()
    assert (verdict.ok, verdict.bad_id) == (False, ids[3]) and "deleted" in verdict.problem


def test_cut_newest_row_is_found(chained: SqlStore, store_url: str) -> None:
    """The newest row and its seal removed: the chain ends short of its head."""
    ids = _fill(chained)
    _sql(store_url, "DELETE FROM audit_seal WHERE audit_id = :i", i=ids[-1])
    _sql(store_url, "DELETE FROM audit WHERE id = :i", i=ids[-1])
    verdict = chained.verify_audit()
    assert (verdict.ok, verdict.bad_id) == (False, ids[-2]) and "missing" in verdict.problem


def test_a_row_inserted_behind_the_chain_is_found(chained: SqlStore, store_url: str) -> None:
    """A row written straight into the table is not sealed by the next writer (who seals
    only its own rows): it stays unsealed inside the chain, and verify reports it."""
    ids = _fill(chained)
    _sql(store_url, "INSERT INTO audit (id, at, actor, action, result, \"user\", client, source, "
                    "reason, detail) VALUES (:i, 0, 'x', 'auth', 'accept', 'a', '', '', '', '')",
         i=ids[-1] + 1)  # fmt: skip
    if store_url.startswith("postgresql"):  # an explicit id does not move the sequence
        _sql(store_url, "SELECT setval(pg_get_serial_sequence('audit', 'id'), :i)", i=ids[-1] + 1)
    chained.append_audit(_event(9))
    verdict = chained.verify_audit()
    assert (verdict.ok, verdict.bad_id) == (False, ids[-1] + 1)
    assert verdict.problem == "row inserted without a seal"


def test_pruning_keeps_the_rest_verifiable(chained: SqlStore) -> None:
    """Retention deletes the oldest chain positions and leaves an anchor: the rest still
    verifies, and rows written after the prune extend the same chain."""
    _fill(chained)
    assert chained.prune_audit(T0 + 3, batch=2) == 2
    assert chained.prune_audit(T0 + 3, batch=2) == 1
    assert chained.prune_audit(T0 + 3, batch=2) == 0
    assert [e.at - T0 for e in chained.export_audit(AuditFilter())] == [3, 4, 5, 6]
    chained.append_audit(_event(7))
    verdict = chained.verify_audit()
    assert verdict.ok and verdict.checked == 5 and verdict.head_seq == 8


def test_concurrent_writers_keep_one_chain(chained: SqlStore) -> None:
    """Eight threads appending and deciding at once (one node's pool; on PostgreSQL as
    several nodes would): one contiguous chain that verifies."""
    chained.add_user(User(name="alice"))
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            barrier.wait(timeout=30)
            for i in range(10):
                if (i + k) % 2:
                    chained.append_audit(_event(100 * k + i, user=f"u{k}"))
                else:
                    chained.commit_decision(_decision(100 * k + i))
        except BaseException as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    verdict = chained.verify_audit()
    assert verdict.ok and verdict.checked == 80


def test_turning_the_chain_on_later(store_url: str, keyring: Keyring) -> None:
    """Rows from before the chain was ever on stay outside it; rows written while it
    was off again are sealed when the store opens with it on."""
    plain = SqlStore.open(store_url, keyring)
    plain.append_audit(_event(0))
    plain.close()
    on = SqlStore.open(store_url, keyring, audit_chain=True)
    on.append_audit(_event(1))
    on.close()
    off = SqlStore.open(store_url, keyring)
    off.append_audit(_event(2))
    off.close()
    again = SqlStore.open(store_url, keyring, audit_chain=True)
    try:
        verdict = again.verify_audit()
        assert verdict.ok and verdict.checked == 2
    finally:
        again.close()
