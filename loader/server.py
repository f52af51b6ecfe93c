"""`loader serve`: the gateway (uvicorn) in this process and the lander in a child process.

Landing runs in its own process so that warehouse work never shares the gateway's GIL: measured here,
a lander thread inside the web process cut throughput by a fifth and multiplied p99 latency.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import TYPE_CHECKING

from loader import child, logs
from loader.backoff import Backoff
from loader.errors import TransientError
from loader.gateway.processes import GatewayProcesses, listen
from loader.metrics import m, prepare_multiprocess
from loader.settings import Settings
from loader.supervise import Supervised

if TYPE_CHECKING:
    from loader.lander import Lander
    from loader.staging import Staging
    from loader.staging.archive import Archive
    from loader.warehouse.maintenance import Maintenance

# The process that holds the sockets imports no database library: the lander's and migrations' imports
# are made in their own processes, in the functions below.

log = logging.getLogger("loader.lander")

ARCHIVE_PURGE_EVERY_S = 3600.0
DISK_WARN_EVERY_S = 600.0
_disk_warned_at = -DISK_WARN_EVERY_S
LANDER_NICENESS = 10
# Under `loader serve` the lander keeps to one core: DuckDB gets one thread, and the next batch is not
# parsed ahead on a second one. The other core answers Customer.io (and a second batch in flight cost
# ~70 MB when catching up a 100,000-body backlog, for no clear gain in time). `loader flush` and
# backfills use every core and parse ahead.
LANDER_DUCKDB_THREADS = 1
# Lake maintenance between two batches runs steps (one table's merge is ~70 ms) until this is spent, so
# the events that arrive meanwhile wait a step, not a whole round.
MAINTENANCE_STEP_S = 0.1
# serve's lander shares the machine with the gateway for as long as it runs: its DuckDB keeps at most this
# much of the warehouse in memory (WRITER_MEMORY_MB says why; a batch that needs more raises it: MemoryCap).
# The HTTP part of make bench, serve and lander at their peak: 273-279 MB at 32 MB, 294-307 at 64, 324 at
# 128, 329-334 uncapped. The price: a 130,000-body backlog of old events (each batch then reads every id
# landed) took 3.7-3.8 s against 3.3-3.4. A batch of one source's every event type needs more than 32 MB:
# the first such batch raises it to 64.
LANDER_DUCKDB_MEMORY_MB = 32


def migrate_in_child(settings: Settings) -> None:
    """Run the migrations in a short-lived process: neither the gateway nor the long-running lander
    then holds Alembic and its bookkeeping in memory (~12 MB)."""
    code = child.start("loader.server:migrate_main", settings).wait()
    if code != 0:
        raise RuntimeError(f"migrations exited with {code} (their log says why)")


def migrate_main(settings: Settings) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logs.setup(settings.log_json)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its set-up chatter; ours says what ran
    from loader.service import migrate_all

    migrate_all(settings)


def lander_main(settings: Settings) -> None:
    """The lander process: lands until SIGTERM (from serve) or until its parent is gone."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the gateway's to handle: it stops us cleanly
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload is serve's to carry out: it replaces us
    lander_loop(settings, stop)


def lander_loop(settings: Settings, stop: threading.Event) -> None:
    """Land staged bodies until told to stop or the parent dies; never gives up on a transient error."""
    os.nice(LANDER_NICENESS)  # under load, answering Customer.io comes first; landing can wait a moment
    logs.setup(settings.log_json)
    from loader.lander import collect_less
    from loader.service import make_lander, services
    from loader.staging.archive import Archive
    from loader.warehouse.arrow import use_jemalloc_allocator  # here: the gateway never loads pyarrow
    from loader.warehouse.maintenance import Maintenance

    use_jemalloc_allocator()
    collect_less()
    parent = os.getppid()
    backoff = Backoff(first=0.5, cap=10.0)
    while not stop.is_set() and os.getppid() == parent:
        try:
            migrate_in_child(settings)
            break
        except Exception as exc:
            wait = backoff.next()
            log.warning("migrations failed (%s); retrying in %.1fs", exc, wait)
            stop.wait(wait)
    # The lander's staging commits (claims, marks, purges) skip the fsync: one lost to a power cut only
    # re-lands a batch, which adds nothing (its ids are found in the warehouse), and SQLite's write lock,
    # which the gateway's commits wait for, is then held for the work alone, not for the disk.
    with services(
        settings,
        duckdb_threads=LANDER_DUCKDB_THREADS,
        staging_synchronous="NORMAL",
        duckdb_memory_mb=LANDER_DUCKDB_MEMORY_MB,
    ) as (staging, warehouse):
        freed = staging.release_dead_claims()
        if freed:
            log.info("freed %d claims of landers that died", freed)
        lander = make_lander(
            settings, staging, warehouse, duckdb_threads=LANDER_DUCKDB_THREADS, parse_ahead=False
        )
        backoff = Backoff(first=0.1, cap=5.0)
        next_purge = time.monotonic()
        next_archive = time.monotonic()
        archive = Archive(settings.archive_path)
        maintenance = Maintenance(warehouse, settings.lake_maintenance_s, settings.lake_keep_s)
        while not stop.is_set() and os.getppid() == parent:
            try:
                result = lander.run_once()
            except TransientError as exc:
                m().lander_errors.labels("transient").inc()
                wait = backoff.next()
                log.warning("landing failed (%s); retrying in %.1fs", exc, wait)
                stop.wait(wait)
                continue
            except Exception:
                m().lander_errors.labels("unexpected").inc()
                wait = backoff.next()
                log.exception("lander error; retrying in %.1fs", wait)
                stop.wait(wait)
                continue
            backoff.reset()
            for schema, rows in result.per_source.items():
                log.info("landed batch schema=%s rows=%d ms=%.1f", schema, rows, result.millis)
            if result.discards:
                log.info(
                    "batch had %d value(s) that did not fit their column (see rudder_discards)",
                    result.discards,
                )
            if time.monotonic() >= next_archive:
                archive_now(settings, staging, archive, purge=time.monotonic() >= next_purge)
                next_purge = max(next_purge, time.monotonic() + ARCHIVE_PURGE_EVERY_S)
                next_archive = time.monotonic() + settings.archive_every_s
            if maintenance.due():
                maintain(maintenance, lander)
            if not result.full:
                stop.wait(rest_after(result.millis / 1000, settings.flush_interval_s))
        lander.close()


def archive_now(settings: Settings, staging: Staging, archive: Archive, purge: bool) -> None:
    """Move landed bodies to the archive; with `purge`, also forget events past the dedup window and
    delete archived days past the retention. A failure is logged and tried again at the next turn:
    the bodies stay in staging meanwhile."""
    from loader.disk import free_space
    from loader.staging.archiving import DEDUP_WINDOW_S, archive_landed

    global _disk_warned_at
    with contextlib.suppress(OSError):
        warning = free_space(settings).warning
        if warning and time.monotonic() - _disk_warned_at >= DISK_WARN_EVERY_S:
            log.warning(
                "%s: archive elsewhere (LOADER_ARCHIVE_DIR), shorten its retention, or add space", warning
            )
            _disk_warned_at = time.monotonic()
    try:
        moved = archive_landed(staging, archive)
        if moved:
            log.info("archived %d bodies", moved)
        if purge:
            staging.purge_seen(DEDUP_WINDOW_S)
            if settings.archive_retention_days > 0:
                archive.purge(settings.archive_retention_days)
    except Exception as exc:
        m().lander_errors.labels("archive").inc()
        log.warning("archiving failed (%s: %s); trying again later", type(exc).__name__, exc)


def maintain(maintenance: Maintenance, lander: Lander) -> None:
    """Lake maintenance between batches; a failure is logged and tried again at its next turn."""
    try:
        maintenance.step(lander.writer, MAINTENANCE_STEP_S)
    except Exception as exc:
        m().lander_errors.labels("maintenance").inc()
        log.warning("lake maintenance failed (%s: %s); trying again later", type(exc).__name__, exc)


# After a batch that emptied the queue, the lander rests REST_RATIO times as long as the batch took (at
# least the flush interval, at most REST_MAX_S). A batch costs ~50-100 ms whatever its size (planning,
# commit), so landing every 0.1 s under a steady trickle kept a core busy that the gateway needs; resting
# in proportion keeps the lander to about a third of a core and lets batches grow with the load. The cap
# bounds freshness: an event waits at most about a rest and two batches, and on a slow host (batches of
# 200-300 ms at 1,000 events/s) a cap of 0.3 s put the p99 at 1.0 s; 0.2 s brought it to ~0.96 s.
REST_RATIO = 2.0
REST_MAX_S = 0.2


def rest_after(batch_s: float, flush_interval_s: float) -> float:
    """How long to wait before looking for more bodies, after a batch that took `batch_s`."""
    return max(flush_interval_s, min(REST_RATIO * batch_s, REST_MAX_S))


def serve(settings: Settings, host: str, port: int, workers: int = 1, admin_port: int | None = None) -> None:
    """Hold the listening sockets, start the lander (which migrates first) and the gateway processes,
    and keep them running: SIGHUP replaces both with the code installed now, without refusing a
    connection; SIGTERM or SIGINT stops them after what is in flight."""
    logs.setup(settings.log_json)
    prepare_multiprocess(settings.data_dir / "metrics")
    sockets = [listen(host, port)]
    if admin_port:
        sockets.append(listen(settings.admin_host, admin_port))
    stop, reload = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    lander = Supervised("loader.server:lander_main", settings, "lander")
    lander.start()
    gateways = GatewayProcesses(settings, sockets, workers, admin_port)
    try:
        gateways.start()
        admin = (
            f"; dashboard and /metrics on http://{settings.admin_host}:{admin_port}/" if admin_port else ""
        )
        logging.getLogger("loader.serve").info(
            "serving webhooks on http://%s:%d/v1/webhook%s", host, port, admin
        )
        while not stop.wait(0.2):
            if reload.is_set():
                reload.clear()
                if gateways.reload():
                    lander.restart()
            gateways.check()
    finally:
        gateways.stop()
        lander.stop()
        for sock in sockets:
            sock.close()
