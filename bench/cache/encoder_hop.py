"""What handing the query embedding to the encoder's worker thread costs, against running it on the loop.

The same Quora questions (text_b of ../shared/data/qqp/pairs.jsonl) are encoded each way, one at a time, in an
order that alternates from text to text, with the cache's encoder (minilm-dup) and its LRU off: on the event
loop, and through `run_in_executor` to one worker thread as the gateway's batcher does. Results:
bench/cache/GATEWAY.md.

    .venv/bin/python bench/cache/encoder_hop.py [--n 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gateway_latency import real_questions  # noqa: E402

from pointsman.embed import MiniLMEncoder  # noqa: E402
from pointsman.embed.registry import DUP_PATCH  # noqa: E402


async def measure(n: int) -> dict[str, list[float]]:
    encoder = MiniLMEncoder(patch=DUP_PATCH, cache_size=0).load()
    worker = concurrent.futures.ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()
    times: dict[str, list[float]] = {"on the event loop": [], "in the worker thread": []}
    for k, text in enumerate(real_questions(n)):
        for way in (list(times) if k % 2 else list(reversed(times))):
            started = time.perf_counter()
            if way == "on the event loop":
                encoder.encode_with_features([text])
            else:
                await loop.run_in_executor(worker, encoder.encode_with_features, [text])
            times[way].append((time.perf_counter() - started) * 1000)
    worker.shutdown()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1500, help="questions, each encoded both ways")
    args = parser.parse_args()
    times = asyncio.run(measure(args.n))
    if not times["on the event loop"]:
        print("no questions: ../shared/data/qqp/pairs.jsonl is missing")
        return 1
    for way, values in times.items():
        print(f"{way}: p50 {statistics.median(values):.3f} ms, mean {statistics.mean(values):.3f} ms, n {len(values)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
