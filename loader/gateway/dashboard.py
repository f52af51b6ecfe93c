"""GET /: sources, live counts and backlog, and each source's delivered → opened → clicked funnel,
by day (an inline SVG chart) and by message. Server-rendered HTML, no scripts, no external assets."""

from __future__ import annotations

from html import escape
from typing import Any

from sqlalchemy import text

from loader.naming import qualified
from loader.settings import Settings
from loader.staging import LANDED, PENDING, QUARANTINED, Staging
from loader.staging.sources import Source, load_sources
from loader.warehouse.engine import make_warehouse_engine, retry_busy
from loader.warehouse.turns import Turns

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#1b1f24;background:#fafbfc}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}
th,td{padding:.3rem .7rem;border-bottom:1px solid #dde1e6;text-align:right}
th:first-child,td:first-child{text-align:left}.muted{color:#6a737d}
.legend span{display:inline-block;margin-right:1rem}
.sw{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem}
"""
COLORS = {"delivered": "#4c78a8", "opened": "#f58518", "clicked": "#54a24b"}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1%}"
    return escape(str(value))


def _table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def chart(days: list[dict[str, Any]], width: int = 720, height: int = 220) -> str:
    """Grouped bars of delivered, opened and clicked per day, as inline SVG."""
    if not days:
        return '<p class="muted">No email deliveries yet.</p>'
    top = max(max(int(d[k] or 0) for k in COLORS) for d in days) or 1
    slot = width / len(days)
    bar = max(1.0, slot / 4)
    parts = [
        f'<svg role="img" aria-label="email funnel by day" width="{width}" height="{height + 30}" '
        f'viewBox="0 0 {width} {height + 30}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, day in enumerate(days):
        for j, (key, color) in enumerate(COLORS.items()):
            value = int(day[key] or 0)
            h = value / top * height
            x = i * slot + j * bar + bar / 2
            parts.append(
                f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{escape(str(day['day']))} {key}: {value}</title></rect>"
            )
        if len(days) <= 15 or i % max(1, len(days) // 10) == 0:
            parts.append(
                f'<text x="{i * slot + slot / 2:.1f}" y="{height + 18}" font-size="10" '
                f'text-anchor="middle">{escape(str(day["day"])[5:])}</text>'
            )
    parts.append("</svg>")
    legend = "".join(f'<span><i class="sw" style="background:{c}"></i>{k}</span>' for k, c in COLORS.items())
    return f'<div class="legend">{legend}</div>' + "".join(parts)


def _funnel(settings: Settings, schema: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | str:
    engine = make_warehouse_engine(settings.warehouse_url, read_only=True)

    def read() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with engine.connect() as conn:
            daily = (
                conn.execute(
                    text(
                        f"SELECT * FROM {qualified(schema, 'email_funnel_daily')} ORDER BY day DESC LIMIT 30"
                    )
                )
                .mappings()
                .all()
            )
            by_message = (
                conn.execute(
                    text(
                        f"SELECT * FROM {qualified(schema, 'email_funnel_by_message')} "
                        "ORDER BY delivered DESC LIMIT 20"
                    )
                )
                .mappings()
                .all()
            )
        return [dict(r) for r in reversed(daily)], [dict(r) for r in by_message]

    try:
        return retry_busy(read, timeout_s=2.0, turns=Turns.of(engine.url))
    except Exception as exc:
        return f"funnel unavailable right now ({type(exc).__name__}); landing may hold the warehouse, reload"
    finally:
        engine.dispose()


def _source_section(settings: Settings, source: Source) -> str:
    funnel = _funnel(settings, source.schema)
    out = [f"<h2>{escape(source.name)} <span class='muted'>({escape(source.schema)})</span></h2>"]
    if isinstance(funnel, str):
        return out[0] + f'<p class="muted">{escape(funnel)}</p>'
    daily, by_message = funnel
    counts = ["sent", "delivered", "opened", "clicked", "open_rate", "click_rate", "click_to_open_rate"]
    out.append("<h3>By day (UTC)</h3>" + chart(daily) + _table(["day", *counts], daily))
    ids = ["campaign_id", "broadcast_id", "newsletter_id", "transactional_message_id", "action_id"]
    out.append("<h3>By message</h3>" + _table([*ids, *counts, "human_opened", "human_clicked"], by_message))
    return "".join(out)


def render(settings: Settings, staging: Staging) -> str:
    """The whole page."""
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
    sections = "".join(_source_section(settings, s) for s in sources)
    empty = "" if sources else '<p class="muted">No sources yet: <code>loader source add NAME</code>.</p>'
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Customer.io loader</title>"
        f"<meta name='viewport' content='width=device-width'><style>{STYLE}</style></head><body>"
        f"<h1>Customer.io warehouse loader</h1><h2>Sources</h2>{summary}{empty}{sections}</body></html>"
    )
