"""The email funnel views of sql/: email_funnel, email_funnel_by_message, email_funnel_daily.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from alembic import op

from loader.warehouse.revisions import target_schema
from loader.warehouse.views import EMAIL_VIEWS, drop_views, replace_views

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    replace_views(op.get_bind(), target_schema(), EMAIL_VIEWS)


def downgrade() -> None:
    drop_views(op.get_bind(), target_schema(), EMAIL_VIEWS)
