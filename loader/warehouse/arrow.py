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


def to_arrow(table: str, names: list[str], rows: list[dict[str, Any]]) -> pa.Table:
    """One Arrow column per name, typed from the table's column kinds."""
    kinds = dict(column_kinds(table))
    arrays = [pa.array([r.get(n) for r in rows], type=ARROW_TYPES[kinds[n]]) for n in names]
    return pa.Table.from_arrays(arrays, names=names)
