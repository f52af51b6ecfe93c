"""Fixtures: real DuckDB files in temp folders, fresh databases on the local PostgreSQL, the real app."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from loader import service
from loader.gateway.app import create_app
from loader.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"
PG_ADMIN_URL = os.environ.get("LOADER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
WRITE_KEY = "test-write-key-0001"
ADMIN_PORT = 8081
ADMIN = f"http://testserver:{ADMIN_PORT}"  # a TestClient URL on the admin listener (dashboard, /metrics)


def load_cases() -> list[dict[str, Any]]:
    with open(FIXTURES / "rudderstack_transformer_cases.jsonl") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def payload(name: str) -> bytes:
    return (FIXTURES / "payloads" / name).read_bytes()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    name = f"loader_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["ducklake", "duckdb", "postgresql"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on a DuckLake (SQLite catalog), a DuckDB file and a fresh PostgreSQL database."""
    if request.param == "ducklake":
        return f"ducklake:///{tmp_path / 'lake.sqlite'}"
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    return str(request.getfixturevalue("pg_url"))


def make_settings(tmp_path: Path, **env: str) -> Settings:
    base = {"LOADER_DATA_DIR": str(tmp_path / "data")}
    base.update(env)
    return Settings.from_env(base, env_file=None)


@pytest.fixture
def settings(tmp_path: Path, warehouse_url: str) -> Settings:
    return make_settings(tmp_path, LOADER_WAREHOUSE_URL=warehouse_url)


@pytest.fixture
def duck_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def source(settings: Settings) -> service.Added:
    return service.source_add(settings, "Customer IO Prod", write_key=WRITE_KEY)


@pytest.fixture
def client(settings: Settings, source: service.Added) -> Iterator[TestClient]:
    app = create_app(settings, admin_port=ADMIN_PORT)
    with TestClient(app, client=("203.0.113.7", 50000)) as test_client:
        yield test_client


def post(client: TestClient, body: bytes | dict[str, Any], key: str = WRITE_KEY, **kw: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/v1/webhook", params={"writeKey": key}, content=data, **kw)


def rows(settings: Settings, sql: str) -> list[dict[str, Any]]:
    columns, values = service.query(settings, sql)
    return [dict(zip(columns, v, strict=True)) for v in values]
