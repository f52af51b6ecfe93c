"""Claimed staged bodies -> rows per schema (the Python transform path, the reference for all).

Used by every writer; DuckDB's writer lands the common, plain bodies in SQL and hands the rest here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loader.staging.sources import Source
from loader.staging.store import Staged
from loader.transform import Receipt, Rows, to_event, to_rows
from loader.transform.event import loads_exact

log = logging.getLogger("loader.lander")

Row = dict[str, Any]


@dataclass
class SchemaBatch:
    """What one batch brings to one schema."""

    tracks: list[Row] = field(default_factory=list)
    events: dict[str, list[Row]] = field(default_factory=dict)
    discards: list[Row] = field(default_factory=list)
    replace_ids: set[str] = field(default_factory=set)


def body_rows(staged: Staged, source: Source) -> Rows | None:
    """A staged body as warehouse rows; None for a body that is not one JSON object."""
    try:
        body = loads_exact(staged.body)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    receipt = Receipt(datetime.fromtimestamp(staged.received_at, tz=UTC), staged.request_ip, source.id)
    event = to_event(body, staged.body, receipt)
    event["messageId"] = staged.message_id
    return to_rows(event, source.id)


def _discard_row(d: Any) -> dict[str, Any]:
    return {
        "table_name": d.table_name,
        "row_id": d.row_id,
        "column_name": d.column_name,
        "column_value": d.column_value,
        "received_at": d.received_at,
        "reason": d.reason,
    }


@dataclass
class Prepared:
    """A claimed batch made into rows: per schema, plus what could not be read."""

    batches: dict[str, SchemaBatch] = field(default_factory=dict)
    discards: int = 0
    unreadable: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def build_batches(claimed: list[Staged], sources: dict[str, Source]) -> Prepared:
    """Group rows by schema; the first copy of an id wins within a batch."""
    out = Prepared()
    batches = out.batches
    seen: set[str] = set()
    for item in claimed:
        source = sources.get(item.source_id)
        if source is None or item.message_id in seen:
            continue
        try:
            rows = body_rows(item, source)
        except Exception as exc:  # a bug must not stall the stream: set the body aside, say why
            log.exception("transform failed for staged body %d", item.seq)
            out.failed.append((item.message_id, f"transform failed: {type(exc).__name__}: {exc}"[:500]))
            continue
        if rows is None:
            out.unreadable.append(item.message_id)
            continue
        seen.add(item.message_id)
        batch = batches.setdefault(source.schema, SchemaBatch())
        batch.tracks.append(rows.track)
        batch.events.setdefault(rows.table, []).append(rows.event)
        batch.discards.extend(_discard_row(d) for d in rows.discards)
        out.discards += len(rows.discards)
        if item.replay:
            batch.replace_ids.add(item.message_id)
    return out
