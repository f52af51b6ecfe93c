"""Every channel's funnel views (SPEC §8) against figures computed by hand, on every warehouse."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from loader import service
from loader.settings import Settings
from loader.warehouse.engine import make_warehouse_engine
from tests.conftest import ADMIN, post, rows

DAY1 = 1714557600  # 2024-05-01T10:00:00Z
DAY2 = DAY1 + 86400
LATE = DAY1 + 50340  # 2024-05-01T23:59:00Z: a UTC day that is already 05-02 east of UTC
_counter = iter(range(100_000))

# One message per channel: (ids, channel).
MESSAGES = {
    "email": {"campaign_id": 1, "action_id": 10},
    "push": {"campaign_id": 1, "action_id": 11},
    "sms": {"broadcast_id": 2, "action_id": 20},
    "in_app": {"campaign_id": 3, "action_id": 30},
    "whatsapp": {"transactional_message_id": 4, "action_id": 40},
    "webhook": {"campaign_id": 5, "action_id": 50},
    "slack": {"newsletter_id": 6, "action_id": 60},
}


def ev(channel: str, metric: str, delivery: str, at: int, **data: Any) -> dict[str, Any]:
    return {
        "event_id": f"C{next(_counter):05d}",
        "object_type": channel,
        "metric": metric,
        "timestamp": at,
        "data": {"customer_id": f"u-{delivery}", "delivery_id": delivery, **MESSAGES[channel], **data},
    }


def deliveries(channel: str, spec: dict[str, list[str]], start: int = DAY1) -> list[dict[str, Any]]:
    """Events for each delivery: `metric` or `metric:prefetched` / `metric:machine`, a minute apart."""
    out = []
    for delivery, metrics in spec.items():
        for n, item in enumerate(metrics):
            metric, _, flag = item.partition(":")
            out.append(ev(channel, metric, delivery, start + 60 * n, **({flag: True} if flag else {})))
    return out


def scenario() -> list[dict[str, Any]]:
    return [
        *deliveries(
            "email",
            {
                "e1": ["sent", "delivered", "opened:prefetched", "opened", "clicked:machine"],
                "e2": ["sent", "delivered", "spammed", "unsubscribed", "converted"],
                "e3": ["sent", "bounced"],
                "e4": ["drafted"],
            },
        ),
        *deliveries(
            "push",
            {
                "p1": ["sent", "delivered", "opened", "clicked", "converted"],
                "p2": ["sent", "delivered"],
                "p3": ["sent", "failed"],
                "p4": ["attempted"],
            },
        ),
        *deliveries(
            "sms",
            {
                "s1": ["sent", "delivered", "clicked", "replied"],
                "s2": ["sent", "delivered"],
                "s3": ["sent", "undeliverable"],
            },
        ),
        *deliveries("sms", {"s4": ["sent", "delivered"]}, start=LATE),  # sent 23:59 UTC, delivered 00:00
        *deliveries(
            "in_app",
            {
                "i1": ["sent", "opened", "clicked", "converted"],
                "i2": ["sent", "opened"],
                "i3": ["sent"],
                "i4": ["drafted"],
            },
        ),
        *deliveries(
            "whatsapp",
            {
                "w1": ["sent", "delivered", "opened", "replied"],
                "w2": ["sent", "delivered", "clicked"],
                "w3": ["sent", "dropped"],
            },
        ),
        *deliveries("webhook", {"h1": ["sent", "clicked"], "h2": ["sent", "failed"], "h3": ["attempted"]}),
        *deliveries("slack", {"k1": ["sent", "clicked:machine"], "k2": ["sent"]}, start=DAY2),
        # Not part of any delivery: ignored.
        {"event_id": "S1", "object_type": "customer", "metric": "subscribed", "timestamp": DAY1, "data": {}},
    ]


FLAGS = (
    "is_sent",
    "is_delivered",
    "is_opened",
    "is_clicked",
    "is_converted",
    "is_failed",
    "is_spammed",
    "is_unsubscribed",
    "is_replied",
    "human_opened",
    "human_clicked",
    "opens",
    "clicks",
)
T, F, N = True, False, None
# Per delivery, in FLAGS' order, computed by hand from §8's table.
EXPECTED = {
    "e1": (T, T, T, T, F, F, F, F, N, T, F, 2, 1),
    "e2": (T, T, F, F, T, F, T, T, N, F, F, 0, 0),
    "e3": (T, F, F, F, F, T, F, F, N, F, F, 0, 0),
    "e4": (F, F, F, F, F, F, F, F, N, F, F, 0, 0),
    "p1": (T, T, T, T, T, F, N, N, N, T, T, 1, 1),
    "p2": (T, T, F, F, F, F, N, N, N, F, F, 0, 0),
    "p3": (T, F, F, F, F, T, N, N, N, F, F, 0, 0),
    "p4": (F, F, F, F, F, F, N, N, N, F, F, 0, 0),
    "s1": (T, T, N, T, F, F, N, N, T, N, T, N, 1),
    "s2": (T, T, N, F, F, F, N, N, F, N, F, N, 0),
    "s3": (T, F, N, F, F, T, N, N, F, N, F, N, 0),
    "s4": (T, T, N, F, F, F, N, N, F, N, F, N, 0),
    "i1": (T, N, T, T, T, F, N, N, N, T, T, 1, 1),
    "i2": (T, N, T, F, F, F, N, N, N, T, F, 1, 0),
    "i3": (T, N, F, F, F, F, N, N, N, F, F, 0, 0),
    "i4": (F, N, F, F, F, F, N, N, N, F, F, 0, 0),
    "w1": (T, T, T, F, F, F, N, N, T, T, F, 1, 0),
    "w2": (T, T, T, T, F, F, N, N, F, T, T, 0, 1),
    "w3": (T, F, F, F, F, T, N, N, F, F, F, 0, 0),
    "h1": (T, N, N, T, N, F, N, N, N, N, T, N, 1),
    "h2": (T, N, N, F, N, T, N, N, N, N, F, N, 0),
    "h3": (F, N, N, F, N, F, N, N, N, N, F, N, 0),
    "k1": (T, N, N, T, N, F, N, N, N, N, F, N, 1),
    "k2": (T, N, N, F, N, F, N, N, N, N, F, N, 0),
}
COUNTS = (
    "deliveries",
    "sent",
    "delivered",
    "opened",
    "clicked",
    "converted",
    "failed",
    "spammed",
    "unsubscribed",
    "replied",
    "human_opened",
    "human_clicked",
    "opens",
    "clicks",
    "reached",
)
# Per channel (one message each), in COUNTS' order, summed by hand from EXPECTED.
EXPECTED_COUNTS = {
    "email": (4, 3, 2, 1, 1, 1, 1, 1, 1, N, 1, 0, 2, 1, 2),
    "push": (4, 3, 2, 1, 1, 1, 1, N, N, N, 1, 1, 1, 1, 2),
    "sms": (4, 4, 3, N, 1, 0, 1, N, N, 1, N, 1, N, 1, 3),
    "in_app": (4, 3, N, 2, 1, 1, 0, N, N, N, 2, 1, 2, 1, 3),
    "whatsapp": (3, 3, 2, 2, 1, 0, 1, N, N, 1, 2, 1, 1, 1, 2),
    "webhook": (3, 2, N, N, 1, N, 1, N, N, N, N, 1, N, 1, 2),
    "slack": (2, 2, N, N, 1, N, 0, N, N, N, N, 0, N, 1, 2),
}
RATES = ("delivery_rate", "open_rate", "click_rate", "click_to_open_rate", "conversion_rate", "failure_rate")


def expected_rates(counts: dict[str, Any]) -> dict[str, float | None]:
    """§8's rates, written out again from its text: NULL when a denominator is 0 or NULL."""

    def ratio(a: int | None, b: int | None) -> float | None:
        return None if a is None or not b else a / b

    reached = counts["delivered"] if counts["delivered"] is not None else counts["sent"]
    return {
        "delivery_rate": ratio(counts["delivered"], counts["sent"]),
        "open_rate": ratio(counts["opened"], reached),
        "click_rate": ratio(counts["clicked"], reached),
        "click_to_open_rate": ratio(counts["clicked"], counts["opened"]),
        "conversion_rate": ratio(counts["converted"], reached),
        "failure_rate": ratio(counts["failed"], counts["deliveries"]),
    }


@pytest.fixture
def landed(client: TestClient, settings: Settings) -> Settings:
    bodies = [json.dumps(e).encode() for e in scenario()]
    rng = random.Random(7)
    shuffled = bodies + rng.sample(bodies, 20)  # Customer.io retries, and nothing comes in order
    rng.shuffle(shuffled)
    for raw in shuffled:
        assert post(client, raw).status_code == 200
    service.flush(settings)
    return settings


def test_message_funnel_per_delivery(landed: Settings) -> None:
    funnel = {r["delivery_id"]: r for r in rows(landed, "SELECT * FROM customer_io_prod.message_funnel")}
    assert sorted(funnel) == sorted(EXPECTED)
    for delivery, values in EXPECTED.items():
        row = funnel[delivery]
        assert tuple(row[f] for f in FLAGS) == values, delivery
        assert row["channel"] == {"e": "email", "p": "push", "s": "sms", "i": "in_app"}.get(
            delivery[0], {"w": "whatsapp", "h": "webhook", "k": "slack"}.get(delivery[0])
        )
    p1 = funnel["p1"]
    assert (p1["user_id"], p1["campaign_id"], p1["action_id"], p1["broadcast_id"]) == ("u-p1", 1, 11, None)
    assert "10:00:00" in str(p1["first_sent_at"]) and "10:01:00" in str(p1["first_delivered_at"])
    assert "10:02:00" in str(p1["first_opened_at"]) and "10:03:00" in str(p1["first_clicked_at"])
    assert "10:04:00" in str(p1["first_converted_at"])
    assert "10:02:00" in str(funnel["w2"]["first_opened_at"])  # a click implies an open
    assert funnel["s1"]["first_opened_at"] is None  # SMS reports no opens
    assert funnel["e4"]["first_sent_at"] is None and "10:00:00" in str(funnel["e4"]["first_event_at"])


def test_message_funnel_by_message(landed: Settings) -> None:
    got = {r["channel"]: r for r in rows(landed, "SELECT * FROM customer_io_prod.message_funnel_by_message")}
    assert sorted(got) == sorted(EXPECTED_COUNTS)
    for channel, values in EXPECTED_COUNTS.items():
        row = got[channel]
        counts = dict(zip(COUNTS, values, strict=True))
        assert {c: row[c] for c in COUNTS} == counts, channel
        assert {r: row[r] for r in RATES} == pytest.approx(expected_rates(counts)), channel
        ids = {
            k: row[k] for k in ("campaign_id", "broadcast_id", "newsletter_id", "transactional_message_id")
        }
        assert {k: v for k, v in ids.items() if v is not None} == {
            k: v for k, v in MESSAGES[channel].items() if k != "action_id"
        }
    # Spot checks of the rules, apart from the loop's arithmetic.
    assert got["in_app"]["open_rate"] == pytest.approx(2 / 3)  # reached = sent: in-app reports no deliveries
    assert got["sms"]["open_rate"] is None and got["sms"]["click_to_open_rate"] is None
    assert got["webhook"]["conversion_rate"] is None and got["slack"]["failure_rate"] == 0.0
    assert got["email"]["failure_rate"] == pytest.approx(1 / 4)  # failure over every delivery, drafts too


def test_message_funnel_daily_in_utc_whatever_the_session_zone(landed: Settings) -> None:
    engine = make_warehouse_engine(landed.warehouse_url, read_only=True)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET TimeZone = 'Pacific/Kiritimati'")  # UTC+14: 23:59 UTC is tomorrow there
            probe = conn.exec_driver_sql("SELECT CAST(CAST('2024-05-01 23:59:00+00' AS TIMESTAMPTZ) AS DATE)")
            assert str(probe.scalar()) == "2024-05-02"  # the session's zone took hold
            result = conn.execute(
                text(
                    "SELECT channel, day, sent, delivered, clicked FROM customer_io_prod.message_funnel_daily"
                )
            )
            got = {(r.channel, str(r.day)): (r.sent, r.delivered, r.clicked) for r in result}
            conn.exec_driver_sql("SET TimeZone = 'UTC'")
            conn.rollback()
    finally:
        engine.dispose()
    assert got == {
        ("email", "2024-05-01"): (3, 2, 1),
        ("push", "2024-05-01"): (3, 2, 1),
        ("sms", "2024-05-01"): (4, 3, 1),  # s4's first event is 23:59 UTC on 05-01
        ("in_app", "2024-05-01"): (3, None, 1),
        ("whatsapp", "2024-05-01"): (3, 2, 1),
        ("webhook", "2024-05-01"): (2, None, 1),
        ("slack", "2024-05-02"): (2, None, 1),
    }


def test_email_views_unchanged_beside_the_channel_views(landed: Settings) -> None:
    [email] = rows(
        landed, "SELECT sent, delivered, opened, bounced FROM customer_io_prod.email_funnel_by_message"
    )
    assert email == {"sent": 3, "delivered": 2, "opened": 1, "bounced": 1}


def readme_queries() -> list[str]:
    """Every statement of the README's SQL examples (the analysts' section), comments dropped."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("## For analysts") : readme.index("## The warehouse")]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.S)
    statements = []
    for block in blocks:
        code = "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("--"))
        statements += [s.strip() for s in code.split(";") if s.strip()]
    return statements


def test_the_readme_queries_run_on_every_warehouse(landed: Settings) -> None:
    statements = readme_queries()
    assert len(statements) >= 10  # the email examples and one per channel
    for sql in statements:
        service.query(landed, sql)  # raises QueryError with the warehouse's words if one is wrong
    [sms] = rows(landed, next(s for s in statements if "reply_rate" in s and "'sms'" in s))
    assert sms["reply_rate"] == pytest.approx(1 / 3) and sms["click_rate"] == pytest.approx(1 / 3)


def test_dashboard_every_channel_with_its_filters(client: TestClient, settings: Settings) -> None:
    """The dashboard's figures are the views' on every warehouse; its filters are checked and bound."""
    for event in scenario():
        assert post(client, event).status_code == 200
    service.flush(settings)
    page = client.get(ADMIN + "/").text
    selector = re.search(r'<select name="channel">(.*?)</select>', page)
    assert selector and re.findall(r'value="(\w+)"', selector.group(1)) == [
        "email", "push", "sms", "in_app", "whatsapp", "webhook", "slack",
    ]  # fmt: skip
    assert 'value="2024-04-03"' in page and 'value="2024-05-02"' in page  # 30 days to the newest day

    def channel_row(html: str, channel: str) -> list[str]:
        row = re.search(rf"<tr[^>]*><td><a [^>]*>{channel}</a></td>(.*?)</tr>", html)
        assert row, channel
        return re.findall(r"<td>(.*?)</td>", row.group(1))

    # deliveries, sent, delivered, opened, human opened, clicked, human clicked, converted, failed, replied,
    # then the six rates: the figures test_channels computed by hand.
    assert channel_row(page, "sms") == [
        "4", "4", "3", "-", "-", "1", "1", "0", "1", "1", "75.0%", "-", "33.3%", "-", "0.0%", "25.0%",
    ]  # fmt: skip
    assert (
        channel_row(page, "in_app")[:4] == ["4", "3", "-", "2"] and channel_row(page, "in_app")[11] == "66.7%"
    )
    assert channel_row(page, "slack")[6] == "0"  # a machine's click is not a human's

    sms = client.get(ADMIN + "/", params={"channel": "sms", "from": "2024-04-30", "to": "2024-05-02"}).text
    svg = sms[sms.index("<svg") : sms.index("</svg>")]
    assert "<title>2024-05-01 reached: 3</title>" in svg and "opened" not in svg  # SMS reports no opens
    assert all(label in svg for label in (">04-30<", ">05-01<", ">05-02<"))  # empty days keep their place
    assert "2024-04-30 " not in svg and "2024-05-02 " not in svg
    assert "human opened" not in sms.split("sms by day")[1]  # the channel's own tables leave it out

    one = client.get(ADMIN + "/", params={"channel": "push", "message": "1::::11"}).text
    assert "push by day: campaign 1 · action 11" in one and '<option value="1::::11" selected>' in one

    hostile = {"channel": "sms'; DROP TABLE x;--", "from": "yesterday", "message": "1) OR (1=1"}
    odd = client.get(ADMIN + "/", params=hostile)
    assert odd.status_code == 200
    assert "unknown channel" in odd.text and "is not a day" in odd.text and "not a message key" in odd.text
    assert rows(settings, "SELECT count(*) AS n FROM customer_io_prod.tracks") == [{"n": len(scenario())}]
