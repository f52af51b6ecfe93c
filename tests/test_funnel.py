"""The funnel views against numbers computed by hand from SPEC §7, on DuckDB and PostgreSQL."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from starlette.testclient import TestClient

from loader import service
from loader.settings import Settings
from tests.conftest import post, rows

DAY1 = 1714557600  # 2024-05-01T10:00:00Z
DAY2 = DAY1 + 86400
CAMPAIGN = {"campaign_id": 1, "action_id": 10}
BROADCAST = {"broadcast_id": 2, "action_id": 20}
_counter = iter(range(10_000))


def ev(metric: str, delivery: str, at: int, message: dict[str, Any], **data: Any) -> dict[str, Any]:
    return {
        "event_id": f"E{next(_counter):04d}",
        "object_type": "email",
        "metric": metric,
        "timestamp": at,
        "data": {
            "customer_id": f"u-{delivery}",
            "delivery_id": delivery,
            "recipient": f"{delivery}@x.io",
            "subject": "Hello",
            **message,
            **data,
        },
    }


def scenario() -> list[dict[str, Any]]:
    c, b = CAMPAIGN, BROADCAST
    return [
        # d1: opened twice (non-prefetched), clicked once by a person.
        ev("sent", "d1", DAY1, c),
        ev("delivered", "d1", DAY1 + 5, c),
        ev("opened", "d1", DAY1 + 60, c),
        ev("opened", "d1", DAY1 + 120, c),
        ev("clicked", "d1", DAY1 + 130, c),
        # d2: only a prefetched (bot) open.
        ev("sent", "d2", DAY1, c),
        ev("delivered", "d2", DAY1 + 5, c),
        ev("opened", "d2", DAY1 + 6, c, prefetched=True),
        # d3: a machine click, no open (a click implies an open).
        ev("sent", "d3", DAY1, c),
        ev("delivered", "d3", DAY1 + 5, c),
        ev("clicked", "d3", DAY1 + 9, c, machine=True),
        # d4: bounced.
        ev("sent", "d4", DAY1, c),
        ev("bounced", "d4", DAY1 + 3, c),
        # d5: delivered, marked as spam, unsubscribed.
        ev("sent", "d5", DAY1, c),
        ev("delivered", "d5", DAY1 + 5, c),
        ev("spammed", "d5", DAY1 + 50, c),
        ev("unsubscribed", "d5", DAY1 + 55, c),
        # d6: sent 23:30 UTC on day 1, delivered after midnight; a proxied (not prefetched) open is human.
        ev("sent", "d6", DAY1 + 48600, c),
        ev("delivered", "d6", DAY1 + 51000, c),
        ev("opened", "d6", DAY1 + 52000, c, proxied=True, prefetched=False),
        # Broadcast, day 2. d7: a human click without an open. d8: two opens.
        ev("sent", "d7", DAY2, b),
        ev("delivered", "d7", DAY2 + 5, b),
        ev("clicked", "d7", DAY2 + 90, b, machine=False),
        ev("sent", "d8", DAY2, b),
        ev("delivered", "d8", DAY2 + 5, b),
        ev("opened", "d8", DAY2 + 30, b),
        ev("opened", "d8", DAY2 + 40, b),
        # Not part of any delivery: ignored by the funnel.
        {"event_id": "S1", "object_type": "customer", "metric": "subscribed", "timestamp": DAY1, "data": {}},
    ]


@pytest.fixture
def landed(client: TestClient, settings: Settings) -> Settings:
    events = scenario()
    bodies = [json.dumps(e).encode() for e in events]
    rng = random.Random(42)
    shuffled = bodies + rng.sample(bodies, 8)  # Customer.io retries, and nothing comes in order
    rng.shuffle(shuffled)
    for raw in shuffled:
        assert post(client, raw).status_code == 200
    service.flush(settings)
    return settings


def by_delivery(settings: Settings) -> dict[str, dict[str, Any]]:
    return {r["delivery_id"]: r for r in rows(settings, "SELECT * FROM customer_io_prod.email_funnel")}


def test_email_funnel_per_delivery(landed: Settings) -> None:
    funnel = by_delivery(landed)
    assert sorted(funnel) == ["d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8"]
    flags = (
        "is_delivered",
        "is_opened",
        "is_clicked",
        "is_bounced",
        "is_spammed",
        "is_unsubscribed",
        "human_opened",
        "human_clicked",
    )
    expected = {
        #      deliv  opened clicked bounced spam  unsub  h_open h_click opens clicks
        "d1": (True, True, True, False, False, False, True, True, 2, 1),
        "d2": (True, True, False, False, False, False, False, False, 1, 0),
        "d3": (True, True, True, False, False, False, False, False, 0, 1),
        "d4": (False, False, False, True, False, False, False, False, 0, 0),
        "d5": (True, False, False, False, True, True, False, False, 0, 0),
        "d6": (True, True, False, False, False, False, True, False, 1, 0),
        "d7": (True, True, True, False, False, False, True, True, 0, 1),
        "d8": (True, True, False, False, False, False, True, False, 2, 0),
    }
    for delivery, values in expected.items():
        row = funnel[delivery]
        assert (*(bool(row[f]) for f in flags), row["opens"], row["clicks"]) == values, delivery
    d1 = funnel["d1"]
    assert (d1["user_id"], d1["email"], d1["campaign_id"], d1["action_id"], d1["email_subject"]) == (
        "u-d1",
        "d1@x.io",
        1,
        10,
        "Hello",
    )
    assert str(d1["first_sent_at"]).startswith("2024-05-01") and "10:00:00" in str(d1["first_sent_at"])
    assert "10:01:00" in str(d1["first_opened_at"]) and "10:02:10" in str(d1["first_clicked_at"])
    assert "10:00:09" in str(funnel["d3"]["first_opened_at"])  # the click's time: a click implies an open
    assert funnel["d4"]["first_delivered_at"] is None


def test_email_funnel_by_message(landed: Settings) -> None:
    got = {
        (r["campaign_id"], r["broadcast_id"], r["action_id"]): r
        for r in rows(landed, "SELECT * FROM customer_io_prod.email_funnel_by_message")
    }
    assert set(got) == {(1, None, 10), (None, 2, 20)}
    campaign = got[(1, None, 10)]
    assert {
        k: campaign[k]
        for k in (
            "sent",
            "delivered",
            "opened",
            "clicked",
            "bounced",
            "spammed",
            "unsubscribed",
            "human_opened",
            "human_clicked",
            "opens",
            "clicks",
        )
    } == {
        "sent": 6,
        "delivered": 5,
        "opened": 4,
        "clicked": 2,
        "bounced": 1,
        "spammed": 1,
        "unsubscribed": 1,
        "human_opened": 2,
        "human_clicked": 1,
        "opens": 4,
        "clicks": 2,
    }
    assert campaign["open_rate"] == pytest.approx(4 / 5)
    assert campaign["click_rate"] == pytest.approx(2 / 5)
    assert campaign["click_to_open_rate"] == pytest.approx(2 / 4)
    assert campaign["bounce_rate"] == pytest.approx(1 / 6)
    assert campaign["unsubscribe_rate"] == pytest.approx(1 / 5)
    broadcast = got[(None, 2, 20)]
    assert (broadcast["sent"], broadcast["delivered"], broadcast["opened"], broadcast["clicked"]) == (
        2,
        2,
        2,
        1,
    )
    assert (broadcast["open_rate"], broadcast["click_to_open_rate"], broadcast["bounce_rate"]) == (
        1.0,
        0.5,
        0.0,
    )


def test_email_funnel_daily_by_utc_day(landed: Settings) -> None:
    days = {str(r["day"]): r for r in rows(landed, "SELECT * FROM customer_io_prod.email_funnel_daily")}
    assert sorted(days) == ["2024-05-01", "2024-05-02"]
    first, second = days["2024-05-01"], days["2024-05-02"]
    assert (first["sent"], first["delivered"], first["opened"], first["clicked"]) == (6, 5, 4, 2)
    assert (second["sent"], second["delivered"], second["opened"], second["clicked"]) == (2, 2, 2, 1)
    assert second["human_clicked"] == 1 and first["human_opened"] == 2


def test_rates_are_null_without_a_denominator(client: TestClient, settings: Settings) -> None:
    post(client, ev("bounced", "only-bounce", DAY1, CAMPAIGN))
    service.flush(settings)
    [row] = rows(settings, "SELECT * FROM customer_io_prod.email_funnel_by_message")
    assert row["delivered"] == 0 and row["sent"] == 0
    assert row["open_rate"] is None and row["click_rate"] is None and row["bounce_rate"] is None
    assert row["click_to_open_rate"] is None and row["unsubscribe_rate"] is None
