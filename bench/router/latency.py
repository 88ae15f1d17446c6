#!/usr/bin/env python
"""Tier-2 decision latency and throughput: the gateway's own semantic tier, end to end.

    .venv/bin/python bench/router/latency.py [--runs 62] [--rounds 3] [--concurrency 32] \
        [--minilm-router /tmp/minilm_router.npz] [--baseline-router /tmp/previous_router.npz]

    # the router a commit shipped, to time it beside today's:
    git show HEAD~1:src/pointsman/routing/default_router.npz > /tmp/previous_router.npz

What is timed is ``SemanticTier.decide`` on a fresh request, as the gateway runs it: routing text ->
the artefact's embedder -> tokenise, embed, prompt features -> the router's predictor -> pool mapping
-> knob -> decision. Configurations are interleaved round by round (the machine is shared: a round
of each, then the next round), and each figure is the median over rounds of that round's p50 / p99.
The load average is printed with the results.

Configurations: ``static`` = the shipped router on the static token table distilled from MiniLM
(read on the event loop, 512-token window); ``minilm-w<N>`` = a router trained on MiniLM embeddings
of the first N tokens (``--minilm-router``, made with ``pointsman train ... --encoder minilm``; the
rows are skipped without it), behind the micro-batcher, encoder LRU off; ``+dq8`` = the same with
int8 matrix products (``MiniLMEncoder(dynamic_int8=True)``, needs the ``onnx`` package).

Throughput: ``--requests`` prompts of 20-512 tokens from ``--concurrency`` concurrent clients,
against one-at-a-time ``decide`` calls.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from pointsman.config.schema import ModelConfig, Prices, SemanticTierConfig  # noqa: E402
from pointsman.embed.batcher import EmbedBatcher  # noqa: E402
from pointsman.embed.encoder import ROUTING_MAX_TOKENS, MiniLMEncoder  # noqa: E402
from pointsman.embed.inline import InlineEmbedder  # noqa: E402
from pointsman.embed.registry import Embedders  # noqa: E402
from pointsman.embed.static import StaticEncoder  # noqa: E402
from pointsman.routing.base import RouteContext  # noqa: E402
from pointsman.routing.semantic import SemanticTier  # noqa: E402

WORDS = ("the model should answer this question about history science math code and language "
         "with a short precise explanation of every step it takes before giving the final result").split()
POOL = [ModelConfig(name="small", provider="openai", quality=0.6, prices=Prices(0.2, 0.2)),
        ModelConfig(name="mid", provider="openai", quality=0.75, prices=Prices(1, 3)),
        ModelConfig(name="big", provider="openai", quality=0.9, prices=Prices(10, 30))]
ELIGIBLE = [m.name for m in POOL]


def prompt_of(tokens: int, seed: int) -> str:
    """Synthetic English of about ``tokens`` MiniLM tokens (each word here is one token; + [CLS] [SEP])."""
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, size=max(tokens - 2, 1)))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


class Config:
    def __init__(self, name: str, router: str, kind: str = "static", window: int | None = None,
                 dynamic_int8: bool = False, cache_size: int = 0, workers: int = 1):
        self.name = name
        if kind == "static":
            self.encoder = StaticEncoder()
            self.embedder = InlineEmbedder(self.encoder)
        else:
            self.encoder = MiniLMEncoder(cache_size=cache_size, dynamic_int8=dynamic_int8)
            self.embedder = EmbedBatcher(self.encoder, workers=workers)
        self.tier = SemanticTier(SemanticTierConfig(router=router), POOL, Embedders({kind: self.embedder}))
        if window is not None:
            self.tier.window = window  # the window under test, whatever the artefact says

    async def decide(self, text: str):
        ctx = RouteContext({"messages": [{"role": "user", "content": text}]})
        return await self.tier.decide(ctx, ELIGIBLE)


async def timed(cfg: Config, prompts: list[str]) -> list[float]:
    out = []
    for p in prompts:
        t = time.perf_counter()
        await cfg.decide(p)
        out.append((time.perf_counter() - t) * 1000)
    return out


async def throughput(cfg: Config, prompts: list[str], concurrency: int) -> tuple[float, float, list[float]]:
    b = cfg.embedder
    b.batches = b.items = 0
    lat: list[float] = []
    queue = list(prompts)

    async def client():
        while queue:
            p = queue.pop()
            t1 = time.perf_counter()
            await cfg.decide(p)
            lat.append((time.perf_counter() - t1) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    el = time.perf_counter() - t0
    return len(prompts) / el, b.items / max(b.batches, 1), lat


async def main_async(args) -> int:
    have_onnx = importlib.util.find_spec("onnx") is not None
    configs = [Config("static", args.router)]
    if args.baseline_router:
        configs.append(Config("static, baseline router", args.baseline_router))
    if args.minilm_router:
        for w in args.windows:
            configs.append(Config(f"minilm-w{w}", args.minilm_router, "minilm", w))
            if have_onnx:
                configs.append(Config(f"minilm-w{w}+dq8", args.minilm_router, "minilm", w, dynamic_int8=True))
    for c in configs:
        t0 = time.perf_counter()
        await c.embedder.warmup()
        print(f"{c.name}: model load {(time.perf_counter() - t0) * 1000:.0f} ms ({c.encoder.model_id})", flush=True)
    print(f"load average before: {loadavg()}  (cores: {os.cpu_count()})", flush=True)

    lengths = args.lengths
    # results[config][length] = list of (p50, p99) per round
    results = {c.name: {L: [] for L in lengths} for c in configs}
    for r in range(args.rounds):
        for L in lengths:
            prompts = [prompt_of(L, 10_000 * r + s) for s in range(args.runs)]
            for c in (configs if r % 2 == 0 else configs[::-1]):  # alternate the order too
                await timed(c, prompts[:2])  # warm
                xs = await timed(c, prompts[2:])
                results[c.name][L].append((statistics.median(xs), pct(xs, 99)))
        print(f"round {r + 1}/{args.rounds} done, load average {loadavg()}", flush=True)

    print(f"\nTier-2 decision latency, ms, p50 / p99 (median over {args.rounds} interleaved rounds of "
          f"{args.runs - 2} prompts each); load average after: {loadavg()}\n")
    print("| prompt tokens | " + " | ".join(c.name for c in configs) + " |")
    print("|---|" + "---|" * len(configs))
    for L in lengths:
        row = [str(L)]
        for c in configs:
            p50 = statistics.median(x[0] for x in results[c.name][L])
            p99 = statistics.median(x[1] for x in results[c.name][L])
            row.append(f"{p50:.1f} / {p99:.1f}")
        print("| " + " | ".join(row) + " |")

    if args.minilm_router:  # a repeated prompt: the MiniLM encoder's LRU answers without a model run
        rep = Config("repeat", args.minilm_router, "minilm", args.windows[0], cache_size=2048)
        await rep.embedder.warmup()
        p = prompt_of(512, 7)
        await rep.decide(p)
        xs = await timed(rep, [p] * 200)
        print(f"\nminilm, repeated 512-token prompt (LRU hit): p50 {statistics.median(xs):.2f} ms, p99 {pct(xs, 99):.2f} ms")
        await rep.embedder.close()

    # throughput under concurrency
    rng = np.random.default_rng(1)
    prompts = [prompt_of(int(rng.integers(20, 513)), 50_000 + i) for i in range(args.requests)]
    print(f"\nthroughput, {args.requests} prompts of 20-512 tokens (uniform), decide() end to end; "
          f"load average {loadavg()}:")
    for c in configs:
        t = time.perf_counter()
        await timed(c, prompts[: args.requests // 4])
        seq = (args.requests // 4) / (time.perf_counter() - t)
        print(f"  {c.name}, one at a time: {seq:.0f} decisions/s", flush=True)
        thr, mean_batch, lat = await throughput(c, prompts, args.concurrency)
        batch = f", mean batch {mean_batch:.1f}" if isinstance(c.embedder, EmbedBatcher) else " (on the event loop)"
        print(f"  {c.name}, {args.concurrency} concurrent clients: {thr:.0f} decisions/s{batch}, latency p50 "
              f"{statistics.median(lat):.1f} ms p99 {pct(lat, 99):.1f} ms", flush=True)
        await c.embedder.close()
    print(f"\nload average at the end: {loadavg()}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=62, help="prompts per length, per configuration, per round (2 warm-up)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 128, 256, 512])
    ap.add_argument("--windows", type=int, nargs="+", default=[ROUTING_MAX_TOKENS],
                    help="MiniLM windows to time (with --minilm-router)")
    ap.add_argument("--router", default="default", help="router artefact (default: the shipped one, static embeddings)")
    ap.add_argument("--minilm-router", help="a router trained with --encoder minilm, to time the transformer beside it")
    ap.add_argument("--baseline-router", help="another static-embedding router (e.g. the previously shipped one), "
                                              "timed interleaved beside --router")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--requests", type=int, default=640)
    args = ap.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
