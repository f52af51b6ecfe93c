"""The one place that composes staging -> transform -> warehouse: claim, transform, land, mark.

Exactly once: a batch lands in one warehouse transaction that skips ids already there, and is marked
landed only after that commit. A crash in between re-lands the batch, which then adds nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loader.errors import TransientError
from loader.metrics import m
from loader.staging import Staged, Staging
from loader.staging.sources import Source, load_sources
from loader.transform import Receipt, Rows, to_event, to_rows
from loader.transform.event import loads_exact
from loader.warehouse.engine import is_lock_conflict
from loader.warehouse.writer import SchemaBatch, Writer

log = logging.getLogger("loader.lander")


@dataclass
class BatchResult:
    claimed: int = 0
    landed: int = 0
    skipped: int = 0
    discards: int = 0
    millis: float = 0.0
    per_source: dict[str, int] = field(default_factory=dict)


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


class Lander:
    """Lands staged bodies in batches; `run_once` is one claim -> land -> mark cycle."""

    def __init__(self, staging: Staging, writer: Writer, batch_size: int = 5000, lease_s: float = 60.0):
        self.staging = staging
        self.writer = writer
        self.batch_size = batch_size
        self.lease_s = lease_s
        self._sources: dict[str, Source] = {}

    def _source_map(self, claimed: list[Staged]) -> dict[str, Source]:
        if any(s.source_id not in self._sources for s in claimed):
            self._sources = {s.id: s for s in load_sources(self.staging)}
        return self._sources

    def run_once(self) -> BatchResult:
        """Claim one batch and land it. Raises TransientError when the warehouse cannot take it now."""
        from loader.staging.store import claim_token

        started = time.perf_counter()
        token = claim_token()
        claimed = self.staging.claim(self.batch_size, self.lease_s, token)
        result = BatchResult(claimed=len(claimed))
        if not claimed:
            return result
        prepared = build_batches(claimed, self._source_map(claimed))
        batches, result.discards = prepared.batches, prepared.discards
        self.staging.quarantine(token, prepared.unreadable, "invalid json: not one JSON object")
        for failed_id, reason in prepared.failed:
            self.staging.quarantine(token, [failed_id], reason)
        try:
            added = self.writer.land(batches, datetime.now(UTC)) if batches else {}
        except Exception as exc:
            self.staging.release(token)
            if is_lock_conflict(exc):
                raise TransientError("warehouse file busy") from exc
            raise TransientError(f"warehouse write failed: {type(exc).__name__}: {exc}") from exc
        self.staging.mark_landed(token)
        result.per_source = added
        result.landed = sum(added.values())
        result.skipped = result.claimed - result.landed
        result.millis = (time.perf_counter() - started) * 1000
        self._observe(result, batches)
        return result

    @staticmethod
    def _observe(result: BatchResult, batches: dict[str, SchemaBatch]) -> None:
        metrics = m()
        metrics.batch_seconds.observe(result.millis / 1000)
        metrics.batch_size.observe(result.claimed)
        for schema, added in result.per_source.items():
            metrics.landed.labels(schema).inc(added)
            metrics.discards.labels(schema).inc(len(batches[schema].discards))

    def drain(self, on_batch: Callable[[BatchResult], None] | None = None, max_wait_s: float = 60.0) -> int:
        """Land everything staged so far; retry transient failures with backoff for up to max_wait_s."""
        total = 0
        backoff = Backoff()
        deadline = time.monotonic() + max_wait_s
        while True:
            try:
                result = self.run_once()
            except TransientError as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("landing failed, will retry: %s", exc)
                time.sleep(backoff.next())
                continue
            backoff.reset()
            if on_batch:
                on_batch(result)
            total += result.landed
            if result.claimed == 0:
                return total


class Backoff:
    """Exponential backoff between tries, capped, reset on success."""

    def __init__(self, first: float = 0.05, cap: float = 5.0) -> None:
        self.first, self.cap, self.current = first, cap, first

    def next(self) -> float:
        wait, self.current = self.current, min(self.current * 2, self.cap)
        return wait

    def reset(self) -> None:
        self.current = self.first
