"""One frozen settings object, built from the environment (and an optional .env file) once, at the edge."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from dotenv import dotenv_values

from loader.errors import ConfigError

T = TypeVar("T")


def _redact_url(url: str) -> str:
    """Hide a password in a SQLAlchemy URL, for repr and logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable url>"


@dataclass(frozen=True)
class Settings:
    """Everything the loader reads from its environment; secrets never appear in repr."""

    data_dir: Path
    warehouse_url: str = field(repr=False)
    staging_url: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 8081
    max_body_bytes: int = 4_096_000
    max_kept_body_bytes: int = 32_000_000
    signature_max_age_s: int = 0
    body_timeout_s: float = 30.0
    batch_size: int = 25000
    flush_interval_s: float = 0.1
    claim_lease_s: float = 60.0
    archive_retention_days: int = 0
    archive_dir: str = ""  # empty: <data_dir>/archive
    disk_warn_free_pct: float = 10.0
    archive_every_s: float = 60.0
    log_json: bool = False
    lake_maintenance_s: float = 30.0
    lake_keep_s: float = 600.0

    def __repr__(self) -> str:
        return (
            f"Settings(data_dir={str(self.data_dir)!r}, warehouse={_redact_url(self.warehouse_url)!r}, "
            f"staging={_redact_url(self.staging_url)!r}, host={self.host!r}, port={self.port})"
        )

    def to_json(self) -> str:
        """For a child process (it holds URLs with passwords: a pipe, never a log or argv)."""
        return json.dumps({**asdict(self), "data_dir": str(self.data_dir)})

    @classmethod
    def from_json(cls, text: str) -> Settings:
        values = json.loads(text)
        return cls(**{**values, "data_dir": Path(values["data_dir"])})

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, env_file: str | None = ".env") -> Settings:
        """Build settings from variables; a .env file fills in what the environment lacks."""
        env: dict[str, str] = {}
        if env_file and Path(env_file).is_file():
            env.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        env.update(os.environ if environ is None else environ)
        data_dir = Path(env.get("LOADER_DATA_DIR", "./data")).expanduser().resolve()
        return cls(
            data_dir=data_dir,
            warehouse_url=env.get("LOADER_WAREHOUSE_URL") or default_warehouse_url(data_dir),
            staging_url=env.get("LOADER_STAGING_URL") or f"sqlite:///{data_dir / 'staging.sqlite3'}",
            host=env.get("LOADER_HOST", "127.0.0.1"),
            port=_int(env, "LOADER_PORT", 8080, low=1, high=65535),
            admin_host=env.get("LOADER_ADMIN_HOST", "127.0.0.1"),
            admin_port=_int(env, "LOADER_ADMIN_PORT", 8081, low=0, high=65535),
            max_body_bytes=_int(env, "LOADER_MAX_BODY_BYTES", 4_096_000, low=1),
            max_kept_body_bytes=_int(env, "LOADER_MAX_KEPT_BODY_BYTES", 32_000_000, low=1),
            signature_max_age_s=_int(env, "LOADER_SIGNATURE_MAX_AGE_S", 0, low=0),
            body_timeout_s=_positive(env, "LOADER_BODY_TIMEOUT_S", 30.0),
            batch_size=_int(env, "LOADER_BATCH_SIZE", 25000, low=1),
            flush_interval_s=_positive(env, "LOADER_FLUSH_INTERVAL_S", 0.1),
            claim_lease_s=_positive(env, "LOADER_CLAIM_LEASE_S", 60.0),
            archive_retention_days=_retention_days(env),
            archive_dir=str(
                Path(env.get("LOADER_ARCHIVE_DIR") or data_dir / "archive").expanduser().resolve()
            ),
            disk_warn_free_pct=_percent(env, "LOADER_DISK_WARN_FREE_PCT", 10.0),
            archive_every_s=_positive(env, "LOADER_ARCHIVE_EVERY_S", 60.0),
            log_json=env.get("LOADER_LOG_JSON", "").lower() in ("1", "true", "yes"),
            lake_maintenance_s=_positive(env, "LOADER_LAKE_MAINTENANCE_S", 30.0),
            lake_keep_s=_positive(env, "LOADER_LAKE_KEEP_S", 600.0),
        )

    def __post_init__(self) -> None:
        if self.max_kept_body_bytes < self.max_body_bytes:
            raise ConfigError(
                "LOADER_MAX_KEPT_BODY_BYTES (the hard ceiling, answered 413) must be at least "
                "LOADER_MAX_BODY_BYTES (larger bodies are kept in quarantine), got "
                f"{self.max_kept_body_bytes} < {self.max_body_bytes}"
            )

    @property
    def archive_path(self) -> Path:
        return Path(self.archive_dir) if self.archive_dir else self.data_dir / "archive"

    def ensure_data_dir(self) -> None:
        """Create the data folder that the embedded defaults live in."""
        self.data_dir.mkdir(parents=True, exist_ok=True)


def default_warehouse_url(data_dir: Path) -> str:
    """The embedded default: a DuckLake in the data folder (catalog `lake.sqlite`, files `lake.files/`).
    A data folder that holds only the DuckDB file of an older version keeps it, so an upgrade loses
    nothing; the README says how to move it to the lake."""
    old = data_dir / "warehouse.duckdb"
    if old.exists() and not (data_dir / "lake.sqlite").exists():
        return f"duckdb:///{old}"
    return f"ducklake:///{data_dir / 'lake.sqlite'}"


def _number(env: dict[str, str], name: str, default: T, kind: Callable[[str], T], what: str) -> T:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None


# Customer.io retries a webhook for up to 7 days. Staging's record of an event (its unique message id) is
# what stops a retry that late from landing twice, so it must outlive the retries.
MIN_RETENTION_DAYS = 8


def _retention_days(env: dict[str, str]) -> int:
    days = _int(env, "LOADER_ARCHIVE_RETENTION_DAYS", 0)
    if 0 < days < MIN_RETENTION_DAYS or days < 0:
        raise ConfigError(
            f"LOADER_ARCHIVE_RETENTION_DAYS must be 0 (keep forever) or at least {MIN_RETENTION_DAYS}: "
            "Customer.io retries for up to 7 days, and staging's record of an event is what keeps a late "
            f"retry from landing twice; got {days}"
        )
    return days


def _int(
    env: dict[str, str], name: str, default: int, low: int | None = None, high: int | None = None
) -> int:
    """A whole number, refused at start (with the variable's name) outside [low, high]: a batch size of
    0, a negative body limit or port 70000 would otherwise fail later, or quietly do nothing."""
    value = _number(env, name, default, int, "a whole number")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name} must be a whole number {bounds}, got {env.get(name)!r}")
    return value


def _float(env: dict[str, str], name: str, default: float) -> float:
    return _number(env, name, default, float, "a number")


def _percent(env: dict[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not 0 <= value <= 100:
        raise ConfigError(f"{name} must be a percentage from 0 to 100, got {env.get(name)!r}")
    return value


def _positive(env: dict[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not 0 < value < math.inf:
        raise ConfigError(f"{name} must be a number of seconds above 0, got {env.get(name)!r}")
    return value
