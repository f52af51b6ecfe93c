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
    """Arrow's buffers from the C library's allocator rather than pyarrow's bundled mimalloc, for a
    one-shot landing process (`flush`, and backfill and replay through it). Measured here, alternating:
    `flush` of 100,000 bodies 59.7-62.3k against 50.5-55.5k events/s. (The parse's buffers are made on
    the helper thread and freed on the landing one.) Not for serve's long-running lander: with this
    switch, serve peaked at 322-325 MB in three of four runs of the bench's HTTP part (see
    use_jemalloc_allocator)."""
    pa.set_memory_pool(pa.system_memory_pool())


def use_jemalloc_allocator() -> None:
    """Arrow's buffers from pyarrow's jemalloc, for serve's long-running lander: its peak in make bench's
    HTTP part was 283-292 MB of serve and lander against 299-306 MB with mimalloc (five runs and four,
    the first seven alternating). Kept as it is where this pyarrow has no jemalloc."""
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:
        return
    pa.set_memory_pool(pool)


def to_arrow(table: str, names: list[str], rows: list[dict[str, Any]]) -> pa.Table:
    """One Arrow column per name, typed from the table's column kinds."""
    kinds = dict(column_kinds(table))
    arrays = [pa.array([r.get(n) for r in rows], type=ARROW_TYPES[kinds[n]]) for n in names]
    return pa.Table.from_arrays(arrays, names=names)
