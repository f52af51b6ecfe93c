"""The funnel views of sql/, created (and replaced) in a source's schema by Alembic revisions."""

from __future__ import annotations

from sqlalchemy import Connection, text

from loader.naming import quote
from loader.resources import project_dir

VIEWS = ("email_funnel", "email_funnel_by_message", "email_funnel_daily")  # dependencies first


def view_sql(name: str, schema: str) -> str:
    """A view's CREATE statement for one schema (the schema validated and quoted, never raw)."""
    return (project_dir("sql") / f"{name}.sql").read_text().replace("{schema}", quote(schema))


def drop_views(conn: Connection, schema: str) -> None:
    for name in reversed(VIEWS):
        conn.execute(text(f"DROP VIEW IF EXISTS {quote(schema)}.{quote(name)}"))


def replace_views(conn: Connection, schema: str) -> None:
    """Drop and re-create every view, so a revision can change their columns."""
    drop_views(conn, schema)
    for name in VIEWS:
        conn.execute(text(view_sql(name, schema)))
