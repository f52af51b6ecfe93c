"""The funnel views of sql/, created (and replaced) in a source's schema by Alembic revisions.

A view file names its schema with a placeholder; `message_funnel.sql` has one more for the union
of every channel's event tables, made here from the catalogue so that list has one home.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from loader.catalogue import EVENT_NAMES
from loader.naming import quote, table_name
from loader.resources import project_dir

EMAIL_VIEWS = ("email_funnel", "email_funnel_by_message", "email_funnel_daily")  # dependencies first
MESSAGE_VIEWS = (
    "message_funnel",
    "message_funnel_by_message",
    "message_funnel_daily",
    "message_funnel_daily_by_message",
)

# SPEC §8's seven channels, in the order the dashboard lists them.
CHANNELS = ("email", "push", "sms", "in_app", "whatsapp", "webhook", "slack")
_EVENT_COLUMNS = (
    "delivery_id, user_id, campaign_id, broadcast_id, newsletter_id, transactional_message_id, "
    "action_id, original_timestamp AS event_at, prefetched, machine"
)


def channel_events_sql(schema: str) -> str:
    """One SELECT per (channel, metric) event table, tagged with both, joined by UNION ALL."""
    selects = [
        f"    SELECT '{channel}' AS channel, '{metric}' AS metric, {_EVENT_COLUMNS}\n"
        f"    FROM {quote(schema)}.{quote(table_name(name))}"
        for (channel, metric), name in sorted(EVENT_NAMES.items())
        if channel in CHANNELS
    ]
    return "\n    UNION ALL\n".join(selects)


def view_sql(name: str, schema: str) -> str:
    """A view's CREATE statement for one schema (the schema validated and quoted, never raw)."""
    sql = (project_dir("sql") / f"{name}.sql").read_text()
    if "{channel_events}" in sql:
        sql = sql.replace("{channel_events}", channel_events_sql(schema))
    return sql.replace("{schema}", quote(schema))


def drop_views(conn: Connection, schema: str, names: tuple[str, ...]) -> None:
    for name in reversed(names):
        conn.execute(text(f"DROP VIEW IF EXISTS {quote(schema)}.{quote(name)}"))


def replace_views(conn: Connection, schema: str, names: tuple[str, ...]) -> None:
    """Drop and re-create the views named, so a revision can change their columns."""
    drop_views(conn, schema, names)
    for name in names:
        conn.execute(text(view_sql(name, schema)))
