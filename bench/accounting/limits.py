#!/usr/bin/env python3
"""What virtual keys and budgets add to the gateway's latency: the same method as bench/gateway/run.py, in one run.

Starts the test upstream (`python -m tests.upstream`, model "echo") and four gateways as subprocesses on loopback:

  default          no keys, no limits, SQLite ledger (the embedded default)
  keys             a virtual key (look-up in the in-memory copy), no limits
  budgets-memory   the key, plus limits on the key and its team (requests and tokens a minute, USD a day and a
                   month: every request reserves and settles 8 counters), in-process counters, SQLite ledger
  budgets-redis-pg the same limits on Redis (127.0.0.1:6379, one Lua call to reserve and one to settle) with the
                   ledger, keys and limits in PostgreSQL (127.0.0.1:5432, database `test`, a schema of its own)

then, in interleaved rounds (order rotated every round): latency at concurrency 1 (wrk -c1) and throughput at 32
connections (wrk -c32). Medians across rounds; the added latency is each target's p50 minus `default`'s in the same
round. Writes bench/accounting/LIMITS.md. Limits are set high enough never to refuse: the cost measured is the check.

    .venv/bin/python bench/accounting/limits.py [--rounds 5] [--seconds 8] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench" / "gateway"))

from run import HOST, BenchError, Proc, free_port, wait_ready, wrk  # noqa: E402

from pointsman.accounting.keys import Limit, key_store_from_url  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"
PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
TARGETS = ("default", "keys", "budgets-memory", "budgets-redis-pg")
BODY = {"model": "auto", "messages": [{"role": "user", "content": "Say hello to the benchmark in one short sentence."}],
        "max_tokens": 32}
HIGH = {"requests_per_minute": 10**9, "tokens_per_minute": 10**12, "usd_per_day": 10.0**6, "usd_per_month": 10.0**7}


def prepare(name: str, tmp: Path, up_port: int, pg_url: str, prefix: str) -> tuple[Path, dict[str, str]]:
    """The target's config file and the headers its clients send (a virtual key made in its database)."""
    ledger = pg_url if name == "budgets-redis-pg" else f"sqlite:///{tmp / (name + '.db')}"
    limits = f'{{store: "{REDIS_URL}", prefix: "{prefix}"}}' if name == "budgets-redis-pg" else "{}"
    config = tmp / f"{name}.yaml"
    config.write_text(
        "models:\n"
        f'  - {{name: echo, provider: openai, base_url: "http://{HOST}:{up_port}/v1", model: echo, '
        "api_key_env: BENCH_KEY, prices: {input: 0.1, output: 0.2}}\n"
        "policies: {auto: {default: echo}}\n"
        f'server: {{ledger_url: "{ledger}", limits: {limits}}}\n')
    if name == "default":
        return config, {}
    store = key_store_from_url(ledger)
    try:
        key, secret = store.create_key(team="bench")
        if name.startswith("budgets"):
            store.set_limit(Limit("key", key.id, "", **HIGH))
            store.set_limit(Limit("team", "bench", "", **HIGH))
    finally:
        store.close()
    return config, {"authorization": f"Bearer {secret}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0, help="each wrk phase")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s phases (a smoke check; writes nothing)")
    args = parser.parse_args()
    rounds, seconds = (1, 2.0) if args.quick else (args.rounds, args.seconds)

    import psycopg
    import redis

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    prefix = f"pm-bench:{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(PG_SERVER, autocommit=True)
    admin.execute(f"CREATE SCHEMA {schema}")
    pg_url = f"{PG_SERVER}?options={quote(f'-csearch_path={schema}')}"
    procs: list[Proc] = []
    results: list[dict] = []
    try:
        with tempfile.TemporaryDirectory(prefix="pointsman-limits-bench-") as tmp_name:
            tmp = Path(tmp_name)
            env = dict(os.environ, BENCH_KEY="bench-upstream-key", PYTHONPATH=str(ROOT))
            up_port = free_port()
            upstream = Proc("upstream", [str(ROOT / ".venv" / "bin" / "python"), "-m", "tests.upstream", "--host", HOST,
                                         "--port", str(up_port)], env, ROOT, tmp, None)
            procs.append(upstream)
            targets: dict[str, dict] = {}
            for name in TARGETS:
                config, headers = prepare(name, tmp, up_port, pg_url, prefix)
                port = free_port()
                proc = Proc(name, [str(ROOT / ".venv" / "bin" / "pointsman"), "serve", "--config", str(config),
                                   "--host", HOST, "--port", str(port)], env, tmp, tmp, None)
                procs.append(proc)
                targets[name] = {"port": port, "headers": headers, "proc": proc}
            for name, target in targets.items():
                wait_ready(target["proc"], target["port"], "/v1/chat/completions", BODY, target["headers"], 90)
            body_file = tmp / "body.json"
            body_file.write_text(json.dumps(BODY))
            for r in range(rounds):
                order = list(TARGETS[r % len(TARGETS):] + TARGETS[:r % len(TARGETS)])
                row: dict = {"round": r + 1, "order": order}
                for name in order:
                    t = targets[name]
                    wrk(t["port"], "/v1/chat/completions", body_file, t["headers"], 1, 1, None)  # warm-up
                    c1 = wrk(t["port"], "/v1/chat/completions", body_file, t["headers"], 1, seconds, None)
                    c32 = wrk(t["port"], "/v1/chat/completions", body_file, t["headers"], 32, seconds, None)
                    if c1["errors"] or c32["errors"]:
                        raise BenchError(f"{name}: errors {c1['errors']} / {c32['errors']}: {c1['stderr']} {c32['stderr']}")
                    row[name] = {"p50_us": c1["p50"], "p99_us": c1["p99"], "rps_c1": c1["rps"],
                                 "rps_c32": c32["rps"], "p50_c32_us": c32["p50"], "p99_c32_us": c32["p99"]}
                results.append(row)
                print(f"round {r + 1}: " + ", ".join(f"{n} p50 {row[n]['p50_us'] / 1000:.3f} ms, {row[n]['rps_c32']:.0f} rps"
                                                      for n in TARGETS), flush=True)
    finally:
        for proc in reversed(procs):
            proc.stop()
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}:*", count=1000):
            client.delete(key)
        client.close()
    if args.quick:
        print(json.dumps(results, indent=1))
        return 0
    write(results, rounds, seconds)
    return 0


def write(results: list[dict], rounds: int, seconds: float) -> None:
    def median_of(name: str, field: str) -> float:
        return statistics.median(row[name][field] for row in results)

    def added(name: str) -> float:  # per round, then the median: the rounds' drift cancels
        return statistics.median(row[name]["p50_us"] - row["default"]["p50_us"] for row in results)

    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2:3]
    pg_version = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    lines = [
        "# Virtual keys and budgets: what they add to the gateway's latency",
        "",
        f"Written by `bench/accounting/limits.py` on {dt.date.today()} (commit {commit}, working tree as it was): "
        f"{rounds} interleaved rounds, each target {seconds:g} s at concurrency 1 and {seconds:g} s at 32 connections "
        "(wrk, `bench/gateway/wrk.lua`), order rotated every round; medians across rounds.",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python "
        f"{platform.python_version()}; Redis {''.join(redis_version) or '?'}, {pg_version or 'PostgreSQL ?'}; "
        "every process on the same machine, on loopback, no CPU pinning.",
        "",
        "| target | p50 c1 (ms) | p99 c1 (ms) | added p50 vs default (ms) | RPS c32 | p99 c32 (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for name in TARGETS:
        lines.append(f"| {name} | {median_of(name, 'p50_us') / 1000:.3f} | {median_of(name, 'p99_us') / 1000:.3f} | "
                     f"{'-' if name == 'default' else f'{added(name) / 1000:+.3f}'} | {median_of(name, 'rps_c32'):.0f} | "
                     f"{median_of(name, 'p99_c32_us') / 1000:.3f} |")
    worst = max(added(name) for name in ("budgets-memory", "budgets-redis-pg")) / 1000
    lines += [
        "",
        f"Target: budget enforcement adds at most 0.5 ms at the median. Measured: {added('budgets-memory') / 1000:+.3f} ms "
        f"in process, {added('budgets-redis-pg') / 1000:+.3f} ms on Redis + PostgreSQL: "
        + ("met." if worst <= 0.5 else "**missed**."),
        "",
        "What each target does per request beyond `default`: `keys` hashes the bearer key (SHA-256) and reads the "
        "in-memory copy; `budgets-*` also estimate the worst case and reserve 8 counters (key and team, four metrics) "
        "before the upstream call and settle them after the answer is sent (after the client has its answer, but on the "
        "gateway's CPU: it shows in RPS at 32 connections). On Redis that is two script calls (EVALSHA) "
        "per request; PostgreSQL is not on the request path (keys and limits are polled every "
        "`limits.keys_refresh_s`, the ledger is written in batches).",
        "",
        "Per round (p50 at concurrency 1, ms):",
        "",
        "| round | " + " | ".join(TARGETS) + " |",
        "|---|" + "---|" * len(TARGETS),
    ]
    for row in results:
        lines.append(f"| {row['round']} | " + " | ".join(f"{row[n]['p50_us'] / 1000:.3f}" for n in TARGETS) + " |")
    (HERE / "LIMITS.md").write_text("\n".join(lines) + "\n")
    (HERE / "limits.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
