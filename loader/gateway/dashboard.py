"""GET /: sources, live counts and backlog, and a source's funnel for every channel: a channel selector,
a range of UTC days, a message filter; the channels side by side, a chart by day and a table by message.
Server-rendered HTML read from the rollup views: no scripts, no external assets; the filters are a plain
GET form, so a filtered view is a link to share."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from html import escape
from typing import Any
from urllib.parse import urlencode

from loader.disk import describe, summary
from loader.gateway.funnel_query import IDS, Filters, Funnel, encode_message, read
from loader.settings import Settings
from loader.staging import LANDED, PENDING, QUARANTINED, Staging
from loader.staging.sources import Source, load_sources
from loader.warehouse.engine import make_warehouse_engine, retry_busy
from loader.warehouse.turns import Turns
from loader.warehouse.views import CHANNELS

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#1b1f24;background:#fafbfc}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}
th,td{padding:.25rem .5rem;border-bottom:1px solid #dde1e6;text-align:right}
table{font-size:13px}td{white-space:nowrap}th{vertical-align:bottom;font-weight:600}
th:first-child,td:first-child{text-align:left}.muted{color:#6a737d}
.legend span{display:inline-block;margin-right:1rem}
.sw{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem}
form{display:flex;flex-wrap:wrap;gap:.6rem 1rem;align-items:end;margin:1rem 0}
label{display:flex;flex-direction:column;font-size:.85rem;color:#444}
tr.on td{background:#eef4fb;font-weight:600}.note{color:#a15c00}
"""
COLORS = {"reached": "#4c78a8", "opened": "#f58518", "clicked": "#54a24b"}
CHANNEL_COLUMNS = [
    "channel", "deliveries", "sent", "delivered", "opened", "human_opened", "clicked",
    "human_clicked", "converted", "failed", "replied", "delivery_rate", "open_rate", "click_rate",
    "click_to_open_rate", "conversion_rate", "failure_rate",
]  # fmt: skip
LABELS = {
    "human_opened": "human opened",
    "human_clicked": "human clicked",
    "delivery_rate": "delivery %",
    "open_rate": "open %",
    "click_rate": "click %",
    "click_to_open_rate": "click-to-open %",
    "conversion_rate": "conversion %",
    "failure_rate": "failure %",
}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1%}"
    return escape(str(value))


def _table(columns: list[str], rows: list[dict[str, Any]], on: str | None = None) -> str:
    """A table; a row whose first column equals `on` is highlighted; cells may be pre-made HTML (`_html`)."""
    head = "".join(f"<th>{escape(LABELS.get(c, c))}</th>" for c in columns)
    body = ""
    for r in rows:
        cls = ' class="on"' if on is not None and r.get(columns[0]) == on else ""
        cells = "".join(f"<td>{r[c + '_html'] if c + '_html' in r else _fmt(r.get(c))}</td>" for c in columns)
        body += f"<tr{cls}>{cells}</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def chart(
    days: list[dict[str, Any]], start: dt.date, end: dt.date, width: int = 760, height: int = 200
) -> str:
    """Grouped bars of reached, opened and clicked for every day from start to end, as inline SVG; a day
    with no deliveries keeps its slot, so a gap shows as a gap, and a metric a channel lacks draws nothing."""
    if not days:
        return '<p class="muted">No deliveries in this range.</p>'
    by_day = {d["day"]: d for d in days}
    colors = {k: c for k, c in COLORS.items() if any(d[k] is not None for d in days)}
    span = (end - start).days + 1
    top = max(max(int(d[k] or 0) for k in colors) for d in days) or 1
    slot = width / span
    bar = min(24.0, max(0.5, slot / 4))
    parts = [
        f'<svg role="img" aria-label="funnel by day" width="100%" style="max-width:{width}px" '
        f'viewBox="0 0 {width} {height + 30}" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="0" y1="{height}" x2="{width}" y2="{height}" stroke="#bbb"/>',
    ]
    step = max(1, span // 10)
    for i in range(span):
        day = start + dt.timedelta(days=i)
        row = by_day.get(day)
        for j, (key, color) in enumerate(colors.items()):
            if row is None or row[key] is None:
                continue
            value = int(row[key])
            h = value / top * height
            x = i * slot + j * bar + bar / 2
            parts.append(
                f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{day} {key}: {value}</title></rect>"
            )
        if i % step == 0:
            parts.append(
                f'<text x="{i * slot + slot / 2:.1f}" y="{height + 18}" font-size="10" '
                f'text-anchor="middle">{day.isoformat()[5:]}</text>'
            )
    parts.append("</svg>")
    legend = "".join(f'<span><i class="sw" style="background:{c}"></i>{k}</span>' for k, c in colors.items())
    return f'<div class="legend">{legend}</div>' + "".join(parts)


def message_label(row: Mapping[str, Any]) -> str:
    """`campaign 1 · action 10`: the ids a message has, in words."""
    words = [f"{c.removesuffix('_id').replace('_', ' ')} {row[c]}" for c in IDS if row.get(c) is not None]
    return " · ".join(words) or "(no message ids)"


def _options(values: list[tuple[str, str]], chosen: str) -> str:
    return "".join(
        f'<option value="{escape(v)}"{" selected" if v == chosen else ""}>{escape(label)}</option>'
        for v, label in values
    )


def _form(sources: list[Source], source: Source, funnel: Funnel) -> str:
    chosen = encode_message(funnel.message) if funnel.message else ""
    messages = [("", "every message")] + [
        (encode_message(tuple(m[c] for c in IDS)), message_label(m)) for m in funnel.messages
    ]
    if chosen and chosen not in {v for v, _ in messages}:
        messages.append((chosen, message_label(dict(zip(IDS, funnel.message or (), strict=True)))))
    source_field = (
        f'<label>source<select name="source">{_options([(s.schema, s.name) for s in sources], source.schema)}'
        "</select></label>"
        if len(sources) > 1
        else f'<input type="hidden" name="source" value="{escape(source.schema)}">'
    )
    channels = _options([(c, c) for c in CHANNELS], funnel.channel)
    return (
        f'<form method="get" action="">{source_field}'
        f'<label>channel<select name="channel">{channels}</select></label>'
        f'<label>from (UTC)<input type="date" name="from" value="{funnel.start}"></label>'
        f'<label>to (UTC)<input type="date" name="to" value="{funnel.end}"></label>'
        f'<label>message<select name="message">{_options(messages, chosen)}</select></label>'
        '<button type="submit">Show</button></form>'
    )


def _link(text_: str, **params: Any) -> str:
    return f'<a href="?{escape(urlencode(params))}">{escape(text_)}</a>'


def _read(settings: Settings, schema: str, filters: Filters) -> Funnel | str:
    engine = make_warehouse_engine(settings.warehouse_url, read_only=True)

    def run() -> Funnel:
        with engine.connect() as conn:
            return read(conn, schema, filters)

    try:
        return retry_busy(run, timeout_s=2.0, turns=Turns.of(engine.url))
    except Exception as exc:
        return f"funnel unavailable right now ({type(exc).__name__}); landing may hold the warehouse, reload"
    finally:
        engine.dispose()


def _source_section(settings: Settings, sources: list[Source], source: Source, filters: Filters) -> str:
    out = [f"<h2>{escape(source.name)} <span class='muted'>({escape(source.schema)})</span></h2>"]
    funnel = _read(settings, source.schema, filters)
    if isinstance(funnel, str):
        return out[0] + f'<p class="muted">{escape(funnel)}</p>'
    out += [f'<p class="note">{escape(n)}</p>' for n in filters.notes]
    out.append(_form(sources, source, funnel))
    span = {"source": source.schema, "from": funnel.start.isoformat(), "to": funnel.end.isoformat()}
    for row in funnel.channels:
        row["channel_html"] = _link(row["channel"], **span, channel=row["channel"])
    out.append(f"<h3>Every channel, {funnel.start} to {funnel.end} (UTC)</h3>")
    out.append(_table(CHANNEL_COLUMNS, funnel.channels, on=funnel.channel))
    out.append(
        '<p class="muted">- : a metric the channel does not report (in-app has no deliveries, SMS no opens), '
        "or a rate whose denominator is 0. Open, click and conversion rates are over deliveries reached: "
        "delivered where the channel reports deliveries, else sent. Failure rate is over every delivery.</p>"
    )
    # The channel's own tables leave out what it does not report.
    mine = next(r for r in funnel.channels if r["channel"] == funnel.channel)
    columns = [c for c in CHANNEL_COLUMNS[1:] if mine.get(c) is not None]
    what = message_label(dict(zip(IDS, funnel.message, strict=True))) if funnel.message else "every message"
    out.append(
        f"<h3>{escape(funnel.channel)} by day: {escape(what)}</h3>"
        + chart(funnel.days, funnel.start, funnel.end)
    )
    out.append(_table(["day", *columns], funnel.days))
    for row in funnel.messages:
        key = encode_message(tuple(row[c] for c in IDS))
        row["message_html"] = _link(message_label(row), **span, channel=funnel.channel, message=key)
    out.append(f"<h3>{escape(funnel.channel)} by message</h3>")
    out.append(_table(["message", *columns], funnel.messages))
    return "".join(out)


def _disk(settings: Settings) -> str:
    """One line: each part's bytes on this host, the free space, and a warning when it runs low."""
    try:
        d = summary(settings)
    except OSError as exc:
        return f'<p class="muted">disk use unavailable ({escape(type(exc).__name__)})</p>'
    line = describe(d)
    warning = f'<p class="note"><strong>{escape(d["warning"])}</strong></p>' if d["warning"] else ""
    return f'<p class="muted">{escape(line)}</p>{warning}'


def render(settings: Settings, staging: Staging, params: Mapping[str, str] | None = None) -> str:
    """The whole page; `params` is the query string (source, channel, from, to, message)."""
    params = params or {}
    sources = load_sources(staging)
    counts = staging.counts()
    last = staging.last_landed()
    from loader.service import iso_time

    rows = [
        {
            "source": s.name,
            "schema": s.schema,
            "backlog": counts.get(s.id, {}).get(PENDING, 0),
            "landed": counts.get(s.id, {}).get(LANDED, 0),
            "quarantined": counts.get(s.id, {}).get(QUARANTINED, 0),
            "last landing": iso_time(last.get(s.id)),
        }
        for s in sources
    ]
    summary = _table(["source", "schema", "backlog", "landed", "quarantined", "last landing"], rows)
    summary += _disk(settings)
    wanted = params.get("source")
    source = next((s for s in sources if wanted in (s.schema, s.name)), sources[0] if sources else None)
    section = _source_section(settings, sources, source, Filters.parse(params)) if source else ""
    empty = "" if sources else '<p class="muted">No sources yet: <code>loader source add NAME</code>.</p>'
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Customer.io loader</title>"
        f"<meta name='viewport' content='width=device-width'><style>{STYLE}</style></head><body>"
        f"<h1>Customer.io warehouse loader</h1><h2>Sources</h2>{summary}{empty}{section}</body></html>"
    )
