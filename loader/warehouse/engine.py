"""Warehouse engines. DuckDB is opened per use (NullPool) so the file is held only while we land."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from loader.errors import WarehouseBusy
from loader.warehouse.turns import Turns

T = TypeVar("T")


def dialect_of(url: str) -> str:
    return make_url(url).get_backend_name()


# DuckDB keeps every block of the file that a connection reads or writes in its buffer pool, up to 80% of
# the machine's memory by default. serve's lander holds the file across batches, so its memory grew with
# the warehouse: over three backlogs of 130,000 events its peak went 286 -> 330 -> 366 MB (make bench's
# serve and lander: 329-334 MB, the target 300). Capped, it stays put (286 / 288 / 288 MB at 64 MB).
# A writer's connection keeps at most this much (landing 100,000 events: no slower at 256 MB).
WRITER_MEMORY_LIMIT = "256MB"


def make_warehouse_engine(
    url: str,
    read_only: bool = False,
    duckdb_threads: int | None = None,
    duckdb_memory_limit: str | None = None,
) -> Engine:
    """An engine for the warehouse; DuckDB files are created on first use and never pooled.
    `read_only` opens a DuckDB file read-only (other dialects: the caller's transaction decides);
    `duckdb_threads` caps DuckDB's worker threads (default: one per core), `duckdb_memory_limit` its
    buffer pool (default: DuckDB's, 80% of memory; see WRITER_MEMORY_LIMIT)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "duckdb":
        if parsed.database and parsed.database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
        args: dict[str, object] = {"read_only": True} if read_only else {}
        config: dict[str, object] = {}
        if duckdb_threads is not None:
            config["threads"] = duckdb_threads
        if duckdb_memory_limit is not None:
            config["memory_limit"] = duckdb_memory_limit
        if config:
            args["config"] = config
        return create_engine(url, poolclass=NullPool, connect_args=args)
    return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2)


def reserved_schemas(url: str) -> set[str]:
    """Schema names a warehouse refuses or resolves ambiguously: DuckDB's catalogs (the file's own name,
    `system`, `temp`) and system schemas; PostgreSQL's `pg_*` and `information_schema`."""
    parsed = make_url(url)
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
