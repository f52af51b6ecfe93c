"""What Customer.io sends and what it becomes: event names, and the columns and types of every table.

Data only (plus one lookup), so the transform, the migrations and the writers agree on one list.
"""

from __future__ import annotations

from typing import Final

UNKNOWN_EVENT: Final = "Unknown Event"
SUBSCRIPTION_PREFERENCES: Final = "Customer Subscription Preferences Changed"
SUBSCRIPTION_METRIC: Final = "cio_subscription_preferences_changed"

# The event-name prefix of each Customer.io object type.
PREFIX: Final[dict[str, str]] = {
    "customer": "Customer",
    "email": "Email",
    "sms": "SMS",
    "push": "Push",
    "slack": "Slack Message",
    "webhook": "Webhook Message",
    "in_app": "In App Message",
    "whatsapp": "WhatsApp",
}

# The (object type, metric) pairs RudderStack's Customer.io source names: its 44 event tables.
RUDDERSTACK_METRICS: Final[dict[str, tuple[str, ...]]] = {
    "customer": ("subscribed", "unsubscribed"),
    "email": (
        "failed", "spammed", "dropped", "bounced", "subscribed", "unsubscribed", "converted",
        "clicked", "opened", "delivered", "sent", "attempted", "drafted", "deferred",
    ),
    "sms": ("failed", "bounced", "converted", "clicked", "delivered", "sent", "attempted", "drafted"),
    "push": (
        "failed", "dropped", "bounced", "converted", "clicked", "opened", "sent", "attempted",
        "drafted", "delivered",
    ),
    "slack": ("failed", "clicked", "sent", "attempted", "drafted"),
    "webhook": ("failed", "clicked", "sent", "attempted", "drafted"),
}  # fmt: skip

# Our extensions (SPEC §5): channels and metrics RudderStack leaves as "Unknown Event".
EXTENSION_METRICS: Final[dict[str, tuple[str, ...]]] = {
    "email": ("undeliverable",),
    "sms": ("undeliverable", "replied"),
    "push": ("undeliverable",),
    "slack": ("undeliverable",),
    "webhook": ("undeliverable",),
    "in_app": ("drafted", "attempted", "sent", "opened", "clicked", "converted", "failed", "undeliverable"),
    "whatsapp": (
        "drafted", "attempted", "sent", "delivered", "opened", "clicked", "converted", "bounced",
        "dropped", "failed", "undeliverable", "replied",
    ),
}  # fmt: skip

_SPECIAL: Final[dict[tuple[str, str], str]] = {
    ("email", "spammed"): "Email Marked as Spam",
    ("email", "clicked"): "Email Link Clicked",
    ("sms", "clicked"): "SMS Link Clicked",
    ("push", "clicked"): "Push Link Clicked",
    ("slack", "clicked"): "Slack Message Link Clicked",
    ("webhook", "clicked"): "Webhook Message Link Clicked",
    ("in_app", "clicked"): "In App Message Clicked",
    ("whatsapp", "clicked"): "WhatsApp Link Clicked",
}


def _name(object_type: str, metric: str) -> str:
    return _SPECIAL.get((object_type, metric)) or f"{PREFIX[object_type]} {metric.capitalize()}"


def _names(metrics: dict[str, tuple[str, ...]]) -> dict[tuple[str, str], str]:
    return {(o, m): _name(o, m) for o, ms in metrics.items() for m in ms}


RUDDERSTACK_NAMES: Final = _names(RUDDERSTACK_METRICS)
EXTENSION_NAMES: Final = _names(EXTENSION_METRICS)
EVENT_NAMES: Final = {**RUDDERSTACK_NAMES, **EXTENSION_NAMES}


def event_name(object_type: object, metric: object) -> str:
    """The RudderStack event name of a Customer.io (object type, metric); `Unknown Event` otherwise."""
    if not isinstance(metric, str):
        return UNKNOWN_EVENT
    if metric == SUBSCRIPTION_METRIC:
        return SUBSCRIPTION_PREFERENCES
    if not isinstance(object_type, str):
        return UNKNOWN_EVENT
    return EVENT_NAMES.get((object_type.lower(), metric), UNKNOWN_EVENT)


# Column kinds; each writer maps them to its own types.
TEXT, BIGINT, BOOLEAN, TIMESTAMP, JSON = "text", "bigint", "boolean", "timestamp", "json"

TRACKS_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("id", TEXT),
    ("user_id", TEXT),
    ("anonymous_id", TEXT),
    ("event", TEXT),
    ("event_text", TEXT),
    ("sent_at", TIMESTAMP),
    ("original_timestamp", TIMESTAMP),
    ("timestamp", TIMESTAMP),
    ("received_at", TIMESTAMP),
    ("uuid_ts", TIMESTAMP),
    ("context_ip", TEXT),
    ("context_request_ip", TEXT),
    ("context_library_name", TEXT),
    ("context_library_version", TEXT),
    ("context_integration_name", TEXT),
    ("context_traits_email", TEXT),
    ("context_traits_cio_id", TEXT),
    ("context_source_id", TEXT),
    ("context_source_type", TEXT),
)

# Properties of RudderStack's mapping, flattened and snake-cased.
BASE_PROPERTY_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("event_id", TEXT),
    ("delivery_id", TEXT),
    ("action_id", BIGINT),
    ("broadcast_id", BIGINT),
    ("campaign_id", BIGINT),
    ("newsletter_id", BIGINT),
    ("transactional_message_id", BIGINT),
    ("content_id", BIGINT),
    ("trigger_id", BIGINT),
    ("parent_action_id", BIGINT),
    ("journey_id", TEXT),
    ("device_id", TEXT),
    ("device_platform", TEXT),
    ("content", TEXT),
    ("email_subject", TEXT),
    ("link_url", TEXT),
    ("link_id", BIGINT),
    ("reason", TEXT),
    ("recipients", JSON),
    ("type", TEXT),
)

# Properties of our extensions (revision 0002).
EXTENSION_PROPERTY_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("proxied", BOOLEAN),
    ("prefetched", BOOLEAN),
    ("synthetic", BOOLEAN),
    ("machine", BOOLEAN),
    ("tracked_response", TEXT),
    ("inbound_event_id", TEXT),
    ("trigger_event_id", TEXT),
)

PROPERTY_COLUMNS: Final = BASE_PROPERTY_COLUMNS + EXTENSION_PROPERTY_COLUMNS
EVENT_TABLE_COLUMNS: Final = TRACKS_COLUMNS + PROPERTY_COLUMNS

DISCARDS_TABLE: Final = "rudder_discards"
DISCARDS_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("table_name", TEXT),
    ("row_id", TEXT),
    ("column_name", TEXT),
    ("column_value", TEXT),
    ("received_at", TIMESTAMP),
    ("uuid_ts", TIMESTAMP),
    ("reason", TEXT),
)
TRACKS_TABLE: Final = "tracks"
