"""Every channel's funnel views of sql/ (SPEC §8): message_funnel, its rollup by message and by day.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from alembic import op

from loader.warehouse.revisions import target_schema
from loader.warehouse.views import MESSAGE_VIEWS, drop_views, replace_views

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    replace_views(op.get_bind(), target_schema(), MESSAGE_VIEWS)


def downgrade() -> None:
    drop_views(op.get_bind(), target_schema(), MESSAGE_VIEWS)
