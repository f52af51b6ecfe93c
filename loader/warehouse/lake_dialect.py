"""The SQLAlchemy dialect of a DuckLake (loader.warehouse.lake): duckdb_engine's, each connection a
cursor of this process's DuckDB with the lake attached. Its own module, so that importing the lake's
helpers does not import DuckDB."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from duckdb_engine import Dialect as DuckDBDialect
from sqlalchemy.engine import URL

from loader.warehouse.lake import ALIAS, Lake, sql_string


class LakeDialect(DuckDBDialect):
    """duckdb_engine's dialect on a lake. LOADing the extensions costs ~0.2 s, so a process keeps one
    in-memory DuckDB per lake (and mode) with the lake attached, and every connection is a cursor of it:
    a connection of its own, with its own transactions and snapshots, sharing the attached lake. Settings
    given per engine (the memory cap, the threads) are the instance's, set again by each connection."""

    supports_statement_cache = False

    def create_connect_args(self, url: URL) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (), {"lake": url.render_as_string(hide_password=False)}

    def connect(self, *cargs: Any, **cparams: Any) -> Any:
        from duckdb_engine import ConnectionWrapper

        conn = _root(cparams["lake"], bool(cparams.get("lake_read_only"))).cursor()
        for name, value in dict(cparams.get("config", {})).items():
            conn.execute(f"SET {name} = {sql_string(str(value))}")
        conn.execute(f"USE {ALIAS}")
        return ConnectionWrapper(conn)


_ROOTS: OrderedDict[tuple[str, bool], Any] = OrderedDict()
_ROOTS_LOCK = threading.Lock()
# A process uses one lake, read-only or not; a few more are kept (the least recently used one is let go,
# and freed once its last connection closes).
_ROOTS_KEPT = 4


def _root(url: str, read_only: bool) -> Any:
    """This process's DuckDB instance with the lake attached (read-only or not), made on first use."""
    import duckdb

    with _ROOTS_LOCK:
        root = _ROOTS.get((url, read_only))
        if root is not None:
            _ROOTS.move_to_end((url, read_only))
        else:
            lake = Lake.from_url(url)
            if not read_only:
                lake.prepare()
            # DuckDB's external file cache keeps what it read of every Parquet file, those merged away
            # and deleted too, so a long-running lander grew and slowed with every merge. The OS caches
            # local files anyway.
            config: dict[str, Any] = {
                "autoinstall_known_extensions": False,
                "enable_external_file_cache": False,
            }
            root = duckdb.connect(":memory:", config=config)
            for statement in lake.statements(read_only):
                root.execute(statement)
            _ROOTS[(url, read_only)] = root
            while len(_ROOTS) > _ROOTS_KEPT:
                _ROOTS.popitem(last=False)
        return root
