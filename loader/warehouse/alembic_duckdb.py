"""Alembic has no DuckDB implementation; DuckDB takes PostgreSQL-like DDL in transactions, so the default does."""

from alembic.ddl.impl import DefaultImpl


class AlembicDuckDBImpl(DefaultImpl):
    """Registers DuckDB with Alembic (the subclass hook does the registering)."""

    __dialect__ = "duckdb"
    transactional_ddl = True
