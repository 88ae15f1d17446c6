#!/usr/bin/env python
"""Tier-2 latency: encoder alone, encoder + predictor + decision, and the micro-batcher under load.

    .venv/bin/python bench/router/latency.py [--runs 200] [--threads 1]

Prompts are synthetic English of a given token length (the model's window is 256 tokens, longer
prompts are truncated after counting). Predictors are fitted on random data of realistic size
(kNN over 11,000 stored prompts), since only their inference cost matters here.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from pointsman.embed.batcher import EmbedBatcher  # noqa: E402
from pointsman.embed.encoder import MiniLMEncoder  # noqa: E402
from pointsman.predictors import KNNPredictor, LinearPredictor, MFPredictor, choose_by_lambda  # noqa: E402

WORDS = ("the model should answer this question about history science math code and language "
         "with a short precise explanation of every step it takes before giving the final result").split()


def prompt_of(tokens: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, size=max(tokens - 2, 1)))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--requests", type=int, default=640)
    args = ap.parse_args()

    enc = MiniLMEncoder(intra_op_threads=args.threads)
    t0 = time.perf_counter()
    enc.load()
    print(f"model load: {(time.perf_counter() - t0) * 1000:.0f} ms  (intra_op_threads={args.threads})")

    rng = np.random.default_rng(0)
    n_train, m = 11000, 2
    Xtr = rng.standard_normal((n_train, 384)).astype(np.float32)
    Xtr /= np.linalg.norm(Xtr, axis=1, keepdims=True)
    Ftr = rng.standard_normal((n_train, len(enc.encode_with_features(["x"])[1][0]))).astype(np.float32)
    Ytr = (rng.random((n_train, m)) < 0.7).astype(float)
    preds = {
        "knn-40 (11k prompts)": KNNPredictor(k=40).fit(Xtr, Ftr, Ytr),
        "logistic x3": LinearPredictor("logistic", epochs=1, n_members=3).fit(Xtr[:2000], Ftr[:2000], Ytr[:2000]),
        "mf x3": MFPredictor(epochs=1, n_members=3).fit(Xtr[:2000], Ftr[:2000], Ytr[:2000]),
    }
    cost = np.array([1.0, 0.01])

    print("\n| prompt tokens | encode p50 | encode p99 | + knn p50/p99 | + logistic p50/p99 | + mf p50/p99 |")
    print("|---|---|---|---|---|---|")
    for L in (16, 64, 128, 256, 512):
        prompts = [prompt_of(L, s) for s in range(args.runs)]
        enc.encode_with_features(prompts[:3])  # warm
        times = {"enc": []} | {k: [] for k in preds}
        for p in prompts:
            t = time.perf_counter()
            x, f = enc.encode_with_features([p])
            te = time.perf_counter()
            times["enc"].append((te - t) * 1000)
            for k, pr in preds.items():
                t1 = time.perf_counter()
                q, sd = pr.predict_with_uncertainty(x, f)
                choose_by_lambda(q, cost, 0.1)
                times[k].append((te - t + time.perf_counter() - t1) * 1000)
        row = [f"{L}", f"{pct(times['enc'], 50):.2f} ms", f"{pct(times['enc'], 99):.2f} ms"]
        for k in preds:
            row.append(f"{pct(times[k], 50):.2f} / {pct(times[k], 99):.2f} ms")
        print("| " + " | ".join(row) + " |")

    # throughput: one by one vs the micro-batcher under concurrent load
    prompts = [prompt_of(int(rng.integers(20, 120)), 1000 + i) for i in range(args.requests)]
    t = time.perf_counter()
    for p in prompts:
        enc.encode([p])
    seq = len(prompts) / (time.perf_counter() - t)

    async def load_test():
        b = EmbedBatcher(enc, max_batch=32, max_wait_ms=1.0)
        await b.warmup()
        lat = []
        queue = list(prompts)

        async def client():
            while queue:
                p = queue.pop()
                t1 = time.perf_counter()
                await b.embed(p)
                lat.append((time.perf_counter() - t1) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(args.concurrency)))
        el = time.perf_counter() - t0
        await b.close()
        return len(prompts) / el, b.items / max(b.batches, 1), lat

    thr, mean_batch, lat = asyncio.run(load_test())
    print(f"\nthroughput, prompts of 20-120 tokens, {args.requests} requests:")
    print(f"  one at a time (encode([p]) in a loop): {seq:.0f} prompts/s")
    print(f"  micro-batcher, {args.concurrency} concurrent clients: {thr:.0f} prompts/s, mean batch {mean_batch:.1f}, "
          f"latency p50 {statistics.median(lat):.1f} ms p99 {pct(lat, 99):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
