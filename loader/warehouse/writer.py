"""Writing a batch to the warehouse: one transaction, idempotent on `id`, bulk paths per dialect.

`Writer` works on any SQLAlchemy dialect; subclasses replace only what their dialect does faster
(DuckDB: Arrow; PostgreSQL: COPY), registered in WRITERS. Differences are data, not scattered ifs.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import Connection, Engine, delete, select, text

from loader.batches import Prepared, Row, SchemaBatch, build_batches
from loader.catalogue import DISCARDS_TABLE, TRACKS_TABLE
from loader.naming import qualified, quote
from loader.staging.sources import Source
from loader.staging.store import Staged
from loader.transform import is_utf8
from loader.warehouse.engine import is_lock_conflict, is_out_of_memory, retry_busy
from loader.warehouse.tables import column_kinds, event_tables, schema_tables
from loader.warehouse.turns import Turns

log = logging.getLogger("loader.lander")

# DuckDB suggests `con.sql(q).to_arrow_table()` over `con.execute(q).to_arrow_table()` (the latter copies
# the rows once more), but sql() binds the query twice: for the parse query, 34 -> 25 ms at 500 bodies,
# 248 -> 224 ms at 25,000. We take execute() and silence the advice.
warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning)


class Writer:
    """Lands batches through plain SQLAlchemy; correct everywhere, fast nowhere in particular."""

    dialect: ClassVar[str] = "default"
    chunk: ClassVar[int] = 1000

    # How long a writer may keep the warehouse open across batches while events keep coming. DuckDB takes
    # one writer per file: a process of ours that wants it asks (loader.warehouse.turns) and gets it after
    # the batch being landed; this bound is for tools that cannot ask (the `duckdb` shell), and for the
    # freshness tail. At 5 s, serve's lander did a third less work at 1,000 events/s on a slow host
    # (freshness p50 ~0.39 s against ~0.48 s in 10 s runs), but in make bench's 20 s run after wrk's
    # backlog the p99 got worse (median of 11 runs 1.27 s against 1.02 s of 7): letting go of 5 s of rows
    # stalls more events at once than ten lets-go of half a second.
    hold_max_s: ClassVar[float] = 0.5
    # How long a writer about to open the file waits for processes that asked for it (a reader's query)
    # before it tries anyway.
    yield_max_s: ClassVar[float] = 2.0

    def __init__(self, engine: Engine, threads: int | None = None) -> None:
        """`threads`: a cap on the threads of the writer's own work beside the engine's (None: one per
        core)."""
        self.engine = engine
        self.threads = threads
        self.turns = Turns.of(engine.url)
        self._held: Connection | None = None
        self._held_since = 0.0

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction on the held connection, or on a fresh one."""
        if self._held is None:
            with self.engine.begin() as conn:
                yield conn
        else:
            with self._held.begin():
                yield self._held

    def hold(self) -> None:
        """Open the connection that the next batches land on, unless one is held already (the lander
        calls this before each batch, so the batch lands on the connection it then keeps). Processes that
        asked for the file go first; a file held by another process is asked for, up to `yield_max_s`."""
        if self._held is None:
            if self.turns is not None:
                self.turns.wait_for_others(self.yield_max_s)
            self._held = retry_busy(self.engine.connect, timeout_s=self.yield_max_s, turns=self.turns)
            self._held_since = time.monotonic()

    def keep_open(self) -> None:
        """After a batch: keep the connection for the next one (opening a DuckDB file, and checkpointing
        it on close, cost ~60-100 ms each), unless another process asked for the file or it has been held
        long enough. An empty claim lets it go at once (the lander calls release)."""
        if time.monotonic() - self._held_since >= self.hold_max_s or (
            self.turns is not None and self.turns.others_asking()
        ):
            self.release()

    def release(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            held.close()

    def parse(self, claimed: list[Staged], sources: dict[str, Source]) -> Any:
        """Work on a batch that needs no warehouse connection, done ahead (on the lander's helper thread)
        while the batch before lands; its result goes to `land_staged`. None here: nothing to do ahead."""
        return None

    def land_staged(
        self, claimed: list[Staged], sources: dict[str, Source], uuid_ts: datetime, parsed: Any = None
    ) -> tuple[dict[str, int], Prepared]:
        """Transform claimed bodies (Python) and land them in one transaction; `parsed` is what `parse`
        made of them, if it ran."""
        prepared = build_batches(claimed, sources)
        return (self.land(prepared.batches, uuid_ts) if prepared.batches else {}), prepared

    def land(self, batches: dict[str, SchemaBatch], uuid_ts: datetime) -> dict[str, int]:
        """Write every schema's rows in one transaction; rows whose id is already there are skipped.
        Returns the rows added to `tracks`, per schema."""
        with self.transaction() as conn:
            return {
                schema: self._land_schema(conn, schema, batch, uuid_ts) for schema, batch in batches.items()
            }

    def _land_schema(self, conn: Connection, schema: str, batch: SchemaBatch, uuid_ts: datetime) -> int:
        self.lock(conn, schema)
        if batch.replace_ids:
            self.delete_ids(conn, schema, sorted(batch.replace_ids))
        existing = self.existing_ids(conn, schema, [r["id"] for r in batch.tracks])
        fresh = [r for r in batch.tracks if r["id"] not in existing]
        if not fresh:
            return 0
        self._insert(conn, schema, TRACKS_TABLE, fresh, uuid_ts)
        for table, rows in sorted(batch.events.items()):
            self._insert(conn, schema, table, [r for r in rows if r["id"] not in existing], uuid_ts)
        discards = [d for d in batch.discards if d["row_id"] not in existing]
        self._insert(conn, schema, DISCARDS_TABLE, discards, uuid_ts)
        return len(fresh)

    def _insert(self, conn: Connection, schema: str, table: str, rows: list[Row], uuid_ts: datetime) -> None:
        if rows:
            names = [name for name, _ in column_kinds(table)]
            self.insert(conn, schema, table, names, [{**r, "uuid_ts": uuid_ts} for r in rows])

    # Dialect hooks -------------------------------------------------------------------------------

    def lock(self, conn: Connection, schema: str) -> None:
        """Serialize landers writing one schema (needed where several may write at once)."""

    def existing_ids(self, conn: Connection, schema: str, ids: Sequence[str]) -> set[str]:
        tracks = schema_tables(schema)[TRACKS_TABLE]
        found: set[str] = set()
        for start in range(0, len(ids), self.chunk):
            part = ids[start : start + self.chunk]
            found.update(conn.execute(select(tracks.c.id).where(tracks.c.id.in_(part))).scalars())
        return found

    def delete_ids(self, conn: Connection, schema: str, ids: Sequence[str]) -> None:
        tables = schema_tables(schema)
        for start in range(0, len(ids), self.chunk):
            part = ids[start : start + self.chunk]
            for name in (TRACKS_TABLE, *event_tables()):
                conn.execute(delete(tables[name]).where(tables[name].c.id.in_(part)))
            discards = tables[DISCARDS_TABLE]
            conn.execute(delete(discards).where(discards.c.row_id.in_(part)))

    def insert(self, conn: Connection, schema: str, table: str, names: list[str], rows: list[Row]) -> None:
        conn.execute(schema_tables(schema)[table].insert(), [{n: r.get(n) for n in names} for r in rows])


class DuckDBWriter(Writer):
    """DuckDB: rows go in as Arrow tables, one INSERT per table (each statement costs ~1 ms)."""

    dialect = "duckdb"

    def existing_ids(self, conn: Connection, schema: str, ids: Sequence[str]) -> set[str]:
        import pyarrow as pa

        raw = conn.connection.driver_connection
        assert raw is not None
        raw.register("_loader_ids", pa.table({"id": pa.array(ids, pa.string())}))
        try:
            sql = (
                f"SELECT t.id FROM {qualified(schema, TRACKS_TABLE)} t SEMI JOIN _loader_ids b ON t.id = b.id"
            )
            return {row[0] for row in raw.execute(sql).fetchall()}
        finally:
            raw.unregister("_loader_ids")

    def insert(self, conn: Connection, schema: str, table: str, names: list[str], rows: list[Row]) -> None:
        from loader.warehouse.arrow import to_arrow

        raw = conn.connection.driver_connection
        assert raw is not None
        raw.register("_loader_rows", to_arrow(table, names, rows))
        try:
            cols = ", ".join(quote(n) for n in names)
            raw.execute(f"INSERT INTO {qualified(schema, table)} ({cols}) SELECT {cols} FROM _loader_rows")
        finally:
            raw.unregister("_loader_rows")


@dataclass
class Parsed:
    """A claimed batch after DuckDB's parse: the plain bodies as rows ready to insert (every warehouse
    column, with `schema_name` and `event`), the others for the Python transform."""

    plain: Any  # a pyarrow Table
    slow: list[Staged]


class DuckDBSqlWriter(DuckDBWriter):
    """DuckDB, faster: plain bodies are transformed in SQL (vectorized), the rest by the Python transform,
    all landed in one transaction. See loader/warehouse/duckdb_sql.py.

    The parse reads no warehouse table, so it runs on an in-memory DuckDB of the writer's own: a lander
    with `parse_ahead` parses the next batch there, beside the landing of this one (both release the
    GIL), and the warehouse transaction only leaves out landed ids and inserts. Measured with 200,000
    events in batches of 25,000: ~34k events/s against ~28.5k with the parse inside the transaction."""

    def __init__(self, engine: Engine, threads: int | None = None) -> None:
        super().__init__(engine, threads)
        self._parser: Any = None
        self._parser_lock = threading.Lock()

    def parse(self, claimed: list[Staged], sources: dict[str, Source]) -> Parsed | None:
        if any(s.replay for s in claimed):  # replays replace rows: the general path does that
            return None
        import pyarrow.compute as pc

        from loader.warehouse import duckdb_sql

        bodies, fast, slow = _text_bodies([s for s in claimed if s.source_id in sources])
        if not fast:
            return Parsed(None, slow)
        with self._parser_lock:
            parser = self._parse_connection()
            parser.register("_loader_in", _staged_arrow(fast, bodies, sources))
            try:
                table = parser.execute(duckdb_sql.parse_sql()).to_arrow_table()
            finally:
                parser.unregister("_loader_in")
        plain = table["plain"]
        slow_ids = set(table.filter(pc.invert(plain))["id"].to_pylist())
        slow += [s for s in fast if s.message_id in slow_ids]
        return Parsed(table.filter(plain).drop_columns(["plain"]), slow)

    def _parse_connection(self) -> Any:
        if self._parser is None:
            import duckdb

            from loader.warehouse import duckdb_sql

            config: dict[str, Any] = {} if self.threads is None else {"threads": self.threads}
            self._parser = duckdb.connect(":memory:", config=config)
            self._parser.register("_loader_names", duckdb_sql.names_table())
        return self._parser

    def land_staged(
        self,
        claimed: list[Staged],
        sources: dict[str, Source],
        uuid_ts: datetime,
        parsed: Any = None,
    ) -> tuple[dict[str, int], Prepared]:
        try:
            if parsed is None:
                parsed = self.parse(claimed, sources)
            if parsed is not None:
                return self._land_parsed(parsed, sources, uuid_ts)
        except Exception as exc:
            if is_lock_conflict(exc) or is_out_of_memory(exc):
                raise  # the Python path would fail alike: the lander tries again (with more memory)
            # A body the SQL path did not foresee must not stall the stream: the reference path lands it.
            log.warning(
                "SQL landing path failed (%s: %s); landing this batch with the Python transform",
                type(exc).__name__,
                str(exc)[:200],
            )
            self.release()
        return super().land_staged(claimed, sources, uuid_ts)

    def _land_parsed(
        self, parsed: Parsed, sources: dict[str, Source], uuid_ts: datetime
    ) -> tuple[dict[str, int], Prepared]:
        import pyarrow.compute as pc

        added: dict[str, int] = {}
        with self.transaction() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            if parsed.plain is not None and parsed.plain.num_rows:
                plain = parsed.plain
                for schema in sorted(pc.unique(plain["schema_name"]).to_pylist()):
                    raw.register("_loader_parsed", plain)
                    try:
                        landed = self._landed_ids(raw, schema)
                        if landed:  # re-registered without them (a name registered again is replaced)
                            plain = plain.filter(pc.invert(pc.is_in(plain["id"], _string_array(landed))))
                            raw.register("_loader_parsed", plain)
                        added[schema] = self._insert_plain(raw, schema, uuid_ts)
                    finally:
                        raw.unregister("_loader_parsed")
            prepared = build_batches(parsed.slow, sources)
            for schema, batch in prepared.batches.items():
                added[schema] = added.get(schema, 0) + self._land_schema(conn, schema, batch, uuid_ts)
        return added, prepared

    @staticmethod
    def _landed_ids(raw: Any, schema: str) -> set[str]:
        """Ids of the schema's rows in `_loader_parsed` that are in `tracks` already (they landed before
        their claim was marked)."""
        from loader.warehouse import duckdb_sql

        cutoff = datetime.now(UTC) - timedelta(seconds=duckdb_sql.TRUSTED_AGE_S)
        lo, hi, old = raw.execute(duckdb_sql.SPAN_SQL, [cutoff, schema]).fetchone()
        found = raw.execute(duckdb_sql.landed_ids_sql(schema), [schema, lo, hi]).fetchall()
        if old:
            found += raw.execute(duckdb_sql.old_landed_ids_sql(schema), [schema, cutoff]).fetchall()
        return {r[0] for r in found}

    @staticmethod
    def _insert_plain(raw: Any, schema: str, uuid_ts: datetime) -> int:
        """Insert the schema's rows of `_loader_parsed` into tracks and their event tables."""
        from loader.warehouse import duckdb_sql

        events = raw.execute(duckdb_sql.EVENT_COUNTS_SQL, [schema]).fetchall()
        if not events:
            return 0
        raw.execute(
            duckdb_sql.insert_sql(schema, TRACKS_TABLE, track_only=True), [uuid_ts, schema]
        ).fetchall()
        for table, _ in events:
            raw.execute(
                duckdb_sql.insert_sql(schema, table, track_only=False), [uuid_ts, schema, table]
            ).fetchall()
        return sum(int(count) for _, count in events)


def _string_array(values: set[str]) -> Any:
    import pyarrow as pa

    return pa.array(sorted(values), pa.string())


def _text_bodies(staged: list[Staged]) -> tuple[Any, list[Staged], list[Staged]]:
    """The bodies as an Arrow text column, the staged bodies it holds, and those that are not valid UTF-8
    (the gateway accepts none such; they take the Python path). A message id met twice keeps its first
    body (claims never hold one twice; callers' lists might). Arrow checks the UTF-8 as it casts the
    bytes, in place: no Python str per body."""
    import pyarrow as pa

    first: dict[str, Staged] = {}
    for s in staged:
        first.setdefault(s.message_id, s)
    unique = list(first.values()) if len(first) < len(staged) else staged
    try:
        return pa.array([s.body for s in unique], pa.binary()).cast(pa.string()), unique, []
    except pa.ArrowInvalid:
        ok: list[Staged] = []
        other: list[Staged] = []
        for s in unique:
            (ok if is_utf8(s.body) else other).append(s)
        return pa.array([s.body for s in ok], pa.binary()).cast(pa.string()), ok, other


def epoch_ms(seconds: float) -> int:
    """Epoch seconds -> whole milliseconds, as `datetime.fromtimestamp` rounds (microseconds, half to
    even) and the Python transform cuts them (to milliseconds); without building a datetime."""
    whole = math.floor(seconds)
    micros = round((seconds - whole) * 1e6)
    return whole * 1000 + micros // 1000


PARSE_CHUNK_ROWS = 256


def _staged_arrow(staged: list[Staged], bodies: Any, sources: dict[str, Source]) -> Any:
    """Claimed bodies (their text column: _text_bodies) as an Arrow table for DuckDB; received_at cut to
    milliseconds as the events carry it."""
    import pyarrow as pa

    table = pa.table(
        {
            "seq": pa.array([s.seq for s in staged], pa.int64()),
            "message_id": pa.array([s.message_id for s in staged], pa.string()),
            "source_id": pa.array([s.source_id for s in staged], pa.string()),
            "schema_name": pa.array([sources[s.source_id].schema for s in staged], pa.string()),
            "received_at": pa.array([epoch_ms(s.received_at) for s in staged], pa.timestamp("ms", tz="UTC")),
            "request_ip": pa.array([s.request_ip for s in staged], pa.string()),
            "body": bodies,
        }
    )
    # In chunks, so that DuckDB parses them on every core (one chunk is one thread's work), and small
    # ones: DuckDB then parses 256 bodies at a time, not a 2,048-row vector. Measured on 25,000 bodies:
    # 2,048-row chunks took 104-139 ms and kept 114-154 MB more than before the parse (two threads), 256-row
    # chunks 89-94 ms and 48-70 MB; on one thread (serve's lander) 177-194 ms against 151-162 ms.
    return pa.Table.from_batches(table.to_batches(max_chunksize=PARSE_CHUNK_ROWS))


class PostgresWriter(Writer):
    """PostgreSQL: COPY for rows, an advisory lock so landers on several hosts never race on an id."""

    dialect = "postgresql"

    def lock(self, conn: Connection, schema: str) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": f"loader:{schema}"})

    def existing_ids(self, conn: Connection, schema: str, ids: Sequence[str]) -> set[str]:
        sql = text(f"SELECT id FROM {qualified(schema, TRACKS_TABLE)} WHERE id = ANY(:ids)")
        return set(conn.execute(sql, {"ids": list(ids)}).scalars())

    def insert(self, conn: Connection, schema: str, table: str, names: list[str], rows: list[Row]) -> None:
        raw = conn.connection.driver_connection
        assert raw is not None
        cols = ", ".join(quote(n) for n in names)
        with raw.cursor() as cur, cur.copy(f"COPY {qualified(schema, table)} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row.get(n) for n in names])


WRITERS: dict[str, type[Writer]] = {w.dialect: w for w in (DuckDBSqlWriter, PostgresWriter)}


def writer_for(engine: Engine, threads: int | None = None) -> Writer:
    """The writer for an engine's backend, or the plain SQLAlchemy one."""
    from loader.warehouse.lake_writer import LakeWriter  # it builds on DuckDBSqlWriter

    writers = {**WRITERS, LakeWriter.dialect: LakeWriter}
    return writers.get(engine.url.get_backend_name(), Writer)(engine, threads)
