"""The archive of landed bodies: append-only Parquet files compressed with zstd, one folder per source and
UTC day of receipt (`<dir>/<source id>/<YYYY-MM-DD>/<first seq>-<last seq>.parquet`).

Files, not a warehouse table: it works the same beside every warehouse (a lake, a DuckDB file,
PostgreSQL), a day's folder can be copied to object storage or deleted as a unit, and any Parquet reader
opens it. A file is written under a temporary name, synced, renamed and its folder synced, before staging
forgets the bodies in it; a crash in between archives those bodies again, so readers keep the first copy
of each event.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema(
    [
        ("source_id", pa.string()),
        ("message_id", pa.string()),  # NULL: derived from the body (loader.staging.archiving)
        ("event_key", pa.string()),  # NULL: likewise
        ("received_at", pa.float64()),
        ("request_ip", pa.string()),
        ("body", pa.binary()),
    ]
)
ZSTD_LEVEL = 3


@dataclass(frozen=True)
class Archived:
    """One body as the archive keeps it."""

    source_id: str
    message_id: str | None
    event_key: str | None
    received_at: float
    request_ip: str | None
    body: bytes


def utc_day(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).date().isoformat()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Archive:
    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, seq_range: tuple[int, int], rows: Sequence[Archived]) -> list[Path]:
        """Append rows as one file per source and day, each on disk (file and folder synced) on return."""
        groups: dict[tuple[str, str], list[Archived]] = {}
        for row in rows:
            groups.setdefault((row.source_id, utc_day(row.received_at)), []).append(row)
        written = []
        for (source_id, day), group in sorted(groups.items()):
            folder = self.root / source_id / day
            new_dirs = [p for p in (self.root, self.root / source_id, folder) if not p.exists()]
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{seq_range[0]:012d}-{seq_range[1]:012d}-{uuid.uuid4().hex[:8]}.parquet"
            tmp = folder / f".{name}.tmp"
            table = pa.Table.from_pylist([row.__dict__ for row in group], schema=SCHEMA)
            pq.write_table(table, tmp, compression="zstd", compression_level=ZSTD_LEVEL)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, folder / name)
            _fsync_dir(folder)
            for made in reversed(new_dirs):  # a new folder is named in its parent: sync that too
                _fsync_dir(made.parent)
            written.append(folder / name)
        return written

    def days(self, source_id: str) -> list[str]:
        folder = self.root / source_id
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def read(
        self, source_id: str, since: float | None = None, until: float | None = None
    ) -> Iterator[list[Archived]]:
        """A source's bodies received in [since, until), a day's at a time, oldest first."""
        first = utc_day(since) if since is not None else ""
        last = utc_day(until) if until is not None else "9999-12-31"
        for day in self.days(source_id):
            if not first <= day <= last:
                continue
            rows = []
            for path in sorted((self.root / source_id / day).glob("*.parquet")):
                for record in pq.read_table(path, schema=SCHEMA).to_pylist():
                    row = Archived(**record)
                    if (since is None or row.received_at >= since) and (
                        until is None or row.received_at < until
                    ):
                        rows.append(row)
            yield rows

    def purge(self, older_than_days: int, today: dt.date | None = None) -> int:
        """Delete whole days received more than `older_than_days` ago; the number of day folders deleted."""
        today = today or dt.datetime.now(dt.UTC).date()
        cutoff = (today - dt.timedelta(days=older_than_days)).isoformat()
        removed = 0
        if not self.root.is_dir():
            return 0
        for source in self.root.iterdir():
            if not source.is_dir():
                continue
            for day in list(source.iterdir()):
                if day.is_dir() and day.name < cutoff:
                    shutil.rmtree(day)
                    removed += 1
        return removed

    def size_bytes(self) -> int:
        if not self.root.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.root.rglob("*.parquet"))
