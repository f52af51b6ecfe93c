"""Disk use per part (staging, archive, warehouse) and whether the data folder's disk is nearly full.

What is in a local file or folder is measured; a part on a server (PostgreSQL staging or warehouse, a
lake's files at a URL) is None: its own tools measure it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from loader.settings import Settings


def tree_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (0 when it does not exist)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:  # a file replaced while we walked (a merge, a checkpoint)
                continue
    return total


def _with_sidecars(file: Path) -> int:
    """A database file with its -wal/-shm/.wal companions."""
    return sum(tree_bytes(p) for p in file.parent.glob(file.name + "*") if p.is_file())


def staging_bytes(settings: Settings) -> int | None:
    url = make_url(settings.staging_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    return _with_sidecars(Path(url.database))


def archive_bytes(settings: Settings, source_id: str | None = None) -> int:
    root = settings.archive_path
    return tree_bytes(root / source_id if source_id else root)


def warehouse_bytes(settings: Settings, schema: str | None = None) -> int | None:
    """The warehouse's bytes on this host; with `schema`, that schema's data files on a lake (a DuckDB
    file cannot be split by schema: the whole file)."""
    url = make_url(settings.warehouse_url)
    backend = url.get_backend_name()
    if backend == "duckdb" and url.database:
        return _with_sidecars(Path(url.database))
    if backend == "ducklake":
        from loader.warehouse.lake import Lake

        lake = Lake.from_url(url)
        if "://" in lake.data_path:
            return None
        data = Path(lake.data_path)
        if schema is not None:
            return tree_bytes(data / schema)
        catalog = _with_sidecars(Path(lake.location)) if lake.catalog == "sqlite" else 0
        return catalog + tree_bytes(data)
    return None


@dataclass(frozen=True)
class Free:
    free_bytes: int
    total_bytes: int
    warn_below_pct: float

    @property
    def free_pct(self) -> float:
        return 100.0 * self.free_bytes / self.total_bytes if self.total_bytes else 100.0

    @property
    def warning(self) -> str | None:
        if self.free_pct >= self.warn_below_pct:
            return None
        return (
            f"disk nearly full: {human(self.free_bytes)} free of {human(self.total_bytes)} "
            f"({self.free_pct:.1f}% < {self.warn_below_pct:g}%) where the data folder is"
        )


def free_space(settings: Settings) -> Free:
    path = settings.data_dir if settings.data_dir.exists() else settings.data_dir.parent
    usage = shutil.disk_usage(path)
    return Free(usage.free, usage.total, settings.disk_warn_free_pct)


def summary(settings: Settings) -> dict[str, Any]:
    """Disk use of each part, and the free space where the data folder is."""
    free = free_space(settings)
    return {
        "staging_bytes": staging_bytes(settings),
        "archive_bytes": archive_bytes(settings),
        "warehouse_bytes": warehouse_bytes(settings),
        "free_bytes": free.free_bytes,
        "total_bytes": free.total_bytes,
        "warning": free.warning,
    }


def describe(d: dict[str, Any]) -> str:
    """`summary` in one line, for people."""
    parts = " · ".join(f"{p} {human(d[p + '_bytes'])}" for p in ("staging", "archive", "warehouse"))
    return f"disk: {parts} · {human(d['free_bytes'])} free of {human(d['total_bytes'])}"


def human(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"
