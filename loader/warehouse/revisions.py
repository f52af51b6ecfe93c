"""Helpers shared by Alembic revisions: the target schema, and tables created from column specs."""

from __future__ import annotations

from alembic import context, op
from sqlalchemy import Column

from loader.naming import is_safe
from loader.warehouse.tables import sql_type


def target_schema() -> str:
    """The schema this run migrates, as validated by env.py."""
    schema = context.config.attributes["schema"]
    assert is_safe(schema)
    return schema


def create_table(schema: str, name: str, spec: tuple[tuple[str, str], ...]) -> None:
    op.create_table(name, *[Column(c, sql_type(k)) for c, k in spec], schema=schema)


def is_postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"
