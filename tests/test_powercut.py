"""A power cut at seven points of the default setup (SQLite staging, a lake on a SQLite catalog, the
archive): every write not yet synced is dropped, the processes die at once, and afterwards no
acknowledged event is lost or doubled, and the lake's catalog names no data file the cut took."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import pyarrow.parquet as pq
import pytest

from tests.powercut import Shadow, build_shim
from tests.procs import Server, cli, loader_env, query_json, wait_for
from tests.test_landing import events

pytestmark = pytest.mark.slow
KEY = "K-power-cut-01"
# Enough events that posting outlasts every cut point even when three test workers slow landing and
# archiving (CI once saw fewer than three archive runs in 600 events); posting stops at the cut.
EVENTS = 3000

# Where the power goes: before the n-th sync of a path holding the fragment ('$': at its end).
CUTS = {
    "first-acks": ("/staging.sqlite3", 5),  # serve's first group commits, in a new WAL file
    "gateway-ack": ("/staging.sqlite3", 120),  # a group commit, before its 200s
    "landing-data-file": ("/lake.files/", 1),  # a Parquet file, before the catalog names it
    "landing-commit": ("lake.sqlite-wal", 1),  # the catalog's commit, before staging is told
    "archive": ("/archive/", 1),  # an archive file, before its bodies leave staging
    "archive-later": ("/archive/", 6),  # after earlier archive files' bodies left staging
    "maintenance": ("/lake.files/", 40),  # later files: landings and merges
}


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("gcc"):
        pytest.fail("the power-cut tests build their shim with gcc")
    return build_shim(tmp_path_factory.mktemp("shim"))


def post_until_cut(url: str, bodies: list[bytes], sent: list[int], acked: list[int]) -> None:
    """Four clients post bodies in order, each once, about 100 a second in all, so that landing,
    archiving and maintenance run while they do; a client stops at its first failure (the power is out)."""
    queue = list(enumerate(bodies))
    lock = threading.Lock()

    def client() -> None:
        with httpx2.Client(base_url=url, params={"writeKey": KEY}, timeout=10) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    i, raw = queue.pop(0)
                    sent.append(i)
                try:
                    if http.post("/v1/webhook", content=raw).status_code != 200:
                        return
                except httpx2.HTTPError:
                    return
                with lock:
                    acked.append(i)
                time.sleep(0.04)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def missing_data_files(catalog: Path) -> list[str]:
    """Every data and delete file any snapshot of the catalog names that is not on disk whole."""
    con = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)
    try:
        [data_path] = con.execute("SELECT value FROM ducklake_metadata WHERE key = 'data_path'").fetchone()
        rows = con.execute(
            """
            SELECT s.path, s.path_is_relative, t.path, t.path_is_relative, f.path, f.path_is_relative,
                   f.file_size_bytes
            FROM (SELECT table_id, path, path_is_relative, file_size_bytes FROM ducklake_data_file
                  UNION ALL
                  SELECT table_id, path, path_is_relative, file_size_bytes FROM ducklake_delete_file) f
            JOIN (SELECT DISTINCT table_id, schema_id, path, path_is_relative FROM ducklake_table) t
              USING (table_id)
            JOIN (SELECT DISTINCT schema_id, path, path_is_relative FROM ducklake_schema) s
              USING (schema_id)
            """
        ).fetchall()
    finally:
        con.close()
    missing = []
    for schema, schema_rel, table, table_rel, name, name_rel, size in rows:
        path = data_path
        path = path + schema if schema_rel else schema
        path = path + table if table_rel else table
        path = path + name if name_rel else name
        if not os.path.isfile(path) or os.path.getsize(path) != size:
            missing.append(path)
    return missing


def wait_for_group_to_end(pgid: int) -> None:
    def ended() -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for("every process of serve to die", ended, 30)


@pytest.mark.parametrize("cut", sorted(CUTS))
def test_a_power_cut_loses_no_acknowledged_event(tmp_path: Path, shim: Path, cut: str) -> None:
    data = tmp_path / "data"
    env = loader_env(data, LOADER_ARCHIVE_EVERY_S="1", LOADER_LAKE_MAINTENANCE_S="2", LOADER_LAKE_KEEP_S="1")
    cli(env, "source", "add", "Cut", "--write-key", KEY)
    shadow = Shadow(data, tmp_path / "shadow", shim)
    shadow.sync_all()  # what is there before serve starts is on disk
    fragment, nth = CUTS[cut]
    bodies = [json.dumps(e).encode() for e in events(EVENTS, seed=31)]
    sent: list[int] = []
    acked: list[int] = []

    server = Server({**env, **shadow.env(fragment, nth)}, tmp_path / "serve.log", own_group=True)
    try:
        post_until_cut(server.url, bodies, sent, acked)
        wait_for(f"the power cut at {fragment}", lambda: server.proc.poll() is not None, 90)
    finally:
        if server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGKILL)
        server.kill()
    wait_for_group_to_end(server.proc.pid)
    assert shadow.cut_at(), "serve ended without the power cut"
    assert acked, "nothing was acknowledged before the cut; nothing was tested"

    # The disk as the cut left it: only what was synced.
    shutil.move(data, tmp_path / "data.before-the-cut")
    shadow.restore(data)
    assert missing_data_files(data / "lake.sqlite") == []

    # What staging kept lands; every acknowledged event is there once.
    cli(env, "flush")
    landed = query_json(
        env,
        "SELECT CAST(epoch(original_timestamp) AS BIGINT) - 1700000000 AS i, count(*) AS n "
        "FROM cut.tracks GROUP BY 1",
    )
    counts = {row["i"]: row["n"] for row in landed}
    assert [i for i in acked if i not in counts] == [], f"acknowledged, then lost (cut at {shadow.cut_at()})"
    assert {i: n for i, n in counts.items() if n != 1} == {}

    # Customer.io retries what got no 200 (and, for good measure, some that did): every event once.
    server = Server(env, tmp_path / "serve-after.log")
    try:
        unacked = sorted(set(sent) - set(acked))
        retry = unacked + acked[:50]
        with httpx2.Client(base_url=server.url, params={"writeKey": KEY}, timeout=10) as http:
            assert {http.post("/v1/webhook", content=bodies[i]).status_code for i in retry} <= {200}
        wait_for(
            "every event to land",
            lambda: query_json(env, "SELECT count(*) AS n FROM cut.tracks")[0]["n"] >= len(sent),
            120,
        )
    finally:
        server.stop()
    [after] = query_json(env, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM cut.tracks")
    assert after == {"n": len(sent), "d": len(sent)}
    # And the archive holds every body, for replay: those the cut left it, and those archived since.
    cli(env, "flush")  # archives what landed as it ends
    archived = set()
    for path in sorted((data / "archive").rglob("[!.]*.parquet")):
        archived.update(pq.read_table(path, columns=["body"]).column("body").to_pylist())
    assert [i for i in sent if bodies[i] not in archived] == []


# Lands small batches into the lake, then runs maintenance with the power going at the first data file
# sync inside it: the merge's new file.
MERGE = """
import os
from pathlib import Path
from sqlalchemy import text
from loader.settings import Settings
from loader.warehouse.engine import make_warehouse_engine
from loader.warehouse.maintenance import Maintenance
from loader.warehouse.writer import writer_for

engine = make_warehouse_engine(Settings.from_env().warehouse_url)
writer = writer_for(engine)
for i in range(20):
    with writer.transaction() as conn:
        conn.execute(text(f"INSERT INTO merge_cut.tracks (id) VALUES ('id-{i}')"))
count = Path(os.environ["POWERCUT_SHADOW"], "count")
os.environ["POWERCUT_AFTER"] = str((int(count.read_text()) if count.exists() else 0) + 1)
Maintenance(engine, every_s=0, keep_s=3600).run(writer)
"""


def test_a_power_cut_in_a_merge_leaves_the_catalog_naming_no_lost_file(tmp_path: Path, shim: Path) -> None:
    data = tmp_path / "data"
    env = loader_env(data)
    cli(env, "source", "add", "Merge Cut", "--write-key", KEY)
    shadow = Shadow(data, tmp_path / "shadow", shim)
    shadow.sync_all()
    run = subprocess.run(
        [sys.executable, "-c", MERGE],
        env={**env, **shadow.env("/lake.files/", 10**9)},
        start_new_session=True,
    )
    assert run.returncode == -signal.SIGKILL, "the merge ended without the power cut"
    assert "merge_cut/tracks/" in (shadow.cut_at() or "")
    shutil.move(data, tmp_path / "data.before-the-cut")
    shadow.restore(data)
    assert missing_data_files(data / "lake.sqlite") == []
    [counts] = query_json(env, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM merge_cut.tracks")
    assert counts == {"n": 20, "d": 20}
