"""Spend reports, read from the ledger's daily roll-up (ledger/rollup.py), never from millions of request rows.

* :meth:`SpendReader.spend`: requests, tokens and cost per key, team, cohort, model, tier or day (any mix);
* :meth:`SpendReader.hidden`: the hidden-expensive-path report: cohorts (or teams) whose escalation share,
  strong-model share or cost per request is `factor` times the average or more, so that an average saving
  cannot hide one cohort that costs ten times the rest;
* :meth:`SpendReader.savings`: what the same traffic would have cost with every request on one baseline model
  (its prices, each request's own tokens), per cohort;
* :meth:`SpendReader.contracts`: per month, what a model's contract bills: the commitment, or the use above it.

Reports count whole UTC days: `since` and `until` name days (a timestamp is read as its day), both included.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timezone
from typing import Any

from pointsman.accounting.prices import ModelPrice, Rates, price_of_model_id
from pointsman.config.schema import ModelConfig
from pointsman.ledger import sqlite_path
from pointsman.ledger.rollup import MEASURES

__all__ = ["GROUPS", "KINDS", "Pricing", "SpendReader", "parse_day", "run_report"]

# the names reports group by -> the roll-up's columns
GROUPS = {"key": "key_id", "team": "team", "cohort": "cohort", "model": "model", "tier": "tier", "day": "day"}


def parse_day(value: str | float | None) -> str | None:
    """'2026-11-30', an ISO date-time, unix seconds or '7d' (days back), as the UTC day it falls on."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return time.strftime("%Y-%m-%d", time.gmtime(float(value)))
    text = str(value).strip()
    if text.endswith("d") and text[:-1].isdigit():  # "7d": seven days back, today included
        return parse_day(time.time() - (int(text[:-1]) - 1) * 86400)
    try:
        return parse_day(float(text))
    except ValueError:
        pass
    try:
        if len(text) == 10:
            return date.fromisoformat(text).isoformat()
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not a day (2026-11-30), an ISO date-time or unix seconds") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.date().isoformat()


def _totals(values: Sequence[float]) -> dict[str, Any]:
    row: dict[str, Any] = {name: (float(v) if name == "cost_usd" else int(v)) for name, v in zip(MEASURES, values)}
    row["cost_per_request"] = row["cost_usd"] / row["requests"] if row["requests"] else 0.0
    return row


def _ratio(value: float, average: float) -> float:
    if average > 0:
        return value / average
    return math.inf if value > 0 else 1.0


class SpendReader:
    """Reads a ledger (sqlite:/// or postgresql:// URL), bringing its tables to the current version first."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        self.mark = "%s" if self.postgres else "?"
        self._db: Any = None

    def _connect(self) -> Any:
        if self._db is None:
            self._db = self._open_postgres() if self.postgres else self._open_sqlite()
        return self._db

    def _open_postgres(self) -> Any:
        import psycopg

        from pointsman.ledger.migrations import migrate_postgres
        from pointsman.ledger.postgres import SCHEMA

        db = psycopg.connect(self.url, autocommit=True)
        with db.transaction():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
        migrate_postgres(db)
        return db

    def _open_sqlite(self) -> Any:
        import sqlite3

        from pointsman.ledger.migrations import migrate_sqlite
        from pointsman.ledger.sqlite import SCHEMA

        db = sqlite3.connect(sqlite_path(self.url), isolation_level=None, timeout=30)
        db.executescript(SCHEMA)
        migrate_sqlite(db)
        return db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> SpendReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one query every report is made of ----------------------------------------------------------
    def _grouped(self, columns: Sequence[str], since: str | None, until: str | None) -> list[tuple[Any, ...]]:
        where, params = [], []
        if since:
            where.append(f"day >= {self.mark}"); params.append(since)
        if until:
            where.append(f"day <= {self.mark}"); params.append(until)
        selected = ", ".join(columns)
        sums = ", ".join(f"SUM({m})" for m in MEASURES)
        sql = (f"SELECT {selected}{', ' if columns else ''}{sums} FROM spend_daily"
               f"{' WHERE ' + ' AND '.join(where) if where else ''}{f' GROUP BY {selected}' if columns else ''}")
        width = len(columns)
        # PostgreSQL sums BIGINTs as NUMERIC (Decimal): every measure as a plain number
        return [(*row[:width], *(int(v or 0) for v in row[width:-1]), float(row[-1] or 0.0))
                for row in self._connect().execute(sql, params).fetchall() if row[width]]

    def spend(self, group_by: Sequence[str] = ("cohort",), since: str | float | None = None,
              until: str | float | None = None) -> dict[str, Any]:
        """Sums per group (names from GROUPS), most expensive first, and the total."""
        unknown = [g for g in group_by if g not in GROUPS]
        if unknown:
            raise ValueError(f"cannot group by {', '.join(unknown)}: choose from {', '.join(GROUPS)}")
        first, last = parse_day(since), parse_day(until)
        columns = [GROUPS[g] for g in group_by]
        groups: list[dict[str, Any]] = []
        for row in self._grouped(columns, first, last):
            entry: dict[str, Any] = {name: (value or None) for name, value in zip(group_by, row)}
            entry.update(_totals(row[len(columns):]))
            groups.append(entry)
        groups.sort(key=lambda g: -g["cost_usd"])
        total = self._grouped([], first, last)
        return {"since": first, "until": last, "group_by": list(group_by), "groups": groups,
                "total": _totals(total[0]) if total else _totals([0] * len(MEASURES))}

    def _by_model(self, group: str, since: str | None, until: str | None) -> dict[str, dict[str, list[float]]]:
        """{group value: {model: sums}}."""
        column = GROUPS[group]
        found: dict[str, dict[str, list[float]]] = defaultdict(dict)
        for row in self._grouped([column, "model"], since, until):
            found[row[0] or ""][row[1] or ""] = list(row[2:])
        return found

    def hidden(self, group: str = "cohort", since: str | float | None = None, until: str | float | None = None,
               factor: float = 2.0, min_requests: int = 20, strong: Iterable[str] | None = None) -> dict[str, Any]:
        """Groups whose escalation share, strong-model share or cost per request is `factor` x the average or more.
        `strong`: the models counted as strong; None: the model with the highest cost per token in the period."""
        if group not in ("cohort", "team", "key"):
            raise ValueError("the hidden-expensive-path report is per cohort, team or key")
        first, last = parse_day(since), parse_day(until)
        by_model = self._by_model(group, first, last)
        index = {m: i for i, m in enumerate(MEASURES)}
        per_model: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(MEASURES))
        for models in by_model.values():
            for model, sums in models.items():
                per_model[model] = [a + b for a, b in zip(per_model[model], sums)]
        strong_set = set(strong) if strong is not None else self._strongest(per_model, index)

        def profile(models: dict[str, list[float]]) -> dict[str, float]:
            requests = sum(s[index["requests"]] for s in models.values())
            cost = sum(s[index["cost_usd"]] for s in models.values())
            return {"requests": int(requests), "cost_usd": cost,
                    "cost_per_request": cost / requests if requests else 0.0,
                    "escalation_share": sum(s[index["escalated"]] for s in models.values()) / requests if requests else 0.0,
                    "strong_share": (sum(s[index["requests"]] for m, s in models.items() if m in strong_set) / requests
                                     if requests else 0.0)}

        average = profile(dict(per_model))
        measures = ("cost_per_request", "escalation_share", "strong_share")
        rows = []
        for name, models in by_model.items():
            row: dict[str, Any] = {group: name or None, **profile(models)}
            row["ratios"] = {m: _ratio(row[m], average[m]) for m in measures}
            row["flags"] = ([m for m in measures if row["ratios"][m] >= factor]
                            if row["requests"] >= min_requests else [])
            rows.append(row)
        rows.sort(key=lambda r: (-len(r["flags"]), -r["ratios"]["cost_per_request"]))
        return {"since": first, "until": last, "group": group, "factor": factor, "min_requests": min_requests,
                "strong_models": sorted(strong_set), "average": average, "groups": rows,
                "flagged": [r[group] for r in rows if r["flags"]]}

    @staticmethod
    def _strongest(per_model: dict[str, list[float]], index: dict[str, int]) -> set[str]:
        def per_token(sums: list[float]) -> float:
            tokens = sums[index["prompt_tokens"]] + sums[index["completion_tokens"]]
            return sums[index["cost_usd"]] / tokens if tokens else 0.0

        priced = {m: per_token(s) for m, s in per_model.items() if m and per_token(s) > 0}
        return {max(priced, key=lambda m: priced[m])} if priced else set()

    def savings(self, baseline: ModelPrice, group: str = "cohort", since: str | float | None = None,
                until: str | float | None = None) -> dict[str, Any]:
        """Actual cost against every request on `baseline` (its base rates, each request's own tokens), per group."""
        if group not in GROUPS:
            raise ValueError(f"cannot group by {group}: choose from {', '.join(GROUPS)}")
        first, last = parse_day(since), parse_day(until)
        rates = baseline.rates
        rows = []
        for row in self._grouped([GROUPS[group]], first, last):
            sums = _totals(row[1:])
            would = _baseline_cost(rates, sums)
            rows.append({group: row[0] or None, "requests": sums["requests"], "cost_usd": sums["cost_usd"],
                         "baseline_usd": would, "savings_usd": would - sums["cost_usd"],
                         "savings_share": (would - sums["cost_usd"]) / would if would else 0.0})
        rows.sort(key=lambda r: r["savings_share"])
        cost, would = sum(r["cost_usd"] for r in rows), sum(r["baseline_usd"] for r in rows)
        return {"since": first, "until": last, "group": group, "baseline": baseline.model,
                "baseline_source": baseline.source, "groups": rows,
                "total": {"cost_usd": cost, "baseline_usd": would, "savings_usd": would - cost,
                          "savings_share": (would - cost) / would if would else 0.0}}

    def contracts(self, commitments: dict[str, float], since: str | float | None = None,
                  until: str | float | None = None) -> dict[str, Any]:
        """Per model with a monthly commitment and per month: the metered cost, and what the invoice says."""
        first, last = parse_day(since), parse_day(until)
        months: dict[tuple[str, str], float] = defaultdict(float)
        for day, model, *sums in self._grouped(["day", "model"], first, last):
            if model in commitments:
                months[(model, day[:7])] += float(sums[MEASURES.index("cost_usd")])
        rows = []
        for (model, month), metered in sorted(months.items()):
            commitment = commitments[model]
            rows.append({"model": model, "month": month, "metered_usd": metered, "commitment_usd": commitment,
                         "invoice_usd": max(metered, commitment), "unused_commitment_usd": max(commitment - metered, 0.0)})
        return {"since": first, "until": last, "months": rows}

    def sessions(self, since: str | float | None = None, until: str | float | None = None, limit: int = 100,
                 session: str | None = None) -> dict[str, Any]:
        """Per session (an agent's conversation: x-pointsman-session, or recognised from its opening), most expensive
        first: requests, models used (a switch shows as two), tokens with the cached share, cost, first and last
        request. Read from the request rows (sessions are too many to roll up by day), through their index."""
        first, last = parse_day(since), parse_day(until)
        where: list[str] = ["session IS NOT NULL"]
        params: list[Any] = []
        if first:
            where.append(f"ts >= {self.mark}"); params.append(_day_start(first))
        if last:
            where.append(f"ts < {self.mark}"); params.append(_day_start(last) + 86400)
        if session:
            where.append(f"session = {self.mark}"); params.append(session)
        condition = " AND ".join(where)
        db = self._connect()
        found = db.execute(
            f"SELECT session, COUNT(*), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), MIN(ts), MAX(ts), "
            f"SUM(prompt_tokens), SUM(cached_tokens), SUM(completion_tokens), SUM(cost_usd) FROM requests "
            f"WHERE {condition} GROUP BY session ORDER BY SUM(cost_usd) DESC LIMIT {int(limit)}", params).fetchall()
        rows: dict[str, dict[str, Any]] = {}
        for name, count, errors, begun, ended, prompt, cached, completion, cost in found:
            rows[name] = {"session": name, "requests": int(count), "errors": int(errors or 0), "first_ts": float(begun),
                          "last_ts": float(ended), "prompt_tokens": int(prompt or 0), "cached_tokens": int(cached or 0),
                          "completion_tokens": int(completion or 0), "cost_usd": float(cost or 0.0), "models": {}}
        if rows:
            marks = ", ".join([self.mark] * len(rows))
            for name, chosen, count, cost in db.execute(
                    f"SELECT session, chosen_model, COUNT(*), SUM(cost_usd) FROM requests WHERE {condition} "
                    f"AND session IN ({marks}) GROUP BY session, chosen_model", [*params, *rows]).fetchall():
                rows[name]["models"][chosen or ""] = {"requests": int(count), "cost_usd": float(cost or 0.0)}
        for row in rows.values():
            row["cached_share"] = row["cached_tokens"] / row["prompt_tokens"] if row["prompt_tokens"] else 0.0
            row["switched"] = len([m for m in row["models"] if m]) > 1
        return {"since": first, "until": last, "sessions": list(rows.values())}


def _day_start(day: str) -> float:
    return datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp()


def _baseline_cost(rates: Rates, sums: dict[str, Any]) -> float:
    fresh = sums["prompt_tokens"] - sums["cached_tokens"]
    return ((fresh * rates.input + sums["cached_tokens"] * rates.cache_read + sums["completion_tokens"] * rates.output)
            / 1_000_000 + sums["requests"] * rates.per_request)


KINDS = ("spend", "hidden", "savings", "contracts", "sessions")


class Pricing:
    """What reports know of the pool: its models' prices (baselines, strong models) and contract commitments.
    Empty when a report reads a ledger without its config: baselines then come from the price snapshot."""

    def __init__(self, models: Sequence[ModelConfig] = (), prices: dict[str, ModelPrice] | None = None) -> None:
        self.prices = dict(prices or {})
        self.commitments = {m.name: m.contract.monthly_commitment_usd for m in models
                            if m.contract is not None and m.contract.monthly_commitment_usd > 0}
        blended = {name: 0.75 * p.rates.input + 0.25 * p.rates.output for name, p in self.prices.items() if p.priced}
        top = max(blended.values(), default=0.0)
        # the pool's most expensive model(s); without a pool, the report finds the dearest per token in the data
        self.strong = {name for name, b in blended.items() if b == top} if len(blended) > 1 and top > 0 else None

    def baseline(self, name: str) -> ModelPrice:
        if name in self.prices and self.prices[name].priced:
            return self.prices[name]
        found = price_of_model_id(name)
        if found is None:
            known = ", ".join(sorted(n for n, p in self.prices.items() if p.priced))
            raise ValueError(f"no price for baseline {name!r}: name a priced pool model ({known or 'none'}) or a model id "
                             "the price snapshot knows (gpt-4o, claude-sonnet-4-5, ...)")
        return found


def run_report(reader: SpendReader, kind: str, options: dict[str, str], pricing: Pricing) -> dict[str, Any]:
    """One report from string options (the admin API's query, the CLI's flags): group_by, group, since, until,
    baseline, factor, min_requests, strong."""
    since, until = options.get("since"), options.get("until")
    if kind == "spend":
        group_by = [g.strip() for g in (options.get("group_by") or "cohort").split(",") if g.strip()]
        return reader.spend(group_by, since, until)
    if kind == "hidden":
        strong = options.get("strong")
        return reader.hidden(options.get("group") or "cohort", since, until, factor=_number(options, "factor", 2.0),
                             min_requests=int(_number(options, "min_requests", 20)),
                             strong=[m.strip() for m in strong.split(",")] if strong else pricing.strong)
    if kind == "savings":
        baseline = options.get("baseline")
        if not baseline:
            raise ValueError("the savings report needs a baseline: the model everything would otherwise run on")
        return reader.savings(pricing.baseline(baseline), options.get("group") or "cohort", since, until)
    if kind == "contracts":
        return reader.contracts(pricing.commitments, since, until)
    if kind == "sessions":
        return reader.sessions(since, until, limit=int(_number(options, "limit", 100)), session=options.get("session"))
    raise ValueError(f"unknown report {kind!r}: choose from {', '.join(KINDS)}")


def _number(options: dict[str, str], name: str, default: float) -> float:
    raw = options.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{name} must be > 0")
    return value
