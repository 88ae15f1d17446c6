#!/usr/bin/env python
"""Verifier latency on this CPU: ``await LearnedVerifier.check(item)`` as the gateway calls it.

    .venv/bin/python bench/cascade/latency.py [--verifier default] [--n 300]

The prompt's embedding is computed first (routing has already done it in the gateway; the verifier reuses
it through ``item.route.embedding``), then each check is timed alone: answer features, the answer-tail
embedding when the verifier has one (through the gateway's EmbedBatcher), the dot product. GSM8K's Mixtral
answers and arena-bench answers are the inputs. Also times one encoder run on a 64- and 256-character
tail, the price of an answer embedding.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from pointsman.cascade.answer_features import answer_tail  # noqa: E402
from pointsman.cascade.base import AnswerContext  # noqa: E402
from pointsman.cascade.learned import load_verifier  # noqa: E402
from pointsman.embed import EmbedBatcher, MiniLMEncoder  # noqa: E402
from pointsman.evaluation.datasets import load_arena_bench_answers, load_routellm_gsm8k_answers  # noqa: E402
from pointsman.routing.base import RouteContext  # noqa: E402

DATA = Path(os.environ.get("POINTSMAN_SHARED_DATA", ROOT.parent / "shared" / "data"))


async def run(args) -> None:
    embedder = EmbedBatcher(MiniLMEncoder())
    await embedder.warmup()
    verifier = load_verifier(args.verifier, embedder)
    g = load_routellm_gsm8k_answers(DATA / "routellm")
    a = load_arena_bench_answers(DATA / "arena-bench")
    items = []
    w = g.table.model_index(g.table.weak)
    for i in range(0, len(g.table), max(1, len(g.table) // (args.n // 2))):
        items.append((g.table.prompts[i], g.answers[i][w], g.table.weak))
    pairs = list(zip(*a.pairs()))
    for i, j in pairs[:: max(1, len(pairs) // (args.n // 2))]:
        items.append((a.table.prompts[i], a.answers[i][j], a.table.models[j]))
    times = []
    for prompt, answer, model in items:
        route = RouteContext({"messages": [{"role": "user", "content": prompt}]})
        await route.embedding(embedder, max_tokens=verifier.prompt_tokens)  # routing did this already (same window)
        item = AnswerContext(route, {"choices": [{"message": {"role": "assistant", "content": answer},
                                                   "finish_reason": "stop"}]}, model)
        t0 = time.perf_counter()
        await verifier.check(item)
        times.append((time.perf_counter() - t0) * 1000)
    t = np.array(times)
    print(f"verifier {args.verifier} (answer tail {verifier.tail_chars} chars): {len(t)} checks, "
          f"p50 {np.percentile(t, 50):.2f} ms, p90 {np.percentile(t, 90):.2f} ms, p99 {np.percentile(t, 99):.2f} ms")
    for chars in (64, 256):
        tt = []
        for _, answer, _ in items[1:120:2]:
            t0 = time.perf_counter()
            await embedder.embed(answer_tail(answer, chars))
            tt.append((time.perf_counter() - t0) * 1000)
        print(f"  encoder on a {chars}-char answer tail: p50 {np.percentile(tt, 50):.1f} ms, p99 {np.percentile(tt, 99):.1f} ms")
    await embedder.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--verifier", default="default")
    ap.add_argument("--n", type=int, default=300)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
