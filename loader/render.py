"""Query results as text: an aligned table when it fits the terminal, else one record per block (as
psql's expanded display and the duckdb shell's line mode do), or CSV, JSON or Markdown for other tools."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Sequence
from typing import Any

import orjson

FORMATS = ("auto", "table", "vertical", "csv", "json", "markdown")
Rows = Sequence[Sequence[Any]]


def cell(value: Any) -> str:
    return "" if value is None else str(value)


def table_width(columns: list[str], rows: Rows) -> int:
    """The width of the aligned table: each column as wide as its widest line, plus rules and padding."""
    widths = [len(c) for c in columns]
    for row in rows:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], max((len(line) for line in cell(value).splitlines()), default=0))
    return sum(widths) + 3 * len(columns) + 1


def as_table(columns: list[str], rows: Rows, width: int) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, show_lines=False)
    for row in rows:
        table.add_row(*[cell(v) for v in row])
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=False, color_system=None).print(table)
    return out.getvalue()


def as_vertical(columns: list[str], rows: Rows) -> str:
    pad = max((len(c) for c in columns), default=0)
    blocks = []
    for n, row in enumerate(rows, 1):
        lines = [f"-[ RECORD {n} ]" + "-" * max(0, pad - 8)]
        lines += [f"{c.ljust(pad)} | {cell(v)}" for c, v in zip(columns, row, strict=True)]
        blocks.append("\n".join(lines))
    return "\n".join(blocks) + "\n" if blocks else "(0 rows)\n"


def as_csv(columns: list[str], rows: Rows) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([cell(v) for v in row] for row in rows)
    return out.getvalue()


def as_json(columns: list[str], rows: Rows) -> str:
    records = [dict(zip(columns, row, strict=True)) for row in rows]
    return orjson.dumps(records, default=str).decode() + "\n"


def as_markdown(columns: list[str], rows: Rows) -> str:
    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|").replace("\n", " ") for v in values) + " |"

    out = [line(columns), "|" + "|".join("---" for _ in columns) + "|"]
    out += [line([cell(v) for v in row]) for row in rows]
    return "\n".join(out) + "\n"


def render(columns: list[str], rows: Rows, fmt: str = "auto", width: int | None = None) -> str:
    """`auto` picks the table when it fits `width` (the terminal's, 120 when there is none), else vertical."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    if fmt == "auto":
        fmt = "table" if table_width(columns, rows) <= width else "vertical"
    if fmt == "table":
        return as_table(columns, rows, width=max(width, table_width(columns, rows)))
    renderers = {"vertical": as_vertical, "csv": as_csv, "json": as_json, "markdown": as_markdown}
    return renderers[fmt](columns, rows)
