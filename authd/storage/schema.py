"""The tables, as SQLAlchemy Core metadata: what `storage/sql.py` queries and what
migration step 1 creates.

Times are seconds since the epoch (double precision). Names and serials compare
case-sensitively on both backends (SQLite BINARY collation, PostgreSQL text equality).
`locked_until` holds `LOCKED_FOREVER` for "until an operator unlocks" so that one
numeric comparison serves both timed and permanent locks.
"""

from __future__ import annotations

import zlib

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    false,
    text,
)

# Far beyond any real deadline (year ~33658), still exact in a double; read back as math.inf.
LOCKED_FOREVER = 1.0e12

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("applied_at", Float, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("name", Text, primary_key=True),
    Column("source", Text, nullable=False, server_default="local"),
    Column("password_hash", Text),
    Column("pin_hash", Text),
    Column("disabled", Boolean, nullable=False, server_default=false()),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("locked_until", Float),
    Column("email", Text, nullable=False, server_default=""),
    Column("phone", Text, nullable=False, server_default=""),
    Column("first_name", Text, nullable=False, server_default=""),
    Column("last_name", Text, nullable=False, server_default=""),
    Column("groups", Text, nullable=False, server_default="[]"),  # JSON list of names
    Column("last_attempt_at", Float),
    Column("last_attempt_source", Text),
    Column("last_attempt_client", Text),
    Column("last_success_at", Float),
    Column("last_success_source", Text),
    Column("last_success_client", Text),
    Column("created_at", Float, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("serial", Text, primary_key=True),
    # NULL: an imported hardware token not yet assigned.
    Column("user", Text, ForeignKey("users.name", ondelete="CASCADE")),
    Column("type", String(8), nullable=False),
    Column("algorithm", String(8), nullable=False),
    Column("digits", Integer, nullable=False),
    Column("period", Integer, nullable=False),
    Column("counter", BigInteger, nullable=False),
    Column("last_step", BigInteger, nullable=False),
    Column("drift", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("seed_enc", Text, nullable=False),  # Keyring blob, aad = serial
    Column("description", Text, nullable=False, server_default=""),
    Column("created_at", Float, nullable=False),
    Index("ix_tokens_user", "user"),
)

backup_codes = Table(
    "backup_codes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user", Text, ForeignKey("users.name", ondelete="CASCADE"), nullable=False),
    Column("hash", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_backup_codes_user_hash", "user", "hash"),
)

challenges = Table(
    "challenges",
    metadata,
    Column("state_hash", Text, primary_key=True),
    Column("user", Text, nullable=False),
    Column("client", Text, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("data", Text, nullable=False, server_default=""),
    Index("ix_challenges_expires_at", "expires_at"),
    Index("ix_challenges_user", "user"),  # step 5: user delete and rename
)

audit = Table(
    "audit",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", Float, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("result", Text, nullable=False),
    Column("user", Text, nullable=False, server_default=""),
    Column("client", Text, nullable=False, server_default=""),
    Column("source", Text, nullable=False, server_default=""),
    Column("reason", Text, nullable=False, server_default=""),
    Column("detail", Text, nullable=False, server_default=""),
    # audit_bucket(user); NULL in rows written before the column existed.
    Column("user_bucket", SmallInteger, nullable=True),
    # A user's rows, newest or oldest first: their bucket's range, filtered by name in
    # the index itself. Rows are appended at the end of a few ranges, not at a random
    # place per user (see AUDIT_USER_BUCKETS).
    Index(
        "ix_audit_bucket_id",
        "user_bucket",
        "id",
        "user",
        sqlite_where=text("user_bucket IS NOT NULL"),
        postgresql_where=text("user_bucket IS NOT NULL"),
    ),
    # Rows from before the buckets, by user; it empties as the retention prunes them.
    Index(
        "ix_audit_user_unbucketed",
        "user",
        "id",
        sqlite_where=text("user_bucket IS NULL"),
        postgresql_where=text("user_bucket IS NULL"),
    ),
    Index("ix_audit_at", "at"),
)

# The audit trail's rows by user are indexed by (bucket, id), the bucket a hash of the
# name. An index ordered by (user, id) gets each new row at a random leaf: at millions
# of rows every decision, and every pruned row, wrote a page no other request of its
# transaction shared (about a quarter of the soak's sustained rate, docs/PERFORMANCE.md).
# With a handful of buckets each transaction's new rows go to the ends of a few ranges,
# pages that stay in the cache. The price is on the operator's side: `audit --user`
# reads its bucket's range newest first (in the index, 1/AUDIT_USER_BUCKETS of the
# trail at most) until it has its page of rows. Changing the number needs a migration.
AUDIT_USER_BUCKETS = 32


def audit_bucket(user: str) -> int:
    """The bucket of a user name's audit rows: stable across processes, nodes and
    Python versions (CRC-32 of the UTF-8 name)."""
    return zlib.crc32(user.encode("utf-8", "surrogatepass")) % AUDIT_USER_BUCKETS

# The optional HMAC chain over audit rows (authd/storage/audit_chain.py). Kept beside
# `audit`, not in it, so that turning the chain on needs no change to the audit table.
audit_seal = Table(
    "audit_seal",
    metadata,
    Column("audit_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=False),
    Column("seq", BigInteger, nullable=False, unique=True),  # position in the chain, 1, 2, ...
    Column("hash", Text, nullable=False),  # HMAC(prev hash, canonical row), hex
)  # fmt: skip

# One row (id 1): the chain's head and the anchor that pruning leaves behind.
audit_chain = Table(
    "audit_chain",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),  # last sealed position (0: none yet)
    Column("hash", Text, nullable=False),  # its hash
    Column("last_id", BigInteger, nullable=False),  # audit ids up to here are sealed or pre-chain
    Column("anchor_seq", BigInteger, nullable=False),  # last pruned position (0: none)
    Column("anchor_hash", Text, nullable=False),  # its hash: where verification starts
)

# The portal's tables live in their own metadata: step 1 (create_all of `metadata`)
# leaves them to the migration step that adds them.
portal_metadata = MetaData()

# Self-service portal sessions, shared by every node on the store. The cookie's value
# is never stored: `id_hash` is its SHA-256, so a database reader cannot take a session.
portal_sessions = Table(
    "portal_sessions",
    portal_metadata,
    Column("id_hash", Text, primary_key=True),
    Column("user", Text, nullable=False),
    Column("csrf", Text, nullable=False),
    # "login": the password passed and a code is due (`state` holds the challenge);
    # "in": logged in.
    Column("stage", String(8), nullable=False),
    Column("state", Text, nullable=False, server_default=""),
    Column("groups", Text, nullable=False, server_default="[]"),  # JSON, from the log-in
    Column("created_at", Float, nullable=False),
    Column("seen_at", Float, nullable=False),
    Index("ix_portal_sessions_seen_at", "seen_at"),
    Index("ix_portal_sessions_user", "user"),  # step 5: user rename
)

# Access-recovery requests from the portal ("restore access"): the user says what they
# lost, proves who they are with what remains, and an operator approves or rejects.
# `status`: open -> approved | rejected | superseded (the real user signed in normally
# first); an approved lost-token request is the user's one-time way back into the
# portal until `grant_until`, and becomes `used` when taken.
portal_issues = Table(
    "portal_issues",
    portal_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user", Text, nullable=False),
    Column("kind", String(16), nullable=False),  # token | password | mail
    Column("status", String(16), nullable=False),
    Column("source", Text, nullable=False, server_default=""),
    Column("created_at", Float, nullable=False),
    Column("decided_at", Float, nullable=True),
    Column("decided_by", Text, nullable=False, server_default=""),
    Column("grant_until", Float, nullable=True),
    Index("ix_portal_issues_user_status", "user", "status"),
    # One open request per user and kind, even when two nodes queue one at once.
    Index(
        "uq_portal_issues_open", "user", "kind", unique=True,
        sqlite_where=text("status = 'open'"), postgresql_where=text("status = 'open'"),
    ),
)
