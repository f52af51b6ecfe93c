"""Library calls behind the command line: each command of SPEC §3 is one function here."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from loader import disk
from loader.catalogue import DISCARDS_TABLE
from loader.errors import ConfigError, QueryError, SourceExistsError
from loader.lander import BatchResult, Lander, collect_less
from loader.naming import qualified, schema_name
from loader.settings import Settings
from loader.staging import LANDED, PENDING, QUARANTINED, Incoming, Staging
from loader.staging.archive import Archive
from loader.staging.archiving import archive_landed, read_archived
from loader.staging.sources import Source, add_source, find_source, load_sources
from loader.staging.store import make_staging_engine
from loader.warehouse.engine import (
    WRITER_MEMORY_MB,
    dialect_of,
    make_warehouse_engine,
    retry_busy,
    safe_schema,
)
from loader.warehouse.turns import Turns
from loader.warehouse.writer import writer_for

log = logging.getLogger("loader")


def open_staging(settings: Settings, synchronous: str = "FULL") -> Staging:
    settings.ensure_data_dir()
    staging = Staging(
        settings.staging_url, make_staging_engine(settings.staging_url, synchronous=synchronous)
    )
    staging.create()
    return staging


@contextmanager
def services(
    settings: Settings,
    duckdb_threads: int | None = None,
    staging_synchronous: str = "FULL",
    duckdb_memory_mb: int = WRITER_MEMORY_MB,
) -> Iterator[tuple[Staging, Engine]]:
    """Staging and the warehouse engine, disposed of afterwards. `staging_synchronous="NORMAL"` (SQLite)
    is for landers alone (serve's and flush): see loader.server.lander_loop."""
    staging = open_staging(settings, staging_synchronous)
    warehouse = make_warehouse_engine(
        settings.warehouse_url, duckdb_threads=duckdb_threads, duckdb_memory_mb=duckdb_memory_mb
    )
    try:
        yield staging, warehouse
    finally:
        staging.dispose()
        warehouse.dispose()


@dataclass(frozen=True)
class Added:
    source: Source
    write_key: str


def source_add(
    settings: Settings,
    name: str,
    write_key: str | None = None,
    signing_key: str | None = None,
    schema: str | None = None,
) -> Added:
    """Register a source and create its schema at the newest revision."""
    target = schema or safe_schema(
        schema_name(name, dialect_of(settings.warehouse_url)), settings.warehouse_url
    )
    if target != safe_schema(target, settings.warehouse_url):
        raise ConfigError(f"the warehouse reserves the schema name {target!r}; choose another with --schema")
    with services(settings) as (staging, warehouse):
        for existing in load_sources(staging):
            if existing.name == name or existing.schema == target:
                raise SourceExistsError(
                    f"source {existing.name!r} already uses that name or schema {target!r}"
                )
        from loader.warehouse.migrate import upgrade  # Alembic is loaded only where it is used

        upgrade(warehouse, target)
        source, key = add_source(staging, name, target, write_key, signing_key)
    return Added(source, key)


DEMO_SOURCE = "Customer IO Demo"
DEMO_KEY_FILE = "demo-write-key"


def ensure_demo_source(settings: Settings) -> tuple[str, str] | None:
    """For `make run`: create a demo source when there is none, and keep its key (mode 600) in the
    data folder so every `make run` can print the URL. (name, key), or None when other sources exist."""
    key_file = settings.data_dir / DEMO_KEY_FILE
    with services(settings) as (staging, _):
        names = [s.name for s in load_sources(staging)]
    if names and (DEMO_SOURCE not in names or not key_file.exists()):
        return None
    if DEMO_SOURCE in names:
        return DEMO_SOURCE, key_file.read_text().strip()
    added = source_add(settings, DEMO_SOURCE)
    key_file.touch(mode=0o600)
    key_file.write_text(added.write_key + "\n")
    return DEMO_SOURCE, added.write_key


def migrate_all(settings: Settings) -> list[str]:
    """Upgrade every source's schema to the newest revision; idempotent."""
    from loader.warehouse.migrate import upgrade  # Alembic is loaded only where it is used

    with services(settings) as (staging, warehouse):
        schemas = [s.schema for s in load_sources(staging)]
        for schema in schemas:
            upgrade(warehouse, schema)
        # Staging of an older version kept every landed body: they move to the archive, and the file
        # is rewritten once to give their pages back.
        moved = archive_landed(staging, Archive(settings.archive_path))
        if staging.compact_fully():
            log.info("staging compacted (%d archived bodies moved out)", moved)
    return schemas


def make_lander(
    settings: Settings,
    staging: Staging,
    warehouse: Engine,
    duckdb_threads: int | None = None,
    parse_ahead: bool = True,
) -> Lander:
    """A lander; `duckdb_threads`: the cap its warehouse engine was given, kept by the writer's own
    DuckDB work too; `parse_ahead`: see Lander."""
    writer = writer_for(warehouse, threads=duckdb_threads)
    return Lander(staging, writer, settings.batch_size, settings.claim_lease_s, parse_ahead)


def tune_for_flush() -> None:
    """What a one-shot landing process sets for itself (Arrow's allocator, the collector's thresholds):
    `flush`, and whatever lands as it does (backfill and replay through it, the bench)."""
    from loader.warehouse.arrow import use_system_allocator

    use_system_allocator()
    collect_less()


def flush(
    settings: Settings, on_batch: Callable[[BatchResult], None] | None = None, max_wait_s: float = 60.0
) -> int:
    """Land everything staged before it started, then return how many rows were added (while a server
    keeps staging, what comes later is its lander's). Staging's commits skip the fsync here as in serve's
    lander (loader.server.lander_loop says why)."""
    tune_for_flush()
    with services(settings, staging_synchronous="NORMAL") as (staging, warehouse):
        staging.release_dead_claims()
        upto = staging.last_seq()
        lander = make_lander(settings, staging, warehouse)
        try:
            added = lander.drain(on_batch, max_wait_s, upto=upto)
        finally:
            lander.close()
        try:
            archive_landed(staging, Archive(settings.archive_path))
        except OSError as exc:  # the bodies stay in staging; the next flush or serve archives them
            log.warning("archiving landed bodies failed (%s); they stay in staging for now", exc)
        return added


def query(settings: Settings, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run read-only SQL on the warehouse; retries briefly while the lander holds a DuckDB file."""
    engine = make_warehouse_engine(settings.warehouse_url, read_only=True)

    def run() -> tuple[list[str], list[tuple[Any, ...]]]:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SET TRANSACTION READ ONLY"))
            result = conn.exec_driver_sql(sql)
            if not result.returns_rows:
                return [], []
            columns = list(result.keys())
            rows = [tuple(r) for r in result.fetchall()]
            conn.rollback()
            return columns, rows

    try:
        return retry_busy(run, turns=Turns.of(engine.url))
    except DBAPIError as exc:
        raise QueryError(f"query failed: {exc.orig}") from exc
    finally:
        engine.dispose()


def landed_ids(warehouse: Engine, schema: str, ids: list[str]) -> set[str]:
    """Which of these message ids are in the schema's `tracks` already (a full look-up, unlike the
    DuckDB lander's, which looks that far only for events older than Customer.io's retries)."""
    writer = writer_for(warehouse)

    def run() -> set[str]:
        with warehouse.connect() as conn:
            return writer.existing_ids(conn, schema, ids)

    return retry_busy(run, turns=Turns.of(warehouse.url)) if ids else set()


def status(settings: Settings) -> list[dict[str, Any]]:
    """Per source: backlog, landed, last landing, quarantined, discards."""
    with services(settings) as (staging, warehouse):
        counts = staging.counts()
        last = staging.last_landed()
        rows = []
        for source in load_sources(staging):
            c = counts.get(source.id, {})
            rows.append(
                {
                    "source": source.name,
                    "schema": source.schema,
                    "key_prefix": source.key_prefix,
                    "staged_backlog": c.get(PENDING, 0),
                    "landed": c.get(LANDED, 0),
                    "last_landing": iso_time(last.get(source.id)),
                    "quarantined": c.get(QUARANTINED, 0),
                    "discards": _count_discards(warehouse, source.schema),
                    # Disk use: staging is shared by every source; the archive and (on a lake) the
                    # warehouse are the source's own folders.
                    "staging_bytes": disk.staging_bytes(settings),
                    "archive_bytes": disk.archive_bytes(settings, source.id),
                    "warehouse_bytes": disk.warehouse_bytes(settings, source.schema),
                }
            )
    return rows


def iso_time(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds")


def _count_discards(warehouse: Engine, schema: str) -> int | None:
    def run() -> int:
        with warehouse.connect() as conn:
            return int(
                conn.execute(text(f"SELECT count(*) FROM {qualified(schema, DISCARDS_TABLE)}")).scalar_one()
            )

    try:
        return retry_busy(run, timeout_s=5.0, turns=Turns.of(warehouse.url))
    except Exception:
        return None


def replay(
    settings: Settings, source_name: str, since: float | None, until: float | None, quarantined: bool = False
) -> int:
    """Queue a source's archived bodies (optionally a time range) to land again through today's
    transform; with `quarantined`, the bodies it set aside instead (any that still do not parse are set
    aside again)."""
    with services(settings) as (staging, _):
        source = find_source(staging, source_name)
        queued = staging.mark_for_replay(source.id, since, until, quarantined)
        if not quarantined:  # quarantined bodies never leave staging
            queued += requeue_archived(staging, Archive(settings.archive_path), source.id, since, until)
        return queued


def requeue_archived(
    staging: Staging, archive: Archive, source_id: str, since: float | None, until: float | None
) -> int:
    """Append a source's archived bodies (in a time range) to staging again, to replace their rows."""
    queued = 0
    chunk: list[Incoming] = []
    for row in read_archived(archive, source_id, since, until):
        assert row.message_id is not None  # read_archived gives every id
        chunk.append(
            Incoming(
                source_id, row.message_id, row.received_at, row.request_ip, row.body,
                event_key=row.event_key, replay=True,
            )
        )  # fmt: skip
        if len(chunk) == 5000:
            staging.append(chunk)
            queued, chunk = queued + len(chunk), []
    staging.append(chunk)
    return queued + len(chunk)


def require_source(staging: Staging, name: str) -> Source:
    try:
        return find_source(staging, name)
    except Exception as exc:
        raise ConfigError(str(exc)) from None
