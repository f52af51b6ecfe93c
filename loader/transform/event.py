"""Customer.io reporting-webhook body -> RudderStack track event (RudderStack's mapping, then ours)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loader.catalogue import SUBSCRIPTION_METRIC, event_name

# Namespace of our deterministic message ids: uuid5(namespace, "<source>|<event id>").
MESSAGE_ID_NAMESPACE = uuid.UUID("6f1c2a4e-3b7d-5e8f-9a0b-1c2d3e4f5a6b")

# property name <- data field, in RudderStack's mapping order.
_DATA_PROPERTIES: tuple[tuple[str, str], ...] = (
    ("deliveryId", "delivery_id"),
    ("actionId", "action_id"),
    ("broadcastId", "broadcast_id"),
    ("campaignId", "campaign_id"),
    ("newsletterId", "newsletter_id"),
    ("transactionalMessageId", "transactional_message_id"),
    ("contentId", "content_id"),
    ("triggerId", "trigger_id"),
    ("journeyId", "journey_id"),
    ("parentActionId", "parent_action_id"),
    ("deviceId", "device_id"),
    ("devicePlatform", "device_platform"),
    ("content", "content"),
    ("emailSubject", "subject"),
    ("recipients", "recipients"),
    ("type", "event_type"),
    # Our extensions.
    ("proxied", "proxied"),
    ("prefetched", "prefetched"),
    ("synthetic", "synthetic"),
    ("machine", "machine"),
    ("trackedResponse", "tracked_response"),
    ("inboundEventId", "inbound_event_id"),
    ("triggerEventId", "trigger_event_id"),
)


_LONG_INTEGER = re.compile(rb"\d{19,}")


def loads_exact(raw: bytes) -> Any:
    """Parse JSON fast (orjson); where an integer is too long for 64 bits, parse again exactly (stdlib),
    so a value that does not fit its column is kept with its true digits."""
    import orjson

    value = orjson.loads(raw)
    if _LONG_INTEGER.search(raw):
        with contextlib.suppress(RecursionError):  # deeper than the stdlib parses: keep orjson's reading
            value = json.loads(raw)
    return value


@dataclass(frozen=True)
class Receipt:
    """What the gateway knew when it accepted a body: when, from where, for which source."""

    received_at: datetime
    request_ip: str | None = None
    source_id: str = ""


def _first(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def iso_ms(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and Z, as RudderStack writes times."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_time(raw: Any) -> datetime | None:
    """Customer.io's integer Unix timestamp as a time; None for strings, booleans and nonsense."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    if isinstance(raw, float) and not raw.is_integer():
        return None
    try:
        return datetime.fromtimestamp(int(raw), tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def message_id(source_id: str, body: dict[str, Any] | None, raw: bytes) -> str:
    """Our messageId: the same for every retry of one event, so a retry is the same row."""
    return id_of_key(event_key(source_id, body, raw))


def is_utf8(raw: bytes | bytearray) -> bool:
    """Whether a body is valid UTF-8 (the gateway quarantines one that is not; the lander's SQL path
    leaves one to the Python transform)."""
    try:
        bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def event_key(source_id: str, body: dict[str, Any] | None, raw: bytes | bytearray) -> str:
    """What names one event of a source, the same for every retry: its `event_id` (or `data.event_id`),
    else the raw body's hash. The message id is derived from it (id_of_key), so staging keeps bodies
    unique on it: Customer.io's event ids are ULIDs, in time order, so that index grows at its end where
    one on the random message ids took a page write a body (see loader.staging.tables)."""
    event_id = body.get("event_id") if body else None
    if event_id is None and body:
        event_id = _dict(body.get("data")).get("event_id")
    if isinstance(event_id, str | int) and not isinstance(event_id, bool) and str(event_id):
        return f"{source_id}|event|{event_id}"
    return f"{source_id}|sha256|{hashlib.sha256(raw).hexdigest()}"


def id_of_key(key: str) -> str:
    """The message id of an event_key."""
    return uuid5_text(MESSAGE_ID_NAMESPACE.bytes, key)


def uuid5_text(namespace: bytes, name: str) -> str:
    """`str(uuid.uuid5(namespace, name))` without the UUID object (the gateway does this per request,
    and the object's construction and formatting were 8% of its Python time)."""
    # SHA-1 is what RFC 4122 defines for version 5 ids; it names, it does not protect.
    digest = bytearray(hashlib.sha1(namespace + name.encode("utf-8"), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _properties(body: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    event_id = _first(body.get("event_id"), data.get("event_id"))
    if event_id is not None:
        props["eventId"] = event_id
    for prop, field in _DATA_PROPERTIES:
        if data.get(field) is not None:
            props[prop] = data[field]
    link = {k: v for k, v in (("url", data.get("href")), ("id", data.get("link_id"))) if v is not None}
    if link:
        props["link"] = link
    reason = _first(data.get("failure_message"), _recipients_reason(data.get("recipients")))
    if reason is not None:
        props["reason"] = reason
    return props


def _recipients_reason(recipients: Any) -> Any:
    if isinstance(recipients, list):
        for recipient in recipients:
            if isinstance(recipient, dict) and recipient.get("failure_message") is not None:
                return recipient["failure_message"]
    return None


def _object_type(body: dict[str, Any]) -> Any:
    if body.get("metric") == SUBSCRIPTION_METRIC:
        return _first(body.get("object_type"), body.get("object_type_type"))
    return body.get("object_type")


def to_track(body: dict[str, Any]) -> dict[str, Any]:
    """What RudderStack's source transformer returns for one Customer.io body (no receipt fields)."""
    data = _dict(body.get("data"))
    identifiers = _dict(data.get("identifiers"))
    traits: dict[str, Any] = {}
    email = _first(identifiers.get("email"), data.get("recipient"), data.get("email_address"))
    if email is not None:
        traits["email"] = email
    if identifiers.get("cio_id") is not None:
        traits["cioId"] = identifiers["cio_id"]
    context: dict[str, Any] = {
        "library": {"name": "unknown", "version": "unknown"},
        "integration": {"name": "Customer.io"},
    }
    if traits:
        context["traits"] = traits
    event: dict[str, Any] = {
        "context": context,
        "integrations": {"Customer.io": False},
        "type": "track",
        "event": event_name(_object_type(body), body.get("metric")),
        "properties": _properties(body, data),
    }
    user_id = _first(data.get("customer_id"), identifiers.get("id"))
    if user_id is not None:
        event["userId"] = user_id
    elif email is not None:
        event["anonymousId"] = email
    moment = event_time(body.get("timestamp"))
    if moment is not None:
        event["originalTimestamp"] = event["sentAt"] = iso_ms(moment)
    return event


def to_event(body: dict[str, Any], raw: bytes, receipt: Receipt) -> dict[str, Any]:
    """The full event as it lands: the source transform plus what RudderStack adds on receipt."""
    event = to_track(body)
    received = iso_ms(receipt.received_at)
    event["messageId"] = message_id(receipt.source_id, body, raw)
    event["receivedAt"] = received
    if receipt.request_ip is not None:
        event["request_ip"] = receipt.request_ip
    event.setdefault("originalTimestamp", received)
    event.setdefault("sentAt", received)
    skew = parse_iso(event["sentAt"]) - parse_iso(event["originalTimestamp"])
    event["timestamp"] = iso_ms(receipt.received_at - skew)
    return event


def parse_iso(value: str) -> datetime:
    """An ISO time as RudderStack writes it (`…Z`) back to an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
