"""Rows -> Arrow tables with the column types of our tables (DuckDB's fast insert path)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from loader.catalogue import BIGINT, BOOLEAN, JSON, TEXT, TIMESTAMP
from loader.warehouse.tables import column_kinds

ARROW_TYPES: dict[str, pa.DataType] = {
    TEXT: pa.string(),
    JSON: pa.string(),
    BIGINT: pa.int64(),
    BOOLEAN: pa.bool_(),
    TIMESTAMP: pa.timestamp("us", tz="UTC"),
}


def use_system_allocator() -> None:
    """Arrow's buffers from the C library's allocator rather than pyarrow's bundled mimalloc, for the
    process that lands. Measured here, alternating: `flush` of 100,000 bodies 61-62k against 52-55k
    events/s; serve's lander (one thread, batches of 5,000) 36.6-36.9k against 33.0-34.7k events/s and a
    peak 14-20 MB lower; serve under the bench's load, a peak 288-291 against 293-297 MB. (The parse's
    buffers are made on one thread and freed on another, and mimalloc kept what was freed.)"""
    pa.set_memory_pool(pa.system_memory_pool())


def to_arrow(table: str, names: list[str], rows: list[dict[str, Any]]) -> pa.Table:
    """One Arrow column per name, typed from the table's column kinds."""
    kinds = dict(column_kinds(table))
    arrays = [pa.array([r.get(n) for r in rows], type=ARROW_TYPES[kinds[n]]) for n in names]
    return pa.Table.from_arrays(arrays, names=names)
