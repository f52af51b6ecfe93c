"""Staging: append raw bodies durably, claim them for landing, mark them landed, keep them as an archive.

One SQLAlchemy URL: a SQLite file in WAL mode by default (a commit is on disk: synchronous=FULL, or
the gateway's own fsync of the WAL, loader.gateway.walsync), PostgreSQL when several hosts share it.
Claims are leases, so a lander that dies mid-batch loses nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, NamedTuple

from sqlalchemy import Engine, and_, case, create_engine, delete, event, func, inspect, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from loader.errors import TransientError
from loader.staging.claims import CLAIMS, LANDED, PENDING, QUARANTINED, Claims, claim_token
from loader.staging.tables import archive_totals, metadata, seen, staged

__all__ = [
    "LANDED",
    "PENDING",
    "QUARANTINED",
    "Incoming",
    "Staged",
    "Staging",
    "StagingBusy",
    "claim_token",
]


class StagingBusy(TransientError):
    """Another connection holds SQLite's write lock (an engine made with busy_timeout_s=0): the caller
    tries again in a moment instead of blocking."""


@dataclass(frozen=True)
class Incoming:
    """A body the gateway accepted (or quarantined), ready to append (a large one in the buffer it was
    read into, never copied)."""

    source_id: str
    message_id: str
    received_at: float
    request_ip: str | None
    body: bytes | bytearray
    state: int = PENDING
    reason: str | None = None
    # What staging keeps unique: the name message_id was derived from (loader.transform.event_key);
    # None: the message id itself (for callers that make up their own ids).
    event_key: str | None = None
    replay: bool = False  # a body taken back from the archive to land again (it replaces its rows)


# A key longer than this, or with other than printable ASCII, is kept as its hash. The caller chooses the
# event id, and PostgreSQL refuses an index entry past ~2.7 KB and a NUL in text (a failed group commit is
# a 503 for every body in it). Customer.io's keys (a source id and a ULID) are ~70 ASCII characters.
KEY_MAX_CHARS = 256


def stored_key(key: str) -> str:
    """The event_key as staging keeps it: itself, or its SHA-256 (a key itself starts with a source id
    or is a message id, so never with "sha256:")."""
    if len(key) <= KEY_MAX_CHARS and key.isascii() and key.isprintable():
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class Staged(NamedTuple):
    """A claimed body on its way to the warehouse. A tuple, not a dataclass: a claim builds 25,000 of
    them at once, on a thread beside the landing one (a frozen dataclass took ~1 µs each, holding the GIL)."""

    seq: int
    source_id: str
    message_id: str
    received_at: float
    request_ip: str | None
    body: bytes
    replay: bool


def _sqlite_busy(exc: BaseException) -> bool:
    """SQLite said another connection holds the lock. The low byte of the code: the extended codes
    (SQLITE_BUSY_SNAPSHOT, _RECOVERY, _TIMEOUT) are busy too."""
    return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_BUSY


def _insert_ignoring_duplicates(dialect: str) -> Callable[[], Any]:
    """INSERT that skips an event already staged: dialect differences as data. No conflict target: the
    one unique key is event_key, or message_id in a staging file made before it (see tables.staged)."""
    builders: dict[str, Callable[[], Any]] = {
        "sqlite": lambda: sqlite.insert(staged).on_conflict_do_nothing(),
        "postgresql": lambda: postgresql.insert(staged).on_conflict_do_nothing(),
    }
    if dialect not in builders:
        raise ValueError(f"staging supports sqlite and postgresql, not {dialect}")
    return builders[dialect]


# A claim takes bodies up to this many bytes (and always one). Customer.io's bodies are ~0.5-2 KB, so a
# claim of 25,000 stays under it; but a caller may send bodies of up to LOADER_MAX_BODY_BYTES (4 MB), and
# flush's first claim of 3,125 such bodies would be 12.5 GB, which a lander killed for it would claim
# again. (Up to 2.3 GB a claim, flush peaked the same with or without it: DuckDB's memory dominated.)
CLAIM_MAX_BYTES = 32_000_000

SYNCHRONOUS = ("FULL", "NORMAL")


def _sqlite_pragmas(
    autocheckpoint_pages: int | None, synchronous: str, busy_timeout_s: float
) -> Callable[[Any, Any], None]:
    if synchronous not in SYNCHRONOUS:  # never OFF: checkpoints must still sync
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS}")

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        if autocheckpoint_pages is not None:
            cur.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint_pages)}")
        cur.close()

    return on_connect


def sqlite_file(url: str) -> str | None:
    """The database file of a SQLite URL (absolute), or None for another dialect or an in-memory one."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return os.path.abspath(parsed.database)


def make_staging_engine(
    url: str,
    autocheckpoint_pages: int | None = None,
    synchronous: str = "FULL",
    busy_timeout_s: float = 10.0,
) -> Engine:
    """An engine for staging; SQLite gets WAL and full fsync so a commit survives a crash.
    `autocheckpoint_pages`: after how many WAL pages a commit on this engine copies the WAL back into
    the database (SQLite's default is 1,000). `synchronous="NORMAL"`: commits do not fsync (they become
    durable with the next commit that does, or the next checkpoint): for writes that may be lost.
    `busy_timeout_s=0`: a held write lock raises StagingBusy at once instead of waiting."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout_s})
        event.listen(engine, "connect", _sqlite_pragmas(autocheckpoint_pages, synchronous, busy_timeout_s))
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4)


class Staging:
    """The staging store. Thread-safe; every method is one short transaction."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.engine = engine or make_staging_engine(url)
        self.dialect = self.engine.dialect.name
        self._insert = _insert_ignoring_duplicates(self.dialect)
        self._claims: Claims = CLAIMS[self.dialect](self.engine)
        keys = [
            "source_id",
            "message_id",
            "event_key",
            "received_at",
            "request_ip",
            "body",
            "state",
            "reason",
            "replay",
        ]
        compiled = (
            self._insert().inline().values({k: None for k in keys}).compile(dialect=self.engine.dialect)
        )
        self._insert_sql = str(compiled)
        self._positions = list(compiled.positiontup) if compiled.positiontup else None
        self._driver_errors: type[Exception] = self.engine.dialect.loaded_dbapi.Error

    def create(self) -> None:
        """Create staging's tables if they are missing; give a staging file made before event_key the
        column (its UNIQUE(message_id) keeps each event once, as event_key's index would). A new SQLite
        file gets incremental auto-vacuum, so the pages of archived bodies can be given back."""
        if self.dialect == "sqlite" and not inspect(self.engine).get_table_names():
            self.compact_fully()  # an empty file: the VACUUM that switches the mode is instant
        metadata.create_all(self.engine)
        if not self._has_event_key():
            try:
                with self.engine.begin() as conn:
                    conn.execute(text(f"ALTER TABLE {staged.name} ADD COLUMN event_key TEXT"))
            except DBAPIError:
                if not self._has_event_key():  # else another process added it at the same moment
                    raise

    def _has_event_key(self) -> bool:
        return "event_key" in {c["name"] for c in inspect(self.engine).get_columns(staged.name)}

    def dispose(self) -> None:
        self.engine.dispose()

    def append(self, records: Sequence[Incoming]) -> None:
        """Commit bodies in one transaction (group commit). An event already staged (event_key) is skipped."""
        if not records:
            return
        rows = [
            {
                "source_id": r.source_id,
                "message_id": r.message_id,
                "event_key": stored_key(r.event_key or r.message_id),
                "received_at": r.received_at,
                "request_ip": r.request_ip,
                "body": r.body,
                "state": r.state,
                "reason": r.reason,
                "replay": r.replay,
            }
            for r in records
        ]
        if self._positions is not None:
            params: Any = [tuple(row[k] for k in self._positions) for row in rows]
        else:
            params = rows
        # The statement is compiled once, and the driver's executemany takes the rows as they are, on a
        # pooled connection of its own: SQLAlchemy's per-row processing, then its connection and
        # transaction wrappers, showed in the gateway's profile (this runs once per group commit).
        try:
            conn = self.engine.raw_connection()
        except DBAPIError as exc:
            raise TransientError(f"staging unavailable: {type(exc.orig).__name__}") from exc
        try:
            cursor = conn.cursor()
            try:
                cursor.executemany(self._insert_sql, params)
            finally:
                cursor.close()
            conn.commit()
        except Exception as exc:
            with contextlib.suppress(Exception):  # a broken connection: the pool's pre-ping replaces it
                conn.rollback()
            if _sqlite_busy(exc):
                raise StagingBusy("staging busy: another writer holds the lock") from exc
            if isinstance(exc, self._driver_errors):
                raise TransientError(f"staging unavailable: {type(exc).__name__}") from exc
            raise
        finally:
            conn.close()

    def checkpoint_wal(self) -> bool:
        """Copy every frame of SQLite's WAL into the database file, sync it, and start the WAL afresh
        (`PRAGMA wal_checkpoint(TRUNCATE)`); False when a reader or writer kept it from finishing."""
        conn = self.engine.raw_connection()
        try:
            cursor = conn.cursor()
            try:
                busy, _, _ = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                cursor.close()
        except Exception as exc:
            if _sqlite_busy(exc):
                return False
            raise
        finally:
            conn.close()
        return int(busy) == 0

    def claim(self, limit: int, lease_s: float, token: str, max_bytes: int = CLAIM_MAX_BYTES) -> list[Staged]:
        """Take up to `limit` pending bodies, oldest first, under a lease that expires if we die; no
        more than `max_bytes` of bodies, but at least one."""
        rows = self._claims.claim(limit, lease_s, token, max_bytes)
        return sorted(map(Staged._make, rows), key=attrgetter("seq"))

    def mark_landed(self, token: str) -> int:
        """After the warehouse commit: the claimed bodies are landed (kept as the archive)."""
        return self._claims.mark_landed(token)

    def quarantine(self, token: str, message_ids: Sequence[str], reason: str) -> None:
        """Set claimed bodies aside that cannot be landed, with the reason; they stay for inspection."""
        if message_ids:
            self._claims.quarantine(token, message_ids, reason)

    def release(self, token: str) -> None:
        """Give a claim back at once (the warehouse failed; someone may try again now)."""
        self._claims.release(token)

    def release_dead_claims(self) -> int:
        """Free claims of landers on this host whose process is gone (after a kill -9)."""
        return self._claims.release_dead()

    def pending_count(self, upto: int | None = None) -> int:
        """Bodies not landed yet (claimed or not); with `upto`, only those staged up to that seq."""
        query = select(func.count()).where(staged.c.state == PENDING)
        if upto is not None:
            query = query.where(staged.c.seq <= upto)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def last_seq(self) -> int:
        """The highest seq staged so far (0 when none): what a flush started now has to land."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(staged.c.seq), 0))).scalar_one())

    def counts(self) -> dict[str, dict[int, int]]:
        """Per source id: how many bodies are pending, landed, quarantined."""
        stmt = select(staged.c.source_id, staged.c.state, func.count()).group_by(
            staged.c.source_id, staged.c.state
        )
        out: dict[str, dict[int, int]] = {}
        with self.engine.connect() as conn:
            for source_id, state, count in conn.execute(stmt):
                out.setdefault(source_id, {})[state] = count
            for source_id, bodies in conn.execute(
                select(archive_totals.c.source_id, archive_totals.c.bodies)
            ):
                landed = out.setdefault(source_id, {})
                landed[LANDED] = landed.get(LANDED, 0) + bodies
        return out

    def last_landed(self) -> dict[str, float]:
        stmt = select(staged.c.source_id, func.max(staged.c.landed_at)).group_by(staged.c.source_id)
        archived = select(archive_totals.c.source_id, archive_totals.c.last_landed_at)
        out: dict[str, float] = {}
        with self.engine.connect() as conn:
            for source_id, at in [*conn.execute(stmt), *conn.execute(archived)]:
                if at is not None and at > out.get(source_id, 0.0):
                    out[source_id] = at
        return out

    def quarantined(self, source_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Bodies that could not be read, newest first, with their reason."""
        stmt = select(staged).where(staged.c.state == QUARANTINED).order_by(staged.c.seq.desc()).limit(limit)
        if source_id is not None:
            stmt = stmt.where(staged.c.source_id == source_id)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(stmt)]

    def mark_for_replay(
        self, source_id: str, since: float | None, until: float | None, quarantined: bool = False
    ) -> int:
        """Put archived bodies of a source (in a time range) back in the queue, to land again; or, with
        `quarantined`, the bodies it set aside (after a fix: a raised body limit, a newer transform)."""
        cond = [staged.c.source_id == source_id, staged.c.state == (QUARANTINED if quarantined else LANDED)]
        if since is not None:
            cond.append(staged.c.received_at >= since)
        if until is not None:
            cond.append(staged.c.received_at < until)
        with self.engine.begin() as conn:
            return conn.execute(
                update(staged).where(and_(*cond)).values(state=PENDING, replay=True, landed_at=None)
            ).rowcount

    # The archive's side of staging (loader.staging.archiving moves landed bodies out).

    def landed(self, limit: int) -> list[dict[str, Any]]:
        """The oldest landed bodies still in staging, to archive."""
        names = ("seq", "source_id", "message_id", "event_key", "received_at", "request_ip", "landed_at")
        cols = [staged.c[n] for n in names]
        stmt = (
            select(*cols, staged.c.body).where(staged.c.state == LANDED).order_by(staged.c.seq).limit(limit)
        )
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(stmt)]

    def forget_archived(self, rows: Sequence[dict[str, Any]], written: Sequence[dict[str, Any]]) -> int:
        """In one transaction: remember each archived event for the dedup window, delete its body from
        staging (unless a replay took it back meanwhile), and add the `written` ones to the totals."""
        if not rows:
            return 0
        records = [{"key": seen_key(r["message_id"]), "received_at": r["received_at"]} for r in rows]
        dialect = sqlite if self.dialect == "sqlite" else postgresql
        totals: dict[str, dict[str, Any]] = {}
        for r in written:
            total = totals.setdefault(r["source_id"], {"source_id": r["source_id"], "bodies": 0, "last": 0.0})
            total["bodies"] += 1
            total["last"] = max(total["last"], r["landed_at"] or 0.0)
        with self.engine.begin() as conn:
            conn.execute(dialect.insert(seen).on_conflict_do_nothing(), records)
            for total in totals.values():
                add = dialect.insert(archive_totals).values(
                    source_id=total["source_id"], bodies=total["bodies"], last_landed_at=total["last"]
                )
                was = archive_totals.c
                conn.execute(
                    add.on_conflict_do_update(
                        index_elements=[was.source_id],
                        set_={
                            "bodies": was.bodies + add.excluded.bodies,
                            "last_landed_at": case(
                                (add.excluded.last_landed_at > func.coalesce(was.last_landed_at, 0.0),
                                 add.excluded.last_landed_at),
                                else_=was.last_landed_at,
                            ),
                        },
                    )
                )  # fmt: skip
            removed = 0
            seqs = [r["seq"] for r in rows]
            for start in range(0, len(seqs), 5000):
                chunk = seqs[start : start + 5000]
                removed += conn.execute(
                    delete(staged).where(staged.c.seq.in_(chunk), staged.c.state == LANDED)
                ).rowcount
        return removed

    def seen_among(self, message_ids: Sequence[str]) -> set[str]:
        """Which of these events were archived within the dedup window (a retry of one lands nothing)."""
        by_key = {seen_key(m): m for m in message_ids}
        found: set[str] = set()
        keys = list(by_key)
        with self.engine.connect() as conn:
            for start in range(0, len(keys), 5000):
                stmt = select(seen.c.key).where(seen.c.key.in_(keys[start : start + 5000]))
                found.update(by_key[bytes(k)] for (k,) in conn.execute(stmt))
        return found

    def drop_seen(self, rows: list[Staged]) -> list[Staged]:
        """Claimed bodies less those whose event was archived already (a late retry): those are deleted
        from staging; replays are kept."""
        fresh = [r.message_id for r in rows if not r.replay]
        dupes = self.seen_among(fresh) if fresh else set()
        if not dupes:
            return rows
        drop = [r.seq for r in rows if not r.replay and r.message_id in dupes]
        with self.engine.begin() as conn:
            for start in range(0, len(drop), 5000):
                conn.execute(delete(staged).where(staged.c.seq.in_(drop[start : start + 5000])))
        gone = set(drop)
        return [r for r in rows if r.seq not in gone]

    def purge_seen(self, older_than_s: float) -> int:
        """Forget archived events received before the dedup window."""
        cutoff = time.time() - older_than_s
        with self.engine.begin() as conn:
            return conn.execute(delete(seen).where(seen.c.received_at < cutoff)).rowcount

    def compact(self) -> None:
        """Give the pages archived bodies left free back to the file system (SQLite files made with
        incremental auto-vacuum; an older file is converted once by `loader migrate`: compact_fully)."""
        if self.dialect == "sqlite":
            raw = self.engine.raw_connection()
            try:
                # Each step of the pragma frees one page, and the driver's execute steps once:
                # executescript steps it to the end.
                raw.driver_connection.executescript("PRAGMA incremental_vacuum;")  # type: ignore[union-attr]
            finally:
                raw.close()
            self.checkpoint_wal()  # and the WAL that freeing them grew, when no reader holds it

    def compact_fully(self) -> bool:
        """Switch an older SQLite staging file to incremental auto-vacuum, rewriting it once (VACUUM holds
        staging for as long as that takes); False when there was nothing to do."""
        if self.dialect != "sqlite":
            return False
        with self.engine.connect() as conn:
            if conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 2:
                return False
        raw = self.engine.raw_connection()
        try:
            raw.driver_connection.isolation_level = None  # type: ignore[union-attr]
            raw.driver_connection.execute("PRAGMA auto_vacuum = INCREMENTAL")  # type: ignore[union-attr]
            raw.driver_connection.execute("VACUUM")  # type: ignore[union-attr]
        finally:
            raw.close()
        return True

    def seen_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(seen)).scalar_one())


def seen_key(message_id: str) -> bytes:
    """The 16 bytes staging remembers an archived event by."""
    return hashlib.blake2b(message_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()
