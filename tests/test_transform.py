"""The transform: RudderStack's own 24 cases, then a case for each rule of SPEC §5 they do not touch."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loader.transform import Receipt, message_id, to_event, to_track
from tests.conftest import load_cases

CASES = load_cases()


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_rudderstack_conformance(case: dict[str, Any]) -> None:
    assert to_track(case["input"]) == case["output"]


def body(object_type: Any = "email", metric: Any = "sent", data: dict[str, Any] | None = None, **top: Any):
    out = {"event_id": "EV1", "object_type": object_type, "metric": metric, "timestamp": 1700000000}
    out["data"] = {"customer_id": "c1"} if data is None else data
    out.update(top)
    return out


@pytest.mark.parametrize(
    ("object_type", "metric", "event"),
    [
        ("email", "spammed", "Email Marked as Spam"),
        ("email", "deferred", "Email Deferred"),
        ("EMAIL", "opened", "Email Opened"),
        ("push", "opened", "Push Opened"),
        ("sms", "delivered", "SMS Delivered"),
        ("webhook", "clicked", "Webhook Message Link Clicked"),
        ("slack", "clicked", "Slack Message Link Clicked"),
        ("email", "Opened", "Unknown Event"),  # metric is matched as sent
        ("sms", "opened", "Unknown Event"),  # a pair RudderStack does not name
        ("sms", "subscribed", "Unknown Event"),
        ("fax", "sent", "Unknown Event"),
        (None, "sent", "Unknown Event"),
        ("email", None, "Unknown Event"),
        (7, 8, "Unknown Event"),
        # Our extensions.
        ("in_app", "opened", "In App Message Opened"),
        ("in_app", "clicked", "In App Message Clicked"),
        ("whatsapp", "sent", "WhatsApp Sent"),
        ("whatsapp", "clicked", "WhatsApp Link Clicked"),
        ("email", "undeliverable", "Email Undeliverable"),
        ("slack", "undeliverable", "Slack Message Undeliverable"),
        ("webhook", "undeliverable", "Webhook Message Undeliverable"),
        ("push", "undeliverable", "Push Undeliverable"),
        ("sms", "replied", "SMS Replied"),
        ("customer", "cio_subscription_preferences_changed", "Customer Subscription Preferences Changed"),
        ("email", "cio_subscription_preferences_changed", "Customer Subscription Preferences Changed"),
    ],
)
def test_event_names(object_type: Any, metric: Any, event: str) -> None:
    assert to_track(body(object_type, metric))["event"] == event


def test_subscription_preferences_with_the_misspelled_object_type() -> None:
    b = {"metric": "cio_subscription_preferences_changed", "object_type_type": "email", "data": {}}
    assert to_track(b)["event"] == "Customer Subscription Preferences Changed"


def test_identity_sources_in_order() -> None:
    data = {
        "identifiers": {"id": "ident", "email": "ident@x", "cio_id": "cio1"},
        "recipient": "recipient@x",
        "email_address": "address@x",
    }
    out = to_track(body(data=data))
    assert out["userId"] == "ident"
    assert out["context"]["traits"] == {"email": "ident@x", "cioId": "cio1"}
    assert "anonymousId" not in out
    out = to_track(body(data={"recipient": "r@x", "email_address": "a@x"}))
    assert out["context"]["traits"]["email"] == "r@x"
    assert out["anonymousId"] == "r@x"
    assert "userId" not in out


def test_customer_id_wins_over_identifiers_id() -> None:
    out = to_track(body(data={"customer_id": "cust", "identifiers": {"id": "ident"}}))
    assert out["userId"] == "cust"


def test_properties_from_data_keep_json_types() -> None:
    data = {
        "customer_id": "c",
        "event_id": "ignored-when-top-level-present",
        "trigger_id": 5,
        "journey_id": "j-1",
        "parent_action_id": 6,
        "device_id": "dev",
        "device_platform": "ios",
        "event_type": "t",
        "recipients": [{"device_id": "d", "failure_message": "gone"}],
        "proxied": True,
        "prefetched": False,
        "machine": True,
        "tracked_response": "yes",
        "inbound_event_id": "in1",
        "trigger_event_id": "tr1",
        "href": "https://x",
    }
    props = to_track(body(data=data))["properties"]
    assert props == {
        "eventId": "EV1",
        "triggerId": 5,
        "journeyId": "j-1",
        "parentActionId": 6,
        "deviceId": "dev",
        "devicePlatform": "ios",
        "type": "t",
        "recipients": [{"device_id": "d", "failure_message": "gone"}],
        "reason": "gone",
        "proxied": True,
        "prefetched": False,
        "machine": True,
        "trackedResponse": "yes",
        "inboundEventId": "in1",
        "triggerEventId": "tr1",
        "link": {"url": "https://x"},
    }


def test_event_id_from_data_when_not_top_level() -> None:
    b = body(data={"event_id": "inner"})
    del b["event_id"]
    assert to_track(b)["properties"]["eventId"] == "inner"


@pytest.mark.parametrize("ts", ["1585250199", "abc", None, True, 1.5, 10**30])
def test_no_time_without_an_integer_timestamp(ts: Any) -> None:
    out = to_track(body(timestamp=ts))
    assert "originalTimestamp" not in out and "sentAt" not in out


def test_integer_timestamp_sets_both_times() -> None:
    out = to_track(body(timestamp=1585250199))
    assert out["originalTimestamp"] == out["sentAt"] == "2020-03-26T19:16:39.000Z"


def test_receipt_fields_and_timestamp_rule() -> None:
    received = datetime(2024, 3, 3, 4, 48, 29, 123000, tzinfo=UTC)
    b = body(timestamp=1585250199)
    raw = json.dumps(b).encode()
    event = to_event(b, raw, Receipt(received, "192.0.2.30", "src"))
    assert event["receivedAt"] == "2024-03-03T04:48:29.123Z"
    assert event["request_ip"] == "192.0.2.30"
    assert event["originalTimestamp"] == "2020-03-26T19:16:39.000Z"
    # timestamp = receivedAt - (sentAt - originalTimestamp); sentAt == originalTimestamp here.
    assert event["timestamp"] == "2024-03-03T04:48:29.123Z"
    assert event["messageId"] == message_id("src", b, raw)


def test_without_a_time_everything_falls_back_to_received_at() -> None:
    received = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(milliseconds=5)
    b = body(timestamp="abc")
    event = to_event(b, b"{}", Receipt(received))
    assert event["originalTimestamp"] == event["sentAt"] == event["timestamp"] == "2024-01-01T00:00:00.005Z"


def test_message_id_is_deterministic_per_source_and_event() -> None:
    b = body()
    assert message_id("s1", b, b"a") == message_id("s1", b, b"different bytes")
    assert message_id("s1", b, b"a") != message_id("s2", b, b"a")
    assert message_id("s1", body(event_id="EV2"), b"a") != message_id("s1", b, b"a")


def test_message_id_without_event_id_comes_from_the_body_hash() -> None:
    b = body()
    del b["event_id"]
    assert message_id("s", b, b"one") == message_id("s", b, b"one")
    assert message_id("s", b, b"one") != message_id("s", b, b"two")


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_uuid5_text_is_uuid5(name: str) -> None:
    import uuid

    from loader.transform.event import MESSAGE_ID_NAMESPACE, uuid5_text

    assert uuid5_text(MESSAGE_ID_NAMESPACE.bytes, name) == str(uuid.uuid5(MESSAGE_ID_NAMESPACE, name))
