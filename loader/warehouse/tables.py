"""SQLAlchemy tables of one source's schema, built from the catalogue (for writers and queries)."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import BigInteger, Boolean, Column, DateTime, MetaData, Table, Text
from sqlalchemy.types import TypeEngine

from loader.catalogue import (
    BIGINT,
    BOOLEAN,
    DISCARDS_COLUMNS,
    DISCARDS_TABLE,
    EVENT_NAMES,
    EVENT_TABLE_COLUMNS,
    JSON,
    SUBSCRIPTION_PREFERENCES,
    TEXT,
    TIMESTAMP,
    TRACKS_COLUMNS,
    TRACKS_TABLE,
    UNKNOWN_EVENT,
)
from loader.naming import is_safe, table_name

SQL_TYPES: dict[str, type[TypeEngine]] = {
    TEXT: Text,
    JSON: Text,
    BIGINT: BigInteger,
    BOOLEAN: Boolean,
    TIMESTAMP: DateTime,
}


def sql_type(kind: str) -> TypeEngine:
    """The SQLAlchemy type of a column kind (times are TIMESTAMPTZ)."""
    return DateTime(timezone=True) if kind == TIMESTAMP else SQL_TYPES[kind]()


def columns(spec: tuple[tuple[str, str], ...]) -> list[Column]:
    return [Column(name, sql_type(kind)) for name, kind in spec]


def event_tables() -> list[str]:
    """Every event table a schema has at the newest revision."""
    names = {table_name(n) for n in EVENT_NAMES.values()}
    names |= {table_name(UNKNOWN_EVENT), table_name(SUBSCRIPTION_PREFERENCES)}
    return sorted(names)


@lru_cache(maxsize=256)
def schema_tables(schema: str) -> dict[str, Table]:
    """Table objects for one schema: tracks, every event table, rudder_discards."""
    if not is_safe(schema):
        raise ValueError(f"unsafe schema name {schema!r}")
    meta = MetaData(schema=schema)
    tables = {TRACKS_TABLE: Table(TRACKS_TABLE, meta, *columns(TRACKS_COLUMNS))}
    for name in event_tables():
        tables[name] = Table(name, meta, *columns(EVENT_TABLE_COLUMNS))
    tables[DISCARDS_TABLE] = Table(DISCARDS_TABLE, meta, *columns(DISCARDS_COLUMNS))
    return tables


def column_kinds(table: str) -> tuple[tuple[str, str], ...]:
    if table == TRACKS_TABLE:
        return TRACKS_COLUMNS
    if table == DISCARDS_TABLE:
        return DISCARDS_COLUMNS
    return EVENT_TABLE_COLUMNS
