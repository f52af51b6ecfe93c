"""The gateway over real HTTP requests (Starlette's TestClient): statuses, bodies, staging, quarantine."""

import asyncio
import base64
import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from loader import service
from loader.errors import ConfigError
from loader.gateway import committer
from loader.gateway.app import create_app
from loader.settings import Settings
from loader.staging import LANDED, PENDING, QUARANTINED, Staging
from tests.conftest import ADMIN, ADMIN_PORT, WRITE_KEY, make_settings, payload, post, rows


@pytest.fixture
def settings(duck_settings: Settings) -> Settings:
    return duck_settings


def staged_states(settings: Settings) -> dict[int, int]:
    staging = Staging(settings.staging_url)
    try:
        return {state: n for counts in staging.counts().values() for state, n in counts.items()}
    finally:
        staging.dispose()


def test_accepts_and_stages_before_answering(client: TestClient, settings: Settings) -> None:
    response = post(client, payload("04_legacy_email_clicked.json"))
    assert (response.status_code, response.text) == (200, "OK")
    assert staged_states(settings) == {PENDING: 1}


def test_no_write_key(client: TestClient) -> None:
    response = client.post("/v1/webhook", content=b"{}")
    assert (response.status_code, response.text) == (401, "failed to read writekey from query params")


def test_unknown_write_key(client: TestClient, settings: Settings) -> None:
    response = post(client, b"{}", key="not-a-key")
    assert (response.status_code, response.text) == (401, "invalid write key")
    assert staged_states(settings) == {}


def test_write_key_from_basic_auth(client: TestClient) -> None:
    token = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    response = client.post(
        "/v1/webhook", content=b'{"event_id":"b1"}', headers={"Authorization": f"Basic {token}"}
    )
    assert (response.status_code, response.text) == (200, "OK")


def test_bad_basic_auth_is_no_key(client: TestClient) -> None:
    response = client.post("/v1/webhook", content=b"{}", headers={"Authorization": "Basic %%%"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    "raw", [b"not json", b"[1,2]", b'"text"', b"42", b"", b'{"a":1}{"b":2}', b"\xff\xfe", b"[" * 5000]
)
def test_not_one_json_object_is_200_and_quarantined(
    client: TestClient, settings: Settings, raw: bytes
) -> None:
    """A 4xx would make Customer.io retry the same bytes for 7 days, holding back the stream."""
    response = post(client, raw)
    assert (response.status_code, response.text) == (200, "OK")
    assert staged_states(settings) == {QUARANTINED: 1}
    staging = Staging(settings.staging_url)
    kept = staging.quarantined()
    staging.dispose()
    reason = "not UTF-8" if raw == b"\xff\xfe" else "invalid json"
    assert kept[0]["body"] == raw and kept[0]["reason"].startswith(reason)


def test_a_body_over_the_limit_is_kept_and_one_over_the_ceiling_is_413(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, LOADER_MAX_BODY_BYTES="1000", LOADER_MAX_KEPT_BODY_BYTES="5000")
    service.source_add(settings, "Small", write_key=WRITE_KEY)
    big = json.dumps({"event_id": "big", "data": {"content": "x" * 2000}}).encode()
    with TestClient(create_app(settings)) as client:
        assert (post(client, big).status_code, post(client, big).text) == (200, "OK")  # a retry: kept once
        huge = json.dumps({"data": {"content": "x" * 6000}}).encode()
        response = post(client, huge)
        assert (response.status_code, response.text) == (413, "request size exceeds max limit")
        assert post(client, b'{"event_id":"small"}').status_code == 200
    assert staged_states(settings) == {PENDING: 1, QUARANTINED: 1}
    staging = Staging(settings.staging_url)
    [kept] = staging.quarantined()
    staging.dispose()
    assert kept["body"] == big and "over LOADER_MAX_BODY_BYTES" in kept["reason"]


def test_the_kept_ceiling_below_the_body_limit_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LOADER_MAX_KEPT_BODY_BYTES"):
        make_settings(tmp_path, LOADER_MAX_BODY_BYTES="1000", LOADER_MAX_KEPT_BODY_BYTES="999")


def test_retry_is_staged_once(client: TestClient, settings: Settings) -> None:
    body = payload("04_legacy_email_clicked.json")
    assert [post(client, body).status_code for _ in range(3)] == [200, 200, 200]
    assert staged_states(settings) == {PENDING: 1}


def test_health(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_source_added_while_serving_is_picked_up(client: TestClient, settings: Settings) -> None:
    assert post(client, b"{}", key="second-source-key").status_code == 401
    service.source_add(settings, "Second", write_key="second-source-key")
    client.app.state.gateway.sources._last = 0.0  # as if a second had passed since the last refresh
    assert post(client, b'{"event_id":"x"}', key="second-source-key").status_code == 200


def test_flush_marks_landed(client: TestClient, settings: Settings) -> None:
    post(client, payload("04_legacy_email_clicked.json"))
    assert service.flush(settings) == 1
    assert staged_states(settings) == {LANDED: 1}


def hold_write_lock(path: str | Path) -> sqlite3.Connection:
    """Another writer (a long `loader replay`, say) takes staging's write lock and keeps it."""
    holder = sqlite3.connect(path, timeout=30, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_lock_held_too_long_is_503_and_the_retry_lands(
    settings: Settings, source: service.Added, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(committer, "BUSY_WAIT_S", 0.3)
    body = payload("04_legacy_email_clicked.json")
    with TestClient(create_app(settings)) as client:
        holder = hold_write_lock(settings.staging_url.removeprefix("sqlite:///"))
        try:
            refused = post(client, body)
        finally:
            holder.rollback()
            holder.close()
        assert (refused.status_code, refused.text) == (503, "staging unavailable, retry later")
        assert staged_states(settings) == {}
        assert post(client, body).status_code == 200  # Customer.io's retry
    assert staged_states(settings) == {PENDING: 1}


def test_stopping_waits_for_a_commit_that_waits_for_the_lock(
    settings: Settings, source: service.Added
) -> None:
    """A shutdown while a commit retries a held lock still commits it and answers its request."""
    from loader.gateway.committer import Committer
    from loader.staging import Incoming
    from loader.staging.store import make_staging_engine

    staging = Staging(settings.staging_url, make_staging_engine(settings.staging_url, busy_timeout_s=0))
    record = Incoming(source.source.id, "m-stop-1", 1.0, None, b'{"event_id":"stop-1"}')

    async def scenario() -> None:
        committer = Committer(staging)
        committer.start()
        holder = hold_write_lock(settings.staging_url.removeprefix("sqlite:///"))
        waiting = asyncio.create_task(committer.submit(record))
        await asyncio.sleep(0.05)  # its commit is retrying
        stopping = asyncio.create_task(committer.stop())
        await asyncio.sleep(0.05)
        assert not waiting.done() and not stopping.done()
        holder.rollback()
        holder.close()
        await asyncio.wait_for(stopping, 15)
        await asyncio.wait_for(waiting, 1)  # answered: committed

    try:
        asyncio.run(scenario())
    finally:
        staging.dispose()
    assert staged_states(settings) == {PENDING: 1}


def test_the_app_waits_for_a_lock_held_while_it_creates_staging(tmp_path: Path) -> None:
    """Several processes start at once (`serve --workers N`, the lander): creating staging waits its turn."""
    settings = make_settings(tmp_path)
    settings.ensure_data_dir()
    path = settings.staging_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # someone else is creating it right now
    timer = threading.Timer(0.5, holder.rollback)
    timer.start()
    try:
        app = create_app(settings)
    finally:
        timer.join()
        holder.close()
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200


def test_an_unknown_key_while_staging_cannot_be_read_is_503_not_500(
    client: TestClient, settings: Settings
) -> None:
    """Looking up a key the gateway has not seen reads staging; if that fails, Customer.io gets a 503."""
    time.sleep(1.1)  # past the cache's minimum interval between look-ups
    broken = sqlite3.connect(settings.staging_url.removeprefix("sqlite:///"), isolation_level=None)
    broken.execute("ALTER TABLE loader_sources RENAME TO loader_sources_gone")
    try:
        response = post(client, payload("04_legacy_email_clicked.json"), key="K-not-seen-yet")
    finally:
        broken.execute("ALTER TABLE loader_sources_gone RENAME TO loader_sources")
        broken.close()
    assert (response.status_code, response.text) == (503, "staging unavailable, retry later")


@pytest.mark.parametrize(
    "query",
    [
        "writeKey=abc",
        "a=1&writeKey=abc&b",
        "writeKey=&writeKey=z",
        "writeKey=z&writeKey=",
        "writeKey",
        "x=1",
        "",
        "writeKey=a=b",
        "&&writeKey=k&",
        "writeKey=a%20b",
        "write%4Bey=k",
        "writeKey=a+b;c",
        "writeKey=%ff%fe",
        "writekey=lower",
    ],
)
def test_the_write_key_is_read_from_the_query_as_starlette_reads_it(query: str) -> None:
    """The hot path splits a plain query itself; the key it finds is the one query_params gives."""
    from starlette.datastructures import QueryParams

    from loader.gateway.auth import write_key_from

    scope = {"type": "http", "query_string": query.encode("latin-1"), "headers": []}
    assert write_key_from(scope) == (QueryParams(query).get("writeKey") or None)


def test_a_quarantined_body_lands_once_replayed_after_the_limit_is_raised(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, LOADER_MAX_BODY_BYTES="1000")
    service.source_add(settings, "Raised", write_key=WRITE_KEY)
    big = {"event_id": "big-1", "object_type": "email", "metric": "sent", "data": {"content": "x" * 2000}}
    with TestClient(create_app(settings)) as client:
        assert post(client, big).status_code == 200
        assert post(client, b"{broken").status_code == 200
    raised = make_settings(tmp_path, LOADER_MAX_BODY_BYTES="4096000")
    assert service.replay(raised, "Raised", None, None, quarantined=True) == 2
    service.flush(raised)
    assert rows(raised, "SELECT event_id FROM raised.email_sent") == [{"event_id": "big-1"}]
    assert staged_states(raised) == {LANDED: 1, QUARANTINED: 1}  # the broken one is set aside again


def test_a_failure_of_ours_is_503_never_500(
    settings: Settings, source: service.Added, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a 500 Customer.io waits an hour, holding back the stream; after a 503 it backs off normally."""
    from loader.gateway.app import Gateway

    async def broken(self: Gateway, scope: object, receive: object) -> tuple[int, str]:
        raise RuntimeError("a bug of ours")

    def broken_page(*args: object) -> str:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(Gateway, "webhook", broken)
    monkeypatch.setattr("loader.gateway.dashboard.render", broken_page)
    # Starlette answers with the handler's 503, then raises the error again for the server to log.
    app = create_app(settings, admin_port=ADMIN_PORT)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = post(client, {"event_id": "x"})
        assert (response.status_code, response.text) == (503, "unavailable, retry later")
        assert client.get(ADMIN + "/").status_code == 503
