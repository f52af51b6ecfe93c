"""Landing in a DuckLake: DuckDB's fast path, plus one lock around each landing transaction.

DuckLake lets many processes write at once, and two inserts into one table never conflict, so two
landers holding the same body (a lease that ran out on a slow lander, a claim crossing hosts) could both
add its row. Landers on one lake therefore take turns, each checking for landed ids inside a transaction
that begins after it got the lock: a file lock beside a SQLite catalog (one host), a PostgreSQL advisory
lock on the catalog's database (many hosts). Readers never take it.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine

from loader.warehouse.lake import Lake
from loader.warehouse.writer import DuckDBSqlWriter


class FileLock:
    """An exclusive flock on a file beside the SQLite catalog."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._handle: Any = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if self._handle is None:
            self._handle = open(self.path, "a")  # noqa: SIM115 (kept open for the writer's life)
        fcntl.flock(self._handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._handle, fcntl.LOCK_UN)


class AdvisoryLock:
    """A session-level advisory lock on the PostgreSQL database holding the catalog."""

    KEY = "loader:ducklake:land"

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self._conn: Any = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if self._conn is None:
            import psycopg

            self._conn = psycopg.connect(
                dbname=self.lake.location,
                host=self.lake.host,
                port=self.lake.port,
                user=self.lake.user,
                password=self.lake.password,
                autocommit=True,
            )
        self._conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (self.KEY,))
        try:
            yield
        finally:
            self._conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (self.KEY,))


def landing_lock(lake: Lake) -> FileLock | AdvisoryLock:
    """The lock landers of this lake take turns on (and whoever else writes rows into its tables)."""
    return FileLock(lake.location + ".land-lock") if lake.catalog == "sqlite" else AdvisoryLock(lake)


class LakeWriter(DuckDBSqlWriter):
    """DuckDB's writer on a lake: it keeps its connection (nothing waits for the lake to be let go) and
    lands each batch under the lake's landing lock."""

    dialect = "ducklake"
    hold_max_s = math.inf

    def __init__(self, engine: Engine, threads: int | None = None) -> None:
        super().__init__(engine, threads)
        self.lake = Lake.from_url(engine.url)
        self._lock = landing_lock(self.lake)

    def run_alone(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Run statements (with their parameters), each in a transaction of its own, while no lander
        lands. The files a statement writes (a merge's) are on disk before the commit that names them:
        DuckLake writes them during the call and changes the catalog only at the commit."""
        with self._lock.held():
            raw = self.engine.raw_connection()
            con: Any = raw.driver_connection
            try:
                for statement, params in statements:
                    con.execute("BEGIN TRANSACTION")
                    try:
                        with self.lake.files_synced():
                            con.execute(statement, params).fetchall()
                    except BaseException:
                        con.execute("ROLLBACK")
                        raise
                    con.execute("COMMIT")
            finally:
                raw.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A landing transaction under the lock, whose data files are on disk before it commits."""
        with self._lock.held(), super().transaction() as conn, self.lake.files_synced():
            yield conn
