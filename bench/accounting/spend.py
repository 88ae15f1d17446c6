"""Spend reports over a large ledger: ROWS synthetic requests written through the real ledger sinks (SQLite, and
PostgreSQL at 127.0.0.1:5432, database `test`, in a schema of its own that is dropped after), which keep the daily
roll-up as they write; then each report timed (best and median of REPEATS), beside the same spend query run on the
raw `requests` table. Writes bench/accounting/RESULTS.md.

    .venv/bin/python bench/accounting/spend.py [--rows 1000000] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from pointsman.accounting.prices import ModelPrice, Rates  # noqa: E402
from pointsman.accounting.reports import SpendReader  # noqa: E402
from pointsman.ledger import Attempt, LedgerRecord, sink_from_url  # noqa: E402

PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
DAYS, KEYS, TEAMS, COHORTS = 30, 200, 20, 12
MODELS = {"small": 0.3, "mid": 2.0, "big": 12.0}  # USD per million tokens, blended
TIERS = ["rules", "semantic", "judge", "cache", "semantic+cascade", "default"]
BATCH = 512  # server.ledger_batch_size's default
REPEATS = 5


def records(count: int, seed: int = 1) -> Any:
    rng = random.Random(seed)
    start = time.time() - DAYS * 86400
    keys = [(f"key{i:03d}", f"team{i % TEAMS:02d}", f"cohort{i % COHORTS:02d}") for i in range(KEYS)]
    models = list(MODELS)
    for i in range(count):
        key, team, cohort = rng.choice(keys)
        tier = rng.choice(TIERS)
        model = rng.choice(models)
        escalated = tier.endswith("+cascade") and rng.random() < 0.3
        attempts = [Attempt("small", "ok", 50.0, verdict="escalated" if escalated else "accepted"),
                    Attempt(model, "ok", 400.0, verdict="final")] if tier.endswith("+cascade") else [Attempt(model, "ok", 400.0)]
        prompt, completion = rng.randint(20, 4000), rng.randint(1, 1000)
        yield LedgerRecord(id=f"req{i:08x}", ts=start + rng.random() * DAYS * 86400, requested_model="auto", status=200,
                           chosen_model=model, tier=tier, reason="bench", key_id=key, team=team, cohort=cohort,
                           prompt_tokens=prompt, completion_tokens=completion, cached_tokens=prompt // 4 if rng.random() < 0.2 else 0,
                           cost_usd=(prompt + completion) * MODELS[model] / 1e6, latency_ms=500.0, attempts=attempts)


def fill(url: str, count: int) -> float:
    """Rows per second through the sink (requests, and the roll-up in the same transactions)."""
    sink = sink_from_url(url)
    sink.open()
    started = time.perf_counter()
    batch: list[LedgerRecord] = []
    for record in records(count):
        batch.append(record)
        if len(batch) == BATCH:
            sink.write(batch)
            batch = []
    if batch:
        sink.write(batch)
    elapsed = time.perf_counter() - started
    sink.close()
    return count / elapsed


def timed(run: Callable[[], Any]) -> tuple[float, float]:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def reports(url: str) -> list[tuple[str, float, float]]:
    baseline = ModelPrice("big", "config", Rates.flat(10.0, 30.0, 5.0))
    since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 7 * 86400))
    out = []
    with SpendReader(url) as reader:
        reader.spend([])  # connect and check the schema version once, outside the timings
        cases: list[tuple[str, Callable[[], Any]]] = [
            *[(f"spend by {g}", lambda g=g: reader.spend([g])) for g in ("key", "team", "cohort", "model", "tier", "day")],
            ("spend by cohort, model", lambda: reader.spend(["cohort", "model"])),
            ("spend by cohort, last 7 days", lambda: reader.spend(["cohort"], since=since)),
            ("hidden expensive paths per cohort", lambda: reader.hidden("cohort")),
            ("hidden expensive paths per team", lambda: reader.hidden("team")),
            ("savings against `big`, per cohort", lambda: reader.savings(baseline, "cohort")),
            ("contracts (commitment on `big`)", lambda: reader.contracts({"big": 1000.0})),
        ]
        for name, run in cases:
            best, median = timed(run)
            out.append((name, best, median))
        db = reader._connect()
        rollup_rows = db.execute("SELECT COUNT(*) FROM spend_daily").fetchone()[0]
        raw = "SELECT cohort, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_usd) FROM requests GROUP BY cohort"
        best, median = timed(lambda: db.execute(raw).fetchall())
        out.append(("(for comparison) spend by cohort on the raw requests table", best, median))
        out.append((f"(roll-up rows: {rollup_rows})", 0.0, 0.0))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    sections = []
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/bench.db"
        rate = fill(url, args.rows)
        print(f"sqlite: {rate:.0f} rows/s", flush=True)
        sections.append(("SQLite (WAL, file on local disk)", rate, reports(url)))
    if not args.skip_postgres:
        import psycopg

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        admin = psycopg.connect(PG_SERVER, autocommit=True)
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            url = f"{PG_SERVER}?options={quote(f'-csearch_path={schema}')}"
            rate = fill(url, args.rows)
            print(f"postgres: {rate:.0f} rows/s", flush=True)
            admin.execute(f"ANALYZE {schema}.spend_daily")
            sections.append((f"PostgreSQL {admin.info.server_version // 10000} (127.0.0.1)", rate, reports(url)))
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
            admin.close()
    write_results(args.rows, sections)
    return 0


def write_results(rows: int, sections: list[tuple[str, float, list[tuple[str, float, float]]]]) -> None:
    import os
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    lines = ["# Spend reports over a large ledger", "",
             f"{time.strftime('%Y-%m-%d')}, commit {commit}, `.venv/bin/python bench/accounting/spend.py --rows {rows}`; "
             f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
             f"SQLite {__import__('sqlite3').sqlite_version}.", "",
             f"{rows:,} synthetic requests over {DAYS} days ({KEYS} keys in {TEAMS} teams and {COHORTS} cohorts, "
             f"{len(MODELS)} models, {len(TIERS)} tiers), written through the ledger sinks in batches of {BATCH} (the "
             "writer keeps the daily roll-up in each batch's transaction). Each report is timed "
             f"{REPEATS} times on an open connection; target: every report within 1 s.", ""]
    for title, rate, timings in sections:
        lines += [f"## {title}", "", f"Ledger writes (requests and roll-up): {rate:,.0f} rows/s.", "",
                  "| report | best (ms) | median (ms) | within 1 s |", "| --- | ---: | ---: | --- |"]
        for name, best, median in timings:
            if name.startswith("(roll-up"):
                lines.append(f"| {name} | | | |")
            else:
                lines.append(f"| {name} | {best * 1000:.1f} | {median * 1000:.1f} | {'yes' if median <= 1 else 'NO'} |")
        lines.append("")
    lines += ["The reports read the roll-up (`spend_daily`: one row per day, key, team, cohort, model and tier), so "
              "their time grows with the number of such combinations, not with requests; the raw-table line is what "
              "each report would cost without it.", ""]
    (Path(__file__).parent / "RESULTS.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
