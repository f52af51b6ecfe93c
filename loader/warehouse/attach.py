"""`loader attach-sql`: the DuckDB statements after which any DuckDB session (the CLI, a notebook, a BI
tool's init SQL) reads the warehouse as `warehouse.<schema>.<table>`. Never a password: a PostgreSQL
catalog or warehouse takes its credentials from the environment (PGPASSWORD, ~/.pgpass) or a DuckDB
secret."""

from __future__ import annotations

import os

from sqlalchemy.engine import make_url

from loader.errors import ConfigError
from loader.warehouse import lake


def attach_statements(url: str, read_only: bool = True) -> list[str]:
    """The statements for a warehouse URL: a DuckLake, a DuckDB file or PostgreSQL."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == lake.BACKEND:
        statements = lake.Lake.from_url(parsed).statements(read_only, with_password=False)
        return [s for s in statements if not s.startswith("USE ")]
    mode = " (READ_ONLY)" if read_only else ""
    if backend == "duckdb" and parsed.database and parsed.database != ":memory:":
        path = lake.sql_string(os.path.abspath(parsed.database))
        return [f"ATTACH {path} AS {lake.ALIAS}{mode}"]
    if backend == "postgresql":
        parts = {"dbname": parsed.database, "host": parsed.host, "port": parsed.port, "user": parsed.username}
        libpq = " ".join(f"{k}={lake.libpq_value(str(v))}" for k, v in parts.items() if v)
        options = "TYPE postgres, READ_ONLY" if read_only else "TYPE postgres"
        return [
            f"LOAD {lake.sql_string(lake.extension_path('postgres_scanner'))}",
            f"ATTACH {lake.sql_string(libpq)} AS {lake.ALIAS} ({options})",
        ]
    raise ConfigError(f"DuckDB cannot attach a {backend} warehouse")


def attach_sql(url: str, read_only: bool = True) -> str:
    return "".join(f"{s};\n" for s in attach_statements(url, read_only))
