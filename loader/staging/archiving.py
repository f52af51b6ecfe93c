"""Moving landed bodies from staging to the archive, and keeping staging small.

Staging keeps what the gateway and landers need: the queue, quarantine, and, for the dedup window, a
16-byte record of each archived event. A landed body is written to the archive (synced) before staging
deletes it and records its key, in one transaction; a crash in between archives it twice, and readers
keep the first copy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson

from loader.staging.archive import Archive, Archived
from loader.staging.store import Staging
from loader.transform import event_key, id_of_key

log = logging.getLogger("loader.archive")

# Customer.io retries for 7 days; a day more for clocks and queues (the "8 days").
DEDUP_WINDOW_S = 8 * 86400
ARCHIVE_BATCH = 20_000


def _derived_key(source_id: str, body: bytes) -> str | None:
    """The event_key the gateway gives this body (None if it is not one JSON object)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return event_key(source_id, parsed, body) if isinstance(parsed, dict) else None


def _archived(row: dict[str, Any]) -> Archived:
    """A staged row as the archive keeps it: its ids left out (NULL) when the body gives them again, as
    it does for every body the gateway took; an id made up by another caller is kept."""
    body = bytes(row["body"])
    key = row["event_key"] or row["message_id"]
    derived = _derived_key(row["source_id"], body) == key and id_of_key(key) == row["message_id"]
    return Archived(
        source_id=row["source_id"],
        message_id=None if derived else row["message_id"],
        event_key=None if derived else key,
        received_at=row["received_at"],
        request_ip=row["request_ip"],
        body=body,
    )


def read_archived(
    archive: Archive, source_id: str, since: float | None, until: float | None
) -> Iterator[Archived]:
    """A source's archived bodies with their ids, each event once (the first copy: a crash between
    archiving and staging's forgetting writes a batch twice, on the same day)."""
    for day in archive.read(source_id, since, until):
        seen: set[str] = set()
        for row in day:
            key = row.event_key or _derived_key(source_id, row.body)
            if key is None or key in seen:
                continue
            seen.add(key)
            yield Archived(
                source_id, row.message_id or id_of_key(key), key, row.received_at, row.request_ip, row.body
            )


def archive_landed(staging: Staging, archive: Archive, batch: int = ARCHIVE_BATCH) -> int:
    """Move every landed body to the archive, a batch at a time; how many were written. A body whose
    event is archived already (it was replayed, or was a late retry) is not written again."""
    moved = 0
    while True:
        rows = staging.landed(batch)
        if not rows:
            break
        already = staging.seen_among([r["message_id"] for r in rows])
        written = [r for r in rows if r["message_id"] not in already]
        keep = [_archived(r) for r in written]
        if keep:
            archive.write((rows[0]["seq"], rows[-1]["seq"]), keep)
        staging.forget_archived(rows, written)
        moved += len(keep)
        if len(rows) < batch:
            break
    if moved:
        staging.compact()
    return moved
