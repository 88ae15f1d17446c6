"""What a cascade's check costs inside the gateway: x-pointsman-overhead-ms with and without verifiers.

Starts the test upstream and three `pointsman serve` processes on loopback (the same two-model pool):
  routing        `auto` without a cascade (the rule-free default policy)
  validators     a cascade with the deterministic checks (finish, refusal, json, tools, arithmetic)
  learned        the same plus the shipped learned verifier (embeds the answer's tail)
Every cascade request is accepted at the first rung (threshold 0), so each makes one upstream call and the
difference in overhead is the verification. The gateway reports its own time (upstream time excluded) in
x-pointsman-overhead-ms; we take medians over interleaved rounds, since the machine is shared.

    .venv/bin/python bench/cascade/gateway_latency.py [--n 300] [--rounds 5]
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
PROMPTS = ["Sam has 14 apples and gives away 5. How many are left?", "What is the capital of Australia?",
           "Explain what a closure is in JavaScript.", "A shirt costs $20 and is 25% off. What do I pay?",
           "Write a haiku about autumn.", "How many minutes are in 3.5 hours?"]
SETUPS = {"routing": None,
          "validators": ["finish", "refusal", "json", "tools", "arithmetic"],
          "learned": ["finish", "refusal", "json", "tools", "arithmetic", "learned"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).with_name("GATEWAY.md")))
    args = parser.parse_args()
    env = {**os.environ, "BENCH_UPSTREAM_KEY": "unused"}
    up_port = free_port()
    processes = [subprocess.Popen([sys.executable, "-m", "tests.upstream", "--port", str(up_port)], cwd=ROOT, env=env)]
    ports: dict[str, int] = {}
    results: dict[str, list[float]] = {name: [] for name in SETUPS}
    round_medians: dict[str, list[float]] = {name: [] for name in SETUPS}
    try:
        with tempfile.TemporaryDirectory() as work:
            for name, verifiers in SETUPS.items():
                port = ports[name] = free_port()
                models = (f'[{{name: cheap, provider: openai, base_url: "http://127.0.0.1:{up_port}/v1", model: echo, '
                          f'api_key_env: BENCH_UPSTREAM_KEY, prices: {{input: 0.2, output: 0.2}}}}, '
                          f'{{name: strong, provider: openai, base_url: "http://127.0.0.1:{up_port}/v1", model: echo, '
                          f'api_key_env: BENCH_UPSTREAM_KEY, prices: {{input: 10, output: 30}}}}]')
                cascade = "" if verifiers is None else \
                    f"policies: {{auto: {{cascade: {{mode: always, threshold: 0, verifiers: [{', '.join(verifiers)}]}}}}}}\n"
                config = Path(work) / f"{name}.yaml"
                config.write_text(f"models: {models}\n{cascade}server: {{ledger_url: \"sqlite:///{work}/{name}.db\", "
                                  f"cache: {{enabled: false}}}}\n")
                processes.append(subprocess.Popen([sys.executable, "-m", "pointsman.cli", "serve", "--config", str(config),
                                                   "--port", str(port)], cwd=work, env=env))
            wait(f"http://127.0.0.1:{up_port}/_control/stats")
            for port in ports.values():
                wait(f"http://127.0.0.1:{port}/health")
            with httpx.Client(timeout=30) as client:
                def overhead(name: str, i: int) -> float:
                    prompt = f"{PROMPTS[i % len(PROMPTS)]} (#{i})"  # each text new: no encoder LRU hit
                    response = client.post(f"http://127.0.0.1:{ports[name]}/v1/chat/completions",
                                           json={"model": "auto", "messages": [{"role": "user", "content": prompt}]})
                    response.raise_for_status()
                    if name != "routing":
                        assert "accepted" in response.headers["x-pointsman-cascade"], response.headers
                    return float(response.headers["x-pointsman-overhead-ms"])

                for name in SETUPS:  # warm-up: first requests load and trace the models
                    for i in range(20):
                        overhead(name, 10_000 + i)
                per_round = args.n // args.rounds
                for r in range(args.rounds):
                    for name in SETUPS:
                        samples = [overhead(name, r * per_round + i) for i in range(per_round)]
                        results[name].extend(samples)
                        round_medians[name].append(statistics.median(samples))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)
    load = os.getloadavg()
    base = statistics.median(results["routing"])
    lines = [
        "# Cascade verification inside the gateway: overhead per request",
        "",
        f"Run: `.venv/bin/python bench/cascade/gateway_latency.py --n {args.n} --rounds {args.rounds}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at the end {load[0]:.2f} on 2 cores.",
        "",
        "x-pointsman-overhead-ms (the gateway's own time, upstream excluded), sequential requests, each prompt new;",
        "every cascade accepted at the first rung (one upstream call), so the difference is the verification.",
        "",
        "| setup | p50 ms | p90 ms | p99 ms | p50 over routing only | round p50s |",
        "|---|---|---|---|---|---|",
    ]
    for name, samples in results.items():
        q = statistics.quantiles(samples, n=100)
        lines.append(f"| {name} | {statistics.median(samples):.2f} | {q[89]:.2f} | {q[98]:.2f} | "
                     f"{statistics.median(samples) - base:+.2f} | {', '.join(f'{m:.2f}' for m in round_medians[name])} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
