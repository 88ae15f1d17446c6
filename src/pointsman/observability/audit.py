"""`pointsman audit LOG`: what routing would save on traffic you already have, before you route any of it.

Every prompt of the log (a JSONL of OpenAI chat requests or ``{"prompt": ...}`` rows, a CSV with a ``prompt``
column, or a ledger URL whose prompts were stored) is routed offline by the configured policy (the gateway's own
routing code, no upstream call), priced with accounting/prices.py, and compared with the cost as it is: every
prompt on ``--current MODEL``, or on the model the log says answered it. Quality is the router's prediction for
the model each side uses, with the predictor's own spread as its uncertainty; per cohort when the log has one,
per task type (embed/features.py's cues) and per routed model. Writes ``audit.json`` and a self-contained
``audit.html`` (the dashboard's vendored Chart.js inlined).
"""

from __future__ import annotations

import asyncio
import csv
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from pointsman.accounting.prices import ModelPrice, TokenUsage, estimate_usage, price_of_model_id, resolve_prices
from pointsman.core import RouteContext
from pointsman.embed.features import TASK_TYPES, task_cues

__all__ = ["AuditRow", "read_log", "run_audit", "render_html"]

DEFAULT_OUTPUT_TOKENS = 256
LAMBDAS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


@dataclass(slots=True)
class AuditRow:
    body: dict[str, Any]  # a chat body: {"messages": [...]}
    model: str | None = None  # the model the log says answered it
    cohort: str | None = None
    input_tokens: int | None = None  # from the log's usage, when it has one
    output_tokens: int | None = None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _row_of(data: dict[str, Any], where: str) -> AuditRow:
    if isinstance(data.get("messages"), list):
        body = {k: v for k, v in data.items() if k in ("messages", "tools", "response_format")}
    elif isinstance(data.get("prompt"), str):
        body = {"messages": [{"role": "user", "content": data["prompt"]}]}
    elif isinstance(data.get("request"), dict):  # a request/response log: {"request": {...}, "response": {...}}
        row = _row_of(data["request"], where)
        response = _dict(data.get("response"))
        usage = _dict(response.get("usage"))
        row.input_tokens, row.output_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
        row.model = response.get("model") or row.model
        row.cohort = row.cohort or data.get("cohort")
        return row
    else:
        raise ValueError(f"{where}: needs \"messages\" (an OpenAI chat request), \"prompt\" or \"request\"")
    metadata, usage = _dict(data.get("metadata")), _dict(data.get("usage"))
    model = data.get("model")
    return AuditRow(body, model if isinstance(model, str) and model else None,
                    str(data.get("cohort") or metadata.get("cohort") or "") or None,
                    usage.get("prompt_tokens"), usage.get("completion_tokens"))


def read_log(source: str) -> list[AuditRow]:
    if source.startswith(("sqlite://", "postgresql://", "postgres://")):
        return _read_ledger(source)
    path = Path(source)
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            return [AuditRow({"messages": [{"role": "user", "content": r["prompt"]}]}, r.get("model") or None,
                             r.get("cohort") or None) for r in csv.DictReader(handle) if r.get("prompt")]
    rows = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                rows.append(_row_of(orjson.loads(line), f"{source}:{number}"))
    return rows


def _read_ledger(url: str) -> list[AuditRow]:
    """The prompts a gateway stored (learning.store_prompts), with what answered them and their tokens."""
    from pointsman.accounting.reports import SpendReader

    reader = SpendReader(url)
    try:
        found = reader._connect().execute(
            "SELECT p.text, r.chosen_model, r.cohort, r.prompt_tokens, r.completion_tokens FROM prompts p "
            "JOIN requests r ON r.id = p.id WHERE r.status = 200 AND NOT r.cache_hit ORDER BY r.ts").fetchall()
    finally:
        reader.close()
    if not found:
        raise ValueError(f"{url}: no stored prompts (the gateway keeps them with learning.store_prompts: true)")
    return [AuditRow({"messages": [{"role": "user", "content": text}]}, model, cohort, prompt or None, completion or None)
            for text, model, cohort, prompt, completion in found]


def _task(text: str) -> str:
    cues = task_cues(text)
    best = max(range(len(cues)), key=cues.__getitem__)
    return TASK_TYPES[best] if cues[best] > 0 else "other"


class _Progress:
    """tqdm when it is installed (the eval extra), else a line on stderr every few seconds."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.shown = total, 0, time.monotonic()
        try:
            from tqdm import tqdm

            self.bar: Any = tqdm(total=total, unit="prompt", file=sys.stderr)
        except ImportError:
            self.bar = None

    def step(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif time.monotonic() - self.shown > 2 or self.done == self.total:
            self.shown = time.monotonic()
            print(f"audit: {self.done}/{self.total} prompts", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _price(name: str, prices: dict[str, ModelPrice]) -> ModelPrice | None:
    if name in prices and prices[name].priced:
        return prices[name]
    return price_of_model_id(name)


async def _route_all(rows: list[AuditRow], router: Any, semantic: Any, policy: str, overrides: dict[str, float],
                     progress: bool) -> tuple[list[Any], np.ndarray, np.ndarray]:
    decisions, qualities, spreads = [], [], []
    bar = _Progress(len(rows)) if progress else None
    for row in rows:
        ctx = RouteContext(row.body, overrides)
        decisions.append((await router.route(f"router/{policy}", ctx), ctx))
        q, s = await semantic.predict(ctx)  # the embedding is the context's: computed once per prompt
        qualities.append(q)
        spreads.append(s)
        if bar is not None:
            bar.step()
    if bar is not None:
        bar.close()
    return decisions, np.array(qualities), np.array(spreads)


def run_audit(source: str, config_path: str | None, router_path: str = "default", current: str | None = None,
              overrides: dict[str, float] | None = None, progress: bool = True) -> dict[str, Any]:
    """The audit's JSON summary (see the module's docstring)."""
    from pointsman.offline import offline_router

    started = time.perf_counter()
    rows = read_log(source)
    if not rows:
        raise ValueError(f"{source}: no prompts")
    router, _ = offline_router(router_path, config_path, None)
    policy = router.default_policy
    semantic = router.policies[policy].semantic
    assert semantic is not None
    config_models = [entry.config for entry in router.pool.entries.values()]
    names = list(semantic.quality_map.pool_names)
    prices = resolve_prices(config_models)
    mean_output = semantic.predictor.info.get("mean_output_tokens") or {}
    if current is not None and _price(current, prices) is None:
        raise ValueError(f"--current {current!r}: no price for it (name a pool model or a model id the price snapshot knows)")
    missing = [i for i, r in enumerate(rows) if current is None and r.model is None]
    if missing:
        raise ValueError(f"{len(missing)} prompt(s) do not say which model answered them (row {missing[0]}): "
                         "name the model everything runs on today with --current MODEL")
    decisions, Q, S = asyncio.run(_route_all(rows, router, semantic, policy, dict(overrides or {}), progress))
    routed_at = time.perf_counter()

    index = {n: i for i, n in enumerate(names)}
    n, m = len(rows), len(names)
    C = np.zeros((n, m))  # each prompt's cost on each pool model
    items: list[dict[str, Any]] = []
    for i, (row, (decision, ctx)) in enumerate(zip(rows, decisions)):
        inp = row.input_tokens or estimate_usage(ctx.total_chars, 0).prompt
        for j, name in enumerate(names):
            out = row.output_tokens or int(mean_output.get(name, DEFAULT_OUTPUT_TOKENS))
            price = _price(name, prices)
            C[i, j] = price.cost(TokenUsage(inp, out)) if price is not None else 0.0
        as_is = current or row.model or ""
        as_is_price = _price(as_is, prices)
        out_as_is = row.output_tokens or int(mean_output.get(as_is, DEFAULT_OUTPUT_TOKENS))
        j_as_is, j_routed = index.get(as_is), index.get(decision.model)
        items.append({
            "cohort": row.cohort, "task": _task(ctx.routing_text), "tier": decision.tier, "model": decision.model,
            "as_is_model": as_is,
            "cost_as_is": as_is_price.cost(TokenUsage(inp, out_as_is)) if as_is_price is not None else None,
            "cost_routed": float(C[i, j_routed]) if j_routed is not None else 0.0,
            "quality_as_is": float(Q[i, j_as_is]) if j_as_is is not None else None,
            "sd_as_is": float(S[i, j_as_is]) if j_as_is is not None else None,
            "quality_routed": float(Q[i, j_routed]) if j_routed is not None else None,
            "sd_routed": float(S[i, j_routed]) if j_routed is not None else None,
            "confidence": decision.confidence})
    unpriced = sorted({it["as_is_model"] for it in items if it["cost_as_is"] is None})
    summary = {
        "source": source, "prompts": n, "policy": policy, "router": router_path, "current": current,
        "seconds": {"routing": round(routed_at - started, 2), "total": round(time.perf_counter() - started, 2)},
        "models": {name: {"price": {"input": p.rates.input, "output": p.rates.output, "source": p.source}}
                   for name, p in ((nm, _price(nm, prices)) for nm in names) if p is not None},
        "total": _group(items), "unpriced_as_is": unpriced,
        "by_cohort": _by(items, "cohort"), "by_task": _by(items, "task"), "by_model": _by(items, "model"),
        "by_tier": _by(items, "tier"),
        "curve": _curve(Q, C, config_models, names),
        "notes": ["quality is the router's prediction (0..1) for the model each side uses, not a measurement; "
                  "its uncertainty is the predictor's own spread per prompt, averaged: errors of one predictor are "
                  "correlated across prompts, so it does not shrink with their number",
                  "costs use the log's token counts when it has them, else the prompt's length / 4 and the router's "
                  "mean answer length per model (256 tokens when unknown): the same answer length on both sides"]}
    return summary


def _group(items: list[dict[str, Any]]) -> dict[str, Any]:
    priced = [it for it in items if it["cost_as_is"] is not None]
    as_is = sum(it["cost_as_is"] for it in priced)
    routed = sum(it["cost_routed"] for it in priced)
    compared = [it for it in items if it["quality_as_is"] is not None and it["quality_routed"] is not None]

    def mean(key: str, rows: list[dict[str, Any]]) -> float | None:
        return sum(r[key] for r in rows) / len(rows) if rows else None

    sd = mean("sd_as_is", compared)
    sd_routed = mean("sd_routed", compared)
    return {"prompts": len(items), "cost_as_is_usd": as_is, "cost_routed_usd": routed, "savings_usd": as_is - routed,
            "savings_share": (as_is - routed) / as_is if as_is > 0 else None,
            "quality_as_is": mean("quality_as_is", compared), "quality_routed": mean("quality_routed", compared),
            "quality_as_is_sd": sd, "quality_routed_sd": sd_routed,
            "quality_change": (mean("quality_routed", compared) or 0.0) - (mean("quality_as_is", compared) or 0.0)
            if compared else None,
            "quality_change_sd": math.sqrt((sd or 0.0) ** 2 + (sd_routed or 0.0) ** 2) if compared else None,
            "quality_compared": len(compared)}


def _by(items: list[dict[str, Any]], key: str) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for it in items:
        groups[it[key] or "(none)"].append(it)
    return {name: _group(rows) for name, rows in sorted(groups.items(), key=lambda kv: -len(kv[1]))}


def _curve(Q: np.ndarray, C: np.ndarray, models: list[Any], names: list[str]) -> dict[str, Any]:
    """Total cost and mean predicted quality as the knob moves (the semantic tier's rule: predicted quality less
    lambda x the model's blended price relative to the dearest; every pool model taken as eligible), and with
    everything on one model."""
    by_name = {m.name: m for m in models}
    blended = np.array([by_name[n].prices.blended() for n in names])
    relative = blended / blended.max() if blended.max() > 0 else blended
    rows = np.arange(len(Q))
    points = []
    for lam in LAMBDAS:
        choice = np.argmax(Q - lam * relative - 1e-9 * relative, axis=1)
        points.append({"lambda": lam, "cost_usd": float(C[rows, choice].sum()), "quality": float(Q[rows, choice].mean())})
    single = {n: {"cost_usd": float(C[:, j].sum()), "quality": float(Q[:, j].mean())} for j, n in enumerate(names)}
    return {"knob": points, "single_model": single}


def render_html(summary: dict[str, Any]) -> str:
    """A self-contained page: tables and three plots (cost-quality curve, mix per model, savings by task type)."""
    from html import escape
    from importlib import resources

    chart = resources.files("pointsman.observability.dashboard").joinpath("static", "chart.umd.min.js").read_text()
    total = summary["total"]

    def money(v: float | None) -> str:
        return "n/a" if v is None else f"${v:,.4f}"

    def share(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    def quality(mean: float | None, sd: float | None) -> str:
        return "n/a" if mean is None else f"{mean:.3f} ± {sd or 0:.3f}"

    def table(groups: dict[str, Any], title: str) -> str:
        body = "".join(
            f"<tr><td>{escape(name)}</td><td>{g['prompts']:,}</td><td>{money(g['cost_as_is_usd'])}</td>"
            f"<td>{money(g['cost_routed_usd'])}</td><td>{share(g['savings_share'])}</td>"
            f"<td>{quality(g['quality_as_is'], g['quality_as_is_sd'])}</td>"
            f"<td>{quality(g['quality_routed'], g['quality_routed_sd'])}</td></tr>" for name, g in groups.items())
        return (f"<h2>{escape(title)}</h2><table><tr><th></th><th>prompts</th><th>cost as is</th><th>routed</th>"
                f"<th>saved</th><th>quality as is</th><th>routed</th></tr>{body}</table>")

    data = orjson.dumps({"curve": summary["curve"], "by_model": summary["by_model"], "by_task": summary["by_task"]}).decode()
    data = data.replace("</", "<\\/")
    notes = "".join(f"<li>{escape(n)}</li>" for n in summary["notes"])
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Pointsman audit</title>
<style>body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2430}}table{{border-collapse:collapse;margin-bottom:16px}}
td,th{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}}td:first-child{{text-align:left}}
.plots{{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:16px}}canvas{{max-height:320px}}</style>
</head><body><h1>What routing would save</h1>
<p>{summary['prompts']:,} prompts from <code>{escape(str(summary['source']))}</code>, policy <b>{escape(summary['policy'])}</b>,
router <code>{escape(str(summary['router']))}</code>; as is: {escape(summary['current'] or 'the model the log names')}.</p>
<p id="headline">cost as is <b>{money(total['cost_as_is_usd'])}</b>, routed <b>{money(total['cost_routed_usd'])}</b>:
saved <b>{share(total['savings_share'])}</b>; predicted quality {quality(total['quality_as_is'], total['quality_as_is_sd'])}
as is, {quality(total['quality_routed'], total['quality_routed_sd'])} routed.</p>
<div class="plots"><div><h2>Cost and predicted quality as the knob moves</h2><canvas id="curve"></canvas></div>
<div><h2>Routed mix per model</h2><canvas id="mix"></canvas></div><div><h2>Savings by task type</h2><canvas id="tasks"></canvas></div></div>
{table(summary['by_cohort'], 'Per cohort')}{table(summary['by_task'], 'Per task type')}{table(summary['by_model'], 'Per routed model')}
<ul>{notes}</ul>
<script>{chart}</script>
<script type="application/json" id="data">{data}</script>
<script>
const d = JSON.parse(document.getElementById("data").textContent);
new Chart(document.getElementById("curve"), {{type: "scatter", data: {{datasets: [
  {{label: "knob (lambda)", showLine: true, data: d.curve.knob.map(p => ({{x: p.cost_usd, y: p.quality}}))}},
  ...Object.entries(d.curve.single_model).map(([name, p]) => ({{label: "all on " + name, data: [{{x: p.cost_usd, y: p.quality}}], pointRadius: 6}}))]}},
  options: {{animation: false, scales: {{x: {{title: {{display: true, text: "total cost (USD)"}}}}, y: {{title: {{display: true, text: "mean predicted quality"}}}}}}}}}});
new Chart(document.getElementById("mix"), {{type: "bar", data: {{labels: Object.keys(d.by_model),
  datasets: [{{label: "prompts", data: Object.values(d.by_model).map(g => g.prompts)}}]}}, options: {{animation: false}}}});
new Chart(document.getElementById("tasks"), {{type: "bar", data: {{labels: Object.keys(d.by_task),
  datasets: [{{label: "saved (USD)", data: Object.values(d.by_task).map(g => g.savings_usd)}}]}}, options: {{animation: false}}}});
</script></body></html>"""


def format_text(summary: dict[str, Any]) -> str:
    total = summary["total"]
    lines = [f"{summary['prompts']} prompts, policy {summary['policy']} ({summary['seconds']['routing']} s to route)",
             f"cost as is {total['cost_as_is_usd']:.4f} USD, routed {total['cost_routed_usd']:.4f} USD"
             + (f": {100 * total['savings_share']:.1f}% saved" if total["savings_share"] is not None else "")]
    if total["quality_as_is"] is not None:
        lines.append(f"predicted quality {total['quality_as_is']:.3f} ± {total['quality_as_is_sd']:.3f} as is, "
                     f"{total['quality_routed']:.3f} ± {total['quality_routed_sd']:.3f} routed")
    lines.append(f"{'cohort':<16} {'prompts':>8} {'as is USD':>12} {'routed USD':>12} {'saved':>7}")
    for name, g in summary["by_cohort"].items():
        saved = f"{100 * g['savings_share']:.1f}%" if g["savings_share"] is not None else "n/a"
        lines.append(f"{name[:16]:<16} {g['prompts']:>8} {g['cost_as_is_usd']:>12.4f} {g['cost_routed_usd']:>12.4f} {saved:>7}")
    lines.append("routed to: " + ", ".join(f"{k} {v['prompts']}" for k, v in summary["by_model"].items()))
    if summary["unpriced_as_is"]:
        lines.append(f"not priced (left out of the costs): {', '.join(summary['unpriced_as_is'])}")
    return "\n".join(lines)
