"""Durable acks: a 200 waits for an fsync of staging's WAL, made after the commit, outside SQLite's lock."""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from loader import service
from loader.gateway import walsync
from loader.gateway.app import create_app
from loader.gateway.committer import Committer
from loader.gateway.walsync import WalSync
from loader.settings import Settings
from loader.staging import PENDING, Incoming, Staging
from loader.staging.store import make_staging_engine, sqlite_file
from tests.conftest import post


@pytest.fixture
def settings(duck_settings: Settings) -> Settings:
    return duck_settings


@pytest.fixture
def gateway_staging(settings: Settings) -> Iterator[tuple[Staging, str]]:
    """Staging as the gateway opens it (commits skip their fsync; a WalSync makes it), and its file."""
    path = sqlite_file(settings.staging_url)
    assert path is not None
    staging = Staging(settings.staging_url, make_staging_engine(settings.staging_url, synchronous="NORMAL"))
    yield staging, path
    staging.dispose()


def started_committer(staging: Staging, path: str) -> tuple[Committer, WalSync]:
    """A committer with a WalSync, started (inside a running loop)."""
    wal = WalSync(path)
    committer = Committer(staging, wal_sync=wal)
    committer.start()
    return committer, wal


def staged_ids(settings: Settings) -> dict[str, int]:
    path = sqlite_file(settings.staging_url)
    assert path is not None
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT message_id, state FROM loader_staged").fetchall())


def spy_fdatasync(monkeypatch: pytest.MonkeyPatch, before: Callable[[int], None]) -> list[str]:
    """Replace the WalSync's fdatasync with one that calls `before(fd)`, then syncs for real; returns
    the list of synced paths, filled as it goes."""
    synced: list[str] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        before(fd)
        real(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(walsync.os, "fdatasync", fdatasync)
    return synced


def fail_once() -> Callable[[int], None]:
    """An fdatasync spy's `before` that fails the first sync with EIO."""
    failures = [OSError(errno.EIO, "I/O error")]

    def before(fd: int) -> None:
        if failures:
            raise failures.pop()

    return before


def test_the_200_waits_for_an_fsync_of_the_wal(
    settings: Settings, source: service.Added, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()

    def wait_for_the_gate(fd: int) -> None:
        gate.wait(10)

    synced = spy_fdatasync(monkeypatch, wait_for_the_gate)
    answers: list[Any] = []
    with TestClient(create_app(settings)) as client:
        request = threading.Thread(target=lambda: answers.append(post(client, b'{"event_id":"w-1"}')))
        request.start()
        request.join(0.5)
        assert request.is_alive() and not answers  # committed, not yet on disk: no answer yet
        assert len(staged_ids(settings)) == 1
        gate.set()
        request.join(10)
        assert [(a.status_code, a.text) for a in answers] == [(200, "OK")]
    staging_db = sqlite_file(settings.staging_url)
    assert synced and set(synced) == {f"{staging_db}-wal"}


def test_a_failed_fsync_is_503_and_the_retry_is_200_once(
    settings: Settings, source: service.Added, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy_fdatasync(monkeypatch, fail_once())
    app = create_app(settings)
    with TestClient(app) as client:
        refused = post(client, b'{"event_id":"w-2"}')
        assert (refused.status_code, refused.text) == (503, "staging unavailable, retry later")
        assert post(client, b'{"event_id":"w-2"}').status_code == 200  # Customer.io's retry
        assert post(client, b'{"event_id":"w-3"}').status_code == 200
        # The retry was answered only after the WAL was checkpointed into the synced database.
        assert app.gateway.committer.repairs == 1  # type: ignore[attr-defined]
    assert sorted(staged_ids(settings).values()) == [PENDING, PENDING]


def test_after_a_failed_fsync_nothing_is_answered_200_until_the_wal_is_checkpointed(
    settings: Settings, source: service.Added, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linux reports a failed write-back once: a later fsync may succeed though earlier frames never
    reached the disk, and recovery would drop every frame after the gap. A reader holding a snapshot
    keeps the checkpoint from finishing; until it does, requests get 503."""
    spy_fdatasync(monkeypatch, fail_once())
    path = sqlite_file(settings.staging_url)
    assert path is not None
    app = create_app(settings)
    with TestClient(app) as client:
        assert post(client, b'{"event_id":"f-1"}').status_code == 503
        reader = sqlite3.connect(path)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM loader_staged").fetchall()  # holds its snapshot
            held = post(client, b'{"event_id":"f-2"}')
            assert (held.status_code, held.text) == (503, "staging unavailable, retry later")
            assert app.gateway.committer.repairs == 0  # type: ignore[attr-defined]
        finally:
            reader.close()
        assert post(client, b'{"event_id":"f-2"}').status_code == 200
        assert post(client, b'{"event_id":"f-1"}').status_code == 200
        assert app.gateway.committer.repairs == 1  # type: ignore[attr-defined]
    assert len(staged_ids(settings)) == 2


def test_health_is_503_while_the_wal_is_unsafe_and_200_once_it_is_checkpointed(
    settings: Settings, source: service.Added, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load balancer asks /health: while webhooks would get 503, so does it; the repair needs no
    webhook to happen."""
    spy_fdatasync(monkeypatch, fail_once())
    path = sqlite_file(settings.staging_url)
    assert path is not None
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        assert post(client, b'{"event_id":"h-1"}').status_code == 503
        reader = sqlite3.connect(path)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM loader_staged").fetchall()  # holds its snapshot
            health = client.get("/health")
            assert (health.status_code, health.json()["status"]) == (503, "unavailable")
        finally:
            reader.close()
        health = client.get("/health")
        assert (health.status_code, health.json()["status"]) == (200, "ok")
        assert app.gateway.committer.repairs == 1  # type: ignore[attr-defined]
        assert post(client, b'{"event_id":"h-1"}').status_code == 200
    assert len(staged_ids(settings)) == 1


def test_the_repair_after_a_failed_fsync_does_not_stall_other_requests(
    settings: Settings, source: service.Added, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repair copies the whole WAL into the database and syncs it (up to ~80 MB): while it runs,
    requests that need no staging commit (a 401, say) are still answered; those that do wait for it."""
    spy_fdatasync(monkeypatch, fail_once())
    app = create_app(settings)
    staging = app.gateway.staging  # type: ignore[attr-defined]
    gate = threading.Event()
    checkpoint = staging.checkpoint_wal

    def slow_checkpoint() -> bool:
        gate.wait(5)  # a long copy
        return checkpoint()

    monkeypatch.setattr(staging, "checkpoint_wal", slow_checkpoint)
    answers: list[Any] = []
    with TestClient(app) as client:
        assert post(client, b'{"event_id":"r-1"}').status_code == 503
        retry = threading.Thread(target=lambda: answers.append(post(client, b'{"event_id":"r-1"}')))
        retry.start()
        retry.join(0.3)
        unknown = client.post("/v1/webhook?writeKey=not-a-key", content=b"{}")
        assert (unknown.status_code, unknown.text) == (401, "invalid write key")
        assert retry.is_alive() and not answers  # the retry still waits for the repair
        gate.set()
        retry.join(10)
        assert [(a.status_code, a.text) for a in answers] == [(200, "OK")]
        assert app.gateway.committer.repairs == 1  # type: ignore[attr-defined]
    assert len(staged_ids(settings)) == 1


def test_requests_that_arrive_together_share_one_commit_and_one_fsync(
    settings: Settings,
    source: service.Added,
    gateway_staging: tuple[Staging, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bodies handed over in one turn of the loop are one commit and one fsync; the fsync comes after
    the commit (the bodies are in the database when it starts) and before any of them is answered."""
    seen_at_sync: list[int] = []

    def count_staged(fd: int) -> None:
        seen_at_sync.append(len(staged_ids(settings)))

    synced = spy_fdatasync(monkeypatch, count_staged)

    async def scenario() -> None:
        committer, wal = started_committer(*gateway_staging)
        requests = [
            asyncio.create_task(committer.submit(Incoming(source.source.id, f"m-{i}", 1.0, None, b"{}")))
            for i in range(6)
        ]
        await asyncio.wait_for(asyncio.gather(*requests), 10)
        assert (committer.commits, wal.syncs) == (1, 1)
        later = Incoming(source.source.id, "m-later", 1.0, None, b"{}")
        await asyncio.wait_for(committer.submit(later), 10)
        assert (committer.commits, wal.syncs) == (2, 2)
        await committer.stop()

    asyncio.run(scenario())
    assert seen_at_sync == [6, 7]
    assert len(synced) == 2


def test_a_body_handed_over_one_turn_later_joins_the_same_commit(
    source: service.Added, gateway_staging: tuple[Staging, str]
) -> None:
    """The committer lets the loop turn once before it commits: a request whose handler reaches
    `submit` in the next turn (its bytes came in the same poll) shares the commit and its fsync."""

    async def one_turn_later(record: Incoming, committer: Committer) -> None:
        await asyncio.sleep(0)
        await committer.submit(record)

    async def scenario() -> None:
        committer, wal = started_committer(*gateway_staging)
        first = asyncio.create_task(committer.submit(Incoming(source.source.id, "t-1", 1.0, None, b"{}")))
        second = asyncio.create_task(
            one_turn_later(Incoming(source.source.id, "t-2", 1.0, None, b"{}"), committer)
        )
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert (committer.commits, wal.syncs) == (1, 1)
        await committer.stop()

    asyncio.run(scenario())


def test_the_descriptor_follows_a_new_wal_file(tmp_path: Path) -> None:
    """SQLite deletes the WAL when its last connection closes; the next one is a new file."""
    path = str(tmp_path / "s.db")

    def write(conn: sqlite3.Connection, value: int) -> None:
        conn.execute("INSERT INTO t VALUES (?)", (value,))
        conn.commit()

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    write(conn, 1)
    sync = WalSync(path)
    os.fdatasync(sync._descriptor())
    first = os.fstat(sync._descriptor()).st_ino
    assert first == os.stat(path + "-wal").st_ino
    conn.close()
    assert not os.path.exists(path + "-wal")
    os.fdatasync(sync._descriptor())  # no WAL: the database file itself is synced
    assert os.fstat(sync._descriptor()).st_ino == os.stat(path).st_ino
    conn = sqlite3.connect(path)
    write(conn, 2)
    os.fdatasync(sync._descriptor())
    assert os.fstat(sync._descriptor()).st_ino == os.stat(path + "-wal").st_ino
    conn.close()
    sync._close()


def test_a_sqlite_file_gets_a_wal_sync_and_memory_does_not(tmp_path: Path) -> None:
    assert sqlite_file(f"sqlite:///{tmp_path}/s.db") == f"{tmp_path}/s.db"
    assert sqlite_file("sqlite://") is None
    assert sqlite_file("sqlite:///:memory:") is None
    assert sqlite_file("postgresql+psycopg://u@h/db") is None


def test_stopping_commits_and_syncs_what_is_queued(
    source: service.Added, gateway_staging: tuple[Staging, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shutdown with requests still queued commits them, syncs them, answers them, then closes the
    descriptor."""
    synced = spy_fdatasync(monkeypatch, lambda fd: None)

    async def scenario() -> None:
        committer, wal = started_committer(*gateway_staging)
        waiting = asyncio.create_task(committer.submit(Incoming(source.source.id, "m-s", 1.0, None, b"{}")))
        await asyncio.sleep(0)  # the request is queued; the committer has not run yet
        await asyncio.wait_for(committer.stop(), 10)
        assert waiting.done() and waiting.exception() is None
        assert wal.syncs == 1 and wal._fd is None

    asyncio.run(scenario())
    assert len(synced) == 1
