"""`loader serve`: the gateway (uvicorn) in this process and the lander in a child process.

Landing runs in its own process so that warehouse work never shares the gateway's GIL: measured here,
a lander thread inside the web process cut throughput by a fifth and multiplied p99 latency.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.synchronize import Event

import uvicorn

from loader import logs
from loader.errors import TransientError
from loader.lander import Backoff
from loader.metrics import m, prepare_multiprocess
from loader.process import die_with_parent
from loader.service import make_lander, migrate_all, services
from loader.settings import Settings

log = logging.getLogger("loader.lander")

ARCHIVE_PURGE_EVERY_S = 3600.0
LANDER_NICENESS = 10


def migrate_in_child(settings: Settings) -> None:
    """Run the migrations in a short-lived process: neither the gateway nor the long-running lander
    then holds Alembic and its bookkeeping in memory (~12 MB)."""
    proc = multiprocessing.get_context("spawn").Process(
        target=_migrate, args=(settings,), name="loader-migrate", daemon=True
    )
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"migrations exited with {proc.exitcode} (their log says why)")


def _migrate(settings: Settings) -> None:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logs.setup(settings.log_json)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its set-up chatter; ours says what ran
    migrate_all(settings)


def lander_loop(settings: Settings, stop: Event) -> None:
    """Land staged bodies until told to stop or the parent dies; never gives up on a transient error."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the gateway's to handle: it stops us cleanly
    os.nice(LANDER_NICENESS)  # under load, answering Customer.io comes first; landing can wait a moment
    logs.setup(settings.log_json)
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
    with services(settings) as (staging, warehouse):
        freed = staging.release_dead_claims()
        if freed:
            log.info("freed %d claims of landers that died", freed)
        lander = make_lander(settings, staging, warehouse)
        backoff = Backoff(first=0.1, cap=5.0)
        next_purge = time.monotonic()
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
            if settings.archive_retention_days > 0 and time.monotonic() >= next_purge:
                staging.purge_archive(settings.archive_retention_days * 86400.0)
                next_purge = time.monotonic() + ARCHIVE_PURGE_EVERY_S
            if result.claimed < lander.batch_size:
                stop.wait(rest_after(result.millis / 1000, settings.flush_interval_s))
        lander.close()


# After a batch that emptied the queue, the lander rests REST_RATIO times as long as the batch took (at
# least the flush interval, at most REST_MAX_S). A batch costs ~50-100 ms whatever its size (planning,
# commit), so landing every 0.1 s under a steady trickle kept a core busy that the gateway needs; resting
# in proportion keeps the lander to about a third of a core and lets batches grow with the load.
REST_RATIO = 2.0
REST_MAX_S = 0.3


def rest_after(batch_s: float, flush_interval_s: float) -> float:
    """How long to wait before looking for more bodies, after a batch that took `batch_s`."""
    return max(flush_interval_s, min(REST_RATIO * batch_s, REST_MAX_S))


def start_lander(settings: Settings) -> tuple[multiprocessing.process.BaseProcess, Event]:
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    # Not a daemon, so that it may start the migrations' process; it dies with us all the same
    # (die_with_parent), and serve() stops it on the way out.
    proc = ctx.Process(target=lander_loop, args=(settings, stop), name="loader-lander")
    proc.start()
    return proc, stop


def serve(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    """Start the lander (which migrates first), serve HTTP until interrupted, stop the lander cleanly."""
    logs.setup(settings.log_json)
    prepare_multiprocess(settings.data_dir / "metrics")
    proc, stop = start_lander(settings)
    try:
        from loader.gateway.protocol import HeaderDeadlineProtocol

        config = dict(
            host=host,
            port=port,
            access_log=False,  # ours (loader.access) never prints the query string, which holds the key
            log_config=None,
            timeout_keep_alive=5,
            http=HeaderDeadlineProtocol,
            limit_concurrency=4096,  # past this, new requests get 503 (Customer.io retries them)
        )
        if workers > 1:
            uvicorn.run("loader.gateway.asgi:app", workers=workers, **config)  # type: ignore[arg-type]
        else:
            from loader.gateway.app import create_app

            uvicorn.run(create_app(settings), **config)  # type: ignore[arg-type]
    finally:
        stop.set()
        proc.join(timeout=15)
        if proc.is_alive():
            proc.terminate()
