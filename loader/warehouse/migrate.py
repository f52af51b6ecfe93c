"""Alembic, run in-process: one version table per source schema, the schema validated, never raw."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from loader.naming import is_safe, quote
from loader.resources import project_dir
from loader.warehouse import lake
from loader.warehouse.engine import retry_busy
from loader.warehouse.turns import Turns


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(project_dir("migrations")))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine, schema: str) -> str | None:
    """The revision a schema is at, or None when it has never been migrated."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table_schema": schema})
        return ctx.get_current_revision()


def upgrade(engine: Engine, schema: str, revision: str = "head") -> None:
    """Create the schema if needed and bring it to `revision`, in one transaction."""
    if not is_safe(schema):
        raise ValueError(f"unsafe schema name {schema!r}")

    def run() -> None:
        cfg = alembic_config()
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}"))
            cfg.attributes["connection"] = conn
            cfg.attributes["schema"] = schema
            # DuckLake has no PRIMARY KEY constraints, Alembic's version table its only one.
            cfg.attributes["version_table_pk"] = not lake.is_lake(engine.url)
            command.upgrade(cfg, revision)

    retry_busy(run, timeout_s=30.0, turns=Turns.of(engine.url))
    if lake.is_lake(engine.url):
        from loader.warehouse.lake_stats import give_empty_tables_stats

        give_empty_tables_stats(engine, schema)
