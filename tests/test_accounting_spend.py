"""Spend reports (accounting/reports.py) in SQLite and PostgreSQL: each number equals a sum computed here,
independently, from the ledger's request rows; the roll-up survives rewritten rows and is built for ledgers made
before it; the admin endpoint needs the admin key; `pointsman spend` through its real entry point."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from pointsman.accounting.prices import ModelPrice, Rates
from pointsman.accounting.reports import SpendReader
from pointsman.ledger import Attempt, LedgerRecord, sink_from_url
from pointsman.ledger.migrations import LEDGER_VERSION
from tests.accounting_services import pg_schema
from tests.conftest import model

DAY = 86400
START = 1_764_547_200.0  # 2025-12-01 00:00 UTC
COHORTS = ["acme", "globex", "initech", None]
MODELS = {"small": 0.2, "big": 5.0}


def _records(count: int, seed: int = 7) -> list[LedgerRecord]:
    """Traffic over five days; cohort 'initech' takes the strong model and escalates far more than the others."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        cohort = rng.choice(COHORTS)
        expensive = cohort == "initech" and rng.random() < 0.8
        chosen = "big" if expensive or rng.random() < 0.1 else "small"
        cascade = rng.random() < 0.5
        escalates = cascade and (expensive or rng.random() < 0.05)
        attempts = [Attempt("small", "ok", 10.0, verdict="escalated" if escalates else "accepted")] if cascade else []
        attempts.append(Attempt(chosen, "ok", 20.0, verdict="final" if cascade else None))
        prompt, completion = rng.randint(10, 3000), rng.randint(0, 800)
        cached = rng.randint(0, prompt) if rng.random() < 0.3 else 0
        records.append(LedgerRecord(
            id=f"r{i}", ts=START + rng.uniform(0, 5 * DAY), requested_model="auto", status=rng.choice([200] * 9 + [502]),
            chosen_model=chosen, tier=("semantic+cascade" if cascade else rng.choice(["rules", "semantic", "cache"])),
            key_id=f"k{rng.randint(0, 5)}", team=rng.choice(["red", "blue", None]), cohort=cohort,
            prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached,
            cost_usd=(prompt + completion) * MODELS[chosen] / 1e6, cost_estimated=rng.random() < 0.05,
            cache_hit=rng.random() < 0.05, attempts=attempts))
    return records


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    with pg_schema() as url:
        yield url


def _write(url: str, records: list[LedgerRecord], batch: int = 97) -> None:
    sink = sink_from_url(url)
    sink.open()
    try:
        for start in range(0, len(records), batch):
            sink.write(records[start:start + batch])
    finally:
        sink.close()


def _rows(url: str) -> list[dict[str, Any]]:
    """Every request row, read with plain SQL: what the reports are checked against."""
    query = ("SELECT ts, key_id, team, cohort, chosen_model, tier, status, cache_hit, cost_estimated, prompt_tokens, "
             "cached_tokens, completion_tokens, cost_usd, attempts FROM requests")
    if url.startswith("sqlite"):
        db = sqlite3.connect(url[len("sqlite:///"):])
        raw = db.execute(query).fetchall()
        db.close()
    else:
        import psycopg

        with psycopg.connect(url) as db:
            raw = db.execute(query).fetchall()
    names = ["ts", "key_id", "team", "cohort", "model", "tier", "status", "cache_hit", "estimated", "prompt_tokens",
             "cached_tokens", "completion_tokens", "cost_usd", "attempts"]
    rows = []
    for values in raw:
        row = dict(zip(names, values))
        attempts = json.loads(row["attempts"]) if isinstance(row["attempts"], str) else row["attempts"]
        row["escalated"] = "+cascade" in (row["tier"] or "") and any(
            len(a) > 6 and (a[6] or "").startswith("escalated") for a in attempts)
        row["day"] = time.strftime("%Y-%m-%d", time.gmtime(row["ts"]))
        rows.append(row)
    return rows


def _sums(rows: list[dict[str, Any]], key: str) -> dict[Any, dict[str, float]]:
    found: dict[Any, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        sums = found[row[key] or None]
        sums["requests"] += 1
        sums["errors"] += row["status"] >= 400
        sums["escalated"] += row["escalated"]
        sums["estimated"] += bool(row["estimated"])
        sums["cache_hits"] += bool(row["cache_hit"])
        for name in ("prompt_tokens", "cached_tokens", "completion_tokens", "cost_usd"):
            sums[name] += row[name]
        sums["strong"] += row["model"] == "big"
    return found


def _check_spend(report: dict[str, Any], expected: dict[Any, dict[str, float]], group: str) -> None:
    assert {g[group] for g in report["groups"]} == set(expected)
    for entry in report["groups"]:
        sums = expected[entry[group]]
        for name in ("requests", "errors", "escalated", "estimated", "cache_hits", "prompt_tokens", "cached_tokens",
                     "completion_tokens"):
            assert entry[name] == sums[name], (group, entry[group], name)
        assert entry["cost_usd"] == pytest.approx(sums["cost_usd"], rel=1e-9)


def test_reports_equal_sums_of_the_ledger_rows(ledger_url):
    records = _records(3000)
    _write(ledger_url, records)
    # rows written again with other numbers (a batch retried): the reports follow the rows, nothing counted twice
    rewritten = [LedgerRecord(**{**{f: getattr(r, f) for f in r.__struct_fields__}, "cost_usd": r.cost_usd * 3,
                                 "cohort": "acme", "prompt_tokens": r.prompt_tokens + 1}) for r in records[:200:3]]
    _write(ledger_url, rewritten)
    rows = _rows(ledger_url)
    assert len(rows) == 3000
    with SpendReader(ledger_url) as reader:
        for group, column in (("cohort", "cohort"), ("team", "team"), ("key", "key_id"), ("model", "model"),
                              ("tier", "tier"), ("day", "day")):
            _check_spend(reader.spend([group]), _sums(rows, column), group)
        total = reader.spend(["cohort"])["total"]
        assert total["requests"] == 3000 and total["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows))
        # a period: whole UTC days, both ends included
        window = reader.spend(["cohort"], since="2025-12-02", until="2025-12-03")
        _check_spend(window, _sums([r for r in rows if "2025-12-02" <= r["day"] <= "2025-12-03"], "cohort"), "cohort")

        hidden = reader.hidden("cohort", strong=["big"], factor=2.0)
        by_cohort = _sums(rows, "cohort")
        everyone = {n: sum(s[n] for s in by_cohort.values()) for n in ("requests", "cost_usd", "escalated", "strong")}
        for entry in hidden["groups"]:
            sums = by_cohort[entry["cohort"]]
            assert entry["requests"] == sums["requests"]
            assert entry["cost_per_request"] == pytest.approx(sums["cost_usd"] / sums["requests"])
            assert entry["escalation_share"] == pytest.approx(sums["escalated"] / sums["requests"])
            assert entry["strong_share"] == pytest.approx(sums["strong"] / sums["requests"])
            assert entry["ratios"]["cost_per_request"] == pytest.approx(
                (sums["cost_usd"] / sums["requests"]) / (everyone["cost_usd"] / everyone["requests"]))
        assert hidden["flagged"] == ["initech"]  # the one expensive cohort, behind an average that looks fine
        assert set(hidden["groups"][0]["flags"]) == {"cost_per_request", "escalation_share", "strong_share"}
        assert reader.hidden("cohort")["strong_models"] == ["big"]  # found from the data: dearest per token

        rates = Rates(input=3.0, output=12.0, cache_read=1.0, cache_write=3.0, reasoning=12.0)
        savings = reader.savings(ModelPrice("gpt-x", "config", rates), "cohort")
        for entry in savings["groups"]:
            sums = by_cohort[entry["cohort"]]
            would = ((sums["prompt_tokens"] - sums["cached_tokens"]) * 3.0 + sums["cached_tokens"] * 1.0
                     + sums["completion_tokens"] * 12.0) / 1e6
            assert entry["baseline_usd"] == pytest.approx(would)
            assert entry["savings_usd"] == pytest.approx(would - sums["cost_usd"])

        months = reader.contracts({"big": 1.0})["months"]
        big = sum(r["cost_usd"] for r in rows if r["model"] == "big")
        assert months == [{"model": "big", "month": "2025-12", "metered_usd": pytest.approx(big), "commitment_usd": 1.0,
                           "invoice_usd": pytest.approx(max(big, 1.0)), "unused_commitment_usd": pytest.approx(max(1.0 - big, 0))}]


def test_a_ledger_made_before_the_roll_up_is_migrated_and_backfilled(tmp_path):
    """A SQLite ledger of the first schema (no cost columns, no roll-up, no schema_version) gets both at open."""
    from pointsman.ledger.sqlite import SCHEMA

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    old_columns = [c[1] for c in db.execute("PRAGMA table_info(requests)")]
    records = _records(500, seed=3)
    for r in records:
        db.execute(f"INSERT INTO requests ({', '.join(old_columns)}) VALUES ({', '.join('?' * len(old_columns))})",
                   (r.id, r.ts, r.requested_model, r.status, r.chosen_model, r.tier, r.reason, r.stream, r.key_id, r.user,
                    r.team, r.cohort, r.prompt_tokens, r.completion_tokens, r.cost_usd, r.ttft_ms, r.latency_ms,
                    r.overhead_ms, r.cache_hit, r.error, json.dumps([[a.model, a.status, a.latency_ms, a.error, a.cost_usd,
                                                                      a.score, a.verdict, None, None] for a in r.attempts])))
    db.commit()
    db.close()
    url = f"sqlite:///{path}"
    with SpendReader(url) as reader:
        report = reader.spend(["cohort"])
    rows = _rows(url)
    assert all(r["cached_tokens"] == 0 and r["estimated"] == 0 for r in rows)
    _check_spend(report, _sums(rows, "cohort"), "cohort")
    assert sum(e["escalated"] for e in report["groups"]) == sum(r["escalated"] for r in rows) > 0
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM schema_version WHERE component = 'ledger'").fetchone() == (LEDGER_VERSION,)
    db.close()
    late = _records(1, seed=4)[0]
    late.id = "late"
    _write(url, [late])  # a gateway opening it later finds nothing to migrate, and adds to the roll-up
    with SpendReader(url) as reader:
        assert reader.spend([])["total"]["requests"] == 501


def test_the_admin_endpoint_needs_the_admin_key(make_gateway, upstream, monkeypatch):
    monkeypatch.setenv("PM_SPEND_ADMIN", "admin-secret")
    gateway = make_gateway({"models": [model("small", upstream, prices={"input": 1.0, "output": 2.0}),
                                       model("big", upstream, prices={"input": 10.0, "output": 20.0})],
                            "policies": {"auto": {"default": "small"}}, "server": {"admin_key_env": "PM_SPEND_ADMIN"}})
    for cohort in ("acme", "acme", "globex"):
        answer = httpx.post(f"{gateway.base_url}/chat/completions", headers={"authorization": "Bearer admin-secret",
                                                                             "x-pointsman-cohort": cohort},
                            json={"model": "auto", "messages": [{"role": "user", "content": "hello there"}]})
        assert answer.status_code == 200
    url = f"{gateway.url}/admin/spend"
    assert httpx.get(url, params={"group_by": "cohort"}).status_code == 401
    assert httpx.get(url, headers={"authorization": "Bearer wrong"}).status_code == 403
    admin = {"authorization": "Bearer admin-secret"}
    report = httpx.get(url, params={"group_by": "cohort,model"}, headers=admin)
    assert report.status_code == 200, report.text
    groups = {(g["cohort"], g["model"]): g for g in report.json()["groups"]}
    assert set(groups) == {("acme", "small"), ("globex", "small")} and groups[("acme", "small")]["requests"] == 2
    rows = ledger_rows_sum(gateway)
    assert report.json()["total"]["cost_usd"] == pytest.approx(rows) and rows > 0
    savings = httpx.get(f"{url}/savings", params={"baseline": "big"}, headers=admin).json()
    assert savings["total"]["baseline_usd"] == pytest.approx(10 * savings["total"]["cost_usd"], rel=0.01)
    assert httpx.get(f"{url}/savings", headers=admin).status_code == 400  # no baseline named
    assert httpx.get(f"{url}/hidden", params={"group": "cohort", "min_requests": "1"}, headers=admin).status_code == 200
    assert httpx.post(url, headers=admin).status_code == 405


def ledger_rows_sum(gateway: Any) -> float:
    from tests.conftest import ledger_rows

    return sum(r["cost_usd"] for r in ledger_rows(gateway))


def test_pointsman_spend_through_its_entry_point(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _write(url, _records(400, seed=11))
    rows = _rows(url)
    command = [str(Path(sys.executable).parent / "pointsman"), "spend", "--ledger", url]
    done = subprocess.run([*command, "--group-by", "model", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    _check_spend(json.loads(done.stdout), _sums(rows, "model"), "model")
    hidden = subprocess.run([*command, "--hidden"], capture_output=True, text=True, timeout=120)
    assert hidden.returncode == 0 and "flagged at 2x the average: initech" in hidden.stdout, hidden.stdout + hidden.stderr
    savings = subprocess.run([*command, "--baseline", "gpt-4o", "--json"], capture_output=True, text=True, timeout=120)
    assert savings.returncode == 0, savings.stderr
    assert json.loads(savings.stdout)["baseline_source"].startswith("genai-prices:")
    bad = subprocess.run([*command, "--group-by", "colour"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "cannot group by colour" in bad.stderr
