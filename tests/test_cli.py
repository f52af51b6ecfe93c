"""The command line as a user runs it: transform, status, replay, backfill, quarantine, errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from loader import service
from loader.cli import main
from loader.settings import Settings
from tests.conftest import load_cases, payload, post, rows
from tests.procs import cli, loader_env


def test_transform_gives_rudderstack_output_plus_message_id(tmp_path: Path) -> None:
    env = loader_env(tmp_path)
    for case in load_cases()[:6]:
        out = json.loads(cli(env, "transform", stdin=json.dumps(case["input"]).encode()))
        message_id = out.pop("messageId")
        assert out == case["output"]
        assert len(message_id) == 36
    again = json.loads(cli(env, "transform", stdin=json.dumps(load_cases()[0]["input"]).encode()))
    assert (
        again["messageId"]
        == json.loads(cli(env, "transform", stdin=json.dumps(load_cases()[0]["input"]).encode()))["messageId"]
    )


def test_transform_rejects_non_objects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"[1]")))
    assert main(["transform"]) == 1
    assert "invalid json" in capsys.readouterr().err


def test_status_counts(client: TestClient, settings: Settings) -> None:
    post(client, payload("04_legacy_email_clicked.json"))
    post(client, payload("05_legacy_email_bounced_newsletter.json"))
    post(client, b"garbage")
    [before] = service.status(settings)
    assert (before["staged_backlog"], before["landed"], before["quarantined"]) == (2, 0, 1)
    service.flush(settings)
    [after] = service.status(settings)
    assert (after["staged_backlog"], after["landed"], after["quarantined"], after["discards"]) == (0, 2, 1, 0)
    assert after["last_landing"] is not None and after["schema"] == "customer_io_prod"


def test_replay_relands_idempotently(client: TestClient, settings: Settings) -> None:
    for name in ("04_legacy_email_clicked.json", "05_legacy_email_bounced_newsletter.json"):
        post(client, payload(name))
    service.flush(settings)
    first = rows(settings, "SELECT id, uuid_ts FROM customer_io_prod.tracks ORDER BY id")
    for _ in range(2):
        assert service.replay(settings, "Customer IO Prod", None, None) == 2
        service.flush(settings)
    again = rows(settings, "SELECT id, uuid_ts FROM customer_io_prod.tracks ORDER BY id")
    assert [r["id"] for r in again] == [r["id"] for r in first]
    assert all(a["uuid_ts"] > b["uuid_ts"] for a, b in zip(again, first, strict=True))
    assert rows(settings, "SELECT count(*) AS n FROM customer_io_prod.email_link_clicked") == [{"n": 1}]


def test_replay_time_range(client: TestClient, settings: Settings) -> None:
    post(client, payload("04_legacy_email_clicked.json"))
    service.flush(settings)
    assert service.replay(settings, "Customer IO Prod", 0, 1) == 0
    assert service.replay(settings, "customer_io_prod", 0, None) == 1


def test_backfill_is_idempotent(tmp_path: Path, settings: Settings, source: service.Added) -> None:
    from loader.backfill import backfill

    file = tmp_path / "bodies.jsonl"
    bodies = [json.dumps(c["input"]) for c in load_cases()]
    file.write_text("\n".join([*bodies, "not json", ""]) + "\n")
    distinct = len({c["input"]["event_id"] for c in load_cases()})
    result = backfill(settings, str(file), "Customer IO Prod", progress=False)
    assert (result.lines, result.quarantined, result.landed) == (len(bodies) + 1, 1, distinct)
    assert backfill(settings, str(file), "Customer IO Prod", progress=False).landed == 0
    assert rows(settings, "SELECT count(*) AS n FROM customer_io_prod.tracks") == [{"n": distinct}]
    # Staging forgets the events (past the dedup window); the warehouse still has the rows: nothing
    # lands twice.
    with service.services(settings) as (staging, _):
        assert staging.purge_seen(older_than_s=-10) == distinct
    again = backfill(settings, str(file), "Customer IO Prod", progress=False)
    assert (again.landed, again.already_landed) == (0, distinct)
    assert rows(settings, "SELECT count(*) AS n FROM customer_io_prod.tracks") == [{"n": distinct}]


def test_quarantine_lists_bad_bodies(tmp_path: Path, client: TestClient, settings: Settings) -> None:
    post(client, b"{broken")
    env = loader_env(settings.data_dir, LOADER_WAREHOUSE_URL=settings.warehouse_url)
    [item] = json.loads(cli(env, "quarantine", "--json"))
    assert item["body"] == "{broken" and item["reason"].startswith("invalid json")


def test_unknown_source_and_duplicate_source_fail_cleanly(tmp_path: Path) -> None:
    env = loader_env(tmp_path)
    cli(env, "source", "add", "One", "--write-key", "K-one-00001")
    assert "already" in _fail(env, "source", "add", "One")
    assert "no source named" in _fail(env, "replay", "Nope")


def test_a_query_or_migration_the_database_refuses_fails_with_its_message(tmp_path: Path) -> None:
    """A query the warehouse refuses (bad SQL, a write: queries are read-only) or cannot reach, and a
    migration without a warehouse, end with the database's own words, not a traceback."""
    env = loader_env(tmp_path)
    cli(env, "source", "add", "Asked", "--write-key", "K-asked-00001")
    missing = _fail(env, "query", "SELECT * FROM nope.tracks")
    assert missing.startswith("loader: query failed:") and "nope" in missing
    written = _fail(env, "query", "CREATE TABLE asked.t (a INTEGER)")
    assert written.startswith("loader: query failed:") and "read-only" in written
    assert json.loads(cli(env, "query", "SELECT count(*) AS n FROM asked.tracks", "--json")) == [{"n": 0}]
    away = {**env, "LOADER_WAREHOUSE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"}
    unreachable = _fail(away, "query", "SELECT 1")
    assert unreachable.startswith("loader: query failed:") and "127.0.0.1" in unreachable
    not_migrated = _fail(away, "migrate")
    assert not_migrated.startswith("loader: database error (OperationalError):")
    for err in (missing, written, unreachable, not_migrated):
        assert "Traceback" not in err, err


def _fail(env: dict[str, str], *args: str) -> str:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "loader", *args], env=env, capture_output=True, timeout=60)
    assert proc.returncode != 0
    return proc.stderr.decode()


def test_archive_retention_drops_only_old_archived_days(client: TestClient, settings: Settings) -> None:
    import datetime as dt

    from loader.staging import Staging
    from loader.staging.archive import Archive
    from loader.staging.archiving import read_archived

    post(client, payload("04_legacy_email_clicked.json"))
    service.flush(settings)
    post(client, payload("05_legacy_email_bounced_newsletter.json"))
    post(client, b"junk")
    archive = Archive(settings.archive_path)
    [source_id] = [p.name for p in settings.archive_path.iterdir()]
    assert len(list(read_archived(archive, source_id, None, None))) == 1
    today = dt.datetime.now(dt.UTC).date()
    assert archive.purge(older_than_days=30) == 0
    assert archive.purge(older_than_days=30, today=today + dt.timedelta(days=31)) == 1
    assert list(read_archived(archive, source_id, None, None)) == []
    staging = Staging(settings.staging_url)
    try:
        counts = {s: n for c in staging.counts().values() for s, n in c.items()}
    finally:
        staging.dispose()
    assert counts == {0: 1, 1: 1, 2: 1}  # pending and quarantined stay in staging; one landed


def test_a_body_posted_again_after_its_archive_was_purged_lands_once(
    client: TestClient, settings: Settings
) -> None:
    """Staging's record of an id stops retries within Customer.io's 7 days; a body posted again by hand
    after retention purged that record (its event is older than 7 days) is still found in the warehouse."""
    old = payload("04_legacy_email_clicked.json")
    timeless = json.loads(old)  # no time of its own: its age is unknown, so it is checked too
    del timeless["timestamp"]
    timeless["event_id"] = "timeless-1"
    bodies = [old, json.dumps(timeless).encode()]
    for body in bodies:
        assert post(client, body).status_code == 200
    service.flush(settings)
    with service.services(settings) as (staging, _):
        assert staging.purge_seen(older_than_s=-10) == 2
    for body in bodies:
        assert post(client, body).status_code == 200  # staging no longer knows it: staged again
    service.flush(settings)
    assert rows(settings, "SELECT count(*) AS n FROM customer_io_prod.tracks") == [{"n": 2}]
    assert rows(settings, "SELECT count(*) AS n FROM customer_io_prod.email_link_clicked") == [{"n": 2}]


def test_flush_fails_with_a_message_when_the_warehouse_is_unreachable(tmp_path: Path) -> None:
    env = loader_env(tmp_path)
    cli(env, "source", "add", "Down", "--write-key", "K-down-000001")
    env["LOADER_WAREHOUSE_URL"] = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"
    from loader.settings import Settings
    from loader.staging import Incoming, Staging
    from loader.staging.sources import load_sources

    staging = Staging(Settings.from_env(env, env_file=None).staging_url)
    [source] = load_sources(staging)
    staging.append([Incoming(source.id, "m-1", 1.0, None, b'{"event_id":"e"}')])
    staging.dispose()
    proc = subprocess.run(
        [sys.executable, "-m", "loader", "flush", "--max-wait", "2"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert b"loader:" in proc.stderr and b"warehouse" in proc.stderr
    assert b"Traceback" not in proc.stderr


def test_an_archive_shorter_than_customer_io_retries_is_refused(tmp_path: Path) -> None:
    """Staging's record of an event stops a late retry; a retention under 8 days would let one double."""
    env = loader_env(tmp_path, LOADER_ARCHIVE_RETENTION_DAYS="3")
    proc = subprocess.run(
        [sys.executable, "-m", "loader", "status"], env=env, capture_output=True, timeout=60
    )
    assert proc.returncode != 0
    assert b"LOADER_ARCHIVE_RETENTION_DAYS" in proc.stderr and b"Traceback" not in proc.stderr
    env["LOADER_ARCHIVE_RETENTION_DAYS"] = "30"
    cli(env, "status")


def test_query_stays_readable_on_wide_results(tmp_path: Path) -> None:
    """A row wider than the terminal is shown one record per block with whole column names; csv, json and
    markdown give every column for other tools."""
    env = {**loader_env(tmp_path), "COLUMNS": "120"}
    cli(env, "source", "add", "Wide", "--write-key", "K-wide-000001")
    sql = (
        "SELECT 'sms' AS channel, 7 AS campaign_id, NULL AS broadcast_id, 'a,b|c' AS note,"
        " 0.25 AS click_to_open_rate, 1 AS deliveries, 2 AS human_clicked, 3 AS transactional_message_id,"
        " 4 AS newsletter_id, 5 AS conversion_rate, 6 AS unsubscribed, 7 AS delivery_rate"
    )
    wide = cli(env, "query", sql)
    assert wide.startswith("-[ RECORD 1 ]")
    lines = wide.splitlines()
    assert "transactional_message_id | 3" in lines and "click_to_open_rate       | 0.25" in lines
    assert all(len(line) <= 120 for line in lines)
    narrow = cli(env, "query", "SELECT 1 AS a, 'x' AS b")
    assert "a" in narrow.splitlines()[1] and "RECORD" not in narrow
    assert cli(env, "query", sql, "--format", "csv").splitlines() == [
        "channel,campaign_id,broadcast_id,note,click_to_open_rate,deliveries,human_clicked,"
        "transactional_message_id,newsletter_id,conversion_rate,unsubscribed,delivery_rate",
        'sms,7,,"a,b|c",0.25,1,2,3,4,5,6,7',
    ]
    [record] = json.loads(cli(env, "query", sql, "--format", "json"))
    assert record["broadcast_id"] is None and record["note"] == "a,b|c" and len(record) == 12
    markdown = cli(env, "query", sql, "--format", "markdown").splitlines()
    assert markdown[0].startswith("| channel | campaign_id |") and markdown[1].startswith("|---|")
    assert markdown[2].startswith("| sms | 7 |  | a,b\\|c | 0.25 |")
    assert cli(env, "query", sql, "--format", "vertical") == cli(env, "query", sql)
