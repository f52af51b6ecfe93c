"""The DuckLake warehouse: analysts' own DuckDB sessions never pause landing, attach-sql, maintenance,
several hosts over one lake."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import duckdb
import httpx2
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from loader import service
from loader.gateway.app import create_app
from loader.warehouse.attach import attach_sql
from tests.conftest import PG_ADMIN_URL, make_settings
from tests.procs import Server, cli, loader_env, query_json, wait_for
from tests.test_landing import events

KEY = "K-lake-analysts-01"

# An analyst's own process: it attaches the warehouse with `loader attach-sql`'s output and holds one
# session for the whole run, in one of three ways a notebook or BI tool would. The polling ones leave once
# they have seen every event; the long transaction leaves when the test says so. No clock decides, so a
# slow host makes the test slower, not red.
ANALYST = """
import duckdb, json, os, sys, time
attach, mode, expected, stop, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
con = duckdb.connect()
con.execute(attach)
seen, errors = [], []
give_up = time.monotonic() + 180
count = "SELECT count(*) FROM warehouse.lake_src.tracks"
if mode == "transaction":
    con.execute("BEGIN TRANSACTION")
while time.monotonic() < give_up:
    try:
        if mode == "bi":
            con.execute("SELECT * FROM warehouse.lake_src.email_funnel_daily ORDER BY day").fetchall()
        seen.append(con.execute(count).fetchone()[0])
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    if len(seen) == 1:  # the session has read once, so the transaction holds its snapshot
        open(out + ".ready", "w").close()
    if os.path.exists(stop) if mode == "transaction" else seen and seen[-1] == expected:
        break
    time.sleep({"poll": 0.25, "bi": 1.0, "transaction": 0.5}[mode])
if mode == "transaction":
    con.execute("COMMIT")
    seen.append(con.execute(count).fetchone()[0])
json.dump({"seen": seen, "errors": errors}, open(out, "w"))
"""


def start_analyst(
    env: dict[str, str], mode: str, expected: int, stop: Path, out: Path
) -> subprocess.Popen[bytes]:
    attach = cli(env, "attach-sql")
    args = [attach, mode, str(expected), str(stop), str(out)]
    return subprocess.Popen([sys.executable, "-c", ANALYST, *args])


def post_at(url: str, bodies: list[bytes], per_s: float, key: str = KEY) -> list[int]:
    """Post bodies at about `per_s` a second; the status of each."""
    statuses = []
    started = time.monotonic()
    with httpx2.Client(base_url=url, params={"writeKey": key}, timeout=5) as client:
        for i, raw in enumerate(bodies):
            statuses.append(client.post("/v1/webhook", content=raw).status_code)
            time.sleep(max(0.0, started + (i + 1) / per_s - time.monotonic()))
    return statuses


@pytest.mark.slow
def test_analysts_holding_sessions_never_pause_landing(tmp_path: Path) -> None:
    env = loader_env(tmp_path / "data")  # the embedded default: a lake
    cli(env, "source", "add", "Lake Src", "--write-key", KEY)
    server = Server(env, tmp_path / "serve.log")
    bodies = [json.dumps(e).encode() for e in events(1200, seed=21)]
    stop = tmp_path / "stop"
    outs = {mode: tmp_path / f"{mode}.json" for mode in ("poll", "bi", "transaction")}
    try:
        procs = {mode: start_analyst(env, mode, len(bodies), stop, out) for mode, out in outs.items()}
        # Every analyst holds its session before the events come.
        wait_for(
            "the analysts' sessions", lambda: all(Path(f"{out}.ready").exists() for out in outs.values()), 60
        )
        statuses = post_at(server.url, bodies, per_s=200)
        for mode in ("poll", "bi"):
            assert procs[mode].wait(timeout=180) == 0
        stop.touch()
        assert procs["transaction"].wait(timeout=60) == 0
    finally:
        server.stop()
    assert statuses == [200] * len(bodies)
    seen = {mode: json.loads(out.read_text()) for mode, out in outs.items()}
    assert all(not s["errors"] for s in seen.values()), {m: s["errors"][:3] for m, s in seen.items()}
    # The held sessions saw landing go on, without reconnecting: every event, before they let go.
    assert seen["poll"]["seen"][-1] == len(bodies), seen["poll"]["seen"][-10:]
    assert seen["bi"]["seen"][-1] == len(bodies), seen["bi"]["seen"][-10:]
    # The long transaction kept its first snapshot while all of it landed, and saw everything once it
    # committed.
    assert set(seen["transaction"]["seen"][:-1]) == {0}
    assert seen["transaction"]["seen"][-1] == len(bodies)
    [counts] = query_json(env, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM lake_src.tracks")
    assert counts == {"n": len(bodies), "d": len(bodies)}


def test_attach_sql_reads_the_lake_read_only_and_never_prints_a_password(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    service.source_add(settings, "Attached", write_key=KEY)
    con = duckdb.connect()
    con.execute(attach_sql(settings.warehouse_url))
    assert con.execute("SELECT count(*) FROM warehouse.attached.tracks").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM warehouse.attached.email_funnel").fetchone() == (0,)
    with pytest.raises(duckdb.Error):
        con.execute("INSERT INTO warehouse.attached.tracks (id) VALUES ('x')")
    for url in (
        "ducklake+postgresql://analyst:s3cret-pw@db.example:5432/catalog?data_path=/srv/lake",
        "postgresql+psycopg://analyst:s3cret-pw@db.example:5432/analytics",
    ):
        sql = attach_sql(url)
        assert "s3cret-pw" not in sql and "READ_ONLY" in sql and "AS warehouse" in sql
    assert "READ_ONLY" not in attach_sql(settings.warehouse_url, read_only=False)


def test_attach_sql_command_prints_statements_duckdb_runs(tmp_path: Path) -> None:
    env = loader_env(tmp_path / "data")
    cli(env, "source", "add", "Cmd", "--write-key", KEY)
    out = cli(env, "attach-sql")
    assert "ATTACH 'ducklake:sqlite:" in out and "READ_ONLY" in out
    con = duckdb.connect()
    con.execute(out)
    assert con.execute("SELECT count(*) FROM warehouse.cmd.tracks").fetchone() == (0,)


def test_maintenance_keeps_the_file_count_bounded(tmp_path: Path) -> None:
    """Many small batches, then maintenance: one live file per table, the replaced ones deleted once
    unused for the keep window (0 here), and every row still there once."""
    from loader.warehouse.engine import make_warehouse_engine
    from loader.warehouse.maintenance import Maintenance
    from loader.warehouse.writer import writer_for

    settings = make_settings(tmp_path)
    service.source_add(settings, "Small Batches", write_key=KEY)
    engine = make_warehouse_engine(settings.warehouse_url)
    writer = writer_for(engine)
    files = tmp_path / "data" / "lake.files" / "small_batches" / "tracks"
    before = len(list(files.glob("*.parquet")))  # the migration's placeholder row (lake_stats), deleted
    for i in range(60):
        with writer.transaction() as conn:
            conn.execute(text(f"INSERT INTO small_batches.tracks (id) VALUES ('id-{i}')"))
    assert len(list(files.glob("*.parquet"))) == before + 60
    maintenance = Maintenance(engine, every_s=0.0, keep_s=0.0)
    assert maintenance.due()
    time.sleep(1.1)  # the keep window is counted in whole seconds
    maintenance.run(writer)
    maintenance.run(writer)  # the files the first run replaced are deleted by the next
    assert len(list(files.glob("*.parquet"))) == 1
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(DISTINCT id), count(*) FROM small_batches.tracks")).one() == (
            60,
            60,
        )


def test_maintenance_runs_in_steps_between_batches(tmp_path: Path) -> None:
    """serve's lander runs a round a step at a time (a table's merge each) and lands between steps; the
    round ends with every table merged and no row lost or doubled."""
    from loader.warehouse.engine import make_warehouse_engine
    from loader.warehouse.maintenance import Maintenance
    from loader.warehouse.writer import writer_for

    settings = make_settings(tmp_path)
    service.source_add(settings, "Steps", write_key=KEY)
    engine = make_warehouse_engine(settings.warehouse_url)
    writer = writer_for(engine)
    tables = ("tracks", "email_opened", "email_link_clicked")
    for i in range(5):
        with writer.transaction() as conn:
            for table in tables:
                conn.execute(text(f"INSERT INTO steps.{table} (id) VALUES ('id-{i}')"))
    maintenance = Maintenance(engine, every_s=3600.0, keep_s=3600.0)
    maintenance._next = 0.0  # the round is due now; the next one in an hour
    steps = 0
    while maintenance.due():
        maintenance.step(writer, budget_s=0.0)  # one step a turn
        steps += 1
        with writer.transaction() as conn:  # a batch between two steps
            conn.execute(text(f"INSERT INTO steps.tracks (id) VALUES ('between-{steps}')"))
    # A merge per table that had several files, then expiry, cleanup and orphans.
    assert steps == len(tables) + 3
    with engine.connect() as conn:
        live = dict(
            conn.exec_driver_sql(
                "SELECT t.table_name, count(*) FROM __ducklake_metadata_warehouse.ducklake_data_file f "
                "JOIN __ducklake_metadata_warehouse.ducklake_table t USING (table_id) "
                "WHERE f.end_snapshot IS NULL AND t.end_snapshot IS NULL GROUP BY 1"
            ).all()
        )
        assert live["email_opened"] == live["email_link_clicked"] == 1
        assert conn.execute(text("SELECT count(*), count(DISTINCT id) FROM steps.tracks")).one() == (
            5 + steps,
            5 + steps,
        )


@pytest.fixture
def catalog_db() -> Any:
    """A fresh PostgreSQL database for a lake's catalog, dropped afterwards."""
    name = f"loader_lake_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.slow
def test_two_hosts_land_one_lake_with_a_postgres_catalog(
    tmp_path: Path, pg_url: str, catalog_db: Any
) -> None:
    shared = tmp_path / "shared-lake-files"
    lake_url = (
        f"ducklake+postgresql://{catalog_db.username}@{catalog_db.host}:{catalog_db.port}/{catalog_db.database}"
        f"?data_path={shared}"
    )
    env = loader_env(tmp_path / "host-a", LOADER_WAREHOUSE_URL=lake_url, LOADER_STAGING_URL=pg_url)
    env_b = dict(env, LOADER_DATA_DIR=str(tmp_path / "host-b"))
    cli(env, "source", "add", "Shared Lake", "--write-key", KEY)
    a = Server(env, tmp_path / "a.log")
    b = Server(env_b, tmp_path / "b.log")
    bodies = [json.dumps(e).encode() for e in events(1000, seed=8)]
    try:
        # Every event reaches both hosts (a retry crossing hosts), in different orders.
        threads = [
            threading.Thread(target=post_at, args=(url, part, 400.0))
            for url, part in ((a.url, bodies), (b.url, bodies[::-1]))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            [counts] = query_json(
                env_b, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM shared_lake.tracks"
            )
            if counts["n"] >= len(bodies):
                break
            time.sleep(0.5)
        time.sleep(1.0)
        [counts] = query_json(env, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM shared_lake.tracks")
    finally:
        a.stop()
        b.stop()
    assert counts == {"n": len(bodies), "d": len(bodies)}
    attach = cli(env, "attach-sql")
    assert "ducklake:postgres:" in attach and str(shared) in attach


def _strace() -> str | None:
    found = shutil.which("strace")
    if found is None and os.environ.get("CI"):
        pytest.fail("CI must have strace (.ci/run installs it)")
    return found


@pytest.mark.slow
def test_every_data_file_is_on_disk_before_the_commit_that_names_it(tmp_path: Path) -> None:
    """A power cut must never leave the catalog naming a Parquet file that did not reach the disk.
    DuckDB closes the files it writes without an fsync; the catalog's commit is synced by SQLite (its
    WAL). Traced: every file written for the lake is fsynced before the next sync of the catalog."""
    strace = _strace()
    if strace is None:
        pytest.skip("strace not installed (apt-get install strace)")
    env = loader_env(tmp_path / "data")
    cli(env, "source", "add", "Traced", "--write-key", KEY)
    from tests.conftest import make_settings as settings_for

    settings = settings_for(tmp_path)

    from loader import service

    with TestClient(create_app(settings)) as client:
        for raw in [json.dumps(e).encode() for e in events(400, seed=41)]:
            assert client.post("/v1/webhook", params={"writeKey": KEY}, content=raw).status_code == 200
    trace = tmp_path / "flush.trace"
    env["LOADER_BATCH_SIZE"] = "100"  # several batches: the later ones write into existing folders
    done = subprocess.run(
        [strace, "-f", "-e", "trace=openat,fsync,fdatasync,close", "-o", str(trace),
         sys.executable, "-m", "loader", "flush"],
        env=env, capture_output=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    files, catalog_syncs = _writes_and_syncs(trace.read_text(), str(tmp_path / "data" / "lake.sqlite"))
    assert files and catalog_syncs, "the trace shows no landing"
    for sync_at in catalog_syncs:
        unsynced = [
            path
            for path, (written, synced) in files.items()
            if written < sync_at and (synced is None or synced > sync_at)
        ]
        assert not unsynced, (
            f"the catalog was synced with {len(unsynced)} file(s) not on disk: {unsynced[:3]}"
        )
    assert service.query(settings, "SELECT count(DISTINCT id) FROM traced.tracks")[1] == [(400,)]


def _writes_and_syncs(trace: str, catalog: str) -> tuple[dict[str, list[Any]], list[int]]:
    """From an strace of openat/fsync/close: each Parquet file written (line of its open for writing,
    line of its first fsync after) and the lines where the catalog's WAL (or database) was fsynced."""
    import re

    open_re = re.compile(r'^(\d+)\s+openat\(AT_FDCWD, "([^"]+)", ([^,)]+).*= (\d+)$')
    sync_re = re.compile(r"^(\d+)\s+f(?:data)?sync\((\d+)\)\s+= 0$")
    close_re = re.compile(r"^(\d+)\s+close\((\d+)\)")
    fds: dict[int, str] = {}  # one process's threads share descriptors
    files: dict[str, list[Any]] = {}
    syncs: list[int] = []
    for number, line in enumerate(trace.splitlines()):
        if m := open_re.match(line):
            path, flags, fd = m.group(2), m.group(3), int(m.group(4))
            fds[fd] = path
            if path.endswith(".parquet") and ("O_WRONLY" in flags or "O_RDWR" in flags):
                files[path] = [number, None]
        elif m := sync_re.match(line):
            path = fds.get(int(m.group(2)), "")
            if path in files and files[path][1] is None:
                files[path][1] = number
            if path.startswith(catalog):
                syncs.append(number)
        elif m := close_re.match(line):
            fds.pop(int(m.group(2)), None)
    return files, syncs


def test_never_written_tables_get_statistics_and_keep_no_placeholder(tmp_path: Path) -> None:
    """After a migration every event table of a new source has statistics (DuckLake 1.5.5 otherwise
    plans each scan of a never-written table with per-column catalog queries), and no row of it is left;
    placeholders a crash left between the two commits go at the next migration."""
    from loader.warehouse.engine import make_warehouse_engine
    from loader.warehouse.lake_stats import PLACEHOLDER_ID, tables_without_stats
    from loader.warehouse.migrate import upgrade

    settings = make_settings(tmp_path)
    service.source_add(settings, "Fresh", write_key="K-fresh-000001")
    engine = make_warehouse_engine(settings.warehouse_url)
    try:
        assert tables_without_stats(engine, "fresh") == ["rudder_discards"]  # no view reads it
        counts = "SELECT (SELECT count(*) FROM fresh.tracks) + (SELECT count(*) FROM fresh.sms_replied)"
        with engine.connect() as conn:
            assert conn.execute(text(counts)).scalar() == 0
            assert conn.execute(text("SELECT count(*) FROM fresh.message_funnel")).scalar() == 0
        with engine.begin() as conn:  # as if a crash came between the placeholders' two commits
            conn.execute(text("INSERT INTO fresh.sms_replied (id) VALUES (:id)"), {"id": PLACEHOLDER_ID})
        upgrade(engine, "fresh")
        with engine.connect() as conn:
            assert conn.execute(text(counts)).scalar() == 0
    finally:
        engine.dispose()
