"""Taking turns at the DuckDB file: a writer keeps it across batches and lets it go when one of our
processes asks; it waits for such a process before taking the file back. Real processes, real files."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from loader.warehouse.engine import make_warehouse_engine
from loader.warehouse.turns import Turns
from loader.warehouse.writer import writer_for
from tests.procs import alive, loader_env

# A process that asks for the file, says so, waits a moment, then reads it once, without retrying (the
# read fails if a writer took the file meanwhile); it prints what it read.
ASK_THEN_READ = """
import sys, time, duckdb
from loader.warehouse.turns import Turns
path = sys.argv[1]
with Turns(path).asking():
    print("asked", flush=True)
    time.sleep(0.5)
    con = duckdb.connect(path, read_only=True)
    print(con.execute("SELECT 42").fetchone()[0], flush=True)
    con.close()
"""

ASK_AND_SLEEP = """
import sys, time
from loader.warehouse.turns import Turns
with Turns(sys.argv[1]).asking():
    print("asked", flush=True)
    time.sleep(600)
"""


def new_file(tmp_path: Path) -> str:
    path = str(tmp_path / "warehouse.duckdb")
    duckdb.connect(path).close()
    return path


def python(script: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "asked"
    return proc


def test_a_writer_lets_the_file_go_when_a_query_asks_for_it(tmp_path: Path) -> None:
    """Without asking, the writer would keep the file (its time bound is out of reach here) and the query
    would give up after its 15 s of retries."""
    path = new_file(tmp_path)
    writer = writer_for(make_warehouse_engine(f"duckdb:///{path}"))
    writer.hold_max_s = 1e9
    writer.hold()
    env = loader_env(tmp_path / "data", LOADER_WAREHOUSE_URL=f"duckdb:///{path}")
    query = subprocess.Popen(
        [sys.executable, "-m", "loader", "query", "SELECT 42 AS answer", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while writer._held is not None and time.monotonic() < deadline:
            time.sleep(0.05)  # a batch lands
            writer.keep_open()
        assert writer._held is None, "the writer kept the file although a query asked for it"
        out, err = query.communicate(timeout=30)
        assert query.returncode == 0, err
        assert json.loads(out) == [{"answer": 42}]
        writer.hold()  # the query is done: the writer takes the file again
        assert writer._held is not None
    finally:
        query.kill()
        writer.release()


def test_a_writer_waits_for_a_process_that_asked_before_taking_the_file(tmp_path: Path) -> None:
    path = new_file(tmp_path)
    writer = writer_for(make_warehouse_engine(f"duckdb:///{path}"))
    reader = python(ASK_THEN_READ, path)
    try:
        writer.hold()  # while the reader still waits to open the file
        out, err = reader.communicate(timeout=30)
        assert reader.returncode == 0, err
        assert out.strip() == "42"
        assert writer._held is not None
    finally:
        reader.kill()
        writer.release()


def test_only_live_processes_other_than_this_one_count_as_asking(tmp_path: Path) -> None:
    path = new_file(tmp_path)
    turns = Turns(path)
    assert not turns.others_asking()
    with turns.asking():  # this process's own marker
        assert not turns.others_asking()
    other = python(ASK_AND_SLEEP, path)
    try:
        assert turns.others_asking()
        other.kill()  # its marker stays behind, and so does the process until it is reaped
        while alive(other.pid):
            time.sleep(0.01)
        assert not turns.others_asking()  # a zombie
        other.wait()
        assert not turns.others_asking()
        assert list(turns.folder.iterdir()) == []  # the dead process's marker was removed
    finally:
        other.kill()


def test_turns_are_for_duckdb_files_only(tmp_path: Path) -> None:
    turns = Turns.of(f"duckdb:///{tmp_path / 'w.duckdb'}")
    assert turns is not None and turns.folder == tmp_path / "w.duckdb.turns"
    assert Turns.of("duckdb:///:memory:") is None
    assert Turns.of("duckdb:///md:analytics") is None
    assert Turns.of("postgresql+psycopg://postgres@127.0.0.1/test") is None


def test_a_process_that_cannot_leave_a_marker_still_runs_its_block(tmp_path: Path) -> None:
    """It then just retries, as without turns (say, a reader without write access to the folder)."""
    (tmp_path / "a-file").write_text("")
    turns = Turns(str(tmp_path / "a-file" / "warehouse.duckdb"))  # its folder cannot be made
    ran = []
    with turns.asking():
        ran.append(1)
    assert ran == [1]
    assert not turns.others_asking()
