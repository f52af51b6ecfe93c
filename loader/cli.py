"""The `loader` command: thin commands, each a few lines around one library call.

Each command imports the library it calls (`loader.service`) itself: `loader serve`'s process holds the
sockets for its whole life and needs none of the database libraries."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from loader.errors import LoaderError
from loader.render import FORMATS, render
from loader.settings import Settings


def _print_table(columns: list[str], rows: list[tuple[Any, ...]] | list[list[Any]]) -> None:
    sys.stdout.write(render(columns, rows))


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_INDENT_2).decode()


def cmd_source_add(settings: Settings, args: argparse.Namespace) -> int:
    from loader import service

    added = service.source_add(settings, args.name, args.write_key, args.signing_key, args.schema)
    base = f"http://{settings.host}:{settings.port}"
    print(f"source:      {added.source.name}")
    print(f"schema:      {added.source.schema}")
    print(f"write key:   {added.write_key}")
    print(f"webhook:     {base}/v1/webhook?writeKey={added.write_key}")
    if added.source.signing_key:
        print("signatures:  required (X-CIO-Signature)")
    if args.write_key and len(args.write_key) < 16:
        warning = "warning: a short write key is easy to guess; omit --write-key for a random one"
        print(warning, file=sys.stderr)
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from loader import service

    demo = service.ensure_demo_source(settings)
    if demo is None:
        print("sources exist already; `loader source list` shows them")
        return 0
    name, key = demo
    print(f"demo source {name!r}: post Customer.io webhooks to")
    print(f"  http://{settings.host}:{settings.port}/v1/webhook?writeKey={key}")
    return 0


def cmd_source_list(settings: Settings, args: argparse.Namespace) -> int:
    from loader import service

    rows = service.status(settings)
    if args.json:
        print(_json(rows))
        return 0
    _print_table(
        ["source", "schema", "key", "staged", "landed", "quarantined"],
        [
            [
                r["source"],
                r["schema"],
                r["key_prefix"] + "…",
                r["staged_backlog"],
                r["landed"],
                r["quarantined"],
            ]
            for r in rows
        ],
    )
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from loader import service

    schemas = service.migrate_all(settings)
    print(f"{len(schemas)} schema(s) at the newest revision: {', '.join(schemas) or '-'}")
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from loader.server import serve

    admin_port = settings.admin_port if args.admin_port is None else args.admin_port
    serve(settings, args.host or settings.host, args.port or settings.port, args.workers, admin_port)
    return 0


def cmd_flush(settings: Settings, args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from loader import service

    with service.services(settings) as (staging, _):
        backlog = staging.pending_count()
    with Progress(transient=True, disable=backlog < 20_000 or not sys.stderr.isatty()) as progress:
        task = progress.add_task("landing", total=backlog)
        landed = service.flush(settings, lambda r: progress.advance(task, r.claimed), args.max_wait)
    print(f"landed {landed} new row(s) of {backlog} staged")
    return 0


def cmd_transform(settings: Settings, args: argparse.Namespace) -> int:
    from loader.transform import message_id, to_track

    raw = sys.stdin.buffer.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        print("invalid json: expected one JSON object on stdin", file=sys.stderr)
        return 1
    event = to_track(body)
    event["messageId"] = message_id(args.source_id, body, raw)
    sys.stdout.write(orjson.dumps(event).decode() + "\n")
    return 0


def cmd_query(settings: Settings, args: argparse.Namespace) -> int:
    from loader import service

    columns, rows = service.query(settings, args.sql)
    sys.stdout.write(render(columns, rows, "json" if args.json else args.format))
    return 0


def cmd_attach_sql(settings: Settings, args: argparse.Namespace) -> int:
    from loader.warehouse.attach import attach_sql

    sys.stdout.write(attach_sql(settings.warehouse_url, read_only=not args.read_write))
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from loader import disk, service
    from loader.disk import human

    rows = service.status(settings)
    if args.json:
        print(_json(rows))
        return 0
    if rows:
        shown = [{**r, **{k: human(r[k]) for k in r if k.endswith("_bytes")}} for r in rows]
        _print_table(list(shown[0].keys()), [list(r.values()) for r in shown])
    else:
        print("no sources yet: loader source add NAME")
    d = disk.summary(settings)
    print(disk.describe(d))
    if d["warning"]:
        print(f"warning: {d['warning']}", file=sys.stderr)
    return 0


def _epoch(value: str | None) -> float | None:
    from loader.transform.event import parse_iso

    return None if value is None else parse_iso(value).timestamp()


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from loader import service

    queued = service.replay(settings, args.source, _epoch(args.since), _epoch(args.until), args.quarantined)
    kind = "quarantined" if args.quarantined else "archived"
    print(f"queued {queued} {kind} bod(ies) of {args.source} to land again")
    if not args.no_flush:
        return cmd_flush(settings, argparse.Namespace(max_wait=args.max_wait))
    return 0


def cmd_backfill(settings: Settings, args: argparse.Namespace) -> int:
    from loader.backfill import backfill

    result = backfill(settings, args.file, args.source, progress=not args.quiet)
    print(
        f"read {result.lines} line(s): staged {result.staged}, quarantined {result.quarantined}, "
        f"already in the warehouse {result.already_landed}; landed {result.landed} new row(s)"
    )
    return 0


def cmd_quarantine(settings: Settings, args: argparse.Namespace) -> int:
    from loader import service

    with service.services(settings) as (staging, _):
        rows = staging.quarantined(limit=args.limit)
    items = [
        {
            "seq": r["seq"],
            "source_id": r["source_id"],
            "received_at": service.iso_time(r["received_at"]),
            "reason": r["reason"],
            "body": r["body"][:200].decode("utf-8", "replace"),
        }
        for r in rows
    ]
    if args.json:
        print(_json(items))
    else:
        _print_table(
            ["seq", "received_at", "reason", "body"],
            [[i["seq"], i["received_at"], i["reason"], i["body"]] for i in items],
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loader", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    source = sub.add_parser("source", help="register and list sources").add_subparsers(
        dest="action", required=True
    )
    add = source.add_parser("add", help="register a source and create its schema")
    add.add_argument("name")
    add.add_argument("--write-key")
    add.add_argument("--signing-key", help="Customer.io's webhook signing key; requests must then be signed")
    add.add_argument("--schema", help="warehouse schema (default: the name made safe)")
    add.set_defaults(fn=cmd_source_add)
    lst = source.add_parser("list", help="sources with schema, key prefix and counts")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(fn=cmd_source_list)

    sub.add_parser("migrate", help="upgrade every source's schema").set_defaults(fn=cmd_migrate)
    sub.add_parser("demo", help="create a demo source if there is none; print its webhook URL").set_defaults(
        fn=cmd_demo
    )

    serve = sub.add_parser("serve", help="gateway and lander in one command")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--admin-port", type=int, help="the dashboard's and /metrics' port (0: none)")
    serve.set_defaults(fn=cmd_serve)

    flush = sub.add_parser("flush", help="land everything staged so far, then exit")
    flush.add_argument(
        "--max-wait", type=float, default=60.0, help="seconds to keep retrying a busy warehouse"
    )
    flush.set_defaults(fn=cmd_flush)

    transform = sub.add_parser("transform", help="one webhook body on stdin -> the event on stdout")
    transform.add_argument("--source-id", default="", help="source id for the messageId (default: none)")
    transform.set_defaults(fn=cmd_transform)

    query = sub.add_parser("query", help="read-only SQL on the warehouse")
    query.add_argument("sql")
    query.add_argument("--json", action="store_true", help="the same as --format json")
    query.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="auto (default): a table when it fits the terminal, else one record per block",
    )
    query.set_defaults(fn=cmd_query)

    attach = sub.add_parser(
        "attach-sql", help="DuckDB statements that attach the warehouse as `warehouse` (read-only)"
    )
    attach.add_argument("--read-write", action="store_true", help="attach it writable")
    attach.set_defaults(fn=cmd_attach_sql)

    status = sub.add_parser("status", help="per source: backlog, landed, last landing, quarantined, discards")
    status.add_argument("--json", action="store_true")
    status.set_defaults(fn=cmd_status)

    replay = sub.add_parser("replay", help="re-land archived bodies through today's transform")
    replay.add_argument("source")
    replay.add_argument("--since", help="ISO time, inclusive (received at)")
    replay.add_argument("--until", help="ISO time, exclusive (received at)")
    replay.add_argument("--no-flush", action="store_true", help="only queue; the running server lands them")
    replay.add_argument(
        "--quarantined", action="store_true", help="the bodies set aside instead (after raising a limit)"
    )
    replay.add_argument("--max-wait", type=float, default=60.0)
    replay.set_defaults(fn=cmd_replay)

    backfill = sub.add_parser("backfill", help="land a file of webhook bodies (JSON lines) for a source")
    backfill.add_argument("file")
    backfill.add_argument("--source", required=True)
    backfill.add_argument("--quiet", action="store_true")
    backfill.set_defaults(fn=cmd_backfill)

    quarantine = sub.add_parser("quarantine", help="bodies set aside (not JSON objects), with the reason")
    quarantine.add_argument("--limit", type=int, default=50)
    quarantine.add_argument("--json", action="store_true")
    quarantine.set_defaults(fn=cmd_quarantine)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        return int(args.fn(settings, args))
    except LoaderError as exc:
        print(f"loader: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        from sqlalchemy.exc import DBAPIError

        if not isinstance(exc, DBAPIError):
            raise
        # A database that refused or could not be reached: its word, no traceback.
        print(f"loader: database error ({type(exc.orig).__name__}): {exc.orig}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
