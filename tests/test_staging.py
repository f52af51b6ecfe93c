"""What staging keeps unique: one body per event (event_key), in new staging files and in older ones."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import MetaData, Table, inspect
from starlette.testclient import TestClient

from loader import service
from loader.backfill import backfill
from loader.settings import Settings
from loader.staging import Incoming, Staging
from loader.staging.store import claim_token
from loader.staging.tables import staged
from loader.transform import event_key, id_of_key, message_id
from tests.conftest import payload, post, rows


@pytest.fixture(params=["sqlite", "postgresql"])
def staging_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'staging.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


def staged_rows(store: Staging) -> list[tuple[str, str | None]]:
    with store.engine.connect() as conn:
        result = conn.exec_driver_sql("SELECT message_id, event_key FROM loader_staged ORDER BY seq")
        return [(r[0], r[1]) for r in result]


def incoming(source_id: str, body: bytes) -> Incoming:
    """A body as the gateway stages it."""
    key = event_key(source_id, json.loads(body), body)
    return Incoming(source_id, id_of_key(key), time.time(), None, body, event_key=key)


def test_the_message_id_is_derived_from_the_event_key() -> None:
    body = b'{"event_id":"01E4C4C6P79C12J5A6KPE6XNFD","metric":"sent"}'
    key = event_key("src", json.loads(body), body)
    assert key == "src|event|01E4C4C6P79C12J5A6KPE6XNFD"
    assert id_of_key(key) == message_id("src", json.loads(body), body)
    # data.event_id, and the raw body's hash when there is no event id
    assert event_key("src", {"data": {"event_id": 7}}, b"") == "src|event|7"
    assert event_key("src", {"metric": "sent"}, b"{}").startswith("src|sha256|")
    assert event_key("src", None, b"not json") != event_key("src", None, b"not json!")


def test_staging_keeps_one_body_per_event(staging_url: str) -> None:
    store = Staging(staging_url)
    store.create()
    first = b'{"event_id":"01E4C4C6P79C12J5A6KPE6XNFD","metric":"sent"}'
    retry = b'{"metric": "sent", "event_id": "01E4C4C6P79C12J5A6KPE6XNFD"}'  # other bytes, same event
    other = b'{"event_id":"01E4C4CT6YDC7Y5M7FE1GWWPQJ","metric":"sent"}'
    store.append([incoming("src", first), incoming("src", retry)])
    store.append([incoming("src", retry), incoming("src", other), incoming("other-source", first)])
    rows = staged_rows(store)
    assert [key for _, key in rows] == [
        "src|event|01E4C4C6P79C12J5A6KPE6XNFD",
        "src|event|01E4C4CT6YDC7Y5M7FE1GWWPQJ",
        "other-source|event|01E4C4C6P79C12J5A6KPE6XNFD",
    ]
    assert all(mid == id_of_key(key) for mid, key in rows if key)
    # Without a key, the message id is the key: a caller's own ids are kept once too.
    store.append([Incoming("src", "own-1", 1.0, None, b"{}"), Incoming("src", "own-1", 2.0, None, b"{}")])
    assert staged_rows(store)[3:] == [("own-1", "own-1")]
    store.dispose()


def old_staged_table() -> Table:
    """loader_staged as staging files were made before event_key: the same, unique on message_id."""
    columns = [c._copy() for c in staged.columns if c.name != "event_key"]
    for column in columns:
        column.unique = column.name == "message_id"
    return Table(staged.name, MetaData(), *columns)


def test_an_older_staging_file_gets_event_key_and_still_keeps_each_event_once(staging_url: str) -> None:
    store = Staging(staging_url)
    old = old_staged_table()
    old.metadata.create_all(store.engine)
    assert "event_key" not in {c["name"] for c in inspect(store.engine).get_columns("loader_staged")}
    body = b'{"event_id":"01E4C4C6P79C12J5A6KPE6XNFD","metric":"sent"}'
    with store.engine.begin() as conn:  # staged by the older version: no key
        conn.execute(
            old.insert().values(
                source_id="src",
                message_id=message_id("src", json.loads(body), body),
                received_at=1.0,
                body=body,
                state=0,
                replay=False,
            )
        )
    store.create()
    store.create()  # once is enough; again changes nothing
    assert "event_key" in {c["name"] for c in inspect(store.engine).get_columns("loader_staged")}
    retry = b'{"metric": "sent", "event_id": "01E4C4C6P79C12J5A6KPE6XNFD"}'
    store.append([incoming("src", retry), incoming("src", b'{"event_id":"new-1"}')])
    assert [key for _, key in staged_rows(store)] == [None, "src|event|new-1"]
    claimed = store.claim(10, 60, claim_token())
    assert [s.body for s in claimed] == [body, b'{"event_id":"new-1"}']
    store.dispose()


def test_a_body_backfilled_after_its_webhook_is_staged_once(
    client: TestClient, settings: Settings, source: service.Added, tmp_path: Path
) -> None:
    """The gateway and backfill name an event alike: backfilling bodies that came by webhook adds none."""
    body = payload("04_legacy_email_clicked.json")
    assert post(client, body).status_code == 200
    file = tmp_path / "events.jsonl"
    file.write_bytes(json.dumps(json.loads(body)).encode() + b"\n")  # the same event, other bytes
    backfill(settings, str(file), source.source.name, progress=False)
    with service.services(settings) as (staging, _):
        assert staged_rows(staging) == []  # landed, then moved to the archive: once
    from loader.staging.archive import Archive
    from loader.staging.archiving import read_archived

    assert len(list(read_archived(Archive(settings.archive_path), source.source.id, None, None))) == 1
    assert rows(settings, "SELECT count(*) AS n FROM customer_io_prod.tracks") == [{"n": 1}]


@pytest.mark.parametrize(
    "event_id",
    [
        os.urandom(5_000).hex(),  # past an index entry's limit (PostgreSQL: ~2.7 KB); random, so uncompressed
        "nul\u0000inside",  # PostgreSQL's text takes no NUL
        "\u00e9v\u00e9nement-\U0001f600",
        "line\nbreak",
    ],
    ids=["long", "nul", "unicode", "control"],
)
def test_any_event_id_a_caller_sends_is_staged_once(staging_url: str, event_id: str) -> None:
    """A caller chooses the event id: whatever it is, its body is staged, and once."""
    store = Staging(staging_url)
    store.create()
    body = json.dumps({"event_id": event_id, "metric": "sent"}).encode()
    retry = json.dumps({"metric": "sent", "event_id": event_id}, ensure_ascii=False).encode()
    store.append([incoming("src", body)])
    store.append([incoming("src", retry), incoming("src", b'{"event_id":"after"}')])
    assert [mid for mid, _ in staged_rows(store)] == [
        message_id("src", json.loads(body), body),
        message_id("src", {"event_id": "after"}, b""),
    ]
    store.dispose()
