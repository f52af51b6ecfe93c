"""What the dashboard reads: every channel's funnel over a range of UTC days, from the rollup view
`message_funnel_daily_by_message`, with the filters a reader picked (checked, and bound, never spliced)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

from loader.naming import qualified
from loader.warehouse.views import CHANNELS

VIEW = "message_funnel_daily_by_message"
IDS = ("campaign_id", "broadcast_id", "newsletter_id", "transactional_message_id", "action_id")
COUNTS = (
    "deliveries", "sent", "delivered", "opened", "clicked", "converted", "failed", "spammed",
    "unsubscribed", "replied", "human_opened", "human_clicked", "opens", "clicks",
)  # fmt: skip
RATES = ("delivery_rate", "open_rate", "click_rate", "click_to_open_rate", "conversion_rate", "failure_rate")
DEFAULT_DAYS = 30
MAX_DAYS = 400
MAX_MESSAGES = 50

MessageKey = tuple[int | None, ...]


def encode_message(key: MessageKey) -> str:
    """`1::::10`: the five ids in IDS' order, empty where NULL."""
    return ":".join("" if v is None else str(v) for v in key)


def decode_message(value: str) -> MessageKey | None:
    parts = value.split(":")
    if len(parts) != len(IDS) or not all(p == "" or p.lstrip("-").isdigit() for p in parts):
        return None
    return tuple(int(p) if p else None for p in parts)


def _day(value: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        return None


@dataclass
class Filters:
    """A reader's choices from the page's query string; anything unreadable is dropped and noted."""

    channel: str | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    message: MessageKey | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> Filters:
        out = cls()
        channel = params.get("channel") or None
        if channel is not None and channel not in CHANNELS:
            out.notes.append(f"unknown channel {channel!r}; channels are {', '.join(CHANNELS)}")
            channel = None
        out.channel = channel
        for name in ("from", "to"):
            value = params.get(name) or None
            day = _day(value)
            if value is not None and day is None:
                out.notes.append(f"{name}: {value!r} is not a day (YYYY-MM-DD)")
            setattr(out, "start" if name == "from" else "end", day)
        message = params.get("message") or None
        if message is not None:
            out.message = decode_message(message)
            if out.message is None:
                out.notes.append(f"message: {message!r} is not a message key")
        return out


def rates(counts: Mapping[str, Any]) -> dict[str, float | None]:
    """SPEC §8's rates from summed counts: reached is delivered where the channel reports deliveries, else
    sent; a rate is NULL when its numerator or denominator is NULL, or its denominator 0."""

    def ratio(a: Any, b: Any) -> float | None:
        return None if a is None or not b else a / b

    reached = counts["delivered"] if counts["delivered"] is not None else counts["sent"]
    return {
        "delivery_rate": ratio(counts["delivered"], counts["sent"]),
        "open_rate": ratio(counts["opened"], reached),
        "click_rate": ratio(counts["clicked"], reached),
        "click_to_open_rate": ratio(counts["clicked"], counts["opened"]),
        "conversion_rate": ratio(counts["converted"], reached),
        "failure_rate": ratio(counts["failed"], counts["deliveries"]),
    }


@dataclass
class Funnel:
    """One source's funnel for the page: the range shown, a row per channel, per day and per message."""

    channel: str
    start: dt.date
    end: dt.date
    message: MessageKey | None
    channels: list[dict[str, Any]]
    days: list[dict[str, Any]]
    messages: list[dict[str, Any]]


_SUMS = ", ".join(f"SUM({c}) AS {c}" for c in COUNTS)


def _with_rates(rows: Any) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        record = dict(row)
        for column in COUNTS:  # PostgreSQL sums as numeric, DuckDB as HUGEINT: plain ints for rates
            if record.get(column) is not None:
                record[column] = int(record[column])
        record["reached"] = record["delivered"] if record["delivered"] is not None else record["sent"]
        out.append({**record, **rates(record)})
    return out


def _range(conn: Connection, schema: str, filters: Filters) -> tuple[dt.date, dt.date]:
    """The reader's days, else the DEFAULT_DAYS up to the newest event's UTC day; at most MAX_DAYS. The
    newest day is read from `tracks` (one column's maximum), not from the view, which would be computed
    whole for one date."""
    end = filters.end
    if end is None:
        newest = conn.execute(
            text(f"SELECT MAX(original_timestamp) FROM {qualified(schema, 'tracks')}")
        ).scalar()
        end = _utc_day(newest) or dt.datetime.now(dt.UTC).date()
    start = filters.start or end - dt.timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        start, end = end, start
    if (end - start).days >= MAX_DAYS:
        filters.notes.append(f"a range is at most {MAX_DAYS} days; showing the last {MAX_DAYS}")
        start = end - dt.timedelta(days=MAX_DAYS - 1)
    return start, end


def _utc_day(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return (value.astimezone(dt.UTC) if value.tzinfo else value).date()
    if isinstance(value, dt.date):
        return value
    return None if value is None else dt.date.fromisoformat(str(value)[:10])


def read(conn: Connection, schema: str, filters: Filters) -> Funnel:
    """One pass over the view for the range: totals per channel, per channel and day, per channel and
    message (GROUPING SETS); a second only when one message's days are asked for."""
    view = qualified(schema, VIEW)
    start, end = _range(conn, schema, filters)
    span = {"start": start, "end": end}
    ids = ", ".join(IDS)
    grouped = conn.execute(
        text(
            f"SELECT channel, day, {ids}, GROUPING(day) AS all_days, GROUPING({IDS[0]}) AS all_messages, "
            f"{_SUMS} FROM {view} WHERE day BETWEEN :start AND :end "
            f"GROUP BY GROUPING SETS ((channel), (channel, day), (channel, {ids}))"
        ),
        span,
    ).mappings()
    totals: dict[str, dict[str, Any]] = {}
    days: dict[str, list[dict[str, Any]]] = {}
    messages: dict[str, list[dict[str, Any]]] = {}
    for row in _with_rates(grouped):
        if row["all_days"] and row["all_messages"]:
            totals[row["channel"]] = row
        elif not row["all_days"]:
            row["day"] = _utc_day(row["day"])
            days.setdefault(row["channel"], []).append(row)
        else:
            messages.setdefault(row["channel"], []).append(row)
    channel = filters.channel or next((c for c in CHANNELS if c in totals), CHANNELS[0])
    mine = sorted(days.get(channel, []), key=lambda r: r["day"])
    if filters.message is not None:
        where, params = "channel = :channel AND day BETWEEN :start AND :end", {**span, "channel": channel}
        for column, value in zip(IDS, filters.message, strict=True):
            where += f" AND {column} IS NULL" if value is None else f" AND {column} = :{column}"
            if value is not None:
                params[column] = value
        mine = _with_rates(
            conn.execute(
                text(f"SELECT day, {_SUMS} FROM {view} WHERE {where} GROUP BY day ORDER BY day"), params
            ).mappings()
        )
        for row in mine:
            row["day"] = _utc_day(row["day"])
    top = sorted(
        messages.get(channel, []),
        key=lambda r: (-(r["deliveries"] or 0), tuple((v is None, v or 0) for v in (r[c] for c in IDS))),
    )
    return Funnel(
        channel=channel,
        start=start,
        end=end,
        message=filters.message,
        channels=[totals.get(c) or {"channel": c} for c in CHANNELS],
        days=mine,
        messages=top[:MAX_MESSAGES],
    )
