"""Lake maintenance inside `loader serve`: every batch writes a small Parquet file per table it touches,
so the lander merges them on a schedule, expires snapshots past the time-travel window, and deletes the
files those snapshots alone used once they have been unused for that long (a reader whose transaction
began before a merge keeps reading the old files until then). Files a crashed writer left behind, named
by no catalog entry, are deleted after a day."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import Engine

from loader.warehouse.lake import ALIAS, is_lake

log = logging.getLogger("loader.lander")

ORPHAN_AGE_S = 86400


def maintenance_statements(keep_s: float) -> list[str]:
    keep = f"now() - INTERVAL '{int(keep_s)} seconds'"
    orphans = f"now() - INTERVAL '{ORPHAN_AGE_S} seconds'"
    return [
        f"CALL ducklake_merge_adjacent_files('{ALIAS}')",
        f"CALL ducklake_expire_snapshots('{ALIAS}', older_than => {keep})",
        f"CALL ducklake_cleanup_old_files('{ALIAS}', older_than => {keep})",
        f"CALL ducklake_delete_orphaned_files('{ALIAS}', older_than => {orphans})",
    ]


class Maintenance:
    """Runs the lake's maintenance every `every_s` seconds, when asked between batches."""

    def __init__(self, engine: Engine, every_s: float, keep_s: float) -> None:
        self.engine = engine
        self.every_s = every_s
        self.keep_s = keep_s
        self._next = time.monotonic() + every_s
        self.enabled = is_lake(engine.url)

    def due(self) -> bool:
        return self.enabled and time.monotonic() >= self._next

    def run(self, writer: Any) -> None:
        """Each call commits on its own, under the writer's landing lock (a merge and a landing of one
        table would otherwise conflict)."""
        self._next = time.monotonic() + self.every_s
        started = time.perf_counter()
        writer.run_alone(maintenance_statements(self.keep_s))
        log.info("lake maintenance ms=%.1f", (time.perf_counter() - started) * 1000)
