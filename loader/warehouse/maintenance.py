"""Lake maintenance inside `loader serve`: every batch writes a small Parquet file per table it touches,
so the lander merges them on a schedule, expires snapshots past the time-travel window, and deletes the
files those snapshots alone used once they have been unused for that long (a reader whose transaction
began before a merge keeps reading the old files until then). Files a crashed writer left behind, named
by no catalog entry, are deleted after a day.

A round is cut into steps, one table's merge each, that the lander runs between batches a little at a
time: merging every table of a lake in one call held landing up for seconds, and made the freshness of
the events that arrived meanwhile that much worse."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from sqlalchemy import Engine

from loader.warehouse.engine import is_out_of_memory, more_memory
from loader.warehouse.lake import ALIAS, is_lake

log = logging.getLogger("loader.lander")

ORPHAN_AGE_S = 86400

# A statement and its parameters: names from the catalog are bound, never put into the SQL.
Step = tuple[str, tuple[Any, ...]]

META = f"__ducklake_metadata_{ALIAS}"
# The tables with more than one live data file: only they have something to merge.
SEVERAL_FILES = f"""
SELECT s.schema_name, t.table_name
FROM {META}.ducklake_data_file f
JOIN {META}.ducklake_table t ON t.table_id = f.table_id AND t.end_snapshot IS NULL
JOIN {META}.ducklake_schema s ON s.schema_id = t.schema_id AND s.end_snapshot IS NULL
WHERE f.end_snapshot IS NULL
GROUP BY 1, 2
HAVING count(*) > 1
ORDER BY 1, 2
"""


def merge_steps(con: Any) -> list[Step]:
    """One merge per table that has several live files."""
    return [
        ("CALL ducklake_merge_adjacent_files(?, ?, schema => ?)", (ALIAS, table, schema))
        for schema, table in con.execute(SEVERAL_FILES).fetchall()
    ]


def cleanup_steps(keep_s: float) -> list[Step]:
    keep = f"now() - INTERVAL '{int(keep_s)} seconds'"
    orphans = f"now() - INTERVAL '{ORPHAN_AGE_S} seconds'"
    return [
        (f"CALL ducklake_expire_snapshots(?, older_than => {keep})", (ALIAS,)),
        (f"CALL ducklake_cleanup_old_files(?, older_than => {keep})", (ALIAS,)),
        (f"CALL ducklake_delete_orphaned_files(?, older_than => {orphans})", (ALIAS,)),
    ]


class Maintenance:
    """Runs the lake's maintenance: a round every `every_s` seconds, in steps between batches."""

    def __init__(self, engine: Engine, every_s: float, keep_s: float) -> None:
        self.engine = engine
        self.every_s = every_s
        self.keep_s = keep_s
        self._next = time.monotonic() + every_s
        self._pending: list[Step] = []
        self._round_ms = 0.0
        self.enabled = is_lake(engine.url)

    def due(self) -> bool:
        return self.enabled and (bool(self._pending) or time.monotonic() >= self._next)

    def run(self, writer: Any) -> None:
        """A whole round at once (the next round, if one is under way, is finished first)."""
        self.step(writer, math.inf)

    def step(self, writer: Any, budget_s: float) -> None:
        """Part of a round: steps until `budget_s` is spent (at least one), then back to landing."""
        if not self._pending:
            self._begin(writer)
        started = time.perf_counter()
        self._one(writer)
        while self._pending and time.perf_counter() - started < budget_s:
            self._one(writer)

    def _begin(self, writer: Any) -> None:
        self._next = time.monotonic() + self.every_s
        self._round_ms = 0.0
        raw = writer.engine.raw_connection()
        try:
            merges = merge_steps(raw.driver_connection)
        finally:
            raw.close()
        self._pending = merges + cleanup_steps(self.keep_s)

    def _one(self, writer: Any) -> None:
        """The next step, each committed on its own under the writer's landing lock (a merge and a
        landing of one table would otherwise conflict). One that DuckDB's memory cap is too small for
        runs again with the cap doubled, as a batch does; any other failure ends the round, and the
        next begins at its time."""
        started = time.perf_counter()
        try:
            while True:
                try:
                    writer.run_alone([self._pending[0]])
                    break
                except Exception as exc:
                    cap = more_memory(writer.engine) if is_out_of_memory(exc) else None
                    if cap is None:
                        raise
                    log.info(
                        "lake maintenance needed more memory than DuckDB's cap; the cap is now %d MB", cap
                    )
        except BaseException:
            self._pending = []
            raise
        self._pending.pop(0)
        self._round_ms += (time.perf_counter() - started) * 1000
        if not self._pending:
            log.info("lake maintenance ms=%.1f", self._round_ms)
