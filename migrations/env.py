"""Alembic environment: the connection and the (validated) schema come from the caller."""

from alembic import context

import loader.warehouse.alembic_duckdb  # noqa: F401  (registers DuckDB with Alembic)
from loader.naming import is_safe

config = context.config
connection = config.attributes.get("connection")
schema = config.attributes.get("schema")
if connection is None or schema is None or not is_safe(schema):
    raise SystemExit("run migrations with `loader migrate`: it passes the connection and the schema")

context.configure(
    connection=connection,
    version_table_schema=schema,
    version_table_pk=config.attributes.get("version_table_pk", True),
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
