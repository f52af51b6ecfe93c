"""DuckDB's SQL landing path must give exactly the rows of the Python transform (the reference)."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from loader.staging.sources import Source
from loader.staging.store import Staged
from loader.transform import message_id
from loader.warehouse.engine import make_warehouse_engine
from loader.warehouse.migrate import upgrade
from loader.warehouse.tables import event_tables
from loader.warehouse.writer import PARSE_CHUNK_ROWS, DuckDBSqlWriter, DuckDBWriter
from tests.conftest import load_cases
from tests.test_funnel import scenario
from tests.test_landing import events as catalogue_events

TABLES = ["tracks", "rudder_discards", *event_tables()]


def staged(bodies: list[bytes], source_id: str) -> list[Staged]:
    now = time.time()
    out = []
    for i, raw in enumerate(bodies):
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        out.append(
            Staged(
                i + 1,
                source_id,
                message_id(source_id, parsed if isinstance(parsed, dict) else None, raw),
                now + i * 0.0013,
                "192.0.2.1",
                raw,
                False,
            )
        )
    return out


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse file with schemas py and sq at the newest revision, made once: each test lands on a
    copy (running the migrations took most of each hypothesis example's time)."""
    path = tmp_path_factory.mktemp("template") / "template.duckdb"
    engine = make_warehouse_engine(f"duckdb:///{path}")
    try:
        upgrade(engine, "py")
        upgrade(engine, "sq")
    finally:
        engine.dispose()
    assert not path.with_name(path.name + ".wal").exists()  # closed cleanly: the file is all of it
    return path


def land_both(
    tmp_path: Path, bodies: list[bytes], migrated: Path
) -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, list[tuple[Any, ...]]], int]:
    """Land the same bodies with the Python path (schema py) and the SQL path (schema sq), on a copy of
    the `migrated` warehouse."""
    shutil.copyfile(migrated, tmp_path / "eq.duckdb")
    engine = make_warehouse_engine(f"duckdb:///{tmp_path / 'eq.duckdb'}")
    try:
        claimed = staged(bodies, "src-1")
        uuid_ts = datetime(2026, 1, 1, tzinfo=UTC)
        DuckDBWriter(engine).land_staged(claimed, {"src-1": Source("src-1", "P", "py", "kkkk", "h")}, uuid_ts)
        _, prepared = DuckDBSqlWriter(engine).land_staged(
            claimed, {"src-1": Source("src-1", "S", "sq", "kkkk", "h")}, uuid_ts
        )
        result = {}
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            for schema in ("py", "sq"):
                for table in TABLES:
                    order = "row_id, column_name" if table == "rudder_discards" else "id"
                    result[(schema, table)] = raw.execute(
                        f'SELECT * FROM "{schema}"."{table}" ORDER BY {order}'
                    ).fetchall()
        plain = (
            len(claimed) - sum(len(b.tracks) for b in prepared.batches.values()) - len(prepared.unreadable)
        )
    finally:
        engine.dispose()
    return {t: result[("py", t)] for t in TABLES}, {t: result[("sq", t)] for t in TABLES}, plain


def assert_same(python_rows: dict[str, Any], sql_rows: dict[str, Any]) -> None:
    for table in TABLES:
        for py, sq in zip(python_rows[table], sql_rows[table], strict=False):
            assert sq == py, (
                table,
                [(i, a, b) for i, (a, b) in enumerate(zip(py, sq, strict=True)) if a != b],
            )
        assert len(sql_rows[table]) == len(python_rows[table]), table


def test_known_payloads_take_the_sql_path_and_match(tmp_path: Path, migrated: Path) -> None:
    bodies = [json.dumps(c["input"]).encode() for c in load_cases()]
    bodies += [json.dumps(e).encode() for e in scenario()]
    bodies += [
        (Path(__file__).parent / "fixtures" / "payloads" / name).read_bytes()
        for name in (
            "01_spec_email_sent.json",
            "06_legacy_email_delivered_transactional.json",
            "11_thirdparty_cio_subscription_preferences_changed.json",
        )
    ]
    python_rows, sql_rows, plain = land_both(tmp_path, bodies, migrated)
    assert_same(python_rows, sql_rows)
    assert plain >= len(bodies) - 5  # only bodies with recipients (push) or odd types take the Python path
    assert len(python_rows["tracks"]) > 40


ODD = [
    {
        "event_id": "o1",
        "object_type": "EMAIL",
        "metric": "opened",
        "timestamp": 1700000000,
        "data": {"customer_id": 42},
    },
    {
        "event_id": "o2",
        "object_type": "email",
        "metric": "opened",
        "timestamp": 1.5,
        "data": {"campaign_id": "abc"},
    },
    {"event_id": "o3", "object_type": "ÉMAIL", "metric": "sent", "data": {"action_id": 2**70}},
    {
        "event_id": "o4",
        "object_type": "email",
        "metric": "clicked",
        "timestamp": "1700000000",
        "data": {"subject": {"x": 1}},
    },
    {"event_id": "o5", "object_type": "email", "metric": "sent", "timestamp": -5, "data": None},
    {
        "event_id": "o6",
        "object_type": "push",
        "metric": "sent",
        "data": {"recipients": [{"device_id": "d", "failure_message": "f"}]},
    },
    {"event_id": "o7", "object_type": 5, "metric": "sent", "data": []},
    {
        "event_id": 77,
        "metric": "cio_subscription_preferences_changed",
        "object_type_type": "sms",
        "data": {"email_address": "a\u0000b"},
    },
    {
        "event_id": "o9",
        "object_type": "email",
        "metric": "opened",
        "timestamp": 99999999999999,
        "data": {"prefetched": "yes"},
    },
    {
        "event_id": "o10",
        "object_type": "sms",
        "metric": "replied",
        "data": {"identifiers": {"id": None, "email": "e@x"}, "customer_id": None},
    },
]


def test_odd_bodies_fall_back_and_match(tmp_path: Path, migrated: Path) -> None:
    bodies = [json.dumps(b).encode() for b in ODD]
    bodies.append(b'{"event_id":"dup","metric":"sent","metric":"opened","object_type":"email"}')
    # Integers past 64 bits where nothing maps them, and as the timestamp.
    bodies.append(
        b'{"event_id":"huge1","object_type":"email","metric":"sent","extra":123456789012345678901234567890,'
        b'"data":{"customer_id":"c","unmapped":-99999999999999999999999}}'
    )
    bodies.append(
        b'{"event_id":"huge2","object_type":"email","metric":"sent","timestamp":98765432109876543210}'
    )
    bodies.append(
        b'{"event_id":"huge3","object_type":"email","metric":"sent","timestamp":18446744073709551615}'
    )
    # A repeated key one and two levels down (SQL would read the first value, Python keeps the last).
    bodies.append(
        b'{"event_id":"dup2","metric":"sent","object_type":"email",'
        b'"data":{"customer_id":"first","customer_id":"last"}}'
    )
    bodies.append(
        b'{"event_id":"dup3","metric":"sent","object_type":"email",'
        b'"data":{"identifiers":{"id":"first","id":"last","email":"a@b"}}}'
    )
    # The same key at two levels is no repeat; a key spelled like a deeper level's prefix is harmless.
    bodies.append(
        b'{"event_id":"lv","metric":"sent","object_type":"email",".customer_id":1,'
        b'"data":{"event_id":"inner","customer_id":"c1","identifiers":{"id":"c1","event_id":"x"}}}'
    )
    bodies.append(
        b'{"event_id":"big","object_type":"email","metric":"sent","data":{"action_id":123456789012345678901}}'
    )
    python_rows, sql_rows, _ = land_both(tmp_path, bodies, migrated)
    assert_same(python_rows, sql_rows)
    assert python_rows["rudder_discards"]  # the misfits were recorded, on both paths


def test_a_batch_of_several_parse_chunks_matches(tmp_path: Path, migrated: Path) -> None:
    """DuckDB parses a batch PARSE_CHUNK_ROWS bodies at a time: across several chunks, with odd bodies
    (the Python path) on the chunks' edges, both paths land the same rows."""
    bodies = [json.dumps(e).encode() for e in catalogue_events(3 * PARSE_CHUNK_ROWS + 7)]
    odd = [json.dumps({**b, "event_id": f"odd{i}"}).encode() for i, b in enumerate(ODD)]
    for chunk, body in enumerate(odd[:4], start=1):
        bodies.insert(chunk * PARSE_CHUNK_ROWS - 1, body)
    python_rows, sql_rows, plain = land_both(tmp_path, bodies, migrated)
    assert_same(python_rows, sql_rows)
    assert len(python_rows["tracks"]) == len(bodies)
    assert plain >= 3 * PARSE_CHUNK_ROWS  # the catalogue's events are plain


def test_a_body_not_utf8_takes_the_python_path_and_the_rest_stay_plain(
    tmp_path: Path, migrated: Path
) -> None:
    """The SQL path reads bodies as text; one that is not valid UTF-8 (the gateway stages none such, but
    staging may hold older ones) goes to the Python transform, which sets it aside as unreadable."""
    good = [json.dumps(e).encode() for e in scenario()[:6]]
    bad = b'{"event_id":"bad","metric":"sent","object_type":"email","data":{"customer_id":"\xff\xfe"}}'
    python_rows, sql_rows, plain = land_both(tmp_path, [*good[:3], bad, *good[3:]], migrated)
    assert_same(python_rows, sql_rows)
    assert plain == len(good)
    assert len(sql_rows["tracks"]) == len(good)


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**65), max_value=2**65),
    text,
    st.floats(allow_nan=False, allow_infinity=False),
)
value = st.recursive(
    scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=6
)
FIELDS = [
    "customer_id",
    "delivery_id",
    "action_id",
    "campaign_id",
    "subject",
    "href",
    "link_id",
    "failure_message",
    "recipient",
    "email_address",
    "proxied",
    "machine",
    "event_type",
    "journey_id",
    "recipients",
]


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(
        st.fixed_dictionaries(
            {
                "object_type": st.one_of(
                    st.sampled_from(["email", "sms", "push", "in_app", "whatsapp", "Email", "slack"]), value
                ),
                "metric": st.one_of(
                    st.sampled_from(
                        [
                            "sent",
                            "delivered",
                            "opened",
                            "clicked",
                            "bounced",
                            "undeliverable",
                            "cio_subscription_preferences_changed",
                        ]
                    ),
                    value,
                ),
                "timestamp": st.one_of(st.integers(min_value=-10, max_value=300_000_000_000), value),
                "data": st.dictionaries(
                    st.sampled_from(FIELDS), st.one_of(value, st.integers(0, 10**6), text), max_size=8
                ),
            }
        ),
        min_size=1,
        max_size=12,
    )
)
def test_random_bodies_match(tmp_path_factory: Any, migrated: Path, events: list[dict[str, Any]]) -> None:
    bodies = [json.dumps({"event_id": f"r{i}", **e}).encode() for i, e in enumerate(events)]
    python_rows, sql_rows, _ = land_both(tmp_path_factory.mktemp("eq"), bodies, migrated)
    assert_same(python_rows, sql_rows)


def test_sql_path_failure_falls_back_to_python(tmp_path: Path, monkeypatch: Any) -> None:
    from loader.warehouse import duckdb_sql

    monkeypatch.setattr(duckdb_sql, "parse_sql", lambda: "SELECT broken FROM nowhere")
    engine = make_warehouse_engine(f"duckdb:///{tmp_path / 'fallback.duckdb'}")
    try:
        upgrade(engine, "fb")
        bodies = [json.dumps(e).encode() for e in scenario()]
        added, _ = DuckDBSqlWriter(engine).land_staged(
            staged(bodies, "s"), {"s": Source("s", "F", "fb", "kkkk", "h")}, datetime(2026, 1, 1, tzinfo=UTC)
        )
        with engine.connect() as conn:
            count = conn.connection.driver_connection.execute('SELECT count(*) FROM "fb".tracks').fetchone()
    finally:
        engine.dispose()
    assert added == {"fb": len(bodies)} and count == (len(bodies),)
