"""Warehouse engines. DuckDB is opened per use (NullPool) so the file is held only while we land."""

from __future__ import annotations

import contextlib
import os
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from loader.errors import WarehouseBusy
from loader.warehouse import lake
from loader.warehouse.turns import Turns

T = TypeVar("T")


def dialect_of(url: str) -> str:
    return make_url(url).get_backend_name()


# DuckDB keeps every block of the file that a connection reads or writes in its buffer pool, up to 80% of
# the machine's memory by default. serve's lander holds the file across batches, so its memory grew with
# the warehouse: over three backlogs of 130,000 events its peak went 286 -> 330 -> 366 MB (make bench's
# serve and lander: 329-334 MB, the target 300). Capped, it stays put (286 / 288 / 288 MB at 64 MB).
# A writer's connection keeps at most this much (landing 100,000 events: no slower at 256 MB).
WRITER_MEMORY_MB = 256


class MemoryCap:
    """A DuckDB engine's buffer-pool cap, given to each connection it opens, and raised when a batch
    needs more. The cap bounds what is kept between batches, not what one batch needs: a commit pins
    blocks for each column of each table it appends to, and a batch of one source's every event type
    needed 32-48 MB (under serve's 32 MB it failed at every retry: landing stalled)."""

    def __init__(self, mb: int) -> None:
        self.mb = mb
        # DuckDB's own default: 80% of the machine's memory. Past it, no cap.
        self.ceiling_mb = int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e6)

    def give(self, _dialect: object, _record: object, _cargs: object, cparams: dict[str, Any]) -> None:
        """SQLAlchemy's do_connect hook: the cap goes into the connection's config."""
        cparams["config"] = {**cparams.get("config", {}), "memory_limit": f"{self.mb}MB"}

    def raise_(self) -> int | None:
        """Double the cap (up to DuckDB's default); the new cap in MB, or None when it is there already."""
        if self.mb >= self.ceiling_mb:
            return None
        self.mb = min(self.mb * 2, self.ceiling_mb)
        return self.mb


_CAPS: weakref.WeakKeyDictionary[Engine, MemoryCap] = weakref.WeakKeyDictionary()


def make_warehouse_engine(
    url: str,
    read_only: bool = False,
    duckdb_threads: int | None = None,
    duckdb_memory_mb: int | None = None,
) -> Engine:
    """An engine for the warehouse; DuckDB files are created on first use and never pooled.
    `read_only` opens a DuckDB file read-only (other dialects: the caller's transaction decides);
    `duckdb_threads` caps DuckDB's worker threads (default: one per core), `duckdb_memory_mb` its
    buffer pool at first (default: DuckDB's, 80% of memory; see MemoryCap, WRITER_MEMORY_MB)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == lake.BACKEND:
        return _duckdb_engine(parsed, {"lake_read_only": read_only}, duckdb_threads, duckdb_memory_mb)
    if parsed.get_backend_name() == "duckdb":
        if parsed.database and parsed.database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
        args: dict[str, object] = {"read_only": True} if read_only else {}
        return _duckdb_engine(parsed, args, duckdb_threads, duckdb_memory_mb)
    return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2)


def _duckdb_engine(url: URL, args: dict[str, object], threads: int | None, memory_mb: int | None) -> Engine:
    """A DuckDB (or DuckLake) engine that never pools: each use opens the database and lets it go."""
    if threads is not None:
        args["config"] = {"threads": threads}
    engine = create_engine(url, poolclass=NullPool, connect_args=args)
    if memory_mb is not None:
        cap = _CAPS[engine] = MemoryCap(memory_mb)
        event.listen(engine, "do_connect", cap.give)
    return engine


def more_memory(engine: Engine) -> int | None:
    """Raise the engine's DuckDB memory cap for the connections it opens from now on: the new cap in MB,
    or None when it has none to raise."""
    cap = _CAPS.get(engine)
    return cap.raise_() if cap is not None else None


def is_out_of_memory(exc: BaseException) -> bool:
    """True when DuckDB could not get the memory a statement or commit needed under its cap, though what
    surfaced is a later error (the rollback's "transaction is aborted") with it as its context. Told by
    the exception's type, never by its text alone: a conversion error quotes the value that failed."""
    import duckdb

    seen: BaseException | None = exc
    for _ in range(32):  # a chain can loop back on itself; ours are a few links long
        if seen is None:
            break
        if isinstance(seen, duckdb.OutOfMemoryException):
            return True
        # A commit or its checkpoint that ran out reports it in an error of its own kind.
        if isinstance(seen, duckdb.TransactionException | duckdb.FatalException) and any(
            sign in str(seen) for sign in ("could not allocate block", "failed to pin block")
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def reserved_schemas(url: str) -> set[str]:
    """Schema names a warehouse refuses or resolves ambiguously: DuckDB's catalogs (the file's own name,
    `system`, `temp`) and system schemas; PostgreSQL's `pg_*` and `information_schema`."""
    parsed = make_url(url)
    if parsed.get_backend_name() == lake.BACKEND:
        return {"system", "temp", "information_schema", "pg_catalog", "memory", lake.ALIAS}
    if parsed.get_backend_name() == "duckdb":
        stem = os.path.splitext(os.path.basename(parsed.database or ""))[0].lower()
        return {"system", "temp", "information_schema", "pg_catalog", "memory", stem} - {""}
    if parsed.get_backend_name() == "postgresql":
        return {"information_schema", "pg_catalog", "pg_toast"}
    return set()


def safe_schema(schema: str, url: str) -> str:
    """A schema name the warehouse takes: one it reserves gets a leading `_`, as RudderStack escapes
    reserved words (PostgreSQL also reserves every name starting with `pg_`)."""
    if schema in reserved_schemas(url) or (dialect_of(url) == "postgresql" and schema.startswith("pg_")):
        return "_" + schema
    return schema


def is_lock_conflict(exc: BaseException) -> bool:
    """True when DuckDB refused the file because another process holds it."""
    if isinstance(exc, WarehouseBusy):
        return True
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text or "database is locked" in text


def retry_busy(
    fn: Callable[[], T], timeout_s: float = 15.0, first_wait_s: float = 0.02, turns: Turns | None = None
) -> T:
    """Run fn, trying again while the DuckDB file is held by another process. With `turns`, a process
    that finds the file held asks the lander for it (loader.warehouse.turns) until fn is done."""
    deadline = time.monotonic() + timeout_s
    wait, asked = first_wait_s, False
    with contextlib.ExitStack() as asking:
        while True:
            try:
                return fn()
            except Exception as exc:
                if not is_lock_conflict(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise WarehouseBusy(
                        "the warehouse file is held by another process (an open DuckDB session?); "
                        "close it or try again"
                    ) from exc
                if turns is not None and not asked:
                    asking.enter_context(turns.asking())
                    asked = True
            time.sleep(wait)
            wait = min(wait * 1.5, 0.1 if asked else 0.25)
