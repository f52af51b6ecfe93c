"""`make bench`: our speed against the ceiling of our own stack and against dlt, in one run.

Prints a table, then (last line) one JSON object. BENCH_QUICK=1 makes a short run (under 3 minutes).
A benchmark, not a test: it never fails a build; a figure it cannot measure is reported as null.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadgen import fixed_rate

from loader.settings import Settings

QUICK = os.environ.get("BENCH_QUICK") == "1"
HTTP_SECONDS = 4 if QUICK else 10
HTTP_ROUNDS = 1 if QUICK else 2
RATE_SECONDS = 8 if QUICK else 20
LAND_EVENTS = 30_000 if QUICK else 100_000
DLT_QUICK_SAMPLE = 5_000
KEY = "bench-write-key-0001"
PY = sys.executable

TEMPLATE = (
    '{"data":{"action_id":36,"broadcast_id":9,"customer_id":"0200102","identifiers":{"id":"0200102",'
    '"email":"test@example.com","cio_id":"d9c106000001"},"delivery_id":"RPILAgABcRhIBqSp7kiPekGBIeVh%s",'
    '"href":"http://google.com","link_id":1,"recipient":"test@example.com","subject":"hello"},'
    '"event_id":"%s","object_type":"email","metric":"%s","timestamp":1585254348}'
)
METRICS = ["sent", "delivered", "opened", "clicked", "bounced", "converted"]


def body(i: int, prefix: str = "E") -> bytes:
    return (TEMPLATE % (i // 4, f"{prefix}{i:09d}", METRICS[i % len(METRICS)])).encode()


def any_type_body(i: int, prefix: str) -> bytes:
    """Every event type Customer.io sends, in turn: each batch then writes to every event table."""
    from loader.catalogue import EVENT_NAMES

    pairs = sorted(EVENT_NAMES)
    object_type, metric = pairs[i % len(pairs)]
    raw = TEMPLATE % (i // 4, f"{prefix}{i:09d}", metric)
    return raw.replace('"object_type":"email"', f'"object_type":"{object_type}"').encode()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


class RssSampler(threading.Thread):
    """Samples the resident memory of a process and its children (the lander)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self.stop_flag = pid, 0, False
        self.peak_parts: dict[str, int] = {}

    def tree(self) -> list[int]:
        """The process and its descendants, whichever thread started them (serve restarts its lander
        from a thread of its own; Linux lists children per thread)."""
        pids, frontier = [self.pid], [self.pid]
        while frontier:
            parent = frontier.pop()
            children: list[int] = []
            for task in Path(f"/proc/{parent}/task").glob("*"):
                with contextlib.suppress(OSError):  # the thread or process ended meanwhile
                    children += [int(c) for c in (task / "children").read_text().split()]
            pids += children
            frontier += children
        return pids

    def run(self) -> None:
        while not self.stop_flag:
            parts: dict[str, int] = {}
            for pid in self.tree():
                try:
                    role = role_of(Path(f"/proc/{pid}/cmdline").read_text())
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            parts[role] = parts.get(role, 0) + int(line.split()[1])
                except OSError:
                    pass
            if sum(parts.values()) > self.peak_kb:
                self.peak_kb, self.peak_parts = sum(parts.values()), parts
            time.sleep(0.1)


def role_of(cmdline: str) -> str:
    """Which of serve's processes a command line is (the sampler reports the peak by role)."""
    for role in ("lander", "worker"):
        if role in cmdline:
            return role
    return "serve" if "serve" in cmdline else "other"


def ensure_wrk() -> str | None:
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True)
    return shutil.which("wrk")


WRK_SCRIPT = """
local template = %s
local prefix = "%s"
local counter = 0
local metrics = {"sent", "delivered", "opened", "clicked", "bounced", "converted"}
request = function()
  counter = counter + 1
  local metric = metrics[(counter %% 6) + 1]
  local b = string.format(template, tostring(math.floor(counter / 4)), prefix .. counter, metric)
  return wrk.format("POST", "/v1/webhook?writeKey=%s", {["Content-Type"] = "application/json"}, b)
end
"""


def wrk_rps(wrk: str, port: int, tag: str, seconds: int) -> float:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    lua_template = json.dumps(TEMPLATE)
    script.write_text(WRK_SCRIPT % (lua_template, f"{tag}{random.randrange(10**9)}-", KEY))
    out = subprocess.run(
        [wrk, "-t1", "-c32", f"-d{seconds}s", "-s", str(script), f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    script.unlink()
    if "Non-2xx" in out or "error" in out.lower():
        raise RuntimeError(f"wrk saw failed requests: {out}")
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError(f"wrk gave no rate: {out}")


def start_gateway(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [PY, "-m", "loader", "serve", "--port", str(port), "--admin-port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc


def start_bare(port: int) -> subprocess.Popen[bytes]:
    cwd = str(Path(__file__).resolve().parent)
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "uvicorn",
            "bare_app:app",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--timeout-keep-alive",
            "5",
        ],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def serve_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment for a `loader serve` of our own on a new data dir, with the Bench source added."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADER_")}
    env.update(LOADER_DATA_DIR=str(data_dir), LOADER_LOG_JSON="0", **settings)
    add = [PY, "-m", "loader", "source", "add", "Bench", "--write-key", KEY]
    subprocess.run(add, env=env, check=True, capture_output=True)
    return env


def bench_http(work: Path, results: dict[str, Any]) -> None:
    # Freshness is read from staging's landed_at: the bodies stay there (not archived) for the run.
    env = serve_env(work / "serve", LOADER_ARCHIVE_EVERY_S="86400")
    wrk = ensure_wrk()
    gw_port, bare_port = free_port(), free_port()
    gateway = start_gateway(env, gw_port)
    sampler = RssSampler(gateway.pid)
    sampler.start()
    try:
        if wrk:
            bare_runs, gw_runs = [], []
            for r in range(HTTP_ROUNDS):
                bare = start_bare(bare_port)
                try:
                    bare_runs.append(wrk_rps(wrk, bare_port, f"b{r}", HTTP_SECONDS))
                finally:
                    stop(bare)
                gw_runs.append(wrk_rps(wrk, gw_port, f"g{r}", HTTP_SECONDS))
                time.sleep(2)  # let the lander catch up between rounds
            results["bare_rps"] = round(statistics.median(bare_runs))
            results["gateway_rps"] = round(statistics.median(gw_runs))
            results["gateway_vs_bare"] = round(results["gateway_rps"] / results["bare_rps"], 3)
            results["load_tool"] = "wrk -t1 -c32 (unique event ids per request)"
        # First while the lander still lands wrk's backlog (its batches write tens of MB, and the
        # gateway's fsyncs queue behind them), then in the steady state the target is about.
        draining = steady_rate(gw_port, f"D{random.randrange(10**9)}-")
        results["ack_p99_draining_ms"] = round(pct(draining[0], 0.99) * 1000, 2)
        results["backlog_drained_s"] = wait_drained(work / "serve")
        # The floor under the ack figures: the bare route, same generator, same rate, the machine as quiet.
        bare = start_bare(bare_port)
        try:
            floor, _ = steady_rate(bare_port, f"F{random.randrange(10**9)}-")
        finally:
            stop(bare)
        results["bare_ack_p50_ms"] = round(pct(floor, 0.50) * 1000, 2)
        results["bare_ack_p99_ms"] = round(pct(floor, 0.99) * 1000, 2)
        prefix = f"R{random.randrange(10**9)}-"
        lat, errors = steady_rate(gw_port, prefix)
        results["ack_p50_ms"] = round(pct(lat, 0.50) * 1000, 2)
        results["ack_p99_ms"] = round(pct(lat, 0.99) * 1000, 2)
        results["ack_errors"] = errors + draining[1]
        time.sleep(3)
        results["freshness_p50_s"], results["freshness_p99_s"] = freshness(work / "serve", prefix)
        every = f"A{random.randrange(10**9)}-"
        _, errors = steady_rate(gw_port, every, any_type_body)
        results["ack_errors"] += errors
        time.sleep(3)
        fresh = freshness(work / "serve", every)
        results["freshness_all_types_p50_s"], results["freshness_all_types_p99_s"] = fresh
    finally:
        stop(gateway)
        sampler.stop_flag = True
        sampler.join()
    results["peak_rss_mb"] = round(sampler.peak_kb / 1024, 1)
    results["peak_rss_by_process_mb"] = {k: round(v / 1024, 1) for k, v in sorted(sampler.peak_parts.items())}


def steady_rate(port: int, prefix: str, make: Callable[[int, str], bytes] = body) -> tuple[list[float], int]:
    """Latencies of RATE_SECONDS of webhooks at a fixed 1,000 requests/s, and the failed count."""
    lat, _, errors = asyncio.run(
        fixed_rate(
            "127.0.0.1",
            port,
            f"/v1/webhook?writeKey={KEY}",
            lambda i: make(i, prefix),
            rate=1000,
            seconds=RATE_SECONDS,
        )
    )
    return lat, errors


def wait_drained(data_dir: Path, timeout_s: float = 120.0) -> float:
    """Seconds until staging has nothing pending (the lander caught up)."""
    import sqlite3

    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        conn = sqlite3.connect(data_dir / "staging.sqlite3")
        pending = conn.execute("SELECT count(*) FROM loader_staged WHERE state = 0").fetchone()[0]
        conn.close()
        if pending == 0:
            break
        time.sleep(0.2)
    return round(time.monotonic() - started, 1)


def freshness(data_dir: Path, prefix: str) -> tuple[float | None, float | None]:
    """From the 200 (staging commit) to the row being visible (marked landed right after the warehouse
    commit), for the events of the fixed-rate run."""
    import sqlite3

    conn = sqlite3.connect(data_dir / "staging.sqlite3")
    rows = conn.execute(
        "SELECT landed_at - received_at FROM loader_staged "
        "WHERE landed_at IS NOT NULL AND CAST(body AS TEXT) LIKE ?",
        (f'%"event_id":"{prefix}%',),
    ).fetchall()
    conn.close()
    values = [r[0] for r in rows]
    if not values:
        return None, None
    return round(pct(values, 0.50), 3), round(pct(values, 0.99), 3)


# An analyst's own DuckDB process, attached with `loader attach-sql`'s output, in one of the three ways
# #21 describes: a dashboard polling the new rows (it measures: the first time its session sees each event,
# against the event's received_at, which the gateway stamps before the 200), a BI tool re-reading a funnel
# view every second on one held connection, a notebook holding transactions 10 s long.
ANALYST = """
import duckdb, json, os, sys, time
attach, mode, expected, stop, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
con = duckdb.connect()
con.execute(attach)
first_seen, errors, newest = {}, [], 0.0
while not os.path.exists(stop):
    try:
        if mode == "poll":
            # Rows received since a little before the newest seen: a batch can land a row received
            # just before one an earlier batch landed.
            rows = con.execute(
                "SELECT id, epoch(received_at) FROM warehouse.bench.tracks WHERE received_at >= "
                "to_timestamp(?)", [newest - 10]
            ).fetchall()
            now = time.time()
            for row_id, received in rows:
                first_seen.setdefault(row_id, now - received)
                newest = max(newest, received)
            open(out + ".ready", "w").close()
            if len(first_seen) >= expected:
                break
        elif mode == "bi":
            con.execute("SELECT * FROM warehouse.bench.email_funnel_daily").fetchall()
            open(out + ".ready", "w").close()
        else:
            con.execute("BEGIN TRANSACTION")
            con.execute("SELECT count(*) FROM warehouse.bench.tracks").fetchall()
            open(out + ".ready", "w").close()
            time.sleep(10)
            con.execute("COMMIT")
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    time.sleep({"poll": 0.1, "bi": 1.0, "transaction": 0.0}[mode])
json.dump({"lags": list(first_seen.values()), "errors": errors}, open(out, "w"))
"""


def bench_analyst_lag(work: Path, results: dict[str, Any]) -> None:
    """#21's item 3: how far behind the 200s an analyst's own session is, at 400 events/s of every type,
    while two other analysts hold a connection and long transactions."""
    data = work / "analysts"
    env = serve_env(data)
    attach = subprocess.run(
        [PY, "-m", "loader", "attach-sql"], env=env, check=True, capture_output=True, text=True
    ).stdout
    rate, seconds = 400, RATE_SECONDS
    expected, stop_file = rate * seconds, data / "analysts.stop"
    port = free_port()
    gateway = start_gateway(env, port)
    outs = {mode: data / f"analyst-{mode}.json" for mode in ("poll", "bi", "transaction")}
    analysts = {
        mode: subprocess.Popen([PY, "-c", ANALYST, attach, mode, str(expected), str(stop_file), str(out)])
        for mode, out in outs.items()
    }
    try:
        deadline = time.monotonic() + 60
        while not all(Path(f"{out}.ready").exists() for out in outs.values()):
            if time.monotonic() > deadline:
                raise RuntimeError("the analysts never opened their sessions")
            time.sleep(0.1)
        prefix = f"L{random.randrange(10**9)}-"
        _, _, errors = asyncio.run(
            fixed_rate(
                "127.0.0.1",
                port,
                f"/v1/webhook?writeKey={KEY}",
                lambda i: any_type_body(i, prefix),
                rate=rate,
                seconds=seconds,
            )
        )
        analysts["poll"].wait(timeout=120)
    finally:
        stop_file.touch()
        for proc in analysts.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        stop(gateway)
    seen = {mode: json.loads(out.read_text()) for mode, out in outs.items() if out.exists()}
    lags = seen.get("poll", {}).get("lags", [])
    results["analyst_events"] = len(lags)
    results["analyst_errors"] = errors + sum(len(s["errors"]) for s in seen.values())
    if lags:
        results["analyst_lag_p50_s"] = round(pct(lags, 0.50), 3)
        results["analyst_lag_p99_s"] = round(pct(lags, 0.99), 3)
        results["analyst_lag_max_s"] = round(max(lags), 3)


WAREHOUSES = {"": "ducklake:///{dir}/lake.sqlite", "file_": "duckdb:///{dir}/warehouse.duckdb"}


def bench_landing(work: Path, results: dict[str, Any], tag: str = "") -> list[bytes]:
    """Landing into a warehouse (the lake: keys as before; the DuckDB file: keys with `file_`), against
    DuckDB's own insert of the same final rows, ready as Arrow tables, into the same kind of warehouse."""
    from loader import service
    from loader.batches import build_batches
    from loader.staging import Incoming
    from loader.staging.sources import load_sources
    from loader.transform import event_key, id_of_key, message_id
    from loader.warehouse.engine import make_warehouse_engine
    from loader.warehouse.migrate import upgrade

    land_dir = work / f"land{tag}"
    env = {"LOADER_DATA_DIR": str(land_dir), "LOADER_WAREHOUSE_URL": WAREHOUSES[tag].format(dir=land_dir)}
    settings = Settings.from_env(env, env_file=None)
    added = service.source_add(settings, "Land", write_key=KEY)
    bodies = [body(i, "L") for i in range(LAND_EVENTS)]
    with service.services(settings, staging_synchronous="NORMAL") as (staging, warehouse):  # as flush
        now = time.time()
        for start in range(0, len(bodies), 5000):
            chunk = bodies[start : start + 5000]
            staging.append(
                [
                    Incoming(
                        added.source.id,
                        id_of_key(key := event_key(added.source.id, json.loads(b), b)),
                        now,
                        "127.0.0.1",
                        b,
                        event_key=key,
                    )
                    for b in chunk
                ]
            )
        service.tune_for_flush()  # the process set as `loader flush` sets it
        lander = service.make_lander(settings, staging, warehouse)
        started = time.perf_counter()
        landed = lander.drain()
        elapsed = time.perf_counter() - started
        lander.close()
        assert landed == LAND_EVENTS, landed
        results[f"land_{tag}events_per_s"] = round(LAND_EVENTS / elapsed)
        results["land_batch_size"] = settings.batch_size
        sources = {s.id: s for s in load_sources(staging)}
    # The ceiling: the same final rows, ready as Arrow tables, bulk-inserted by DuckDB itself.
    from loader.staging import Staged

    staged = [
        Staged(i, added.source.id, message_id(added.source.id, json.loads(b), b), now, "127.0.0.1", b, False)
        for i, b in enumerate(bodies)
    ]
    batch = build_batches(staged, sources).batches["land"]
    raw_dir = work / f"raw{tag}"
    engine = make_warehouse_engine(WAREHOUSES[tag].format(dir=raw_dir))
    upgrade(engine, "land")
    from loader.warehouse.arrow import to_arrow
    from loader.warehouse.tables import column_kinds

    uuid_ts = {"uuid_ts": None}
    tables = {"tracks": batch.tracks, **batch.events}
    ready = {
        t: to_arrow(t, [n for n, _ in column_kinds(t)], [{**r, **uuid_ts} for r in rs])
        for t, rs in tables.items()
    }
    started = time.perf_counter()
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        for table, arrow in ready.items():
            raw.register("_ready", arrow)
            cols = ", ".join(f'"{n}"' for n in arrow.column_names)
            raw.execute(f'INSERT INTO "land"."{table}" ({cols}) SELECT {cols} FROM _ready')
            raw.unregister("_ready")
    elapsed = time.perf_counter() - started
    engine.dispose()
    results[f"raw_{tag}events_per_s"] = round(LAND_EVENTS / elapsed)
    results[f"land_{tag}vs_raw"] = round(
        results[f"land_{tag}events_per_s"] / results[f"raw_{tag}events_per_s"], 3
    )
    return bodies


MAINT_BATCHES = 600 if QUICK else 3600
MAINT_EVERY = 30  # batches between maintenance runs: serve's 30 s at one small batch a second


def bench_maintenance(work: Path, results: dict[str, Any]) -> None:
    """Many small batches into the lake through the real lander, maintenance every MAINT_EVERY batches
    (replaced files kept 1 s, not 600: the run is compressed in time): the files a table has, live and
    on disk, and whether landing and querying get slower as batches pile up."""
    from loader import service
    from loader.backfill import backfill
    from loader.staging import Incoming
    from loader.transform import event_key, id_of_key
    from loader.warehouse.engine import make_warehouse_engine
    from loader.warehouse.maintenance import Maintenance

    settings = Settings.from_env({"LOADER_DATA_DIR": str(work / "maint")}, env_file=None)
    added = service.source_add(settings, "Maint", write_key=KEY)
    land_ms: list[float] = []
    query_ms: list[float] = []
    rss_mb: list[float] = []
    with service.services(settings, staging_synchronous="NORMAL") as (staging, warehouse):
        lander = service.make_lander(settings, staging, warehouse, parse_ahead=False)
        maintenance = Maintenance(warehouse, every_s=0.0, keep_s=1.0)
        for n in range(MAINT_BATCHES):
            chunk = [body(n * 6 + i, "M") for i in range(6)]
            keys = [event_key(added.source.id, json.loads(b), b) for b in chunk]
            staging.append(
                [
                    Incoming(added.source.id, id_of_key(k), time.time(), "127.0.0.1", b, event_key=k)
                    for k, b in zip(keys, chunk, strict=True)
                ]
            )
            started = time.perf_counter()
            lander.run_once()
            lander.settle()
            land_ms.append((time.perf_counter() - started) * 1000)
            if (n + 1) % MAINT_EVERY == 0:
                maintenance.run(lander.writer)
            if n % 100 == 0 or n == MAINT_BATCHES - 1:
                query_ms.append(maint_query_ms(warehouse, "maint"))
                rss_mb.append(own_rss_mb())
        lander.close()
        with warehouse.connect() as conn:
            live = conn.exec_driver_sql(
                "SELECT max(n) FROM (SELECT table_id, count(*) AS n FROM "
                "__ducklake_metadata_warehouse.ducklake_data_file WHERE end_snapshot IS NULL GROUP BY 1)"
            ).scalar()
    tables = work / "maint" / "lake.files" / "maint"
    on_disk = max(len(list(t.glob("*.parquet"))) for t in tables.iterdir())
    tenth = max(1, len(land_ms) // 10)
    results["maint_batches"] = MAINT_BATCHES
    results["maint_live_files_per_table_max"] = live
    results["maint_disk_files_per_table_max"] = on_disk
    results["maint_land_ms_first_tenth"] = round(statistics.median(land_ms[:tenth]), 1)
    results["maint_land_ms_last_tenth"] = round(statistics.median(land_ms[-tenth:]), 1)
    results["maint_query_ms_first"] = round(query_ms[0], 1)
    results["maint_query_ms_last"] = round(query_ms[-1], 1)
    # This process is the lander here: its memory after the first 100 batches and at the end.
    results["maint_rss_mb"] = f"{rss_mb[1] if len(rss_mb) > 1 else rss_mb[0]} / {rss_mb[-1]}"
    # The same rows landed at once into a new lake, one file a table: what the last query would take
    # were the small batches and their maintenance to leave no trace.
    ref = Settings.from_env({"LOADER_DATA_DIR": str(work / "maint-ref")}, env_file=None)
    service.source_add(ref, "Maint", write_key=KEY)
    file = work / "maint-bodies.jsonl"
    file.write_bytes(b"\n".join(body(i, "M") for i in range(MAINT_BATCHES * 6)) + b"\n")
    backfill(ref, str(file), "Maint", progress=False)
    results["maint_query_ms_same_rows_at_once"] = round(
        maint_query_ms(make_warehouse_engine(ref.warehouse_url), "maint"), 1
    )


def own_rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return round(int(status.split("VmRSS:")[1].split()[0]) / 1024, 1)


def maint_query_ms(warehouse: Any, schema: str) -> float:
    """The median of three runs of a row count and a funnel view, in a new connection each."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        with warehouse.connect() as conn:
            conn.exec_driver_sql(f"SELECT count(*), count(DISTINCT id) FROM {schema}.tracks").fetchall()
            conn.exec_driver_sql(f"SELECT * FROM {schema}.email_funnel_daily").fetchall()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


YEAR_PER_DAY = 100 if QUICK else 1000


def bench_year(work: Path, results: dict[str, Any]) -> None:
    """A year of every channel's deliveries in the lake (bench/year.py): how long the dashboard takes to
    answer (its default page, and one channel and message over the whole year), and each §8 view."""
    from year import year_bodies

    from loader import service
    from loader.gateway.dashboard import render
    from loader.staging import Incoming
    from loader.transform import event_key, id_of_key
    from loader.warehouse.maintenance import Maintenance

    settings = Settings.from_env({"LOADER_DATA_DIR": str(work / "year")}, env_file=None)
    added = service.source_add(settings, "Year", write_key=KEY)
    with service.services(settings, staging_synchronous="NORMAL") as (staging, warehouse):
        chunk: list[Incoming] = []
        total = 0
        for raw in year_bodies(YEAR_PER_DAY):
            key = event_key(added.source.id, json.loads(raw), raw)
            chunk.append(
                Incoming(added.source.id, id_of_key(key), time.time(), "127.0.0.1", raw, event_key=key)
            )
            if len(chunk) == 5000:
                staging.append(chunk)
                total, chunk = total + len(chunk), []
        staging.append(chunk)
        total += len(chunk)
        service.tune_for_flush()
        lander = service.make_lander(settings, staging, warehouse)
        lander.drain()
        Maintenance(warehouse, every_s=0, keep_s=0).run(lander.writer)  # as serve's maintenance leaves it
        lander.close()
        pages = {
            "default": {},
            "message_year": {
                "channel": "push",
                "message": "3::::102",
                "from": "2024-01-01",
                "to": "2024-12-30",
            },
        }
        for name, params in pages.items():
            times = []
            for _ in range(3):
                started = time.perf_counter()
                render(settings, staging, params)
                times.append(time.perf_counter() - started)
            results[f"year_dashboard_{name}_s"] = round(statistics.median(times), 2)
    results["year_events"] = total
    for view in ("message_funnel", "message_funnel_by_message", "message_funnel_daily"):
        started = time.perf_counter()
        service.query(settings, f"SELECT count(*) FROM year.{view}")
        results[f"year_{view}_s"] = round(time.perf_counter() - started, 2)


ARCHIVE_EVENTS = 20_000 if QUICK else 100_000


def bench_archive(work: Path, results: dict[str, Any]) -> None:
    """A backfill of realistic bodies (tests/test_archive.py's: ULID ids, random delivery ids and
    addresses), then the bytes staging and the archive keep per event, against the bodies' own."""
    from loader import service
    from loader.backfill import backfill
    from tests.test_archive import disk_bytes, realistic_bodies

    settings = Settings.from_env({"LOADER_DATA_DIR": str(work / "archive")}, env_file=None)
    service.source_add(settings, "Archive", write_key=KEY)
    bodies = realistic_bodies(ARCHIVE_EVENTS)
    file = work / "archive-bodies.jsonl"
    file.write_bytes(b"\n".join(bodies) + b"\n")
    started = time.perf_counter()
    backfill(settings, str(file), "Archive", progress=False)
    results["archive_backfill_s"] = round(time.perf_counter() - started, 1)
    used = disk_bytes(settings)
    raw = sum(len(b) for b in bodies)
    results["archive_events"] = len(bodies)
    results["archive_body_bytes_per_event"] = round(raw / len(bodies))
    results["archive_staging_bytes_per_event"] = round(used["staging"] / len(bodies), 1)
    results["archive_archive_bytes_per_event"] = round(used["archive"] / len(bodies), 1)
    results["archive_kept_vs_bodies"] = round((used["staging"] + used["archive"]) / raw, 3)


def bench_batch_floor(work: Path, results: dict[str, Any]) -> None:
    """The floor under freshness with every event type: DuckDB's own insert of two ready rows into each
    event table of a lake and one commit (no parsing, no fsync of ours), the median of 8. An event
    that arrives as a batch begins waits for it and then for its own: p99 is at least about twice it."""
    import duckdb

    from loader import service
    from loader.backfill import backfill
    from loader.warehouse.attach import attach_sql

    settings = Settings.from_env({"LOADER_DATA_DIR": str(work / "floor")}, env_file=None)
    service.source_add(settings, "Floor", write_key=KEY)
    file = work / "floor-bodies.jsonl"
    file.write_bytes(b"\n".join(any_type_body(i, "F") for i in range(400)) + b"\n")
    backfill(settings, str(file), "Floor", progress=False)
    con = duckdb.connect()
    con.execute(attach_sql(settings.warehouse_url, read_only=False))
    tables = [
        t
        for (t,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'warehouse' "
            "AND schema_name = 'floor' AND estimated_size > 0"
        ).fetchall()
    ]
    for t in tables:
        con.execute(f"CREATE TEMP TABLE src_{t} AS SELECT * FROM warehouse.floor.{t} LIMIT 2")
    times = []
    for _ in range(8):
        started = time.perf_counter()
        con.execute("BEGIN")
        for t in tables:
            con.execute(f"INSERT INTO warehouse.floor.{t} SELECT * FROM src_{t}")
        con.execute("COMMIT")
        times.append(time.perf_counter() - started)
    con.close()
    results["batch_floor_tables"] = len(tables)
    results["batch_floor_s"] = round(statistics.median(times), 3)


def bench_dlt(work: Path, bodies: list[bytes], results: dict[str, Any]) -> None:
    try:
        import dlt
    except ImportError:
        results["dlt_events_per_s"] = None
        results["dlt_note"] = "dlt not installed (pip install -e '.[bench]')"
        return
    # Every format on every body; a quick run gives the slower two a sample (insert_values alone would
    # take ~10 s of 30,000) and takes the best from the full-size runs only.
    sizes = {"parquet": len(bodies), "jsonl": len(bodies), "insert_values": len(bodies)}
    if QUICK:
        sizes.update(jsonl=DLT_QUICK_SAMPLE, insert_values=DLT_QUICK_SAMPLE)
    per_format: dict[str, int] = {}
    os.environ["DLT_DATA_DIR"] = str(work / "dlt_home")
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    for fmt, size in sizes.items():
        pipeline = dlt.pipeline(
            pipeline_name=f"bench_{fmt}",
            destination=dlt.destinations.duckdb(str(work / f"dlt_{fmt}.duckdb")),
            dataset_name="cio",
            pipelines_dir=str(work / "dlt_pipelines"),
        )
        started = time.perf_counter()
        # From the same raw bodies as the lander (which parses them too), to committed rows.
        pipeline.run((json.loads(b) for b in bodies[:size]), table_name="events", loader_file_format=fmt)
        per_format[fmt] = round(size / (time.perf_counter() - started))
    full = {fmt: rate for fmt, rate in per_format.items() if sizes[fmt] == len(bodies)}
    results["dlt_events_per_s"] = max(full.values())
    results["dlt_best_format"] = max(full, key=lambda k: full[k])
    results["dlt_by_format"] = per_format
    results["dlt_bodies_by_format"] = sizes
    results["dlt_version"] = dlt.__version__
    results["land_vs_dlt"] = round(results["land_events_per_s"] / results["dlt_events_per_s"], 2)


def machine() -> dict[str, Any]:
    import duckdb
    import sqlalchemy
    import starlette
    import uvicorn

    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "starlette": starlette.__version__,
        "uvicorn": uvicorn.__version__,
        "platform": platform.platform(),
    }


def print_table(results: dict[str, Any]) -> None:
    rows = [
        ("bare Starlette route, req/s", "bare_rps", ""),
        ("our /v1/webhook (durable ack), req/s", "gateway_rps", ""),
        ("gateway / bare", "gateway_vs_bare", "target ≥ 0.6"),
        ("ack p50 at 1,000 req/s, ms", "ack_p50_ms", ""),
        ("ack p99 at 1,000 req/s, ms", "ack_p99_ms", "target ≤ 10"),
        ("ack p99 at 1,000 req/s while a backlog lands, ms", "ack_p99_draining_ms", ""),
        ("bare route's p50 / p99 at 1,000 req/s (the floor), ms", "bare_ack_ms", ""),
        ("landing into the lake, events/s (staged → rows)", "land_events_per_s", "target ≥ file's"),
        ("DuckDB's insert of ready Arrow rows into the lake, events/s", "raw_events_per_s", ""),
        ("landing / raw (lake)", "land_vs_raw", "target ≥ 0.5"),
        ("landing into a DuckDB file, events/s", "land_file_events_per_s", ""),
        ("DuckDB's insert of ready Arrow rows into a file, events/s", "raw_file_events_per_s", ""),
        ("landing / raw (file)", "land_file_vs_raw", ""),
        ("dlt (best format), events/s", "dlt_events_per_s", ""),
        ("landing / dlt", "land_vs_dlt", "target ≥ 8"),
        ("freshness p50 (200 → visible), s", "freshness_p50_s", ""),
        ("freshness p99, s", "freshness_p99_s", "target ≤ 1"),
        ("freshness p50, every event type, s", "freshness_all_types_p50_s", ""),
        ("freshness p99, every event type, s", "freshness_all_types_p99_s", "target ≤ 1"),
        ("an analyst's session behind the 200s at 400 events/s, every type: p50, s", "analyst_lag_p50_s", ""),
        ("the same, p99 / the slowest event, s", "analyst_lag_shown", "p99 ≤ ~2"),
        (
            "the floor: DuckDB's own commit of 2 rows in each event table, s",
            "batch_floor_s",
            "p99 ≥ about twice it",
        ),
        ("peak RSS of loader serve (+lander), MB", "peak_rss_mb", "target ≤ 300"),
        ("of which the lander / gateway processes / the socket holder, MB", "peak_rss_parts", ""),
        ("small batches landed, with maintenance every 30", "maint_batches", ""),
        ("live files per table, at most", "maint_live_files_per_table_max", "≤ 31"),
        ("files on disk per table, at most", "maint_disk_files_per_table_max", ""),
        ("a small batch, first / last tenth, ms (median)", "maint_land_ms", "not growing"),
        ("count + funnel query, first / last, ms", "maint_query_ms", "not growing"),
        ("the same query, the same rows landed at once, ms", "maint_query_ms_same_rows_at_once", ""),
        ("the lander's memory after 100 batches / at the end, MB", "maint_rss_mb", "not growing"),
        ("a year of every channel in the lake, events", "year_events", ""),
        ("dashboard on it: default page, s (median of 3)", "year_dashboard_default_s", ""),
        ("dashboard on it: one message over the year, s", "year_dashboard_message_year_s", ""),
        ("message_funnel / _by_message / _daily on it, s", "year_views_s", ""),
        ("backfilled realistic bodies, bytes each", "archive_body_bytes_per_event", ""),
        ("kept per event after landing: staging / archive, bytes", "archive_bytes_per_event", ""),
        ("staging + archive / the bodies", "archive_kept_vs_bodies", "target ≤ 0.5"),
    ]
    if results.get("maint_land_ms_first_tenth") is not None:
        results = {
            **results,
            "maint_land_ms": f"{results['maint_land_ms_first_tenth']} / "
            f"{results['maint_land_ms_last_tenth']}",
            "maint_query_ms": f"{results['maint_query_ms_first']} / {results['maint_query_ms_last']}",
        }
    if results.get("archive_staging_bytes_per_event") is not None:
        results = {
            **results,
            "archive_bytes_per_event": f"{results['archive_staging_bytes_per_event']} / "
            f"{results['archive_archive_bytes_per_event']}",
        }
    if results.get("year_message_funnel_s") is not None:
        views = ("message_funnel", "message_funnel_by_message", "message_funnel_daily")
        results = {**results, "year_views_s": " / ".join(str(results[f"year_{v}_s"]) for v in views)}
    if results.get("analyst_lag_p99_s") is not None:
        results = {
            **results,
            "analyst_lag_shown": f"{results['analyst_lag_p99_s']} / {results['analyst_lag_max_s']}",
        }
    parts = results.get("peak_rss_by_process_mb") or {}
    if parts:
        shown = " / ".join(str(parts.get(k, 0)) for k in ("lander", "worker", "serve"))
        results = {**results, "peak_rss_parts": shown}
    if results.get("bare_ack_p50_ms") is not None:
        results = {**results, "bare_ack_ms": f"{results['bare_ack_p50_ms']} / {results['bare_ack_p99_ms']}"}
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure'.ljust(width)}  {'value':>12}  target")
    for label, key, target in rows:
        value = results.get(key)
        shown = "n/a" if value is None else (f"{value:,}" if isinstance(value, int) else str(value))
        print(f"{label.ljust(width)}  {shown:>12}  {target}")
    if results.get("dlt_by_format"):
        sizes = results.get("dlt_bodies_by_format", {})
        most = max(sizes.values(), default=0)
        parts = [
            f"{fmt} {rate:,}" + (f" (on {sizes[fmt]:,} bodies)" if sizes.get(fmt, most) < most else "")
            for fmt, rate in results["dlt_by_format"].items()
        ]
        print(f"\ndlt by format, events/s: {' · '.join(parts)}")
    print()


def main() -> int:
    results: dict[str, Any] = {"quick": QUICK, "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory(prefix="loader-bench-") as tmp:
        work = Path(tmp)
        for name, step in (("http", lambda: bench_http(work, results)),):
            try:
                step()
            except Exception as exc:  # a benchmark reports what it could not measure; it does not fail
                results[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
        bodies: list[bytes] = []
        try:
            bench_analyst_lag(work, results)
        except Exception as exc:
            results["analyst_error"] = f"{type(exc).__name__}: {exc}"
        try:
            bench_batch_floor(work, results)
        except Exception as exc:
            results["batch_floor_error"] = f"{type(exc).__name__}: {exc}"
        try:
            bench_year(work, results)
        except Exception as exc:
            results["year_error"] = f"{type(exc).__name__}: {exc}"
        try:
            bench_archive(work, results)
        except Exception as exc:
            results["archive_error"] = f"{type(exc).__name__}: {exc}"
        try:
            bench_maintenance(work, results)
        except Exception as exc:
            results["maintenance_error"] = f"{type(exc).__name__}: {exc}"
        for tag in WAREHOUSES:
            try:
                bodies = bench_landing(work, results, tag)
            except Exception as exc:
                results[f"landing_{tag}error"] = f"{type(exc).__name__}: {exc}"
        if bodies:
            try:
                bench_dlt(work, bodies, results)
            except Exception as exc:
                results["dlt_error"] = f"{type(exc).__name__}: {exc}"
    results["machine"] = machine()
    print_table(results)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
