"""A RudderStack event -> one row for `tracks`, one for its event table, and discards for misfits.

Values that do not fit their column land as NULL there and as a `rudder_discards` row: never lost silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from loader.catalogue import (
    BIGINT,
    BOOLEAN,
    DISCARDS_TABLE,
    EVENT_TABLE_COLUMNS,
    JSON,
    PROPERTY_COLUMNS,
    TEXT,
    TRACKS_TABLE,
)
from loader.naming import column_name, table_name
from loader.transform.event import parse_iso

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_PROPERTY_KINDS = dict(PROPERTY_COLUMNS)
# Tracks columns whose values come from the payload (everything else is set by us).
_FROM_PAYLOAD = ("user_id", "anonymous_id", "context_traits_email", "context_traits_cio_id")


@dataclass(frozen=True)
class Discard:
    """A value that did not fit its column, kept with the reason."""

    table_name: str
    row_id: str
    column_name: str
    column_value: str
    received_at: datetime
    reason: str


@dataclass
class Rows:
    """Rows of one event: the table it belongs to, the tracks row, the event row, the discards."""

    table: str
    track: dict[str, Any]
    event: dict[str, Any]
    discards: list[Discard] = field(default_factory=list)


def _text(value: Any) -> str:
    if isinstance(value, str):
        text = value
    else:
        try:
            text = orjson.dumps(value).decode()
        except TypeError:  # integers past 64 bits: the stdlib writes them exactly
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    # PostgreSQL text cannot hold NUL; replace it the same way on every warehouse.
    return text.replace("\x00", "\ufffd")


def coerce(kind: str, value: Any) -> tuple[Any, str | None]:
    """Fit a JSON value to a column kind: (value, None), or (None, reason) when it does not fit."""
    if value is None:
        return None, None
    if kind == TEXT and type(value) is str and "\x00" not in value:  # the common case, fast
        return value, None
    if kind == TEXT:
        if isinstance(value, dict | list):
            return None, f"{type(value).__name__} value does not fit a text column"
        return _text(value), None
    if kind == JSON:
        return _text(value), None
    if kind == BIGINT:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            return None, f"{type(value).__name__} value does not fit a bigint column"
        if not INT64_MIN <= value <= INT64_MAX:
            return None, "integer out of bigint range"
        return value, None
    if kind == BOOLEAN:
        if not isinstance(value, bool):
            return None, f"{type(value).__name__} value does not fit a boolean column"
        return value, None
    raise ValueError(f"unknown column kind {kind!r}")


def _flatten(props: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in props.items():
        if key == "link" and isinstance(value, dict):
            for sub, inner in value.items():
                flat[column_name(f"link_{sub}")] = inner
        else:
            flat[column_name(key)] = value
    return flat


def _track_row(event: dict[str, Any], source_type: str) -> dict[str, Any]:
    context = event.get("context", {})
    traits = context.get("traits", {})
    library = context.get("library", {})
    return {
        "id": event["messageId"],
        "user_id": event.get("userId"),
        "anonymous_id": event.get("anonymousId"),
        "event": table_name(event["event"]),
        "event_text": event["event"],
        "sent_at": parse_iso(event["sentAt"]),
        "original_timestamp": parse_iso(event["originalTimestamp"]),
        "timestamp": parse_iso(event["timestamp"]),
        "received_at": parse_iso(event["receivedAt"]),
        "context_ip": event.get("request_ip"),
        "context_request_ip": event.get("request_ip"),
        "context_library_name": library.get("name"),
        "context_library_version": library.get("version"),
        "context_integration_name": context.get("integration", {}).get("name"),
        "context_traits_email": traits.get("email"),
        "context_traits_cio_id": traits.get("cioId"),
        "context_source_id": context.get("sourceId"),
        "context_source_type": source_type,
    }


def to_rows(event: dict[str, Any], source_id: str = "", source_type: str = "customerio") -> Rows:
    """Rows for the warehouse from a full event (see `to_event`); `uuid_ts` is set at load."""
    event = {**event, "context": {**event.get("context", {}), "sourceId": source_id or None}}
    table = table_name(event["event"])
    raw_track = _track_row(event, source_type)
    received_at = raw_track["received_at"]
    discards: list[Discard] = []
    kinds = dict(EVENT_TABLE_COLUMNS)

    def fit(column: str, value: Any, where: str) -> Any:
        fitted, reason = coerce(kinds[column], value)
        if reason is not None:
            discards.append(Discard(where, raw_track["id"], column, _text(value), received_at, reason))
        return fitted

    track = dict(raw_track)
    for column in _FROM_PAYLOAD:  # the other tracks columns are ours, already of their type
        track[column] = fit(column, raw_track[column], TRACKS_TABLE)
    row = dict(track)
    for column, value in _flatten(event.get("properties", {})).items():
        if column in _PROPERTY_KINDS:
            row[column] = fit(column, value, table)
        else:
            discards.append(
                Discard(table, raw_track["id"], column, _text(value), received_at, "no such column")
            )
    # A misfit in a tracks column is the same misfit in the event table: record it for both.
    discards += [
        Discard(table, d.row_id, d.column_name, d.column_value, d.received_at, d.reason)
        for d in list(discards)
        if d.table_name == TRACKS_TABLE
    ]
    return Rows(table=table, track=track, event=row, discards=discards)


__all__ = ["DISCARDS_TABLE", "Discard", "Rows", "coerce", "to_rows"]
