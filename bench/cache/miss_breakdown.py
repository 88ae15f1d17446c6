"""Where a cache miss's time goes, inside `pointsman serve`: wall-clock timers around each stage.

Starts the test upstream and a gateway with the in-process cache (this script again, with `--serve`: it
wraps the cache path's functions with timers, then runs `pointsman serve`), asks `--n` distinct Quora
questions (text_b of ../shared/data/qqp/pairs.jsonl) one at a time, and prints each stage's p50. Every
question is new, so each is a miss in a populated namespace: exact look-up, query embedding, semantic
look-up, upstream call, store. Results: bench/cache/GATEWAY.md.

    .venv/bin/python bench/cache/miss_breakdown.py [--n 1000]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from gateway_latency import free_port, real_questions, wait  # noqa: E402


def serve_with_timers(report: Path, argv: list[str]) -> None:
    """Run `pointsman serve argv` with timers; write each stage's samples to `report` on SIGTERM."""
    import pointsman.app.caching as caching
    import pointsman.app.server as server
    import pointsman.cache as cache
    import pointsman.embed.batcher as batcher
    import pointsman.embed.encoder as encoder
    from pointsman.cli import main

    samples: dict[str, list[float]] = defaultdict(list)

    def timed(owner: type, name: str, label: str) -> None:
        original = getattr(owner, name)
        if getattr(original, "__code__", None) and original.__code__.co_flags & 0x80:  # a coroutine function
            async def wrapper(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    samples[label].append((time.perf_counter() - started) * 1000)
        else:
            def wrapper(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    samples[label].append((time.perf_counter() - started) * 1000)
        setattr(owner, name, functools.wraps(original)(wrapper))

    timed(server.Gateway, "_chat", "1 the whole request, in the gateway")
    timed(caching.CacheStage, "lookup", "2 cache look-up (exact, embedding, semantic)")
    timed(cache.SemanticCache, "find_exact", "2a exact look-up")
    timed(batcher.EmbedBatcher, "embed_with_features", "2b query embedding, as the event loop waits for it")
    timed(encoder.MiniLMEncoder, "encode_with_features", "2b.1 encoder call (on the loop when lone and short, else in the worker)")
    timed(encoder.MiniLMEncoder, "tokenize", "2b.1.1 tokenising")
    timed(encoder.MiniLMEncoder, "_run", "2b.1.2 onnxruntime run + pooling")
    timed(cache.SemanticCache, "find_semantic", "2c semantic look-up (search, checks, acceptance)")
    timed(caching.CacheStage, "store", "3 cache store")

    def write(*_: object) -> None:
        report.write_text(json.dumps(samples))
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, write)
    sys.argv = ["pointsman", *argv]
    main()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="questions to ask")
    parser.add_argument("--serve", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve_with_timers(Path(args.report), args.serve)
        return 0
    import httpx

    texts = real_questions(args.n, seed=1)
    work = Path(tempfile.mkdtemp(prefix="pointsman-missbench-"))
    up_port, gw_port = free_port(), free_port()
    env = {**os.environ, "BENCH_KEY": "sk-bench"}
    config = work / "pool.yaml"
    config.write_text(f"""models:
  - {{name: m, provider: openai, base_url: "http://127.0.0.1:{up_port}/v1", model: echo, api_key_env: BENCH_KEY}}
server: {{ledger_url: "sqlite:///{work}/ledger.db", cache: {{enabled: true}}}}
""")
    report = work / "report.json"
    upstream = subprocess.Popen([sys.executable, "-m", "tests.upstream", "--port", str(up_port)], cwd=ROOT, env=env)
    gateway = subprocess.Popen([sys.executable, __file__, "--report", str(report), "--serve", "serve", "--config",
                                str(config), "--port", str(gw_port)], cwd=work, env=env)
    try:
        wait(f"http://127.0.0.1:{up_port}/_control/stats")
        wait(f"http://127.0.0.1:{gw_port}/health")
        client = httpx.Client(timeout=30)
        seen: dict[str, int] = defaultdict(int)
        client_ms = []
        for text in texts:
            started = time.perf_counter()
            response = client.post(f"http://127.0.0.1:{gw_port}/v1/chat/completions",
                                   json={"model": "m", "temperature": 0, "messages": [{"role": "user", "content": text}]})
            client_ms.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            seen[response.headers.get("x-pointsman-cache", "miss")] += 1
    finally:
        gateway.terminate()
        gateway.wait(30)
        upstream.terminate()
        upstream.wait(30)
    samples = json.loads(report.read_text())
    load = os.getloadavg()
    print(f"{args.n} distinct questions, one at a time; cache header seen: {dict(seen)}; load average after "
          f"{load[0]:.2f}\n")
    print("| stage | p50 (ms) | mean (ms) | calls |\n|---|---|---|---|")
    print(f"| the client's round trip | {statistics.median(client_ms):.2f} | {statistics.mean(client_ms):.2f} | "
          f"{len(client_ms)} |")
    for label in sorted(samples):
        values = samples[label]
        print(f"| {label} | {statistics.median(values):.3f} | {statistics.mean(values):.3f} | {len(values)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
