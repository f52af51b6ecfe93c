"""`loader backfill`: stage a file of webhook bodies (JSON lines) for a source, then land them.

Idempotent: each body keeps the messageId it would have had through the gateway, so a second run
(or an event that also came through the webhook) adds nothing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from loader.gateway.app import parse_object
from loader.service import flush, require_source, services
from loader.settings import Settings
from loader.staging import QUARANTINED, Incoming
from loader.transform import message_id

CHUNK = 5000


@dataclass
class BackfillResult:
    lines: int = 0
    staged: int = 0
    quarantined: int = 0
    landed: int = 0


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
    with services(settings) as (staging, _), Progress(*columns, disable=not progress) as bar:
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
                chunk.append(
                    Incoming(
                        source.id,
                        message_id(source.id, body, raw),
                        now,
                        None,
                        raw,
                        QUARANTINED if body is None else 0,
                        reason,
                    )
                )
                if len(chunk) >= CHUNK:
                    staging.append(chunk)
                    chunk = []
        staging.append(chunk)
        result.staged = result.lines - result.quarantined
        landing = bar.add_task("landing", total=staging.pending_count())
        result.landed = flush(settings, lambda r: bar.advance(landing, r.claimed))
    return result
