"""Warehouse names made the way RudderStack makes them: schemas, tables and columns.

Pure and cached. Every identifier that reaches SQL comes from here and is quoted by `quote`.
"""

from __future__ import annotations

import re
from functools import lru_cache

from loader.reserved import RESERVED_WORDS

MAX_NAME = {"postgresql": 63}
DEFAULT_MAX_NAME = 127

_ALNUM_RUN = re.compile(r"[A-Za-z0-9]+")
# Words as RudderStack's table/column snake case splits them (underscoreDivideNumbers=false):
# digits stay glued to the letters around them ("abc123def456" -> abc123, def456).
_WORD = re.compile(r"[0-9]*[A-Z]?[a-z]+[0-9]*|[A-Z]+(?=[A-Z][a-z])|[A-Z]+[0-9]*|[0-9]+")
_SAFE = re.compile(r"^[a-z_][a-z0-9_]*$")


def max_length(dialect: str) -> int:
    """The longest identifier a dialect takes (63 on PostgreSQL, 127 elsewhere, as RudderStack)."""
    return MAX_NAME.get(dialect, DEFAULT_MAX_NAME)


def _strcase_snake(s: str) -> str:
    """Snake case as Go's iancoleman/strcase ToSnake does it, which RudderStack uses for namespaces."""
    s = s.strip()
    out: list[str] = []
    for i, ch in enumerate(s):
        is_cap, is_low, is_num = ch.isascii() and ch.isupper(), ch.isascii() and ch.islower(), ch.isdigit()
        low = ch.lower() if is_cap else ch
        if i + 1 < len(s):
            nxt = s[i + 1]
            n_cap, n_low, n_num = (
                nxt.isascii() and nxt.isupper(),
                nxt.isascii() and nxt.islower(),
                nxt.isdigit(),
            )
            if (
                (is_cap and (n_low or n_num))
                or (is_low and (n_cap or n_num))
                or (is_num and (n_cap or n_low))
            ):
                if is_cap and n_low and i > 0 and s[i - 1].isascii() and s[i - 1].isupper():
                    out.append("_")
                out.append(low)
                if is_low or is_num or n_num:
                    out.append("_")
                continue
        out.append("_" if ch in " _-." else low)
    return "".join(out)


@lru_cache(maxsize=4096)
def schema_name(source_name: str, dialect: str = "duckdb") -> str:
    """A source name made a schema name: `Customer IO Prod` -> `customer_io_prod`, `9mega` -> `_9_mega`."""
    runs = _ALNUM_RUN.findall(source_name)
    name = _strcase_snake("_".join(runs))
    if name and name[0].isdigit():
        name = "_" + name
    if not name:
        name = "stringempty"
    if name.upper() in RESERVED_WORDS:
        name = "_" + name
    return name[: max_length(dialect)]


@lru_cache(maxsize=4096)
def snake_case(name: str) -> str:
    """RudderStack's table and column snake case: `Email Link Clicked` -> `email_link_clicked`."""
    leading = len(name) - len(name.lstrip("_"))
    words = _WORD.findall(name)
    body = "_".join(w.lower() for w in words)
    if not body:
        return ""
    result = "_" * leading + body
    if result[0].isdigit():
        result = "_" + result
    return result


@lru_cache(maxsize=4096)
def table_name(event_name: str, dialect: str = "duckdb") -> str:
    """The table an event lands in, named from its event name by RudderStack's rule."""
    name = snake_case(event_name) or "stringempty"
    if name.upper() in RESERVED_WORDS:
        name = "_" + name
    return name[: max_length(dialect)]


@lru_cache(maxsize=4096)
def column_name(key: str, dialect: str = "duckdb") -> str:
    """A flattened property path (`link_url`, `eventId`) made into a column name."""
    return table_name(key, dialect)


def is_safe(identifier: str) -> bool:
    """True when a name is one we could have made: lower-case letters, digits and underscores."""
    return bool(_SAFE.match(identifier)) and len(identifier) <= DEFAULT_MAX_NAME


def quote(identifier: str) -> str:
    """Quote a name for SQL, refusing anything our naming functions could not have produced."""
    if not is_safe(identifier):
        raise ValueError(f"refusing unsafe SQL identifier {identifier!r}")
    return f'"{identifier}"'


def qualified(schema: str, table: str) -> str:
    """`"schema"."table"`, both checked."""
    return f"{quote(schema)}.{quote(table)}"
