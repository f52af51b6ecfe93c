"""DuckDB's fast landing path: the common, plain Customer.io bodies transformed in SQL, vectorized.

The Python transform (loader.transform) is the reference. A body takes this path only when it is
"plain": every field it maps has the JSON type Customer.io documents (strings, integers that fit 64
bits, booleans), no duplicate keys, no NUL escapes, no `recipients`, an integer `timestamp` in range
(or none). Every other body goes through the Python transform, which also writes the discards; so does
a body whose plainness comes out NULL (never dropped). tests/test_duckdb_sql.py checks that both paths
give identical rows.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import pyarrow as pa

from loader.catalogue import (
    EVENT_NAMES,
    EVENT_TABLE_COLUMNS,
    SUBSCRIPTION_METRIC,
    SUBSCRIPTION_PREFERENCES,
    TRACKS_COLUMNS,
    UNKNOWN_EVENT,
)
from loader.naming import qualified, quote, table_name

# (name, JSON path, kind): kind says which JSON types keep a body plain.
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("metric", "$.metric", "name"),
    ("object_type", "$.object_type", "name"),
    ("top_event_id", "$.event_id", "str"),
    ("ts", "$.timestamp", "time"),
    ("customer_id", "$.data.customer_id", "str"),
    ("ident_id", "$.data.identifiers.id", "str"),
    ("ident_email", "$.data.identifiers.email", "str"),
    ("recipient", "$.data.recipient", "str"),
    ("email_address", "$.data.email_address", "str"),
    ("cio_id", "$.data.identifiers.cio_id", "str"),
    ("data_event_id", "$.data.event_id", "str"),
    ("delivery_id", "$.data.delivery_id", "str"),
    ("action_id", "$.data.action_id", "int"),
    ("broadcast_id", "$.data.broadcast_id", "int"),
    ("campaign_id", "$.data.campaign_id", "int"),
    ("newsletter_id", "$.data.newsletter_id", "int"),
    ("transactional_message_id", "$.data.transactional_message_id", "int"),
    ("content_id", "$.data.content_id", "int"),
    ("trigger_id", "$.data.trigger_id", "int"),
    ("parent_action_id", "$.data.parent_action_id", "int"),
    ("journey_id", "$.data.journey_id", "str"),
    ("device_id", "$.data.device_id", "str"),
    ("device_platform", "$.data.device_platform", "str"),
    ("content", "$.data.content", "str"),
    ("email_subject", "$.data.subject", "str"),
    ("link_url", "$.data.href", "str"),
    ("link_id", "$.data.link_id", "int"),
    ("reason", "$.data.failure_message", "str"),
    ("recipients", "$.data.recipients", "absent"),
    ("type", "$.data.event_type", "str"),
    ("proxied", "$.data.proxied", "bool"),
    ("prefetched", "$.data.prefetched", "bool"),
    ("synthetic", "$.data.synthetic", "bool"),
    ("machine", "$.data.machine", "bool"),
    ("tracked_response", "$.data.tracked_response", "str"),
    ("inbound_event_id", "$.data.inbound_event_id", "str"),
    ("trigger_event_id", "$.data.trigger_event_id", "str"),
)
MAX_EPOCH_S = 253402300799  # 9999-12-31T23:59:59Z, the last second Python's datetime holds

# The type each kind is read as when the body is plain; a value that does not fit reads as NULL.
READ_AS = {"name": "VARCHAR", "str": "VARCHAR", "int": "BIGINT", "bool": "BOOLEAN", "time": "BIGINT"}


def _t(name: str) -> str:
    """The field's JSON type (VARCHAR, UBIGINT, BIGINT, DOUBLE, BOOLEAN, OBJECT, ARRAY, NULL)."""
    return f"t_{name}"


def _x(name: str) -> str:
    """The field read as its kind's SQL type."""
    return f"x_{name}"


def _s(name: str) -> str:
    return f"(CASE WHEN {_t(name)} = 'VARCHAR' THEN {_x(name)} END)"


def _plain(name: str, kind: str) -> str:
    t, x = _t(name), _x(name)
    absent = f"({t} IS NULL OR {t} = 'NULL')"
    return {
        "name": "TRUE",
        "str": f"({absent} OR {t} = 'VARCHAR')",
        "int": f"({absent} OR ({t} IN ('BIGINT', 'UBIGINT') AND {x} IS NOT NULL))",
        "bool": f"({absent} OR {t} = 'BOOLEAN')",
        "absent": absent,
        "time": f"({absent} OR {t} IN ('VARCHAR', 'BOOLEAN', 'OBJECT', 'ARRAY') "
        f"OR ({t} = 'UBIGINT' AND coalesce({x} <= {MAX_EPOCH_S}, FALSE)))",
    }[kind]


def _value(name: str, kind: str) -> str:
    t, x = _t(name), _x(name)
    if kind == "int":
        return f"(CASE WHEN {t} IN ('BIGINT', 'UBIGINT') THEN {x} END)"
    if kind == "bool":
        return f"(CASE WHEN {t} = 'BOOLEAN' THEN {x} END)"
    return _s(name)


# Objects whose keys must be unique for a body to be plain (json_transform keeps a repeated key's first
# value, Python's json its last): their key lists are read once per body.
KEYED_OBJECTS = ("$", "$.data", "$.data.identifiers")


def _unique_keys() -> str:
    """No object repeats a key: every key, prefixed by its depth, counted once. (A prefixed key may
    collide with a real one, `.a` beside `a`: the body then takes the Python path, which is right too.)"""
    levels = [
        "keys[1]" if depth == 0 else f"list_transform(keys[{depth + 1}], lambda k: '{'.' * depth}' || k)"
        for depth in range(len(KEYED_OBJECTS))
    ]
    return f"(len(flatten(keys)) = list_unique(list_concat({', '.join(levels)})))"


def _member(struct: str, path: str) -> str:
    """`$.data.identifiers.id` -> `r."data"."identifiers"."id"`: a field of a transformed struct."""
    return struct + "." + ".".join(f'"{part}"' for part in path[2:].split("."))


@lru_cache(maxsize=2)
def structure(typed: bool) -> str:
    """The shape json_transform reads the mapped fields into: raw JSON text, or each kind's type."""
    tree: dict[str, Any] = {}
    for _, path, kind in FIELDS:
        *parents, leaf = path[2:].split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = READ_AS.get(kind, "JSON") if typed else "JSON"
    return json.dumps(tree)


@lru_cache(maxsize=1)
def names_table() -> pa.Table:
    """(object type, metric) -> event name and table, from the catalogue."""
    pairs = sorted(EVENT_NAMES.items())
    return pa.table(
        {
            "ot": [o for (o, _), _ in pairs],
            "metric": [m for (_, m), _ in pairs],
            "name": [n for _, n in pairs],
            "tbl": [table_name(n) for _, n in pairs],
        }
    )


@lru_cache(maxsize=1)
def parse_sql() -> str:
    """A SELECT over `_loader_in` (seq, message_id, source_id, schema_name, received_at, request_ip, body)
    and `_loader_names` (names_table): one row per body, with `plain` and every warehouse column. It reads
    no warehouse table, so it runs on a connection of its own (DuckDBSqlWriter.parse)."""
    columns = ",\n        ".join(
        f"json_type({_member('r', path)}) AS {_t(name)}, {_member('x', path)} AS {_x(name)}"
        for name, path, _ in FIELDS
    )
    keyed = ", ".join(f"'{path}'" for path in KEYED_OBJECTS)
    plain = " AND ".join(
        [
            "json_type(body) = 'OBJECT'",
            _unique_keys(),
            "NOT contains(body, '\\u0000')",
            f"NOT regexp_matches(coalesce({_s('object_type')}, ''), '[^\\x00-\\x7F]')",
            *(_plain(name, kind) for name, _, kind in FIELDS),
        ]
    )
    metric, object_type = _s("metric"), _s("object_type")

    def by_name(column: str, unknown: str, preferences: str) -> str:
        return (
            f"CASE WHEN {metric} IS NULL THEN '{unknown}' "
            f"WHEN {metric} = '{SUBSCRIPTION_METRIC}' THEN '{preferences}' "
            f"WHEN {object_type} IS NULL THEN '{unknown}' "
            f"ELSE coalesce(n.{column}, '{unknown}') END"
        )

    name = by_name("name", UNKNOWN_EVENT, SUBSCRIPTION_PREFERENCES)
    event = by_name("tbl", table_name(UNKNOWN_EVENT), table_name(SUBSCRIPTION_PREFERENCES))
    user_id = f"coalesce({_s('customer_id')}, {_s('ident_id')})"
    email = f"coalesce({_s('ident_email')}, {_s('recipient')}, {_s('email_address')})"
    event_time = (
        f"CASE WHEN {_t('ts')} = 'UBIGINT' AND {_x('ts')} <= {MAX_EPOCH_S} "
        f"THEN to_timestamp({_x('ts')}) ELSE received_at END"
    )
    properties = ",\n        ".join(
        f"{_value(n, k)} AS {quote(n)}"
        for n, _, k in FIELDS
        if n in dict(EVENT_TABLE_COLUMNS) and n not in ("recipients",)
    )
    return f"""
WITH read AS (
    SELECT *,
        json_transform(body, '{structure(False)}') AS r,
        json_transform(body, '{structure(True)}') AS x,
        json_keys(body, [{keyed}]) AS keys
    FROM _loader_in
), typed AS (
    SELECT * EXCLUDE (r, x), {columns} FROM read
)
SELECT
    schema_name,
    seq,
    coalesce({plain}, FALSE) AS plain,
    message_id AS id,
    {user_id} AS user_id,
    CASE WHEN {user_id} IS NULL THEN {email} END AS anonymous_id,
    {event} AS event,
    {name} AS event_text,
    {event_time} AS sent_at,
    {event_time} AS original_timestamp,
    received_at AS "timestamp",
    received_at,
    request_ip AS context_ip,
    request_ip AS context_request_ip,
    'unknown' AS context_library_name,
    'unknown' AS context_library_version,
    'Customer.io' AS context_integration_name,
    {email} AS context_traits_email,
    {_s("cio_id")} AS context_traits_cio_id,
    source_id AS context_source_id,
    'customerio' AS context_source_type,
    coalesce({_s("top_event_id")}, {_s("data_event_id")}) AS event_id,
    CAST(NULL AS VARCHAR) AS recipients,
        {properties}
FROM typed
LEFT JOIN _loader_names n ON n.ot = lower({object_type}) AND n.metric = {metric}
"""


# The statements below run in the warehouse transaction over `_loader_parsed`: the plain rows of a batch
# (parse_sql's output less its non-plain rows and its `plain` column), registered from Arrow.

# Staging keeps every body (and so its id) at least 8 days, and Customer.io retries an event for at most 7:
# a retry finds its id in staging and is never staged twice. A row is checked against every id in tracks
# only when its event is older than that (a body posted again by hand after retention purged its staged
# copy) or has no time of its own (received_at stands in for it, so age says nothing).
TRUSTED_AGE_S = 7 * 86400
# A row of `_loader_parsed` to check against every id; parameter: the cutoff (now - TRUSTED_AGE_S).
_OLD_ROW = "(original_timestamp < ? OR original_timestamp = received_at)"
SPAN_SQL = f"""
SELECT min(received_at), max(received_at), count(*) FILTER (WHERE {_OLD_ROW})
FROM _loader_parsed WHERE schema_name = ?
"""
EVENT_COUNTS_SQL = (
    "SELECT event, count(*) FROM _loader_parsed WHERE schema_name = ? GROUP BY event ORDER BY event"
)


def insert_sql(schema: str, table: str, track_only: bool) -> str:
    """INSERT of one schema's rows (`_loader_parsed`) into one table; parameters: uuid_ts, the schema,
    and for an event table its name."""
    spec = TRACKS_COLUMNS if track_only else EVENT_TABLE_COLUMNS
    columns = [name for name, _ in spec]
    select = ", ".join("?" if c == "uuid_ts" else quote(c) for c in columns)
    where = "schema_name = ?" + ("" if track_only else " AND event = ?")
    target = ", ".join(quote(c) for c in columns)
    return (
        f"INSERT INTO {qualified(schema, table)} ({target}) SELECT {select} FROM _loader_parsed WHERE {where}"
    )


def landed_ids_sql(schema: str) -> str:
    """Ids of one schema's rows in `_loader_parsed` that are in `tracks` already; parameters: schema,
    first and last received_at of its rows (SPAN_SQL). Staging keeps message ids unique, so for a recent
    event an id can be there only when this very body landed before its claim was marked (a lander died
    in between). That row has the same received_at: comparing within the span reads the newest row
    groups, not every id ever landed. Older events: old_landed_ids_sql."""
    tracks = qualified(schema, "tracks")
    return (
        "SELECT p.id FROM _loader_parsed p WHERE p.schema_name = ? AND EXISTS ("
        f"SELECT 1 FROM {tracks} t WHERE t.received_at BETWEEN ? AND ? AND t.id = p.id)"
    )


def old_landed_ids_sql(schema: str) -> str:
    """Ids of one schema's rows that SPAN_SQL counts as old and that are anywhere in `tracks` (a scan of
    its ids, paid only by batches that hold such rows); parameters: schema, the cutoff."""
    tracks = qualified(schema, "tracks")
    return (
        f"SELECT p.id FROM _loader_parsed p WHERE p.schema_name = ? AND {_OLD_ROW} "
        f"AND EXISTS (SELECT 1 FROM {tracks} t WHERE t.id = p.id)"
    )
