"""Prometheus metrics, correct across processes: the gateway's workers and the lander write to a
shared multiprocess folder (PROMETHEUS_MULTIPROC_DIR, set by `loader serve`), and /metrics adds
per-source counts read from staging at scrape time.

prometheus-client is imported lazily, so that `loader serve` can set the folder before first use.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess(folder: Path) -> None:
    """Start every `loader serve` with an empty metrics folder shared by its processes."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(folder)


_made: Any = None
_making = threading.Lock()


def m() -> Any:
    """The metric objects, created once per process, whichever thread asks first (serve's supervisor
    thread and its event loop may ask at the same moment; a second set would be a duplicate
    registration)."""
    global _made
    if _made is None:
        with _making:
            if _made is None:
                _made = _make()
    return _made


def _make() -> Any:
    from types import SimpleNamespace

    from prometheus_client import Counter, Histogram

    return SimpleNamespace(
        requests=Counter(
            "loader_http_requests_total", "HTTP requests answered, by route and status", ["route", "status"]
        ),
        landed=Counter("loader_events_landed_total", "Rows added to tracks, by schema", ["schema"]),
        discards=Counter(
            "loader_discards_total", "Values that did not fit their column, by schema", ["schema"]
        ),
        batch_seconds=Histogram(
            "loader_landing_seconds",
            "Time to land one batch (claim to mark)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        ),
        batch_size=Histogram(
            "loader_batch_size", "Bodies per landed batch", buckets=(1, 10, 100, 1000, 5000, 10000, 50000)
        ),
        lander_errors=Counter(
            "loader_lander_errors_total", "Landing attempts that failed, by kind", ["kind"]
        ),
        restarts=Counter(
            "loader_restarts_total", "Helper processes serve started again after they exited", ["process"]
        ),
    )


def render(staging: Any, settings: Any = None) -> tuple[bytes, str]:
    """The exposition text: process-shared metrics, per-source staging counts, and (given the settings)
    disk use per part and the free space where the data folder is."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    m()  # make sure this process's metrics exist
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        shared = CollectorRegistry()
        multiprocess.MultiProcessCollector(shared)
    else:
        from prometheus_client import REGISTRY as shared

    class StagingCollector:
        def collect(self) -> Any:
            from loader.staging import LANDED, PENDING, QUARANTINED
            from loader.staging.sources import load_sources

            names = {s.id: s.schema for s in load_sources(staging)}
            counts = staging.counts()
            for metric, state, doc in (
                ("loader_backlog", PENDING, "Bodies staged and not yet landed"),
                ("loader_staged_landed", LANDED, "Bodies landed (kept in the archive)"),
                ("loader_quarantined", QUARANTINED, "Bodies set aside as unreadable"),
            ):
                family = GaugeMetricFamily(metric, doc, labels=["schema"])
                for source_id, schema in names.items():
                    family.add_metric([schema], counts.get(source_id, {}).get(state, 0))
                yield family
            if settings is not None:
                yield from disk_families(settings)

    def disk_families(settings: Any) -> Any:
        from loader import disk

        parts = GaugeMetricFamily("loader_disk_bytes", "Bytes on this host's disk, by part", labels=["part"])
        for part, size in (
            ("staging", disk.staging_bytes(settings)),
            ("archive", disk.archive_bytes(settings)),
            ("warehouse", disk.warehouse_bytes(settings)),
        ):
            if size is not None:  # a part on a server is measured by its own tools
                parts.add_metric([part], size)
        yield parts
        free = disk.free_space(settings)
        yield GaugeMetricFamily(
            "loader_disk_free_bytes", "Free bytes where the data folder is", value=free.free_bytes
        )
        yield GaugeMetricFamily(
            "loader_disk_total_bytes", "Size of the disk the data folder is on", value=free.total_bytes
        )

    per_source = CollectorRegistry()
    per_source.register(StagingCollector())
    return generate_latest(shared) + generate_latest(per_source), CONTENT_TYPE_LATEST
