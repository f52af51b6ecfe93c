"""The archive of landed bodies: compressed files out of staging, replay from them, a retry of an archived
event within the window lands nothing, and an older staging file's bodies move there on upgrade."""

from __future__ import annotations

import json
import random
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import create_engine

from loader import service
from loader.settings import Settings
from loader.staging import Incoming, Staging
from loader.staging.tables import metadata
from tests.conftest import make_settings, rows
from tests.procs import Server, cli, loader_env, query_json, wait_for

KEY = "K-archive-000001"
METRICS = ("sent", "delivered", "opened", "clicked", "bounced", "converted")


def realistic_bodies(n: int, seed: int = 5) -> list[bytes]:
    """Customer.io's reporting webhook bodies as it sends them (compact JSON, ULID event ids, a person's
    identifiers, a delivery of a campaign), each different, ~400 bytes."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits
    out = []
    for i in range(n):
        person = rng.randrange(1_000_000)
        delivery = "".join(rng.choices(alphabet, k=28))
        event = {
            "data": {
                "action_id": rng.randrange(1, 400),
                "campaign_id": rng.randrange(1, 60),
                "customer_id": f"{person:010d}",
                "delivery_id": delivery,
                "identifiers": {
                    "id": str(person),
                    "email": f"person{person}@example{rng.randrange(50)}.com",
                    "cio_id": f"{rng.getrandbits(48):012x}",
                },
                "recipient": f"person{person}@example{rng.randrange(50)}.com",
                "subject": rng.choice(
                    ["Welcome aboard", "Your weekly digest", "Order shipped", "We miss you"]
                ),
            },
            "event_id": "01J" + "".join(rng.choices(string.digits + "ABCDEFGHJKMNPQRSTVWXYZ", k=23)),
            "object_type": "email",
            "metric": METRICS[i % len(METRICS)],
            "timestamp": 1733300000 + i,
        }
        out.append(json.dumps(event, separators=(",", ":")).encode())
    return out


def disk_bytes(settings: Settings) -> dict[str, int]:
    staging = sum(p.stat().st_size for p in settings.data_dir.glob("staging.sqlite3*"))
    archive = sum(p.stat().st_size for p in settings.archive_path.rglob("*.parquet"))
    return {"staging": staging, "archive": archive}


def backfill(settings: Settings, tmp_path: Path, bodies: list[bytes]) -> Any:
    from loader.backfill import backfill as run

    file = tmp_path / "bodies.jsonl"
    file.write_bytes(b"\n".join(bodies) + b"\n")
    return run(settings, str(file), "Archive", progress=False)


def test_a_backfill_leaves_staging_and_archive_under_half_the_bodies(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    service.source_add(settings, "Archive", write_key=KEY)
    bodies = realistic_bodies(12_000)
    raw = sum(len(b) for b in bodies)
    result = backfill(settings, tmp_path, bodies)
    assert result.landed == len(bodies)
    used = disk_bytes(settings)
    assert used["staging"] + used["archive"] <= raw / 2, (used, raw)
    [status] = service.status(settings)
    assert (status["landed"], status["staged_backlog"]) == (len(bodies), 0)
    with service.services(settings) as (staging, _):
        assert staging.seen_count() == len(bodies)  # the window's record of each event, in staging
        assert staging.landed(10) == []  # and no body


@pytest.fixture(params=["sqlite", "postgresql"])
def staging_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Staging in its SQLite file, or in a fresh PostgreSQL database (several hosts)."""
    if request.param == "sqlite":
        return {}
    return {"LOADER_STAGING_URL": str(request.getfixturevalue("pg_url"))}


def test_replay_relands_every_archived_body_once(tmp_path: Path, staging_env: dict[str, str]) -> None:
    settings = make_settings(tmp_path, **staging_env)
    service.source_add(settings, "Archive", write_key=KEY)
    bodies = realistic_bodies(1_000, seed=9)
    backfill(settings, tmp_path, bodies)
    before = rows(settings, "SELECT id, uuid_ts FROM archive.tracks ORDER BY id")
    assert service.replay(settings, "Archive", None, None) == len(bodies)
    service.flush(settings)
    after = rows(settings, "SELECT id, uuid_ts FROM archive.tracks ORDER BY id")
    assert [r["id"] for r in after] == [r["id"] for r in before]
    assert all(a["uuid_ts"] > b["uuid_ts"] for a, b in zip(after, before, strict=True))
    # Replayed bodies are archived already: not written a second time.
    from loader.staging.archive import Archive
    from loader.staging.archiving import read_archived

    [source_dir] = list(settings.archive_path.iterdir())
    assert len(list(read_archived(Archive(settings.archive_path), source_dir.name, None, None))) == len(
        bodies
    )
    assert sum(1 for _ in settings.archive_path.rglob("*.parquet")) == 1
    [status] = service.status(settings)
    assert status["landed"] == len(bodies)


def test_a_retry_of_an_archived_event_within_the_window_lands_nothing(
    tmp_path: Path, staging_env: dict[str, str]
) -> None:
    from loader.transform import event_key, id_of_key

    settings = make_settings(tmp_path, **staging_env)
    added = service.source_add(settings, "Archive", write_key=KEY)
    bodies = realistic_bodies(50, seed=3)
    backfill(settings, tmp_path, bodies)
    retry = bodies[7]
    fresh = realistic_bodies(1, seed=99)[0]
    with service.services(settings) as (staging, _):
        assert staging.landed(10) == []  # archived: staging no longer holds the body
        records = []
        for raw in (retry, fresh):
            key = event_key(added.source.id, json.loads(raw), raw)
            records.append(Incoming(added.source.id, id_of_key(key), 1.0, "203.0.113.9", raw, event_key=key))
        staging.append(records)  # as the gateway stages a retry
    assert service.flush(settings) == 1  # the new one only
    assert rows(settings, "SELECT count(*) AS n FROM archive.tracks") == [{"n": 51}]
    assert rows(settings, "SELECT count(*) AS n FROM archive.email_delivered") == [{"n": 9}]
    with service.services(settings) as (staging, _):
        assert staging.pending_count() == 0 and staging.landed(10) == []


def test_an_older_staging_file_moves_its_landed_bodies_to_the_archive(tmp_path: Path) -> None:
    """A staging file of the version before the archive: landed bodies kept in it, no auto-vacuum.
    `loader migrate` moves them to the archive and rewrites the file; replay then finds them there."""
    env = loader_env(tmp_path / "data")
    settings = Settings.from_env(env, env_file=None)
    settings.ensure_data_dir()
    old = create_engine(settings.staging_url)
    with old.begin() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    metadata.create_all(old)  # as the older version made it: without incremental auto-vacuum
    old.dispose()
    cli(env, "source", "add", "Archive", "--write-key", KEY)
    bodies = realistic_bodies(1_500, seed=11)
    with service.services(settings) as (staging, warehouse):
        [source] = service.load_sources(staging)
        from loader.transform import event_key, id_of_key

        staging.append(
            [
                Incoming(
                    source.id,
                    id_of_key(k := event_key(source.id, json.loads(b), b)),
                    1.0,
                    None,
                    b,
                    event_key=k,
                )
                for b in bodies
            ]
        )
        lander = service.make_lander(settings, staging, warehouse)
        assert lander.drain() == len(bodies)  # landed, and kept in staging as the older version did
        lander.close()
        assert len(staging.landed(10)) == 10
    size_before = (settings.data_dir / "staging.sqlite3").stat().st_size
    cli(env, "migrate")
    size_after = (settings.data_dir / "staging.sqlite3").stat().st_size
    assert size_after < size_before / 3, (size_before, size_after)
    staging = Staging(settings.staging_url)
    try:
        assert staging.landed(10) == [] and staging.seen_count() == len(bodies)
        with staging.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 2
    finally:
        staging.dispose()
    assert json.loads(cli(env, "status", "--json"))[0]["landed"] == len(bodies)
    assert service.replay(settings, "Archive", None, None) == len(bodies)
    service.flush(settings)
    assert rows(settings, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM archive.tracks") == [
        {"n": len(bodies), "d": len(bodies)}
    ]


def test_disk_use_per_part_and_a_nearly_full_disk(tmp_path: Path) -> None:
    """status, /metrics and the dashboard give each part's bytes; below the free-space threshold (here
    100%: always) /health, the dashboard and status warn, and /health still answers 200."""
    from starlette.testclient import TestClient

    from loader.gateway.app import create_app
    from tests.conftest import ADMIN, ADMIN_PORT

    env = loader_env(tmp_path / "data", LOADER_DISK_WARN_FREE_PCT="100")
    settings = Settings.from_env(env, env_file=None)
    service.source_add(settings, "Archive", write_key=KEY)
    backfill(settings, tmp_path, realistic_bodies(500))
    [row] = json.loads(cli(env, "status", "--json"))
    assert row["archive_bytes"] > 0 and row["staging_bytes"] > 0 and row["warehouse_bytes"] > 0
    proc = subprocess.run([sys.executable, "-m", "loader", "status"], env=env, capture_output=True, text=True)
    assert "disk: staging" in proc.stdout and "disk nearly full" in proc.stderr
    with TestClient(create_app(settings, admin_port=ADMIN_PORT)) as client:
        health = client.get("/health")
        assert health.status_code == 200 and "disk nearly full" in health.json()["warning"]
        metrics = client.get(ADMIN + "/metrics").text
        for part in ("staging", "archive", "warehouse"):
            assert f'loader_disk_bytes{{part="{part}"}}' in metrics
        assert "loader_disk_free_bytes" in metrics
        page = client.get(ADMIN + "/").text
        assert "disk: staging" in page and "disk nearly full" in page
    env["LOADER_DISK_WARN_FREE_PCT"] = "0"
    calm = Settings.from_env(env, env_file=None)
    with TestClient(create_app(calm, admin_port=ADMIN_PORT)) as client:
        assert "warning" not in client.get("/health").json()


@pytest.mark.slow
def test_serve_archives_as_it_lands_and_a_retry_over_http_adds_nothing(tmp_path: Path) -> None:
    """Real processes: `loader serve` moves landed bodies to the archive on its schedule; Customer.io
    retrying an archived event gets a 200 and lands nothing; replay re-lands from the archive."""
    env = loader_env(tmp_path / "data", LOADER_ARCHIVE_EVERY_S="0.5")
    settings = Settings.from_env(env, env_file=None)
    cli(env, "source", "add", "Archive", "--write-key", KEY)
    bodies = realistic_bodies(200, seed=21)
    server = Server(env, tmp_path / "serve.log")
    try:
        with httpx2.Client(base_url=server.url, params={"writeKey": KEY}) as client:
            for raw in bodies:
                assert client.post("/v1/webhook", content=raw).status_code == 200

            def archived() -> bool:
                return (
                    json.loads(cli(env, "status", "--json"))[0]["archive_bytes"] > 0 and not staged_bodies()
                )

            def staged_bodies() -> int:
                with service.services(settings) as (staging, _):
                    return len(staging.landed(1000)) + staging.pending_count()

            wait_for("the landed bodies archived", archived)
            for raw in bodies[:20]:  # retries of archived events
                assert client.post("/v1/webhook", content=raw).status_code == 200
            wait_for("the retries dropped", lambda: staged_bodies() == 0)
        assert query_json(env, "SELECT count(*) AS n FROM archive.tracks")[0]["n"] == len(bodies)
        assert cli(env, "replay", "Archive").startswith(f"queued {len(bodies)} archived")
        wait_for("the replay landed and archived", lambda: staged_bodies() == 0)
        assert query_json(env, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM archive.tracks") == [
            {"n": len(bodies), "d": len(bodies)}
        ]
    finally:
        server.stop()
    assert "archived" in server.output()
