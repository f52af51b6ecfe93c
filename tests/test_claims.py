"""Claims in staging (SQLite claim rows, PostgreSQL row leases) and the crash window after a commit."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from loader import service
from loader.catalogue import EVENT_NAMES
from loader.errors import TransientError
from loader.settings import Settings
from loader.staging import LANDED, PENDING, Incoming, Staging
from loader.staging.claims import dead_tokens
from loader.staging.store import claim_token
from loader.warehouse.engine import is_out_of_memory
from loader.warehouse.writer import epoch_ms
from tests.conftest import make_settings, rows
from tests.procs import alive
from tests.test_landing import events


@pytest.fixture(params=["sqlite", "postgresql"])
def staging(request: pytest.FixtureRequest, tmp_path: Path) -> Staging:
    url = (
        f"sqlite:///{tmp_path / 'staging.sqlite'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    store = Staging(url)
    store.create()
    return store


def stage(store: Staging, n: int, first: int = 0) -> None:
    now = time.time()
    store.append([Incoming("src", f"m{i:04d}", now, None, b"{}") for i in range(first, first + n)])


def states(store: Staging) -> dict[str, int]:
    with store.engine.connect() as conn:
        return dict(conn.exec_driver_sql("SELECT message_id, state FROM loader_staged").all())  # type: ignore[arg-type]


def test_two_landers_take_disjoint_bodies(staging: Staging) -> None:
    stage(staging, 10)
    a, b = claim_token(), claim_token()
    first = staging.claim(6, 60, a)
    second = staging.claim(6, 60, b)
    assert [s.message_id for s in first] == [f"m{i:04d}" for i in range(6)]
    assert [s.message_id for s in second] == [f"m{i:04d}" for i in range(6, 10)]
    assert staging.claim(6, 60, claim_token()) == []
    assert staging.mark_landed(a) == 6
    staging.release(b)
    again = staging.claim(10, 60, claim_token())
    assert [s.message_id for s in again] == [f"m{i:04d}" for i in range(6, 10)]
    assert sorted(states(staging).values()) == [PENDING] * 4 + [LANDED] * 6


def test_a_claim_stops_at_its_byte_budget(staging: Staging) -> None:
    """Bodies may be up to 4 MB each: flush's first claim of 3,125 such bodies would be 12.5 GB. A claim
    takes bodies up to a byte budget, and always one; the rest stay free for the next claim, which
    another lander may take."""
    now = time.time()
    sizes = [400, 300, 500, 200, 100, 2000, 50]
    staging.append([Incoming("src", f"b{i}", now, None, b"x" * n) for i, n in enumerate(sizes)])
    first = staging.claim(100, 60, claim_token(), max_bytes=1000)
    assert [s.message_id for s in first] == ["b0", "b1", "b2"]  # the one that crosses the budget is in
    second = staging.claim(100, 60, (token := claim_token()), max_bytes=1000)
    assert [s.message_id for s in second] == ["b3", "b4", "b5"]
    assert [s.message_id for s in staging.claim(100, 60, claim_token(), max_bytes=10)] == ["b6"]
    assert staging.claim(100, 60, claim_token(), max_bytes=10) == []
    assert staging.mark_landed(token) == 3
    assert sum(v == LANDED for v in states(staging).values()) == 3


def test_an_expired_lease_frees_the_bodies(staging: Staging) -> None:
    stage(staging, 3)
    assert len(staging.claim(10, 0.05, claim_token())) == 3
    time.sleep(0.1)
    assert len(staging.claim(10, 60, claim_token())) == 3


def test_claims_of_a_dead_lander_on_this_host_are_freed(staging: Staging) -> None:
    stage(staging, 3)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    pid = int(dead.stdout)
    token = claim_token().split(":")
    staging.claim(10, 600, f"{token[0]}:{pid}:{token[2]}")
    alive = claim_token()
    stage(staging, 2, first=3)
    assert len(staging.claim(10, 600, alive)) == 2
    assert staging.release_dead_claims() == 1
    assert [s.message_id for s in staging.claim(10, 600, claim_token())] == ["m0000", "m0001", "m0002"]


def test_a_killed_lander_not_yet_reaped_is_dead() -> None:
    """A lander killed with its serve stays a zombie until init reaps it (here ~1.3 s): a serve restarted
    meanwhile must free its claims at once, not wait for their lease to end."""
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while alive(zombie.pid):  # it exits at once, and stays a zombie until we wait for it
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.01)
    assert Path(f"/proc/{zombie.pid}").exists()  # not alive, yet still there: a zombie
    try:
        token = claim_token().split(":")
        assert dead_tokens([f"{token[0]}:{zombie.pid}:{token[2]}"]) == [f"{token[0]}:{zombie.pid}:{token[2]}"]
        assert dead_tokens([claim_token()]) == []  # this process: alive
    finally:
        zombie.wait()


def test_a_replayed_body_inside_a_live_claim_is_not_marked_by_it(staging: Staging) -> None:
    """A claim spans seq 1..10 but holds only the pending ones; bodies put back in the queue meanwhile
    (a replay) must stay pending when it is marked."""
    stage(staging, 10)
    middle = claim_token()
    staging.claim(3, 60, (first := claim_token()))
    staging.claim(3, 60, middle)
    staging.claim(4, 60, (last := claim_token()))
    staging.mark_landed(middle)  # m0003..m0005 landed
    staging.release(first)
    staging.release(last)
    spanning = claim_token()
    taken = staging.claim(10, 60, spanning)
    assert [s.message_id for s in taken] == [f"m{i:04d}" for i in (0, 1, 2, 6, 7, 8, 9)]
    assert staging.mark_for_replay("src", None, None) == 3  # m0003..m0005 pending again
    assert staging.mark_landed(spanning) == 7
    replayed = staging.claim(10, 60, claim_token())
    assert [(s.message_id, s.replay) for s in replayed] == [(f"m{i:04d}", True) for i in (3, 4, 5)]


def test_quarantine_touches_only_the_claim(staging: Staging) -> None:
    stage(staging, 4)
    mine, theirs = claim_token(), claim_token()
    staging.claim(2, 60, mine)
    staging.claim(2, 60, theirs)
    staging.quarantine(mine, ["m0001", "m0003"], "bad")  # m0003 belongs to the other claim
    assert states(staging) == {"m0000": PENDING, "m0001": 2, "m0002": PENDING, "m0003": PENDING}


def staged_source(tmp_path: Path, name: str, count: int, **env: str) -> Settings:
    """Settings with one migrated source and `count` distinct events staged for it, not landed."""
    settings = make_settings(tmp_path, **env)
    added = service.source_add(settings, name, write_key=f"{name.lower().replace(' ', '-')}-key-0001")
    service.migrate_all(settings)
    now = time.time()
    with service.services(settings) as (store, _):
        store.append(
            [
                Incoming(added.source.id, f"id-{i:03d}", now + i * 0.001, "127.0.0.1", json.dumps(e).encode())
                for i, e in enumerate(events(count))
            ]
        )
    return settings


def test_flush_takes_arrow_buffers_from_the_system_allocator(tmp_path: Path) -> None:
    """pyarrow's bundled mimalloc landed a backlog slower here (bench/RESULTS.md, sixth session): flush,
    a one-shot process, switches to the C library's allocator."""
    import pyarrow as pa

    pa.set_memory_pool(pa.mimalloc_memory_pool())
    settings = staged_source(tmp_path, "Allocated", 5)
    assert service.flush(settings) == 5
    assert pa.default_memory_pool().backend_name == "system"
    pa.set_memory_pool(pa.mimalloc_memory_pool())  # the process as the next test expects to find it


def test_landing_processes_collect_garbage_less_often(tmp_path: Path) -> None:
    """A claim makes tens of thousands of tracked objects at once, and Python's thresholds then collected
    all through the batch (bench/RESULTS.md, tenth session): flush and serve's lander raise them."""
    import gc

    from loader.lander import GC_THRESHOLDS

    before = gc.get_threshold()
    settings = staged_source(tmp_path, "Collected", 5)
    gc.set_threshold(700, 10, 10)  # Python's own (an earlier flush in this process raised them)
    try:
        assert service.flush(settings) == 5
        assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        gc.set_threshold(*before)
    from tests.procs import loader_env

    done = subprocess.run(
        [sys.executable, "-c", LANDER_ALLOCATOR + "import gc; print(*gc.get_threshold())"],
        env=loader_env(tmp_path / "serve-data"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[1:] == [str(n) for n in GC_THRESHOLDS]


LANDER_ALLOCATOR = """
import threading
import pyarrow as pa
from loader.server import lander_loop
from loader.settings import Settings
stop = threading.Event()
stop.set()  # set up, then stop at once
lander_loop(Settings.from_env(), stop)
print(pa.default_memory_pool().backend_name)
"""


def test_serves_lander_takes_arrow_buffers_from_jemalloc(tmp_path: Path) -> None:
    """serve's long-running lander peaked 10-15 MB lower with pyarrow's jemalloc than with its default
    mimalloc (bench/RESULTS.md, ninth session)."""
    from tests.procs import loader_env

    env = loader_env(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-c", LANDER_ALLOCATOR], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["jemalloc"]


LANDER_MEMORY = """
import threading
from sqlalchemy import text
import loader.server as server
import loader.service as service
from loader.settings import Settings
seen = []
make_lander = service.make_lander
def spy(settings, staging, warehouse, **kwargs):
    with warehouse.connect() as conn:
        seen.append(conn.execute(text("SELECT current_setting('memory_limit')")).scalar())
    return make_lander(settings, staging, warehouse, **kwargs)
service.make_lander = spy  # the lander's process imports it when it starts
stop = threading.Event()
stop.set()  # set up, then stop at once
server.lander_loop(Settings.from_env(), stop)
print(seen)
"""


def test_landers_keep_a_bounded_part_of_the_warehouse_in_memory(tmp_path: Path) -> None:
    """DuckDB's buffer pool keeps what a connection reads, up to 80% of the machine by default, and
    serve's lander holds the file across batches: its memory grew with the warehouse. serve's lander
    keeps at most 32 MB, the one-shot writers (flush, backfill, replay) 256 MB."""
    from tests.procs import loader_env

    env = loader_env(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-c", LANDER_MEMORY], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[0] == "['30.5 MiB']"  # 32 MB
    settings = staged_source(tmp_path, "Bounded", 5)
    with service.services(settings) as (_, warehouse), warehouse.connect() as conn:
        assert conn.execute(text("SELECT current_setting('memory_limit')")).scalar() == "244.1 MiB"


def test_a_lander_whose_memory_cap_is_too_small_gets_more_and_lands(tmp_path: Path) -> None:
    """A batch pins memory for every column of every table it appends to: one that touched every event
    table failed to commit under serve's 32 MB cap, again at every retry, and landing stalled. The cap
    is a bound on what is kept, not on what a batch needs: it is raised until the batch lands."""
    settings = staged_source(tmp_path, "Cramped", 1500, LOADER_BATCH_SIZE="1500")
    with service.services(settings, duckdb_threads=1, duckdb_memory_mb=4) as (store, warehouse):
        lander = service.make_lander(settings, store, warehouse, duckdb_threads=1, parse_ahead=False)
        try:
            assert lander.run_once().landed == 1500  # at the first try: the raises are no failures
        finally:
            lander.close()
        with warehouse.connect() as conn:
            raised = conn.execute(text("SELECT current_setting('memory_limit')")).scalar()
    assert rows(settings, "SELECT count(*) AS n, count(DISTINCT event) AS e FROM cramped.tracks") == [
        {"n": 1500, "e": len(EVENT_NAMES)}  # every event table but unknown_event and the preferences'
    ]
    assert raised != "3.8 MiB"  # 4 MB: every connection the engine opens now has the raised cap


def test_only_duckdb_memory_errors_count_as_needing_more_memory() -> None:
    """DuckDB's conversion errors quote the value that failed: a body that says "Out of Memory Error"
    must not pass for one (the SQL path would then not fall back to the Python path, and the lander would
    raise the cap and land the batch again, and again). Told apart by the exception's type."""
    import duckdb
    from sqlalchemy.exc import OperationalError

    con = duckdb.connect()
    with pytest.raises(duckdb.ConversionException) as quoted:
        con.execute("SELECT 'Out of Memory Error: could not allocate block'::INT")
    assert not is_out_of_memory(quoted.value)
    con.execute("SET memory_limit = '2MB'")
    con.execute("SET temp_directory = ''")
    with pytest.raises(duckdb.OutOfMemoryException) as real:
        con.execute("CREATE TABLE t AS SELECT repeat('x', 100) || range AS s FROM range(200000)")
    assert is_out_of_memory(real.value)
    try:  # as it reaches the lander: SQLAlchemy's error, then the rollback's, with it as their context
        try:
            raise OperationalError("INSERT", {}, real.value) from real.value
        except OperationalError:
            raise RuntimeError("Current transaction is aborted (please ROLLBACK)")  # noqa: B904
    except RuntimeError as surfaced:
        assert is_out_of_memory(surfaced)
    first, second = ValueError("a"), ValueError("b")
    first.__context__, second.__context__ = second, first
    assert not is_out_of_memory(first)  # a chain that loops back ends the search


def test_a_batch_committed_but_not_marked_lands_once(tmp_path: Path, warehouse_url: str) -> None:
    """A lander dies after the warehouse commit and before marking: the next one lands nothing twice."""
    settings = staged_source(tmp_path, "Crash Window", 50, LOADER_WAREHOUSE_URL=warehouse_url)
    with service.services(settings) as (store, warehouse):
        lander = service.make_lander(settings, store, warehouse)
        token = claim_token()
        claimed = store.claim(30, 60, token)
        sources = lander._source_map(claimed)
        lander.writer.land_staged(claimed, sources, datetime.now(UTC))  # committed, never marked
        lander.writer.release()
        store.release(token)  # what the lease's expiry (or a restart on this host) does
        assert lander.drain() == 20
        lander.close()
    counted = rows(settings, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM crash_window.tracks")
    assert counted == [{"n": 50, "d": 50}]


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_epoch_ms_matches_datetime(seconds: float) -> None:
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    cut = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    assert epoch_ms(seconds) == (cut - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def test_lander_rests_in_proportion_to_its_last_batch() -> None:
    from loader.server import REST_MAX_S, rest_after

    assert rest_after(0.0, 0.1) == 0.1  # idle: the flush interval
    assert rest_after(0.08, 0.1) == pytest.approx(0.16)  # twice the batch
    assert rest_after(5.0, 0.1) == REST_MAX_S  # never longer than the cap, so freshness stays bounded


def test_a_backlog_lands_once_with_the_next_batch_claimed_ahead(tmp_path: Path) -> None:
    """Batches of 10 over 35 bodies (the first, an eighth of a batch: one): each full batch has the next
    one claimed while it lands. A failed landing gives both its own claim and the one taken ahead back at
    once (no wait for the lease)."""
    settings = staged_source(tmp_path, "Ahead", 35, LOADER_BATCH_SIZE="10")
    with service.services(settings) as (store, warehouse):
        lander = service.make_lander(settings, store, warehouse)
        real = lander.writer.land_staged
        calls = {"n": 0}

        def failing_second(*args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("warehouse went away")
            return real(*args, **kwargs)

        lander.writer.land_staged = failing_second  # type: ignore[method-assign]
        assert lander.run_once().landed == 1
        with pytest.raises(TransientError):
            lander.run_once()
        lander.settle()
        assert store.pending_count() == 34
        probe = claim_token()
        assert len(store.claim(100, 60, probe)) == 34  # nothing left claimed by the failed run
        store.release(probe)
        lander.close()
    assert service.flush(settings) == 34
    counted = rows(settings, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM ahead.tracks")
    assert counted == [{"n": 35, "d": 35}]
    with service.services(settings) as (store, _):
        assert store.pending_count() == 0


@pytest.mark.parametrize("ahead", [True, False])
def test_a_backlog_is_parsed_ahead_on_the_helper_thread_when_asked(tmp_path: Path, ahead: bool) -> None:
    """Batches of 10 over 35 bodies. With parse_ahead (flush), the first batch is small (an eighth of a
    batch: its parse is the one nothing overlaps) and parsed as it lands, and each next one is claimed
    and parsed on the helper thread while the one before lands, reaching the landing parsed. Without
    (serve: one core for the lander), every batch is full size and parsed as it lands."""
    settings = staged_source(tmp_path, "Parsed Ahead", 35, LOADER_BATCH_SIZE="10")
    with service.services(settings) as (store, warehouse):
        lander = service.make_lander(settings, store, warehouse, parse_ahead=ahead)
        writer = lander.writer
        parse, land = writer.parse, writer.land_staged
        parsed_on: list[str] = []
        landed_with: list[bool] = []

        def recording_parse(*args: Any) -> Any:
            parsed_on.append(threading.current_thread().name)
            return parse(*args)

        def recording_land(claimed: Any, sources: Any, uuid_ts: Any, parsed: Any = None) -> Any:
            landed_with.append(parsed is not None)
            return land(claimed, sources, uuid_ts, parsed)

        source_map = lander._source_map
        maps_made: list[int] = []

        def counting_source_map(claimed: Any) -> Any:
            maps_made.append(len(claimed))
            return source_map(claimed)

        writer.parse = recording_parse  # type: ignore[method-assign]
        writer.land_staged = recording_land  # type: ignore[method-assign]
        lander._source_map = counting_source_map  # type: ignore[method-assign]
        assert lander.drain() == 35
        lander.close()
    main = threading.main_thread().name
    if ahead:  # the first batch's parse may start after the helper's of the second (it opens the file first)
        on_helper = [name for name in parsed_on if name.startswith("lander-staging")]
        assert len(parsed_on) == 5 and parsed_on.count(main) == 1 and len(on_helper) == 4
        assert landed_with == [False, True, True, True, True]
        assert sorted(maps_made) == [1, 4, 10, 10, 10]
    else:
        assert parsed_on == [main] * 4
        assert landed_with == [False] * 4
        assert sorted(maps_made) == [5, 10, 10, 10]
    counted = rows(settings, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM parsed_ahead.tracks")
    assert counted == [{"n": 35, "d": 35}]


def test_a_backlog_lands_once_when_parsing_ahead_fails(tmp_path: Path, monkeypatch: Any) -> None:
    """The next batch is parsed on the helper thread while this one lands; when that parse fails (a body
    nobody foresaw), the batch still lands, through the Python transform, and only once."""
    from loader.warehouse.writer import DuckDBSqlWriter

    settings = staged_source(tmp_path, "Parse Fails", 35, LOADER_BATCH_SIZE="10")

    def broken(*_: Any) -> Any:
        raise ValueError("unforeseen body")

    monkeypatch.setattr(DuckDBSqlWriter, "parse", broken)
    assert service.flush(settings) == 35
    counted = rows(settings, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM parse_fails.tracks")
    assert counted == [{"n": 35, "d": 35}]


def test_only_the_lander_commits_staging_without_fsync(tmp_path: Path) -> None:
    """The gateway's appends and the CLI's writes fsync (synchronous=FULL, 2); the lander's claims and
    marks (NORMAL, 1) need not, since one lost re-lands a batch that adds nothing. OFF is refused."""
    settings = make_settings(tmp_path)

    def synchronous(**kw: Any) -> int:
        with service.services(settings, **kw) as (store, _), store.engine.connect() as conn:
            return int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())

    assert synchronous() == 2
    assert synchronous(staging_synchronous="NORMAL") == 1
    with pytest.raises(ValueError):
        synchronous(staging_synchronous="OFF")


def test_batches_in_a_row_land_on_the_one_connection_the_lander_keeps(tmp_path: Path) -> None:
    """Opening a DuckDB file, and checkpointing it as it closes, cost ~100 ms each: a run of batches
    opens the warehouse once (the first batch lands on the connection that is then kept), and an empty
    claim lets it go."""
    from sqlalchemy import event

    settings = staged_source(tmp_path, "Held", 30, LOADER_BATCH_SIZE="10")
    with service.services(settings) as (store, warehouse):
        opened: list[int] = []
        event.listen(warehouse, "connect", lambda *_: opened.append(1))
        lander = service.make_lander(settings, store, warehouse)
        lander.writer.hold_max_s = 60.0
        try:
            assert [lander.run_once().landed for _ in range(5)] == [1, 10, 10, 9, 0]
            assert len(opened) == 1
            assert lander.writer._held is None  # the empty claim let the file go
        finally:
            lander.close()
    assert rows(settings, "SELECT count(DISTINCT id) AS n FROM held.tracks") == [{"n": 30}]


# Stages five bodies every 5 ms for up to a minute, from a process of its own (a server's gateway).
KEEP_STAGING = """
import json, sys, time
from loader.staging import Incoming, Staging
store = Staging(sys.argv[1])
for group in range(12000):
    body = json.dumps({"event_id": f"LATE{group}", "object_type": "email", "metric": "sent"}).encode()
    store.append([Incoming(sys.argv[2], f"late-{group}-{i}", time.time(), None, body) for i in range(5)])
    if group == 0:
        print("staging", flush=True)
    time.sleep(0.005)
"""


def test_flush_lands_what_was_staged_before_it_while_more_keeps_coming(tmp_path: Path) -> None:
    """`loader flush` beside a busy server: it lands everything staged before it started and returns,
    though bodies keep arriving (before, it landed the newcomers too, and returned only when they
    stopped)."""
    settings = staged_source(tmp_path, "Trickle", 200, LOADER_BATCH_SIZE="50")
    source_id = service.find_source(Staging(settings.staging_url), "Trickle").id
    stager = subprocess.Popen(
        [sys.executable, "-c", KEEP_STAGING, settings.staging_url, source_id],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert stager.stdout is not None and stager.stdout.readline().strip() == "staging"
        service.flush(settings)
        still_coming = stager.poll() is None
    finally:
        stager.kill()
        stager.wait()
    assert still_coming, "flush returned only when bodies stopped coming"
    ids = [f"id-{i:03d}" for i in range(200)]
    with service.services(settings) as (store, _):
        left = {k: v for k, v in states(store).items() if k.startswith("id-")}
        archived = store.seen_among(ids)  # flush moves what it landed to the archive as it ends
    assert set(left.values()) <= {LANDED} and set(left) | archived == set(ids)
    service.flush(settings)
    counted = rows(settings, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM trickle.tracks")
    assert counted[0]["n"] == counted[0]["d"]
    with service.services(settings) as (store, _):
        assert store.pending_count() == 0


def test_flush_waits_for_bodies_another_lander_holds(tmp_path: Path) -> None:
    """Bodies staged before the flush but claimed by another lander are landed before flush returns:
    here that lander never lands them, so flush takes them when the claim's lease ends."""
    settings = staged_source(tmp_path, "Held Elsewhere", 30)
    with service.services(settings) as (store, _):
        assert len(store.claim(10, 1.0, claim_token())) == 10  # a live lander's claim (this process)
    assert service.flush(settings) == 30
    assert rows(settings, "SELECT count(*) AS n FROM held_elsewhere.tracks") == [{"n": 30}]
