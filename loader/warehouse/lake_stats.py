"""Statistics for a lake's never-written tables.

DuckLake 1.5.5 plans a scan of a table that has never held a row with catalog queries per column, on
every query, because it caches no "no statistics" answer (fixed upstream after 1.5.5, ducklake#1313). The
§7/§8 views read ~70 tables, most of them empty on a new source, so each query spent over a second
planning. A table that once held a row keeps its statistics, so after a migration each such table gets one
placeholder row (id '', which no event has) in one commit, deleted in the next.
"""

from __future__ import annotations

from sqlalchemy import Engine, text

from loader.naming import qualified
from loader.warehouse.lake import ALIAS, Lake
from loader.warehouse.lake_writer import landing_lock

PLACEHOLDER_ID = ""
_META = f"__ducklake_metadata_{ALIAS}"  # DuckLake's own catalog tables, as its spec names them


def tables_without_stats(engine: Engine, schema: str) -> list[str]:
    sql = (
        f"SELECT t.table_name FROM {_META}.ducklake_table t "
        f"JOIN {_META}.ducklake_schema s ON s.schema_id = t.schema_id "
        "WHERE s.schema_name = :schema AND s.end_snapshot IS NULL AND t.end_snapshot IS NULL "
        f"AND t.table_id NOT IN (SELECT table_id FROM {_META}.ducklake_table_stats) ORDER BY 1"
    )
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text(sql), {"schema": schema})]


def give_empty_tables_stats(engine: Engine, schema: str) -> int:
    """Write and delete one placeholder row in each table of `schema` without statistics, under the
    landing lock (a merge between the two commits would conflict with the delete), the data files on
    disk before each commit. Placeholders a crash left between the commits are deleted first."""
    lake = Lake.from_url(engine.url)
    with landing_lock(lake).held():
        events = _event_tables(engine, schema)
        empty = [t for t in tables_without_stats(engine, schema) if t in events]
        with lake.files_synced(), engine.begin() as conn:
            for table in empty:
                conn.execute(
                    text(f"INSERT INTO {qualified(schema, table)} (id) VALUES (:id)"), {"id": PLACEHOLDER_ID}
                )
        with lake.files_synced(), engine.begin() as conn:
            for table in events:
                conn.execute(
                    text(f"DELETE FROM {qualified(schema, table)} WHERE id = :id"), {"id": PLACEHOLDER_ID}
                )
    return len(empty)


def _event_tables(engine: Engine, schema: str) -> list[str]:
    """`tracks` and the event tables: those with an `id` column (not the discards or Alembic's)."""
    with engine.connect() as conn:
        result = conn.execute(
            text(
                "SELECT table_name FROM duckdb_columns() WHERE database_name = :db AND schema_name = :schema "
                "AND column_name = 'id' ORDER BY 1"
            ),
            {"db": ALIAS, "schema": schema},
        )
        return [r[0] for r in result]
