"""The dashboard as one server-rendered HTML page: every number is in the HTML (tables, the summary), the charts
are drawn from the same data by static/dashboard.js with the vendored Chart.js (MIT, static/chart.js.LICENSE.md).
No build step, nothing from another origin: the page's Content-Security-Policy allows its own origin only."""

from __future__ import annotations

from html import escape
from typing import Any

import orjson

__all__ = ["CSP", "render"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2430}
header{background:#1d2430;color:#fff;padding:12px 24px;display:flex;gap:24px;align-items:baseline}
header h1{font-size:18px;margin:0}header form{margin-left:auto}
main{padding:16px 24px;display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:16px}
section{background:#fff;border-radius:6px;padding:12px 16px;box-shadow:0 1px 2px #0002}
section.wide{grid-column:1/-1}h2{font-size:15px;margin:0 0 8px}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{flex:1;min-width:130px;background:#f0f3f7;border-radius:4px;padding:8px 12px}
.card b{display:block;font-size:20px}table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
td,th{padding:3px 6px;border-bottom:1px solid #e3e6ea;text-align:right}td:first-child,th:first-child{text-align:left}
.note{color:#5b6472;font-size:12px}canvas{max-height:260px}
"""


def _money(value: float) -> str:
    return f"${value:,.6f}" if value < 1 else f"${value:,.2f}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def _card(name: str, title: str, shown: str, value: Any) -> str:
    return (f'<div class="card"><span>{escape(title)}</span><b id="summary-{name}" data-value="{escape(str(value))}">'
            f"{escape(shown)}</b></div>")


def _rows(rows: list[dict[str, Any]], columns: list[tuple[str, str, Any]], table_id: str) -> str:
    head = "".join(f"<th>{escape(title)}</th>" for _, title, _ in columns)
    body = []
    for row in rows:
        cells = []
        for key, _, show in columns:
            value = row.get(key)
            cells.append(f'<td data-key="{key}" data-value="{escape(str(value))}">{escape(show(value))}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    empty = f'<tr><td colspan="{len(columns)}" class="note">no requests in this period</td></tr>'
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body) or empty}</tbody></table>'


def _name(value: Any) -> str:
    return "(none)" if value in (None, "") else str(value)


def render(data: dict[str, Any], static_prefix: str) -> bytes:
    s = data["summary"]
    cards = "".join([
        _card("requests", "requests", f"{s['requests']:,}", s["requests"]),
        _card("cost", "spend", _money(s["cost_usd"]), repr(s["cost_usd"])),
        _card("cache", "cache hit rate", _share(s["cache_hit_rate"]), repr(s["cache_hit_rate"])),
        _card("escalation", "escalation share", _share(s["escalation_share"]), repr(s["escalation_share"])),
        _card("acceptance", "feedback accepted", _share(s["acceptance"]) + f" of {s['feedback']}",
              "" if s["acceptance"] is None else repr(s["acceptance"])),
        _card("errors", "errors", f"{s['errors']:,}", s["errors"]),
    ])
    money = [("requests", "requests", lambda v: f"{v:,}"), ("tokens", "tokens", lambda v: f"{v:,}"),
             ("cost_usd", "spend", _money)]
    spend = "".join(
        f'<section><h2>Spend by {name} over time</h2><canvas id="chart-spend-{name}"></canvas>'
        + _rows(data["spend_tables"][name], [(name, name, _name), *money], f"spend-{name}") + "</section>"
        for name in ("model", "cohort", "team"))
    mix = _rows(data["mix"], [("tier", "tier", _name), ("model", "model", _name), ("requests", "requests", lambda v: f"{v:,}"),
                              ("share", "share", _share), ("cost_usd", "spend", _money)], "mix")
    latency_rows = [{"measure": name.removesuffix("_ms"), **values} for name, values in data["latency"].items()]
    latency = _rows(latency_rows, [("measure", "ms", str), ("n", "requests", lambda v: f"{v:,}"), ("p50", "p50", _ms),
                                   ("p95", "p95", _ms), ("p99", "p99", _ms)], "latency")
    feedback = _rows(data["feedback"], [("model", "model", _name), ("feedback", "feedback", lambda v: f"{v:,}"),
                                        ("acceptance", "accepted", _share), ("mean_score", "mean score", lambda v: f"{v:.3f}")],
                     "feedback")
    drift = data["drift"]
    if drift.get("available"):
        drift_html = (f'<p id="drift" data-retrain="{str(drift["retrain"]).lower()}"><b>{"RETRAIN" if drift["retrain"] else "no retraining needed"}'
                      f"</b>: {escape('; '.join(drift['reasons']))}</p><p class=note>recent prompts {drift['prompts']}, "
                      f"unseen share {_share(drift['unseen_share'])}, task shift {_share(drift['task_shift'])}</p>")
    else:
        drift_html = f'<p id="drift" class="note">not available: {escape(str(drift.get("why", "")))}</p>'
    payload = orjson.dumps({"daily": data["daily"], "spend": data["spend"], "mix": data["mix"]}).decode()
    payload = payload.replace("</", "<\\/")  # a group name cannot close the script element
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Pointsman dashboard</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,"><style>{STYLE}</style></head>
<body><header><h1>Pointsman</h1><span>the last {data['days']} day(s), since {escape(data['since'])} (UTC)</span>
<form method="get"><label>days <input name="days" type="number" min="1" max="3650" value="{data['days']}"></label>
<button>show</button></form></header>
<main>
<section class="wide"><div class="cards" id="summary">{cards}</div></section>
{spend}
<section><h2>Routing mix per tier and model</h2><canvas id="chart-mix"></canvas>{mix}</section>
<section><h2>Cache hit rate and escalation share per day</h2><canvas id="chart-rates"></canvas></section>
<section><h2>Latency percentiles (answered requests, newest {data['latency']['latency_ms']['n']:,})</h2>{latency}
<p class="note">latency: arrival to last byte; overhead: the gateway's own share; ttft: streams, to the first chunk</p></section>
<section><h2>Feedback acceptance</h2>{feedback}</section>
<section><h2>Drift (last 7 days)</h2>{drift_html}</section>
</main>
<script type="application/json" id="pointsman-data">{payload}</script>
<script src="{static_prefix}/chart.umd.min.js"></script>
<script src="{static_prefix}/dashboard.js"></script>
</body></html>"""
    return html.encode()
