"""What the dashboard shows, read from the ledger (SQLite or PostgreSQL): spend and the routing mix from the daily
roll-up (accounting/reports.py), latency percentiles from the newest request rows, feedback from the learning
store's `feedback` table, drift from the gateway's own report. Blocking: the HTTP side runs it in a thread."""

from __future__ import annotations

import calendar
import logging
import math
import time
from collections import defaultdict
from typing import Any

from pointsman.accounting.reports import SpendReader, parse_day

__all__ = ["LATENCY_ROWS", "DashboardReader", "collect", "percentile"]

log = logging.getLogger("pointsman.dashboard")
LATENCY_ROWS = 50_000  # the newest answered requests the latency percentiles are taken over
ACCEPTED = 0.5  # a feedback score at or above this is an acceptance (app/feedback.py's reject is below it)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted ``values`` (q in 0..100): a value that occurred, as a ledger query gives."""
    if not values:
        return None
    rank = max(1, math.ceil(q / 100 * len(values)))
    return values[rank - 1]


class DashboardReader(SpendReader):
    """The spend reader, plus the two reads the roll-up cannot answer: latencies and feedback."""

    def latencies(self, since_ts: float, limit: int = LATENCY_ROWS) -> dict[str, dict[str, float | None]]:
        sql = (f"SELECT latency_ms, overhead_ms, ttft_ms FROM requests WHERE ts >= {self.mark} AND status = 200 "
               f"ORDER BY ts DESC LIMIT {int(limit)}")
        rows = self._connect().execute(sql, [since_ts]).fetchall()
        out: dict[str, dict[str, float | None]] = {}
        for index, name in enumerate(("latency_ms", "overhead_ms", "ttft_ms")):
            values = sorted(float(r[index]) for r in rows if r[index] is not None)
            out[name] = {"n": len(values), **{f"p{q}": percentile(values, q) for q in (50, 95, 99)}}
        return out

    def feedback(self, since_ts: float) -> list[dict[str, Any]]:
        """Per answering model: feedback rows, accepted, mean score (the learning store's `feedback` table)."""
        sql = ("SELECT r.chosen_model, f.score FROM feedback f JOIN requests r ON r.id = f.request_id "
               f"WHERE f.ts >= {self.mark}")
        try:
            rows = self._connect().execute(sql, [since_ts]).fetchall()
        except Exception as exc:  # noqa: BLE001 - no learning store in this database yet: no feedback
            log.debug("no feedback table: %s", exc)
            if self.postgres:
                self._connect().rollback()
            return []
        per: dict[str, list[float]] = defaultdict(list)
        for model, score in rows:
            per[model or ""].append(float(score))
        return [{"model": model or None, "feedback": len(scores), "accepted": sum(s >= ACCEPTED for s in scores),
                 "acceptance": sum(s >= ACCEPTED for s in scores) / len(scores), "mean_score": sum(scores) / len(scores)}
                for model, scores in sorted(per.items(), key=lambda kv: -len(kv[1]))]


def _series(rows: list[dict[str, Any]], key: str, days: list[str], measure: str = "cost_usd",
            top: int = 8) -> dict[str, Any]:
    """{labels: days, series: {name: [value per day]}}: the `top` largest groups, the rest summed as (other)."""
    totals: dict[str, float] = defaultdict(float)
    for row in rows:
        totals[row[key] or "(none)"] += row[measure]
    keep = sorted(totals, key=lambda k: -totals[k])[:top]
    index = {d: i for i, d in enumerate(days)}
    series: dict[str, list[float]] = {name: [0.0] * len(days) for name in keep}
    for row in rows:
        name = row[key] or "(none)"
        target = series.setdefault(name if name in keep else "(other)", [0.0] * len(days))
        target[index[row["day"]]] += row[measure]
    return {"labels": days, "series": series}


def collect(gateway: Any, days: int) -> dict[str, Any]:
    """Everything the page shows for the last ``days`` UTC days (today included)."""
    gateway.ledger.flush()  # this worker's newest rows count too
    since = parse_day(f"{days}d")
    assert since is not None
    since_ts = calendar.timegm(time.strptime(since, "%Y-%m-%d"))  # the first day's 00:00 UTC
    reader = DashboardReader(gateway.server.ledger_url)
    try:
        per_day = reader.spend(["day"], since)["groups"]
        all_days = sorted(g["day"] for g in per_day)
        total = reader.spend([], since)["total"]
        by = {name: reader.spend(["day", name], since)["groups"] for name in ("model", "cohort", "team")}
        mix = reader.spend(["tier", "model"], since)["groups"]
        latencies = reader.latencies(since_ts)
        feedback = reader.feedback(since_ts)
    finally:
        reader.close()
    requests = total["requests"]
    daily = {
        "labels": all_days,
        "requests": [_pick(per_day, d, "requests") for d in all_days],
        "cache_hit_rate": [_share(per_day, d, "cache_hits") for d in all_days],
        "escalation_share": [_share(per_day, d, "escalated") for d in all_days],
    }
    fed = sum(f["feedback"] for f in feedback)
    summary = {
        "requests": requests, "cost_usd": total["cost_usd"], "errors": total["errors"],
        "cache_hit_rate": total["cache_hits"] / requests if requests else 0.0,
        "escalation_share": total["escalated"] / requests if requests else 0.0,
        "feedback": fed, "acceptance": sum(f["accepted"] for f in feedback) / fed if fed else None,
        "prompt_tokens": total["prompt_tokens"], "completion_tokens": total["completion_tokens"],
    }
    return {"days": days, "since": since, "summary": summary, "daily": daily,
            "spend": {name: _series(rows, name, all_days) for name, rows in by.items()},
            "spend_tables": {name: _table(rows, name) for name, rows in by.items()},
            "mix": [{"tier": r["tier"], "model": r["model"], "requests": r["requests"], "cost_usd": r["cost_usd"],
                     "share": r["requests"] / requests if requests else 0.0}
                    for r in sorted(mix, key=lambda r: -r["requests"])],
            "latency": latencies, "feedback": feedback, "drift": _drift(gateway)}


def _pick(rows: list[dict[str, Any]], day: str, measure: str) -> float:
    return next((r[measure] for r in rows if r["day"] == day), 0)


def _share(rows: list[dict[str, Any]], day: str, measure: str) -> float:
    requests = _pick(rows, day, "requests")
    return _pick(rows, day, measure) / requests if requests else 0.0


def _table(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Totals per group over the period, dearest first."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: {"requests": 0, "cost_usd": 0.0, "tokens": 0})
    for row in rows:
        entry = sums[row[key] or "(none)"]
        entry["requests"] += row["requests"]
        entry["cost_usd"] += row["cost_usd"]
        entry["tokens"] += row["prompt_tokens"] + row["completion_tokens"]
    return [{key: name, **values} for name, values in sorted(sums.items(), key=lambda kv: -kv[1]["cost_usd"])]


def _drift(gateway: Any) -> dict[str, Any]:
    try:
        return {"available": True, **gateway.drift(7).as_dict()}
    except Exception as exc:  # noqa: BLE001 - no trained router, no summary, no prompts stored: say why
        message = getattr(exc, "message", None) or str(exc)
        return {"available": False, "why": message}
