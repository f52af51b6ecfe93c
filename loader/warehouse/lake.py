"""DuckLake warehouses: a catalog in SQLite (one host) or PostgreSQL (many hosts) plus Parquet files, which
any number of DuckDB processes read and write at once, so analysts' sessions never pause landing.

A lake is reached through a SQLAlchemy dialect built on duckdb_engine's: each connection is an in-memory
DuckDB with the lake attached as `warehouse` and in use, so Alembic, the writers and queries speak plain
DuckDB to it. The extensions are LOADed from installed packages by path (DuckDB checks their signatures);
nothing is downloaded at run time.

URL forms:
  ducklake:///<catalog>.sqlite[?data_path=<folder or URL>]   SQLite catalog; files beside it by default
  ducklake+postgresql://user@host:5432/db?data_path=<...>    PostgreSQL catalog; data_path required
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.dialects import registry
from sqlalchemy.engine import URL, make_url

from loader.errors import ConfigError

# A file's mtime comes from the kernel's coarse clock, which may lag time.time_ns() by a few ms.
SYNC_SLACK_NS = 1_000_000_000
ALIAS = "warehouse"  # analysts read `warehouse.<schema>.<table>`, as they did the default file
BACKEND = "ducklake"
# Data inlining (small inserts kept in the catalog) stays off: on DuckDB 1.5.5, rows inlined after a
# migration that adds columns and tables lost the new columns' values, or failed to commit. Batches
# write Parquet files, and maintenance merges them.


def sql_string(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def extension_path(name: str) -> str:
    """The extension file an installed `duckdb-extension-*` package carries for this DuckDB."""
    import duckdb

    package = f"duckdb_extension_{name}"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise ConfigError(f"the DuckDB extension {name} is not installed (pip package {package})") from None
    path = (
        Path(next(iter(module.__path__)))
        / "extensions"
        / f"v{duckdb.__version__}"
        / f"{name}.duckdb_extension"
    )
    if not path.is_file():
        raise ConfigError(f"{package} has no build for DuckDB {duckdb.__version__} (expected {path})")
    return str(path)


@dataclass(frozen=True)
class Lake:
    """Where a lake's catalog and data files are."""

    catalog: str  # "sqlite" or "postgres"
    location: str  # the SQLite file, or the PostgreSQL database name
    data_path: str
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str | URL) -> Lake:
        parsed = make_url(url)
        if parsed.get_backend_name() != BACKEND:
            raise ConfigError(f"not a DuckLake URL: {parsed.render_as_string(hide_password=True)}")
        data_path = parsed.query.get("data_path")
        if isinstance(data_path, tuple):
            data_path = data_path[-1]
        driver = parsed.drivername.partition("+")[2] or "sqlite"
        if driver in ("postgresql", "postgres"):
            if not parsed.database or not data_path:
                raise ConfigError("a DuckLake on PostgreSQL needs a database and ?data_path=<folder or URL>")
            return cls(
                "postgres",
                parsed.database,
                _folder(data_path),
                parsed.host,
                parsed.port,
                parsed.username,
                parsed.password,
            )
        if driver != "sqlite" or not parsed.database:
            raise ConfigError("a DuckLake URL is ducklake:///<catalog>.sqlite or ducklake+postgresql://…")
        catalog = os.path.abspath(parsed.database)
        return cls("sqlite", catalog, _folder(data_path or os.path.splitext(catalog)[0] + ".files"))

    @property
    def extensions(self) -> tuple[str, str]:
        return ("ducklake", "sqlite_scanner" if self.catalog == "sqlite" else "postgres_scanner")

    def catalog_string(self, with_password: bool) -> str:
        """What ATTACH names: `ducklake:sqlite:<file>` or `ducklake:postgres:<libpq key=values>`."""
        if self.catalog == "sqlite":
            return f"ducklake:sqlite:{self.location}"
        parts = {"dbname": self.location, "host": self.host, "port": self.port, "user": self.user}
        if with_password:
            parts["password"] = self.password
        return "ducklake:postgres:" + " ".join(f"{k}={libpq_value(str(v))}" for k, v in parts.items() if v)

    def statements(self, read_only: bool, with_password: bool = True) -> list[str]:
        """The DuckDB statements that load the extensions and attach the lake as `warehouse`."""
        loads = [f"LOAD {sql_string(extension_path(name))}" for name in self.extensions]
        options = [f"DATA_PATH {sql_string(self.data_path)}"]
        options.append("READ_ONLY" if read_only else "DATA_INLINING_ROW_LIMIT 0")
        target = sql_string(self.catalog_string(with_password))
        return [*loads, f"ATTACH {target} AS {ALIAS} ({', '.join(options)})", f"USE {ALIAS}"]

    @contextlib.contextmanager
    def files_synced(self) -> Iterator[None]:
        """Once the block ends without an error, the data files it wrote are on disk (see
        sync_data_files); a block inside a transaction thus syncs them before the commit."""
        started = time.time_ns() - SYNC_SLACK_NS
        yield
        self.sync_data_files(started)

    def sync_data_files(self, since_ns: int) -> None:
        """Put the data files written since `since_ns` (and their folders) on disk. DuckDB closes a
        Parquet file without an fsync, and the catalog's commit, which its database syncs, must never
        name a file that a power cut could lose. A table folder's mtime moves when a file is made in
        it, so only those that changed are listed (a schema folder's moves only when a table folder is
        made: each is looked into). An object store needs none of this."""
        if _is_url(self.data_path):
            return
        root = Path(self.data_path)
        for schema_dir in _sub_dirs(root):
            changed = [t for t in _sub_dirs(schema_dir) if t.stat().st_mtime_ns >= since_ns]
            for table_dir in changed:
                for entry in os.scandir(table_dir):
                    if entry.is_file() and entry.stat().st_mtime_ns >= since_ns:
                        _fsync(entry.path, os.O_RDONLY)
                _fsync(str(table_dir), os.O_RDONLY | os.O_DIRECTORY)
            if schema_dir.stat().st_mtime_ns >= since_ns:
                _fsync(str(schema_dir), os.O_RDONLY | os.O_DIRECTORY)
        if root.stat().st_mtime_ns >= since_ns:
            _fsync(str(root), os.O_RDONLY | os.O_DIRECTORY)

    def prepare(self) -> None:
        """Before a writer attaches: the folders, and a SQLite catalog in WAL mode (in its default
        journal mode a reader's open transaction makes the writer's commit fail: "database is locked")."""
        if not _is_url(self.data_path) and not os.path.isdir(self.data_path):
            os.makedirs(self.data_path, exist_ok=True)
            _fsync(os.path.dirname(self.data_path.rstrip("/")), os.O_RDONLY | os.O_DIRECTORY)
        if self.catalog != "sqlite":
            return
        os.makedirs(os.path.dirname(self.location), exist_ok=True)
        with sqlite3.connect(self.location) as conn:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
        conn.close()


def _sub_dirs(parent: Path) -> list[Path]:
    if not parent.is_dir():
        return []
    return [Path(e.path) for e in os.scandir(parent) if e.is_dir()]


def _fsync(path: str, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_lake(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == BACKEND


def _folder(path: str) -> str:
    """A data path as DuckLake takes it: absolute when local, and ending in a separator."""
    if not _is_url(path):
        path = os.path.abspath(path)
    return path if path.endswith("/") else path + "/"


def _is_url(path: str) -> bool:
    return "://" in path


def libpq_value(value: str) -> str:
    """A libpq connection-string value, quoted when it has spaces or quotes."""
    if value and not any(c in value for c in " '\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# Registered by name: SQLAlchemy imports the dialect (and DuckDB with it) only when an engine needs it.
for _name in (BACKEND, f"{BACKEND}.sqlite", f"{BACKEND}.postgresql", f"{BACKEND}.postgres"):
    registry.register(_name, "loader.warehouse.lake_dialect", "LakeDialect")
