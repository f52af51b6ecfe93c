"""Alembic: idempotent upgrades, and the extension revision upgrading a warehouse that holds data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from loader import service
from loader.gateway.app import create_app
from loader.settings import Settings
from loader.staging.sources import add_source
from loader.warehouse.engine import make_warehouse_engine
from loader.warehouse.migrate import current_revision, head_revision, upgrade
from tests.conftest import WRITE_KEY, post, rows


def test_migrate_is_idempotent(settings: Settings, source: service.Added) -> None:
    assert service.migrate_all(settings) == ["customer_io_prod"]
    assert service.migrate_all(settings) == ["customer_io_prod"]
    engine = make_warehouse_engine(settings.warehouse_url)
    try:
        assert current_revision(engine, "customer_io_prod") == head_revision()
    finally:
        engine.dispose()


def test_extension_revision_upgrades_a_populated_warehouse(settings: Settings) -> None:
    engine = make_warehouse_engine(settings.warehouse_url)
    try:
        upgrade(engine, "old_source", "0001")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO old_source.tracks (id, event, event_text, original_timestamp) "
                    "VALUES ('old-1', 'email_opened', 'Email Opened', :t)"
                ),
                {"t": datetime(2024, 1, 1, tzinfo=UTC)},
            )
            conn.execute(
                text(
                    "INSERT INTO old_source.email_opened (id, event, event_text, delivery_id, original_timestamp) "
                    "VALUES ('old-1', 'email_opened', 'Email Opened', 'dd', :t)"
                ),
                {"t": datetime(2024, 1, 1, tzinfo=UTC)},
            )
        assert current_revision(engine, "old_source") == "0001"
    finally:
        engine.dispose()
    from loader.service import open_staging

    staging = open_staging(settings)
    add_source(staging, "Old Source", "old_source", WRITE_KEY)
    staging.dispose()
    assert service.migrate_all(settings) == ["old_source"]
    with TestClient(create_app(settings)) as client:
        for metric, extra in (("opened", {"prefetched": True}), ("sent", {})):
            body = {
                "event_id": f"new-{metric}",
                "object_type": "in_app" if metric == "sent" else "email",
                "metric": metric,
                "timestamp": 1714557600,
                "data": {"delivery_id": "dd", **extra},
            }
            assert post(client, body).status_code == 200
    service.flush(settings)
    opened = {
        r["id"]: r["prefetched"] for r in rows(settings, "SELECT id, prefetched FROM old_source.email_opened")
    }
    assert opened.pop("old-1") is None
    assert list(opened.values()) == [True]
    assert rows(settings, "SELECT count(*) AS n FROM old_source.in_app_message_sent") == [{"n": 1}]
    assert rows(settings, "SELECT opens FROM old_source.email_funnel") == [{"opens": 2}]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(__file__).resolve().parents[1]
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", *QUIET, "wheel", "--no-deps", "-w", str(dist), str(root)], check=True
    )
    return next(dist.glob("*.whl"))


QUIET = ["--disable-pip-version-check", "-q"]


def migrates_from(installed: Path, python: str, env: dict[str, str], cwd: Path) -> None:
    """The loader that `python` imports is the one under `installed`, and it adds a source, migrates
    and reads a view with the migrations/ and sql/ that its install carried (not this checkout's)."""

    def loader(*args: str) -> str:
        done = subprocess.run(
            [python, "-m", "loader", *args], cwd=cwd, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    where = subprocess.run(
        [python, "-c", "import loader.resources as r; print(r.__file__); print(r.project_dir('sql'))"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(Path(p).is_relative_to(installed) for p in where), where
    loader("source", "add", "Wheel Source", "--write-key", "wheel-key-000001")
    loader("migrate")
    out = loader("query", "--json", "SELECT count(*) AS deliveries FROM wheel_source.email_funnel")
    assert json.loads(out) == [{"deliveries": 0}], out


@pytest.mark.slow
def test_a_wheel_install_finds_its_migrations_and_views(tmp_path: Path, wheel: Path) -> None:
    """Installed from a wheel, not run from a checkout, the loader migrates with the migrations/ and
    sql/ the wheel carried (as data files: they are not inside the package)."""
    prefix = tmp_path / "env"
    # A new environment, installed into by its own pip (pip --prefix from ours would uninstall ours).
    subprocess.run([sys.executable, "-m", "venv", str(prefix)], check=True)
    python = str(prefix / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", *QUIET, "install", "--no-deps", "--no-index", str(wheel)], check=True
    )
    # The new environment borrows our dependencies (a path, not our editable install of the loader).
    site = Path(sysconfig.get_path("purelib", vars={"base": str(prefix)}))
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    env = {"PATH": os.environ["PATH"], "LOADER_DATA_DIR": str(tmp_path / "data")}
    migrates_from(prefix, python, env, tmp_path)


@pytest.mark.slow
def test_a_target_install_finds_its_migrations_and_views(tmp_path: Path, wheel: Path) -> None:
    """`pip install --target DIR` puts the package in DIR/loader and the data files in DIR/share/: the
    loader run from DIR (on PYTHONPATH) finds them there."""
    target = tmp_path / "target"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            *QUIET,
            "install",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    # Our interpreter, with DIR first on the path: DIR's loader wins over our editable install's finder.
    env = {"PATH": os.environ["PATH"], "LOADER_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(target)}
    migrates_from(target, sys.executable, env, tmp_path)
