"""Cache misses under concurrency: this code against another commit's (`--compare-src`), same rounds.

What embedding a lone request's text on the event loop (embed/batcher.py) could cost: a request that arrives
while the loop runs the encoder waits for it. Starts the test upstream and two cache-on gateways (this code,
and DIR/src), fills each with the same questions, then for each concurrency level sends distinct Quora
questions (text_b of ../shared/data/qqp/pairs.jsonl, each new: a miss in a populated namespace) from
`c` clients at once, alternating the gateways in rounds. Prints p50 / p99 latency and requests per second.
Results: bench/cache/GATEWAY.md.

    .venv/bin/python bench/cache/inline_concurrency.py --compare-src /path/to/worktree [--n 400] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_latency import QUESTIONS, ROOT, free_port, real_questions, wait  # noqa: E402


async def burst(port: int, texts: list[str], concurrency: int) -> tuple[list[float], float]:
    """Latencies (ms) of `texts` sent by `concurrency` clients at once, and the wall time (s) of the burst."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in texts:
        queue.put_nowait(text)
    latencies: list[float] = []

    async def client() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while True:
                try:
                    text = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                response = await http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={
                    "model": "m", "temperature": 0, "messages": [{"role": "user", "content": text}]})
                latencies.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare-src", required=True, help="the other code: a directory holding its src/")
    parser.add_argument("--n", type=int, default=400, help="requests per gateway and concurrency level")
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the two gateways")
    parser.add_argument("--concurrency", default="1,2,4,8", help="client counts, comma-separated")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    texts = real_questions(args.n * len(levels) * 2, seed=2)
    if not texts:
        print("no questions: ../shared/data/qqp/pairs.jsonl is missing")
        return 1
    work = Path(tempfile.mkdtemp(prefix="pointsman-inlinebench-"))
    up_port, this_port, other_port = free_port(), free_port(), free_port()
    env = {**os.environ, "BENCH_KEY": "sk-bench"}
    other_env = {**env, "PYTHONPATH": os.pathsep.join([str(Path(args.compare_src).resolve() / "src"), env.get("PYTHONPATH", "")])}
    processes = [subprocess.Popen([sys.executable, "-m", "tests.upstream", "--port", str(up_port)], cwd=ROOT, env=env)]
    try:
        for port, gateway_env in ((this_port, env), (other_port, other_env)):
            config = work / f"pool-{port}.yaml"
            config.write_text(f"""models:
  - {{name: m, provider: openai, base_url: "http://127.0.0.1:{up_port}/v1", model: echo, api_key_env: BENCH_KEY}}
server: {{ledger_url: "sqlite:///{work}/ledger-{port}.db", cache: {{enabled: true}}}}
""")
            processes.append(subprocess.Popen([sys.executable, "-m", "pointsman.cli", "serve", "--config", str(config),
                                               "--port", str(port)], cwd=work, env=gateway_env))
        wait(f"http://127.0.0.1:{up_port}/_control/stats")
        for port in (this_port, other_port):
            wait(f"http://127.0.0.1:{port}/health")
            asyncio.run(burst(port, QUESTIONS, 1))  # a populated namespace
        gateways = {"this code": this_port, "compare": other_port}
        lat: dict[tuple[int, str], list[float]] = {}
        rps: dict[tuple[int, str], list[float]] = {}
        offset = 0
        for c in levels:
            per_round = max(c, args.n // args.rounds)
            for r in range(args.rounds):
                chunk = texts[offset:offset + per_round]  # the same questions to both gateways
                offset += per_round
                for name in (list(gateways) if r % 2 == 0 else list(reversed(gateways))):
                    got, wall = asyncio.run(burst(gateways[name], chunk, c))
                    lat.setdefault((c, name), []).extend(got)
                    rps.setdefault((c, name), []).append(len(got) / wall)
        load = os.getloadavg()
        print(f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; command: `.venv/bin/python "
              f"bench/cache/inline_concurrency.py --compare-src {args.compare_src} --n {args.n} --rounds {args.rounds} "
              f"--concurrency {args.concurrency}`; load average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
        print("| clients | gateway | p50 (ms) | p99 (ms) | requests/s (median of rounds) | requests |\n|---|---|---|---|---|---|")
        for c in levels:
            for name in gateways:
                values = sorted(lat[(c, name)])
                p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
                print(f"| {c} | {name} | {statistics.median(values):.2f} | {p99:.2f} | "
                      f"{statistics.median(rps[(c, name)]):.0f} | {len(values)} |")
        return 0
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)


if __name__ == "__main__":
    raise SystemExit(main())
