"""Landing, the same tests on a DuckDB file and on a fresh PostgreSQL database."""

import json
import random
from typing import Any

from starlette.testclient import TestClient

from loader import service
from loader.catalogue import EVENT_NAMES
from loader.naming import table_name
from loader.settings import Settings
from loader.warehouse.tables import event_tables
from tests.conftest import load_cases, payload, post, rows


def events(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """n distinct Customer.io events across the catalogue."""
    rng = random.Random(seed)
    pairs = sorted(EVENT_NAMES)
    out = []
    for i in range(n):
        object_type, metric = pairs[i % len(pairs)]
        out.append(
            {
                "event_id": f"EV{i:05d}",
                "object_type": object_type,
                "metric": metric,
                "timestamp": 1700000000 + i,
                "data": {
                    "customer_id": f"c{rng.randint(1, 50)}",
                    "delivery_id": f"d{i // 3}",
                    "action_id": rng.randint(1, 9),
                    "campaign_id": 5,
                    "recipient": "p@example.com",
                    "identifiers": {"id": "x", "cio_id": "cio"},
                },
            }
        )
    return out


def test_every_event_once_despite_retries(client: TestClient, settings: Settings) -> None:
    sent = events(300)
    bodies = [json.dumps(e).encode() for e in sent]
    retried = bodies + random.Random(1).sample(bodies, 100)
    for raw in retried:
        assert post(client, raw).status_code == 200
    assert service.flush(settings) == 300
    assert rows(settings, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM customer_io_prod.tracks") == [
        {"n": 300, "d": 300}
    ]
    per_table = {
        r["event"]: r["n"]
        for r in rows(settings, "SELECT event, count(*) AS n FROM customer_io_prod.tracks GROUP BY event")
    }
    for table, n in per_table.items():
        got = rows(settings, f"SELECT count(*) AS n, count(DISTINCT id) AS d FROM customer_io_prod.{table}")
        assert got == [{"n": n, "d": n}], table
    # A second flush and re-posted retries add nothing.
    for raw in bodies[:50]:
        post(client, raw)
    assert service.flush(settings) == 0
    assert rows(settings, "SELECT count(*) AS n FROM customer_io_prod.tracks") == [{"n": 300}]


def test_rows_carry_rudderstack_columns_and_customer_io_time(client: TestClient, settings: Settings) -> None:
    post(client, payload("04_legacy_email_clicked.json"))
    service.flush(settings)
    [row] = rows(settings, "SELECT * FROM customer_io_prod.email_link_clicked")
    assert row["event"] == "email_link_clicked" and row["event_text"] == "Email Link Clicked"
    assert row["user_id"] == "0200102"
    assert row["original_timestamp"].isoformat().startswith("2020-03-26T20:25:48")
    assert row["sent_at"] == row["original_timestamp"]
    assert row["context_request_ip"] == row["context_ip"] == "203.0.113.7"
    assert row["context_library_name"] == "unknown"
    assert row["context_integration_name"] == "Customer.io"
    assert row["context_traits_email"] == "test@example.com"
    assert (row["link_url"], row["link_id"], row["action_id"], row["broadcast_id"]) == (
        "http://google.com",
        1,
        36,
        9,
    )
    assert row["email_subject"] == "hello" and row["event_id"] == "01E4C8BES5XT87ZWRJFTB35YJ3"
    assert row["uuid_ts"] is not None and row["received_at"] is not None
    [track] = rows(settings, "SELECT * FROM customer_io_prod.tracks")
    assert track["id"] == row["id"] and "link_url" not in track


def test_all_rudderstack_cases_land(client: TestClient, settings: Settings) -> None:
    cases = load_cases()
    distinct = {c["input"]["event_id"] for c in cases}
    for case in cases:
        assert post(client, case["input"]).status_code == 200
    service.flush(settings)
    assert rows(settings, "SELECT count(*) AS n FROM customer_io_prod.tracks") == [{"n": len(distinct)}]
    [push] = rows(settings, "SELECT recipients FROM customer_io_prod.push_sent")
    assert json.loads(push["recipients"])[0]["device_platform"] == "android"


def test_types_of_columns(settings: Settings, source: service.Added) -> None:
    found = rows(
        settings,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'customer_io_prod' AND table_name = 'email_opened'",
    )
    columns = {r["column_name"]: r["data_type"].upper() for r in found}
    for name in ("original_timestamp", "sent_at", "timestamp", "received_at", "uuid_ts"):
        assert columns[name] == "TIMESTAMP WITH TIME ZONE", name
    for name in ("action_id", "campaign_id", "link_id", "transactional_message_id"):
        assert columns[name] == "BIGINT", name
    for name in ("proxied", "prefetched", "synthetic", "machine"):
        assert columns[name] == "BOOLEAN", name
    assert columns["delivery_id"] in ("TEXT", "VARCHAR")


def test_schema_has_every_table(settings: Settings, source: service.Added) -> None:
    found = rows(
        settings, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'customer_io_prod'"
    )
    tables = {r["table_name"] for r in found}
    assert {"tracks", "rudder_discards", "unknown_event", *event_tables()} <= tables
    assert {table_name(n) for n in EVENT_NAMES.values()} <= tables


def test_misfits_land_as_null_plus_discard(client: TestClient, settings: Settings) -> None:
    body = {
        "event_id": "MIS1",
        "object_type": "email",
        "metric": "opened",
        "timestamp": 1700000000,
        "data": {
            "campaign_id": "abc",
            "action_id": 2**80,
            "subject": {"an": "object"},
            "delivery_id": "d1",
            "proxied": "yes",
        },
    }
    post(client, body)
    service.flush(settings)
    [row] = rows(
        settings,
        "SELECT campaign_id, action_id, email_subject, proxied, delivery_id "
        "FROM customer_io_prod.email_opened",
    )
    assert row == {
        "campaign_id": None,
        "action_id": None,
        "email_subject": None,
        "proxied": None,
        "delivery_id": "d1",
    }
    discards = rows(
        settings,
        "SELECT table_name, column_name, column_value, reason "
        "FROM customer_io_prod.rudder_discards ORDER BY column_name",
    )
    assert [(d["table_name"], d["column_name"], d["column_value"]) for d in discards] == [
        ("email_opened", "action_id", str(2**80)),
        ("email_opened", "campaign_id", "abc"),
        ("email_opened", "email_subject", '{"an":"object"}'),
        ("email_opened", "proxied", "yes"),
    ]
    assert all(d["reason"] for d in discards)


def test_unknown_event_lands_in_unknown_event(client: TestClient, settings: Settings) -> None:
    post(client, {"event_id": "U1", "object_type": "fax", "metric": "sent", "data": {}})
    post(client, {"hello": "world"})
    service.flush(settings)
    assert rows(settings, "SELECT count(*) AS n FROM customer_io_prod.unknown_event") == [{"n": 2}]
