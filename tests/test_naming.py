"""Names as RudderStack makes them: table-tested against its own cases and computed names."""

import json

import pytest

from loader.catalogue import EVENT_NAMES, RUDDERSTACK_NAMES, UNKNOWN_EVENT
from loader.naming import column_name, is_safe, quote, schema_name, snake_case, table_name
from tests.conftest import FIXTURES

# RudderStack's own namespace cases (rudder-server warehouse transformer tests).
SCHEMA_CASES = [
    ("Customer IO Prod", "customer_io_prod"),
    ("omega", "omega"),
    ("omega v2 ", "omega_v_2"),
    ("9mega", "_9_mega"),
    ("mega&", "mega"),
    ("ome$ga", "ome_ga"),
    ("omega$", "omega"),
    ("ome_ ga", "ome_ga"),
    ("9mega________-________90", "_9_mega_90"),
    ("Cízǔ", "c_z"),
    ("Rudderstack", "rudderstack"),
    ("___", "stringempty"),
    ("", "stringempty"),
    ("group", "_group"),
    ("select", "_select"),
    ("k3_namespace", "k_3_namespace"),
    ("Robert'); DROP TABLE students;--", "robert_drop_table_students"),
    ('a"b', "a_b"),
    ("🙂", "stringempty"),
]


@pytest.mark.parametrize(("name", "expected"), SCHEMA_CASES)
def test_schema_name(name: str, expected: str) -> None:
    assert schema_name(name) == expected
    assert is_safe(schema_name(name))


def test_schema_name_length_per_dialect() -> None:
    long = "a" * 200
    assert len(schema_name(long)) == 127
    assert len(schema_name(long, "postgresql")) == 63


TABLE_CASES = [
    ("&4yasdfa(84224_fs9##_____*3q", "_4yasdfa_84224_fs9_3q"),
    ("omega v2", "omega_v2"),
    ("9mega", "_9mega"),
    ("CamelCase123Key", "camel_case123_key"),
    ("path to $1,00,000", "path_to_1_00_000"),
    ("test123", "test123"),
    ("abc123def456", "abc123_def456"),
    ("__abc_123_def_456", "__abc_123_def_456"),
    ("Email Link Clicked", "email_link_clicked"),
    ("SMS Link Clicked", "sms_link_clicked"),
    ("In App Message Opened", "in_app_message_opened"),
    ("WhatsApp Sent", "whats_app_sent"),
]


@pytest.mark.parametrize(("name", "expected"), TABLE_CASES)
def test_snake_case(name: str, expected: str) -> None:
    assert snake_case(name) == expected


def test_tables_match_rudderstack_computed_names() -> None:
    computed = json.loads((FIXTURES / "rudderstack_warehouse_names.json").read_text())
    for key in ("postgres|underscoreDivideNumbers=false", "postgres|underscoreDivideNumbers=true"):
        tables = computed[key]["tables"]
        assert set(tables) == {*RUDDERSTACK_NAMES.values(), UNKNOWN_EVENT}
        for event, names in tables.items():
            assert table_name(event) == names["table"]
            assert table_name(event) == names["event_column_value"]


def test_columns_match_rudderstack_computed_names() -> None:
    computed = json.loads((FIXTURES / "rudderstack_warehouse_names.json").read_text())
    for key, expected in computed["postgres|underscoreDivideNumbers=false"]["columns"].items():
        assert column_name(key) == expected


def test_every_event_table_name_is_safe_and_distinct() -> None:
    names = [table_name(n) for n in EVENT_NAMES.values()]
    assert len(names) == len(set(names))
    assert all(is_safe(n) for n in names)


@pytest.mark.parametrize("bad", ['x"; drop table t; --', "Upper", "", "a b", "1abc", "a" * 200, "é"])
def test_quote_refuses_unsafe_identifiers(bad: str) -> None:
    with pytest.raises(ValueError):
        quote(bad)


def test_quote_accepts_our_names() -> None:
    assert quote("customer_io_prod") == '"customer_io_prod"'
