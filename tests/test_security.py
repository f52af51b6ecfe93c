"""Hostile input and secrets: signatures, write keys, limits, injection, fuzzing, logs."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from loader import service
from loader.gateway.app import create_app
from loader.gateway.auth import signature
from loader.settings import Settings
from loader.staging import Staging
from tests.conftest import FIXTURES, WRITE_KEY, make_settings, payload, post, rows

VECTOR = json.loads((FIXTURES / "payloads" / "signature_test_vector.json").read_text())
SIGNED_BODY = payload(VECTOR["raw_body_file"])
SIGNING_KEY = VECTOR["signing_key_utf8"]


def test_known_good_vector() -> None:
    assert signature(SIGNING_KEY, VECTOR["x_cio_timestamp"], SIGNED_BODY) == VECTOR["x_cio_signature_hex"]


@pytest.fixture
def signed(tmp_path: Path) -> Settings:
    settings = make_settings(tmp_path)
    service.source_add(settings, "Signed", write_key=WRITE_KEY, signing_key=SIGNING_KEY)
    return settings


def headers(ts: str = VECTOR["x_cio_timestamp"], sig: str = VECTOR["x_cio_signature_hex"]) -> dict[str, str]:
    return {"X-CIO-Timestamp": ts, "X-CIO-Signature": sig}


def test_signatures(signed: Settings) -> None:
    with TestClient(create_app(signed)) as client:
        assert post(client, SIGNED_BODY, headers=headers()).status_code == 200
        assert (
            post(client, SIGNED_BODY, headers=headers(sig=VECTOR["x_cio_signature_hex"].upper())).status_code
            == 200
        )
        bad = [
            post(client, SIGNED_BODY),
            post(client, SIGNED_BODY, headers={"X-CIO-Signature": VECTOR["x_cio_signature_hex"]}),
            post(client, SIGNED_BODY, headers=headers(ts=str(int(VECTOR["x_cio_timestamp"]) + 1))),
            post(client, SIGNED_BODY.replace(b"club", b"clue"), headers=headers()),
            post(client, SIGNED_BODY, headers=headers(sig="0" * 64)),
            post(
                client,
                SIGNED_BODY,
                headers={**headers(), "X-CIO-Signature": "not hex at all \xe2\x98\x83".encode("latin-1")},
            ),
        ]
        assert [(r.status_code, r.text) for r in bad] == [(401, "invalid signature")] * len(bad)


def test_signature_for_another_source_fails(signed: Settings) -> None:
    service.source_add(signed, "Other", write_key="K-other-000001", signing_key="another-key")
    with TestClient(create_app(signed)) as client:
        assert post(client, SIGNED_BODY, key="K-other-000001", headers=headers()).status_code == 401


def test_signature_age_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, LOADER_SIGNATURE_MAX_AGE_S="300")
    service.source_add(settings, "Aged", write_key=WRITE_KEY, signing_key=SIGNING_KEY)
    now = str(int(time.time()))
    with TestClient(create_app(settings)) as client:
        assert post(client, SIGNED_BODY, headers=headers()).status_code == 401  # signed in 2023
        fresh = headers(ts=now, sig=signature(SIGNING_KEY, now, SIGNED_BODY))
        assert post(client, SIGNED_BODY, headers=fresh).status_code == 200
        ahead = str(int(time.time()) + 3600)
        assert (
            post(
                client, SIGNED_BODY, headers=headers(ts=ahead, sig=signature(SIGNING_KEY, ahead, SIGNED_BODY))
            ).status_code
            == 401
        )


def test_write_keys_are_hashed_and_generated_long(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    added = service.source_add(settings, "Generated")
    assert len(added.write_key) >= 22  # 192 random bits, URL-safe
    service.source_add(settings, "Given", write_key="K-given-secret-1")
    stored = (settings.data_dir / "staging.sqlite3").read_bytes()
    for wal in settings.data_dir.glob("staging.sqlite3-wal"):
        stored += wal.read_bytes()
    assert added.write_key.encode() not in stored and b"K-given-secret-1" not in stored
    assert "write_key" not in repr(added.source) or added.write_key not in repr(added.source)


def test_one_key_writes_only_its_own_schema(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    service.source_add(settings, "Alpha", write_key="K-alpha-000001")
    service.source_add(settings, "Beta", write_key="K-beta-0000001")
    with TestClient(create_app(settings)) as client:
        post(client, payload("04_legacy_email_clicked.json"), key="K-alpha-000001")
    service.flush(settings)
    assert rows(settings, "SELECT count(*) AS n FROM alpha.tracks") == [{"n": 1}]
    assert rows(settings, "SELECT count(*) AS n FROM beta.tracks") == [{"n": 0}]


@pytest.mark.parametrize(
    ("name", "schema"),
    [
        ('x"; DROP SCHEMA main; --', "x_drop_schema_main"),
        ("Robert'); DROP TABLE tracks;--", "robert_drop_table_tracks"),
        ("select", "_select"),
        ("Ünïcødé ☃ source", "n_c_d_source"),
        ("1st source", "_1_st_source"),
    ],
)
def test_hostile_source_names_become_safe_schemas(tmp_path: Path, name: str, schema: str) -> None:
    settings = make_settings(tmp_path)
    added = service.source_add(settings, name)
    assert added.source.schema == schema
    with TestClient(create_app(settings)) as client:
        assert post(client, payload("04_legacy_email_clicked.json"), key=added.write_key).status_code == 200
    service.flush(settings)
    assert rows(settings, f'SELECT count(*) AS n FROM "{schema}".tracks') == [{"n": 1}]


INJECTIONS = [
    "'; DROP TABLE tracks; --",
    '" OR 1=1 --',
    "\\x00\x00nul",
    "${jndi:ldap://x}",
    "😀" * 50,
    "a" * 100_000,
]


def test_injection_in_every_field_lands_as_plain_values(client: TestClient, settings: Settings) -> None:
    for i, value in enumerate(INJECTIONS):
        body = {
            "event_id": f"INJ{i}{value[:20]}",
            "object_type": "email",
            "metric": value,
            "timestamp": 1700000000,
            "data": {
                "customer_id": value,
                "delivery_id": value,
                "subject": value,
                "recipient": value,
                value[:50]: value,
            },
        }
        assert post(client, body).status_code == 200
    service.flush(settings)
    got = rows(settings, "SELECT user_id, delivery_id FROM customer_io_prod.unknown_event")
    assert len(got) == len(INJECTIONS)
    assert {r["user_id"] for r in got} == {v.replace("\x00", "\ufffd") for v in INJECTIONS}
    assert rows(settings, "SELECT count(*) AS n FROM customer_io_prod.tracks") == [{"n": len(INJECTIONS)}]


def test_deep_nesting_and_many_keys(client: TestClient, settings: Settings) -> None:
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    assert post(client, deep).status_code == 200  # kept in quarantine: no JSON parser takes it
    nested_ok = {"event_id": "deep", "data": {"x": json.loads("[" * 500 + "]" * 500)}}
    assert post(client, nested_ok).status_code == 200
    many = {"event_id": "many", "data": {f"k{i}": i for i in range(20_000)}}
    assert post(client, many).status_code == 200
    service.flush(settings)
    assert rows(settings, "SELECT count(*) AS n FROM customer_io_prod.tracks") == [{"n": 2}]


def test_a_five_megabyte_event_is_kept_and_a_body_past_the_ceiling_is_413(
    client: TestClient, settings: Settings
) -> None:
    """An email "sent" with its body content runs to megabytes: kept (quarantined, replayable once
    LOADER_MAX_BODY_BYTES is raised), answered 200. Past the hard ceiling (32 MB): 413."""
    five = b'{"event_id":"five","data":{"content":"' + b"x" * 5_000_000 + b'"}}'
    assert post(client, five).status_code == 200
    assert post(client, b"x" * 32_000_001).status_code == 413
    staging = Staging(settings.staging_url)
    [kept] = staging.quarantined()
    staging.dispose()
    assert kept["body"] == five


def test_no_secret_in_logs(signed: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(signed)) as client:
        post(client, SIGNED_BODY, headers=headers())
        post(client, SIGNED_BODY, headers=headers(sig="0" * 64))
        post(client, b"{}", key="K-wrong-guess-1")
    server_side = [r for r in caplog.records if not r.name.startswith("httpx")]  # the client logs its own URL
    text = "\n".join(r.getMessage() for r in server_side)
    assert "POST /v1/webhook" in text
    for secret in (WRITE_KEY, SIGNING_KEY, "K-wrong-guess-1", "writeKey"):
        assert secret not in text
    assert SIGNING_KEY not in repr(signed) and WRITE_KEY not in repr(signed)


header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())),
    object_type=st.one_of(st.none(), st.text(max_size=12), json_values),
    metric=st.one_of(st.none(), st.text(max_size=12), json_values),
    data=json_values,
    timestamp=st.one_of(
        st.none(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12)
    ),
    extra_headers=st.dictionaries(
        st.sampled_from(
            ["X-CIO-Signature", "X-CIO-Timestamp", "Authorization", "Content-Type", "Content-Length"]
        ),
        header_values,
        max_size=3,
    ),
)
def test_fuzz_never_5xx_and_valid_events_still_land(
    client: TestClient, settings: Settings, body, object_type, metric, data, timestamp, extra_headers
) -> None:
    extra_headers.pop("Content-Length", None)  # a lying length is the client library's to refuse
    event = {
        "event_id": None,
        "object_type": object_type,
        "metric": metric,
        "data": data,
        "timestamp": timestamp,
    }
    for raw in (body, json.dumps(event, default=str).encode()):
        response = post(client, raw, headers=extra_headers)
        assert response.status_code in (200, 400, 401, 413), response.text
    assert client.get("/health").status_code == 200


def test_after_fuzzing_the_lander_lands_everything(client: TestClient, settings: Settings) -> None:
    # The same kinds of bodies the fuzz test sends, landed: no body can stall the lander.
    odd = [
        {
            "data": {"customer_id": {"nested": True}, "identifiers": [1, 2]},
            "metric": ["x"],
            "object_type": {},
        },
        {"event_id": 12345, "timestamp": float("1e300"), "data": None},
        {"event_id": True, "timestamp": -1, "data": {"recipients": "not a list", "href": 5}},
        {"event_id": "ok-1", "object_type": "email", "metric": "opened", "data": {"delivery_id": 9}},
    ]
    for body in odd:
        assert post(client, json.dumps(body).encode()).status_code == 200
    service.flush(settings)
    assert rows(settings, "SELECT count(*) AS n FROM customer_io_prod.tracks") == [{"n": 4}]


@pytest.mark.slow
def test_stalled_clients_are_disconnected_and_others_served(tmp_path: Path) -> None:
    import socket

    from tests.procs import Server, cli, loader_env

    env = loader_env(tmp_path / "data", LOADER_HEADER_TIMEOUT_S="1")
    cli(env, "source", "add", "Stall", "--write-key", WRITE_KEY)
    server = Server(env, tmp_path / "serve.log")
    try:
        stalled = []
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(b"POST /v1/webhook?writeKey=" + WRITE_KEY.encode() + b" HTTP/1.1\r\nHost: x\r\n")
            stalled.append(sock)
        import httpx2

        started = time.monotonic()
        response = httpx2.post(
            f"{server.url}/v1/webhook", params={"writeKey": WRITE_KEY}, content=b'{"event_id":"s"}'
        )
        assert response.status_code == 200 and time.monotonic() - started < 1
        for sock in stalled:
            sock.settimeout(5)
            assert sock.recv(100) == b""  # closed by the server after the header deadline
            sock.close()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("name", "bad", "good", "field"),
    [
        ("LOADER_BODY_TIMEOUT_S", ["0", "-1", "nan", "inf", "soon"], "2.5", "body_timeout_s"),
        ("LOADER_FLUSH_INTERVAL_S", ["0", "-0.1", "nan"], "0.5", "flush_interval_s"),
        ("LOADER_CLAIM_LEASE_S", ["0", "-60", "inf"], "30", "claim_lease_s"),
        ("LOADER_BATCH_SIZE", ["0", "-5", "1.5"], "1", "batch_size"),
        ("LOADER_MAX_BODY_BYTES", ["0", "-1"], "1", "max_body_bytes"),
        ("LOADER_PORT", ["0", "-1", "65536"], "65535", "port"),
        ("LOADER_SIGNATURE_MAX_AGE_S", ["-1"], "0", "signature_max_age_s"),
    ],
)
def test_a_number_out_of_range_is_refused_at_start(name: str, bad: list[str], good: str, field: str) -> None:
    """A batch size of 0, a lease of 0 or a port of 70000 would fail later or quietly do nothing: each is
    refused when the settings are read, naming the variable."""
    from loader.errors import ConfigError

    for value in bad:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value}, env_file=None)
    assert getattr(Settings.from_env({name: good}, env_file=None), field) == float(good)


@pytest.mark.slow
def test_a_body_that_stops_coming_gets_408_and_one_that_comes_in_parts_200(tmp_path: Path) -> None:
    """Most bodies arrive with their headers and are read at once; one still on its way is read under
    LOADER_BODY_TIMEOUT_S: answered 408 when it stops coming, 200 when it completes in time."""
    import socket

    from tests.procs import Server, cli, loader_env

    env = loader_env(tmp_path / "data", LOADER_BODY_TIMEOUT_S="1")
    cli(env, "source", "add", "Slow", "--write-key", WRITE_KEY)
    server = Server(env, tmp_path / "serve.log")

    def request(body: bytes) -> bytes:
        return (
            f"POST /v1/webhook?writeKey={WRITE_KEY} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    def answer(sock: socket.socket) -> bytes:
        sock.settimeout(10)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data

    try:
        whole = request(b'{"event_id":"slow-1","object_type":"email","metric":"opened"}')
        with socket.create_connection(("127.0.0.1", server.port)) as stalled:
            stalled.sendall(whole[:-20])  # the headers and part of the body, then nothing
            started = time.monotonic()
            got = answer(stalled)
            assert got.startswith(b"HTTP/1.1 408 ") and got.endswith(b"request body timeout"), got
            assert 0.8 < time.monotonic() - started < 5
        with socket.create_connection(("127.0.0.1", server.port)) as parts:
            parts.sendall(whole[:-20])
            time.sleep(0.3)
            parts.sendall(whole[-20:])
            got = answer(parts)
            assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"OK"), got
        with socket.create_connection(("127.0.0.1", server.port)) as at_once:
            at_once.sendall(request(b'{"event_id":"slow-2"}'))
            assert answer(at_once).startswith(b"HTTP/1.1 200 ")
    finally:
        server.stop()


def test_schema_names_the_warehouse_reserves_are_escaped(settings: Settings, warehouse_url: str) -> None:
    names = {"PG Stats": "_pg_stats", "Information Schema": "_information_schema"}
    if warehouse_url.startswith(("duckdb", "ducklake")):
        names = {"Warehouse": "_warehouse", "System": "_system", "Temp": "_temp", "Main": "main"}
    for i, (name, schema) in enumerate(names.items()):
        added = service.source_add(settings, name, write_key=f"K-reserved-{i}")
        assert added.source.schema == schema
        with TestClient(create_app(settings)) as client:
            assert (
                post(client, payload("04_legacy_email_clicked.json"), key=f"K-reserved-{i}").status_code
                == 200
            )
        service.flush(settings)
        assert rows(settings, f'SELECT count(*) AS n FROM "{schema}".email_link_clicked') == [{"n": 1}]
