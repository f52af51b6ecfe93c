"""`loader backfill`: stage a file of webhook bodies (JSON lines) for a source, then land them.

Idempotent: each body keeps the messageId it would have had through the gateway, so a second run
(or an event that also came through the webhook) adds nothing. Ids already in the warehouse are
skipped before staging: a backfill reaches further back than staging's archive may remember.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import Engine

from loader.gateway.app import parse_object
from loader.service import flush, landed_ids, require_source, services
from loader.settings import Settings
from loader.staging import QUARANTINED, Incoming, Staging
from loader.transform import event_key, id_of_key

CHUNK = 5000


@dataclass
class BackfillResult:
    lines: int = 0
    staged: int = 0
    quarantined: int = 0
    already_landed: int = 0
    landed: int = 0


def stage_new(staging: Staging, warehouse: Engine, schema: str, chunk: list[Incoming]) -> int:
    """Stage the chunk's bodies whose id the warehouse does not hold yet; returns how many it held."""
    landed = landed_ids(warehouse, schema, [r.message_id for r in chunk if r.state != QUARANTINED])
    staging.append([r for r in chunk if r.message_id not in landed])
    return len(landed)


def backfill(settings: Settings, path: str, source_name: str, progress: bool = True) -> BackfillResult:
    """Stage every line of `path` for the source, then land; a progress bar shows both steps."""
    result = BackfillResult()
    size = os.path.getsize(path)
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
    ]
    with services(settings) as (staging, warehouse), Progress(*columns, disable=not progress) as bar:
        source = require_source(staging, source_name)
        reading = bar.add_task("staging", total=size)
        chunk: list[Incoming] = []
        now = time.time()
        with open(path, "rb") as handle:
            for line in handle:
                bar.advance(reading, len(line))
                raw = line.strip()
                if not raw:
                    continue
                result.lines += 1
                body, reason = parse_object(raw)
                result.quarantined += body is None
                key = event_key(source.id, body, raw)
                chunk.append(
                    Incoming(
                        source.id,
                        id_of_key(key),
                        now,
                        None,
                        raw,
                        QUARANTINED if body is None else 0,
                        reason,
                        event_key=key,
                    )
                )
                if len(chunk) >= CHUNK:
                    result.already_landed += stage_new(staging, warehouse, source.schema, chunk)
                    chunk = []
        result.already_landed += stage_new(staging, warehouse, source.schema, chunk)
        result.staged = result.lines - result.quarantined - result.already_landed
        landing = bar.add_task("landing", total=staging.pending_count())
        result.landed = flush(settings, lambda r: bar.advance(landing, r.claimed))
    return result
