"""Alembic has no DuckDB implementation; DuckDB takes PostgreSQL-like DDL in transactions."""

from alembic.ddl.impl import DefaultImpl


class AlembicDuckDBImpl(DefaultImpl):
    """Registers DuckDB with Alembic (the subclass hook does the registering)."""

    __dialect__ = "duckdb"
    transactional_ddl = True
