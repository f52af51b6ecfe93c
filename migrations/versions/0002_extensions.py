"""Our extensions: in-app, WhatsApp, undeliverable, SMS replies, preference changes, and their properties.

Upgrades a warehouse that already holds data: new tables, and new nullable columns on the old ones.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from alembic import op
from sqlalchemy import Column

from loader.catalogue import (
    BASE_PROPERTY_COLUMNS,
    EXTENSION_NAMES,
    EXTENSION_PROPERTY_COLUMNS,
    RUDDERSTACK_NAMES,
    SUBSCRIPTION_PREFERENCES,
    TRACKS_COLUMNS,
    UNKNOWN_EVENT,
)
from loader.naming import table_name
from loader.warehouse.revisions import create_table, target_schema
from loader.warehouse.tables import sql_type

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OLD_TABLES = sorted({table_name(n) for n in (*RUDDERSTACK_NAMES.values(), UNKNOWN_EVENT)})
NEW_TABLES = sorted({table_name(n) for n in (*EXTENSION_NAMES.values(), SUBSCRIPTION_PREFERENCES)})


def upgrade() -> None:
    schema = target_schema()
    for name in OLD_TABLES:
        for column, kind in EXTENSION_PROPERTY_COLUMNS:
            op.add_column(name, Column(column, sql_type(kind)), schema=schema)
    for name in NEW_TABLES:
        create_table(schema, name, TRACKS_COLUMNS + BASE_PROPERTY_COLUMNS + EXTENSION_PROPERTY_COLUMNS)


def downgrade() -> None:
    schema = target_schema()
    for name in NEW_TABLES:
        op.drop_table(name, schema=schema)
    for name in OLD_TABLES:
        for column, _ in EXTENSION_PROPERTY_COLUMNS:
            op.drop_column(name, column, schema=schema)
