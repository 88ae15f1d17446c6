"""What metrics cost a request (issue 21: <= 0.1 ms added p50 with metrics on), measured two ways:

1. the hook alone: `Visibility.record` on realistic ledger rows (answered, streamed, a cascade with two attempts),
   timed per call in a loop; its p50 is what metrics add to a request's CPU, after the answer is sent;
2. end to end, side by side: two gateways in this process (metrics on / off), same pool on the test upstream
   (tests/upstream), requests interleaved one by one from one client, the client's latency p50 of each.

    .venv/bin/python bench/observability/overhead.py [--requests 3000]   # writes bench/observability/RESULTS.md's numbers
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pointsman.app.pipeline import Exchange  # noqa: E402
from pointsman.core import RouteDecision  # noqa: E402
from pointsman.ledger import Attempt, LedgerRecord  # noqa: E402
from tests.conftest import API_KEY_ENV, UPSTREAM_SECRET  # noqa: E402
from tests.servers import GatewayServer, UpstreamServer  # noqa: E402


def rows() -> list[LedgerRecord]:
    plain = LedgerRecord(id="req_1", ts=time.time(), requested_model="auto", status=200, chosen_model="cheap", tier="rules",
                         prompt_tokens=120, completion_tokens=300, cost_usd=0.00042, latency_ms=12.0, overhead_ms=0.3,
                         attempts=[Attempt("cheap", "ok", 11.5)])
    streamed = LedgerRecord(id="req_2", ts=time.time(), requested_model="auto", status=200, chosen_model="strong",
                            tier="semantic", stream=True, prompt_tokens=900, completion_tokens=80, cost_usd=0.004,
                            ttft_ms=150.0, latency_ms=900.0, overhead_ms=0.5, attempts=[Attempt("strong", "ok", 149.0)])
    cascade = LedgerRecord(id="req_3", ts=time.time(), requested_model="auto", status=200, chosen_model="strong",
                           tier="default+cascade", prompt_tokens=50, completion_tokens=60, cost_usd=0.001, latency_ms=40.0,
                           attempts=[Attempt("cheap", "ok", 10.0, verdict="escalated:refusal", cost_usd=1e-5),
                                     Attempt("strong", "ok", 25.0, verdict="final", cost_usd=1e-3)])
    return [plain, streamed, cascade]


def hook_cost(gateway, n: int) -> list[float]:
    visibility = gateway.visibility
    exchanges = []
    for row in rows():
        ex = Exchange({}, None, None, 0.0, row)
        ex.decision = RouteDecision(model=row.chosen_model or "", tier=row.tier or "", reason="", confidence=0.8)
        exchanges.append(ex)
    times = []
    for i in range(n):
        ex = exchanges[i % len(exchanges)]
        start = time.perf_counter_ns()
        visibility.record(ex)
        times.append((time.perf_counter_ns() - start) / 1000)
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    os.environ[API_KEY_ENV] = UPSTREAM_SECRET
    upstream = UpstreamServer().start()
    pool = [{"name": "cheap", "provider": "openai", "base_url": f"{upstream.url}/v1", "model": "echo",
             "api_key_env": API_KEY_ENV, "prices": {"input": 1, "output": 2}},
            {"name": "strong", "provider": "openai", "base_url": f"{upstream.url}/v1", "model": "echo",
             "api_key_env": API_KEY_ENV, "prices": {"input": 10, "output": 30}}]
    tmp = Path(tempfile.mkdtemp())
    on = GatewayServer({"models": pool}, tmp / "on.db").start()
    off = GatewayServer({"models": pool, "observability": {"metrics": False}}, tmp / "off.db").start()
    try:
        hook = hook_cost(on.gateway, 30_000)
        latency: dict[str, list[float]] = {"on": [], "off": []}
        overhead: dict[str, list[float]] = {"on": [], "off": []}
        body = {"model": "cheap", "messages": [{"role": "user", "content": "hello there"}]}
        with httpx.Client(timeout=30) as client:
            for _ in range(200):  # warm both
                client.post(f"{on.base_url}/chat/completions", json=body)
                client.post(f"{off.base_url}/chat/completions", json=body)
            for i in range(args.requests * 2):
                name, gw = (("on", on), ("off", off))[i % 2] if (i // 2) % 2 == 0 else (("off", off), ("on", on))[i % 2]
                start = time.perf_counter()
                answer = client.post(f"{gw.base_url}/chat/completions", json=body)
                latency[name].append((time.perf_counter() - start) * 1000)
                overhead[name].append(float(answer.headers["x-pointsman-overhead-ms"]))
    finally:
        on.stop(); off.stop(); upstream.stop()
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cpus; {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"hook (Visibility.record, metrics on, 30,000 calls over 3 row kinds): p50 {pct(hook, 50):.1f} us, "
          f"p90 {pct(hook, 90):.1f} us, p99 {pct(hook, 99):.1f} us, mean {statistics.fmean(hook):.1f} us")
    for name in ("off", "on"):
        print(f"metrics {name:>3}: client latency p50 {pct(latency[name], 50):.3f} ms p90 {pct(latency[name], 90):.3f} ms; "
              f"x-pointsman-overhead-ms p50 {pct(overhead[name], 50):.3f} ({len(latency[name])} requests)")
    print(f"added p50 (on - off), client latency: {pct(latency['on'], 50) - pct(latency['off'], 50):+.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
