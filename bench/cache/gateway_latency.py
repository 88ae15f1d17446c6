"""The cache end to end through `pointsman serve`: hit latency, and what the miss path adds.

Starts the test upstream and two gateways on loopback (the same pool; one with the in-process cache, one
without), then measures sequentially (c=1) with one keep-alive HTTP client:
  exact hit     the same request again (temperature 0)
  semantic hit  paraphrases of cached questions (the answer comes back through the false-hit guard)
  miss          new cacheable questions: cache-on minus cache-off is what a miss costs (lookup, the query
                embedding for the semantic layer, the store after the answer)
  not cacheable requests without temperature 0 (sampled): the pre-check only
Results go to bench/cache/GATEWAY.md.

    .venv/bin/python bench/cache/gateway_latency.py [--n 300]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ["How do I reverse a list in Python?", "What is the capital of Australia?", "How do I boil an egg?",
             "What causes the seasons on Earth?", "How do I centre a div in CSS?", "Why is the sky blue?",
             "What is a closure in JavaScript?", "How long should I steep green tea?"]
PARAPHRASES = ["How can I reverse a list in Python?", "What's the capital of Australia?", "How can I boil an egg?",
               "What is the cause of the seasons on Earth?", "How can I centre a div in CSS?", "Why's the sky blue?",
               "What's a closure in JavaScript?", "How long should green tea steep?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(url: str) -> None:
    for _ in range(600):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"{statistics.median(ordered):.2f} | {p99:.2f} | {len(ordered)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="requests per measurement")
    parser.add_argument("--out", default=str(ROOT / "bench" / "cache" / "GATEWAY.md"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pointsman-cachebench-"))
    up_port, on_port, off_port = free_port(), free_port(), free_port()
    env = {**os.environ, "BENCH_KEY": "sk-bench"}
    processes = [subprocess.Popen([sys.executable, "-m", "tests.upstream", "--port", str(up_port)], cwd=ROOT, env=env)]
    try:
        for port, cache in ((on_port, "true"), (off_port, "false")):
            config = work / f"pool-{port}.yaml"
            config.write_text(f"""models:
  - {{name: m, provider: openai, base_url: "http://127.0.0.1:{up_port}/v1", model: echo, api_key_env: BENCH_KEY}}
server: {{ledger_url: "sqlite:///{work}/ledger-{port}.db", cache: {{enabled: {cache}}}}}
""")
            processes.append(subprocess.Popen([sys.executable, "-m", "pointsman.cli", "serve", "--config", str(config),
                                               "--port", str(port)], cwd=work, env=env))
        for port in (up_port, on_port, off_port):
            wait(f"http://127.0.0.1:{port}/health" if port != up_port else f"http://127.0.0.1:{port}/_control/stats")
        client = httpx.Client(timeout=30)

        def timed(port: int, text: str, temperature: float | None = 0) -> tuple[float, str]:
            body = {"model": "m", "messages": [{"role": "user", "content": text}]}
            if temperature is not None:
                body["temperature"] = temperature
            started = time.perf_counter()
            response = client.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body)
            elapsed = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            return elapsed, response.headers.get("x-pointsman-cache", "miss")

        for q in QUESTIONS:  # fill the cache
            timed(on_port, q)
        rows = []
        for name, port, texts, temperature, expect in [
            ("exact hit", on_port, QUESTIONS, 0, "hit-exact"),
            ("semantic hit", on_port, PARAPHRASES, 0, None),
            ("miss, cache on", on_port, None, 0, "miss"),
            ("miss, cache off", off_port, None, 0, "miss"),
            ("not cacheable (sampled), cache on", on_port, QUESTIONS, None, "miss"),
            ("not cacheable (sampled), cache off", off_port, QUESTIONS, None, "miss"),
        ]:
            samples, kinds = [], {}
            for i in range(args.n):
                text = texts[i % len(texts)] if texts else f"Unique question number {i} about {name} {time.time_ns()}?"
                elapsed, kind = timed(port, text, temperature)
                samples.append(elapsed)
                kinds[kind] = kinds.get(kind, 0) + 1
            rows.append((name, percentiles(samples), ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))))
            if expect and set(kinds) != {expect}:
                print(f"warning: {name}: expected only {expect}, saw {kinds}", file=sys.stderr)
        load = os.getloadavg()
        lines = ["# Cache latency through the gateway", "",
                 f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; command: `.venv/bin/python bench/cache/gateway_latency.py --n {args.n}`",
                 f"- Machine: 2 cores shared with other work; load average after the run {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
                 "- Sequential requests (c=1), one keep-alive client, the test upstream answering at once; in-process store,",
                 "  semantic layer on (MiniLM int8 query embedding), default delta 2%.", "",
                 "| measurement | p50 (ms) | p99 (ms) | requests | cache header seen |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {stats.replace(' | ', ' | ')} | {kinds} |" for name, stats, kinds in rows]
        Path(args.out).write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return 0
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)


if __name__ == "__main__":
    raise SystemExit(main())
