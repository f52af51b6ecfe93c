"""Staging: append raw bodies durably, claim them for landing, mark them landed, keep them as an archive.

One SQLAlchemy URL: a SQLite file (WAL, synchronous=FULL: a commit is on disk) by default, PostgreSQL
when several hosts share it. Claims are leases, so a lander that dies mid-batch loses nothing.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, create_engine, delete, event, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from loader.errors import TransientError
from loader.staging.tables import metadata, staged

PENDING, LANDED, QUARANTINED = 0, 1, 2


@dataclass(frozen=True)
class Incoming:
    """A body the gateway accepted (or quarantined), ready to append."""

    source_id: str
    message_id: str
    received_at: float
    request_ip: str | None
    body: bytes
    state: int = PENDING
    reason: str | None = None


@dataclass(frozen=True)
class Staged:
    """A claimed body on its way to the warehouse."""

    seq: int
    source_id: str
    message_id: str
    received_at: float
    request_ip: str | None
    body: bytes
    replay: bool


def _insert_ignoring_duplicates(dialect: str) -> Callable[[], Any]:
    """INSERT that skips a message id already staged: dialect differences as data."""
    builders: dict[str, Callable[[], Any]] = {
        "sqlite": lambda: sqlite.insert(staged).on_conflict_do_nothing(index_elements=["message_id"]),
        "postgresql": lambda: postgresql.insert(staged).on_conflict_do_nothing(index_elements=["message_id"]),
    }
    if dialect not in builders:
        raise ValueError(f"staging supports sqlite and postgresql, not {dialect}")
    return builders[dialect]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def make_staging_engine(url: str) -> Engine:
    """An engine for staging; SQLite gets WAL and full fsync so a commit survives a crash."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4)


def claim_token() -> str:
    """Who holds a claim: host, process and a nonce, so a restarted host can free its dead claims."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


class Staging:
    """The staging store. Thread-safe; every method is one short transaction."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.engine = engine or make_staging_engine(url)
        self.dialect = self.engine.dialect.name
        self._insert = _insert_ignoring_duplicates(self.dialect)
        keys = ["source_id", "message_id", "received_at", "request_ip", "body", "state", "reason", "replay"]
        compiled = (
            self._insert().inline().values({k: None for k in keys}).compile(dialect=self.engine.dialect)
        )
        self._insert_sql = str(compiled)
        self._positions = list(compiled.positiontup) if compiled.positiontup else None

    def create(self) -> None:
        """Create staging's tables if they are missing."""
        metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    def append(self, records: Sequence[Incoming]) -> None:
        """Commit bodies in one transaction (group commit). A message id already staged is skipped."""
        if not records:
            return
        rows = [
            {
                "source_id": r.source_id,
                "message_id": r.message_id,
                "received_at": r.received_at,
                "request_ip": r.request_ip,
                "body": r.body,
                "state": r.state,
                "reason": r.reason,
                "replay": False,
            }
            for r in records
        ]
        if self._positions is not None:
            params: Any = [tuple(row[k] for k in self._positions) for row in rows]
        else:
            params = rows
        try:
            with self.engine.begin() as conn:
                # The statement is compiled once; the driver's executemany takes the rows as they are
                # (SQLAlchemy's per-row processing showed in the gateway's profile).
                conn.exec_driver_sql(self._insert_sql, params)
        except DBAPIError as exc:
            raise TransientError(f"staging unavailable: {type(exc.orig).__name__}") from exc

    def claim(self, limit: int, lease_s: float, token: str) -> list[Staged]:
        """Take up to `limit` pending bodies, oldest first, under a lease that expires if we die."""
        now = time.time()
        pick = (
            select(staged.c.seq)
            .where(
                staged.c.state == PENDING,
                or_(staged.c.claimed_until.is_(None), staged.c.claimed_until < now),
            )
            .order_by(staged.c.seq)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(staged)
            .where(staged.c.seq.in_(pick.scalar_subquery()))
            .values(claim_token=token, claimed_until=now + lease_s)
            .returning(
                staged.c.seq,
                staged.c.source_id,
                staged.c.message_id,
                staged.c.received_at,
                staged.c.request_ip,
                staged.c.body,
                staged.c.replay,
            )
        )
        with self.engine.begin() as conn:
            rows = conn.execute(stmt).all()
        return sorted((Staged(*row) for row in rows), key=lambda s: s.seq)

    def mark_landed(self, token: str) -> int:
        """After the warehouse commit: the claimed bodies are landed (kept as the archive)."""
        stmt = (
            update(staged)
            .where(staged.c.claim_token == token, staged.c.state == PENDING)
            .values(state=LANDED, landed_at=time.time(), claim_token=None, claimed_until=None, replay=False)
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount

    def quarantine(self, token: str, message_ids: Sequence[str], reason: str) -> None:
        """Set claimed bodies aside that cannot be landed, with the reason; they stay for inspection."""
        if message_ids:
            with self.engine.begin() as conn:
                conn.execute(
                    update(staged)
                    .where(staged.c.claim_token == token, staged.c.message_id.in_(list(message_ids)))
                    .values(state=QUARANTINED, reason=reason, claim_token=None, claimed_until=None)
                )

    def release(self, token: str) -> None:
        """Give a claim back at once (the warehouse failed; someone may try again now)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(staged)
                .where(staged.c.claim_token == token, staged.c.state == PENDING)
                .values(claim_token=None, claimed_until=None)
            )

    def release_dead_claims(self) -> int:
        """Free claims of landers on this host whose process is gone (after a kill -9)."""
        host = socket.gethostname()[:40]
        with self.engine.begin() as conn:
            tokens = conn.execute(
                select(staged.c.claim_token)
                .where(staged.c.state == PENDING, staged.c.claim_token.like(f"{host}:%"))
                .distinct()
            ).scalars()
            dead = [t for t in tokens if t and not _pid_alive(int(t.split(":")[1]))]
            if dead:
                conn.execute(
                    update(staged)
                    .where(staged.c.claim_token.in_(dead))
                    .values(claim_token=None, claimed_until=None)
                )
        return len(dead)

    def pending_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(staged.c.state == PENDING)).scalar_one())

    def counts(self) -> dict[str, dict[int, int]]:
        """Per source id: how many bodies are pending, landed, quarantined."""
        stmt = select(staged.c.source_id, staged.c.state, func.count()).group_by(
            staged.c.source_id, staged.c.state
        )
        out: dict[str, dict[int, int]] = {}
        with self.engine.connect() as conn:
            for source_id, state, count in conn.execute(stmt):
                out.setdefault(source_id, {})[state] = count
        return out

    def last_landed(self) -> dict[str, float]:
        stmt = select(staged.c.source_id, func.max(staged.c.landed_at)).group_by(staged.c.source_id)
        with self.engine.connect() as conn:
            return {s: t for s, t in conn.execute(stmt) if t is not None}

    def quarantined(self, source_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Bodies that could not be read, newest first, with their reason."""
        stmt = select(staged).where(staged.c.state == QUARANTINED).order_by(staged.c.seq.desc()).limit(limit)
        if source_id is not None:
            stmt = stmt.where(staged.c.source_id == source_id)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(stmt)]

    def mark_for_replay(self, source_id: str, since: float | None, until: float | None) -> int:
        """Put archived bodies of a source (in a time range) back in the queue, to land again."""
        cond = [staged.c.source_id == source_id, staged.c.state == LANDED]
        if since is not None:
            cond.append(staged.c.received_at >= since)
        if until is not None:
            cond.append(staged.c.received_at < until)
        with self.engine.begin() as conn:
            return conn.execute(
                update(staged).where(and_(*cond)).values(state=PENDING, replay=True, landed_at=None)
            ).rowcount

    def purge_archive(self, older_than_s: float) -> int:
        """Drop landed bodies older than the retention; pending and quarantined ones stay."""
        cutoff = time.time() - older_than_s
        with self.engine.begin() as conn:
            return conn.execute(
                delete(staged).where(staged.c.state == LANDED, staged.c.received_at < cutoff)
            ).rowcount


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
