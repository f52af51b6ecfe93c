"""The staging database's tables. Created with create_all: staging is ours, not the analysts'."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

metadata = MetaData()

sources = Table(
    "loader_sources",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("schema_name", String(127), nullable=False, unique=True),
    Column("write_key_hash", String(64), nullable=False, unique=True),
    Column("key_prefix", String(16), nullable=False),
    Column("signing_key", Text, nullable=True),
    Column("created_at", Float, nullable=False),
)

staged = Table(
    "loader_staged",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("source_id", String(36), nullable=False),
    # Unique on event_key, the name message_id is derived from (loader.transform.event_key), not on
    # message_id: the same uniqueness, but Customer.io's event ids are ULIDs, in time order, so the index
    # grows at its end. On random UUIDs each body cost the commit a page of its own: Staging.append, groups
    # of 29 bodies into 150,000, 28 µs a body against 17; the gateway under wrk answered ~7% more.
    # Staging files made before this keep their UNIQUE(message_id), and event_key is added (nullable):
    # Staging.create.
    Column("message_id", String(36), nullable=False),
    Column("event_key", Text, nullable=True, unique=True),
    Column("received_at", Float, nullable=False),
    Column("request_ip", String(64), nullable=True),
    Column("body", LargeBinary, nullable=False),
    Column("state", SmallInteger, nullable=False, default=0),
    Column("reason", Text, nullable=True),
    Column("replay", Boolean, nullable=False, default=False),
    Column("claim_token", String(96), nullable=True),
    Column("claimed_until", Float, nullable=True),
    Column("landed_at", Float, nullable=True),
    Index("ix_loader_staged_state_seq", "state", "seq"),
    Index("ix_loader_staged_source_received", "source_id", "received_at"),
    # Row leases (PostgreSQL) look bodies up by their claim; SQLite's claims are rows of their own and
    # never write claim_token, so there the index would only cost each insert (~1.5 µs of ~17).
    Index("ix_loader_staged_claim", "claim_token").ddl_if(dialect="postgresql"),
)

# The record of each archived event for the dedup window (SPEC: 8 days past Customer.io's 7 of retries):
# a 16-byte hash of its message id, so a late retry of a body that left staging for the archive is
# known. Without rowid in SQLite: the key is the row, ~30 bytes an event.
seen = Table(
    "loader_seen",
    metadata,
    Column("key", LargeBinary(16), primary_key=True),
    Column("received_at", Float, nullable=False),  # purged past the window by a scan, once an hour
    sqlite_with_rowid=False,
)

# Per source, how many bodies went to the archive and when the last of them landed: staging's counts
# once the bodies themselves have left it (status, the dashboard, /metrics).
archive_totals = Table(
    "loader_archive_totals",
    metadata,
    Column("source_id", String(36), primary_key=True),
    Column("bodies", BigInteger, nullable=False),
    Column("last_landed_at", Float, nullable=True),
)

# SQLite's claims (loader.staging.claims.ClaimRows): one narrow row per claim, not one write per body.
claims = Table(
    "loader_claims",
    metadata,
    Column("token", String(96), primary_key=True),
    Column("first_seq", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("seqs", Text, nullable=False),
    Column("claimed_until", Float, nullable=False),
)
