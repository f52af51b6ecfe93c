"""RudderStack's Customer.io tables: tracks, its 44 event tables, unknown_event, rudder_discards.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from alembic import op

from loader.catalogue import (
    BASE_PROPERTY_COLUMNS,
    DISCARDS_COLUMNS,
    DISCARDS_TABLE,
    RUDDERSTACK_NAMES,
    TRACKS_COLUMNS,
    TRACKS_TABLE,
    UNKNOWN_EVENT,
)
from loader.naming import table_name
from loader.warehouse.revisions import create_table, is_postgres, target_schema

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

EVENT_COLUMNS = TRACKS_COLUMNS + BASE_PROPERTY_COLUMNS


def upgrade() -> None:
    schema = target_schema()
    create_table(schema, TRACKS_TABLE, TRACKS_COLUMNS)
    for name in sorted({*RUDDERSTACK_NAMES.values(), UNKNOWN_EVENT}):
        create_table(schema, table_name(name), EVENT_COLUMNS)
    create_table(schema, DISCARDS_TABLE, DISCARDS_COLUMNS)
    if is_postgres():
        # Landing asks "which of these ids are here already?"; DuckDB scans fast, PostgreSQL needs this.
        op.create_index("tracks_id_idx", TRACKS_TABLE, ["id"], schema=schema)


def downgrade() -> None:
    schema = target_schema()
    for name in sorted({*RUDDERSTACK_NAMES.values(), UNKNOWN_EVENT}):
        op.drop_table(table_name(name), schema=schema)
    op.drop_table(DISCARDS_TABLE, schema=schema)
    op.drop_table(TRACKS_TABLE, schema=schema)
