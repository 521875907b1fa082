"""Schema versioning: fresh databases get every step, old ones are upgraded in place."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection

from authd.core.errors import StoreUnavailable
from authd.core.model import Token, TokenType, User
from authd.crypto import Keyring
from authd.storage import migrations
from authd.storage.sql import SqlStore

NOW = 1_767_225_600.0


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def _versions(url: str) -> list[int]:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    sa.text("SELECT version FROM schema_version ORDER BY version")
                ).scalars()
            )
    finally:
        engine.dispose()


def _v2_add_nickname(conn: Connection) -> None:
    """A test-only step: a column with a default, the commonest real change."""
    conn.execute(sa.text("ALTER TABLE users ADD COLUMN nickname TEXT NOT NULL DEFAULT 'n/a'"))
    conn.execute(sa.text("CREATE TABLE notes (user_name TEXT NOT NULL, body TEXT)"))


LATEST = len(migrations.STEPS)
ALL = list(range(1, LATEST + 1))
# A test-only next step, after every real one.
V2_STEPS = (
    *migrations.STEPS,
    migrations.Step(LATEST + 1, "test: nickname and notes", _v2_add_nickname),
)


def test_fresh_database_is_at_the_latest_version(store_url: str, keyring: Keyring) -> None:
    """Opening an empty database applies every step once and records each version."""
    SqlStore.open(store_url, keyring).close()
    assert _versions(store_url) == [s.version for s in migrations.STEPS]
    SqlStore.open(store_url, keyring).close()  # reopening applies nothing more
    assert _versions(store_url) == [s.version for s in migrations.STEPS]


def test_upgrade_in_place_keeps_the_data(store_url: str, keyring: Keyring) -> None:
    """A database at the latest version with data, opened by code that knows one more
    step, is upgraded in place: the new column appears with its default and every old
    row survives."""
    v1 = SqlStore.open(store_url, keyring)
    v1.add_user(User(name="alice", email="a@example.org", failures=2))
    v1.add_token(Token(serial="T1", type=TokenType.TOTP, seed=b"seed", user="alice"))
    v1.replace_backup_codes("alice", ["h1"], NOW)
    v1.close()
    assert _versions(store_url) == ALL

    v2 = SqlStore.open(store_url, keyring, steps=V2_STEPS)
    try:
        assert _versions(store_url) == [*ALL, LATEST + 1]
        u = v2.get_user("alice")
        assert u is not None and (u.email, u.failures) == ("a@example.org", 2)
        assert v2.get_token("T1").seed == b"seed"  # type: ignore[union-attr]
        assert v2.backup_codes_left("alice") == 1
        engine = _engine(store_url)
        try:
            with engine.connect() as conn:
                assert (
                    conn.execute(
                        sa.text("SELECT nickname FROM users WHERE name='alice'")
                    ).scalar_one()
                    == "n/a"
                )
                assert conn.execute(sa.text("SELECT count(*) FROM notes")).scalar_one() == 0
        finally:
            engine.dispose()
    finally:
        v2.close()


def test_a_failing_step_leaves_the_database_untouched(store_url: str, keyring: Keyring) -> None:
    """Steps run in one transaction: a step that fails mid-way rolls back entirely."""
    SqlStore.open(store_url, keyring).close()

    def broken(conn: Connection) -> None:
        conn.execute(sa.text("ALTER TABLE users ADD COLUMN half TEXT"))
        raise RuntimeError("the new step blew up")

    with pytest.raises(RuntimeError):
        SqlStore.open(
            store_url,
            keyring,
            steps=(*migrations.STEPS, migrations.Step(LATEST + 1, "broken", broken)),
        )
    assert _versions(store_url) == ALL
    engine = _engine(store_url)
    try:
        with engine.connect() as conn:
            cols = {c["name"] for c in sa.inspect(conn).get_columns("users")}
    finally:
        engine.dispose()
    assert "half" not in cols


def test_a_newer_database_is_refused(store_url: str, keyring: Keyring) -> None:
    """Code older than the schema fails closed instead of guessing at unknown columns."""
    SqlStore.open(store_url, keyring, steps=V2_STEPS).close()
    with pytest.raises(StoreUnavailable, match="newer"):
        SqlStore.open(store_url, keyring)


def test_steps_must_be_numbered_in_order(store_url: str, keyring: Keyring) -> None:
    """A gap in step numbers is a programming error caught before touching the schema."""
    bad = (*migrations.STEPS, migrations.Step(LATEST + 2, "gap", _v2_add_nickname))
    with pytest.raises(ValueError, match="numbered"):
        SqlStore.open(store_url, keyring, steps=bad)


def test_nodes_starting_together_migrate_once(store_url: str, keyring: Keyring) -> None:
    """Four stores opening one empty database at once: no error, each step applied once."""
    import threading

    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait(timeout=30)
        try:
            SqlStore.open(store_url, keyring, steps=V2_STEPS).close()
        except BaseException as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert _versions(store_url) == [*ALL, LATEST + 1]


def test_audit_chain_step_starts_after_existing_rows(store_url: str, keyring: Keyring) -> None:
    """Step 2 on a version-1 database with audit rows: the chain tables appear, and the
    chain's head starts after those rows (they predate it), so none is sealed later."""
    from authd.core.model import AuditEvent

    v1 = SqlStore.open(store_url, keyring, steps=migrations.STEPS[:1])
    for i in range(3):
        v1.append_audit(AuditEvent(at=NOW + i, actor="t", action="auth", result="ok"))
    v1.close()
    SqlStore.open(store_url, keyring).close()
    engine = _engine(store_url)
    try:
        with engine.connect() as conn:
            head = conn.execute(sa.text("SELECT seq, last_id, anchor_seq FROM audit_chain")).one()
            seals = conn.execute(sa.text("SELECT count(*) FROM audit_seal")).scalar_one()
    finally:
        engine.dispose()
    assert tuple(head) == (0, 3, 0) and seals == 0


def test_portal_issues_step_upgrades_a_version_3_database(
    store_url: str, keyring: Keyring
) -> None:
    """A database the portal-sessions step left (version 3) gains the access-recovery
    table at step 4, and step 3 alone does not create it."""
    SqlStore.open(store_url, keyring, steps=migrations.STEPS[:3]).close()
    engine = _engine(store_url)
    try:
        with engine.connect() as conn:
            assert not sa.inspect(conn).has_table("portal_issues")
        SqlStore.open(store_url, keyring).close()
        assert _versions(store_url) == ALL and 4 in ALL
        with engine.connect() as conn:
            assert sa.inspect(conn).has_table("portal_issues")
    finally:
        engine.dispose()


def test_audit_bucket_step_upgrades_a_version_5_trail(store_url: str, keyring: Keyring) -> None:
    """A trail as version 5 left it (no bucket column, rows indexed by (user, id)) gains
    the column and the bucket index at step 6; its rows, now the unbucketed range, are
    still found by user beside newer ones, and the old index is gone."""
    from authd.core.model import AuditEvent

    v5 = SqlStore.open(store_url, keyring, steps=migrations.STEPS[:5])
    engine = _engine(store_url)
    try:
        with engine.begin() as conn:  # as step 1 of version 5 made the table
            conn.execute(sa.text("DROP INDEX ix_audit_bucket_id"))
            conn.execute(sa.text("DROP INDEX ix_audit_user_unbucketed"))
            conn.execute(sa.text("ALTER TABLE audit DROP COLUMN user_bucket"))
            conn.execute(sa.text('CREATE INDEX ix_audit_user_id ON audit ("user", id)'))
            conn.execute(
                sa.text(
                    "INSERT INTO audit (at, actor, action, result, \"user\") "
                    "VALUES (:at, 't', 'auth', 'ok', :user)"
                ),
                [{"at": NOW + i, "user": ("alice", "bob")[i % 2]} for i in range(4)],
            )
        v5.close()
        store = SqlStore.open(store_url, keyring)
        store.append_audit(AuditEvent(at=NOW + 4, actor="t", action="auth", result="ok",
                                      user="alice"))  # fmt: skip
        assert [e.at - NOW for e in store.query_audit(user="alice")] == [4, 2, 0]
        store.close()
        with engine.connect() as conn:
            names = {i["name"] for i in sa.inspect(conn).get_indexes("audit")}
            buckets = conn.execute(sa.text("SELECT user_bucket FROM audit ORDER BY id"))
            assert list(buckets.scalars()) == [None, None, None, None, 7]
        assert {"ix_audit_bucket_id", "ix_audit_user_unbucketed"} <= names
        assert "ix_audit_user_id" not in names
        assert _versions(store_url) == ALL and 6 in ALL
    finally:
        engine.dispose()
