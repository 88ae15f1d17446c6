"""Lookup latency of SemanticCache over the in-process store, with 10k and 100k entries.

    .venv/bin/python bench/cache/latency.py [--sizes 10000 100000] [--queries 3000]

Entries are real QQP questions with their MiniLM embeddings (beyond the ~73k distinct texts: copies with
a little noise on the vector). Two layouts: everything in ONE namespace (the worst case: the usearch
HNSW path), and the same entries spread over 1,000 namespaces (exact numpy search per namespace).
Lookups, timed one by one around ``await cache.lookup(...)`` (the embedding is given, as the gateway
computes it once for routing and cache):

* exact   — the same request again (exact-key hit);
* semantic — a QQP text_b whose text_a is cached (ANN search, the checks, the model: hit or rejection);
* miss    — a namespace with nothing in it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _embed import embed_texts, load_pairs  # noqa: E402

from pointsman.cache import SemanticCache  # noqa: E402
from pointsman.cache.memory import MemoryStore  # noqa: E402

ANSWER = {"id": "c", "object": "chat.completion", "created": 1, "model": "small",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "An answer of some length. " * 20},
                       "finish_reason": "stop"}]}


def pct(xs) -> dict:
    a = np.asarray(xs) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 4), "p99_ms": round(float(np.percentile(a, 99)), 4)}


async def bench(size: int, n_ns: int, texts_a, Ea, texts_b, Eb, n_queries: int, rng) -> dict:
    cache = SemanticCache(MemoryStore(max_entries=size + 10, max_bytes=1 << 34))
    namespaces = [f"ns:{i}" for i in range(n_ns)]
    n_real = len(texts_a)
    t0 = time.perf_counter()
    ids_ns = []
    for i in range(size):
        j = i % n_real
        vec = Ea[j]
        text = texts_a[j]
        if i >= n_real:  # a copy: perturb the vector a little
            vec = vec + rng.normal(0, 0.02, vec.shape).astype(np.float32)
            vec /= np.linalg.norm(vec)
            text = f"{text} ({i // n_real})"
        ns = namespaces[i % n_ns]
        await cache.store(f"x{i}", ns, vec, text, ANSWER)
        ids_ns.append(ns)
    build_s = time.perf_counter() - t0
    gc.collect()
    qi = rng.choice(min(size, n_real), n_queries, replace=False)
    out = {"entries": size, "namespaces": n_ns, "build_s": round(build_s, 1)}
    for kind in ("exact", "semantic", "miss"):
        lat = []
        hits = 0
        for i in qi:
            i = int(i)
            if kind == "exact":
                args = (f"x{i}", ids_ns[i], Ea[i], texts_a[i])
            elif kind == "semantic":
                args = (f"q{i}", ids_ns[i], Eb[i], texts_b[i])
            else:
                args = (f"q{i}", "ns:empty", Eb[i], texts_b[i])
            t = time.perf_counter()
            hit = await cache.lookup(*args)
            lat.append(time.perf_counter() - t)
            hits += hit is not None
        out[kind] = {**pct(lat), "hit_share": round(hits / len(qi), 3)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--queries", type=int, default=3000)
    p.add_argument("--out", default=str(HERE / "latency.json"))
    args = p.parse_args(argv)
    a, b, _ = load_pairs()
    n = len(a)
    E = embed_texts(a + b)
    Ea, Eb = E[:n], E[n:]
    # distinct cached texts: keep the first pair of each text_a
    seen, keep = set(), []
    for i, t in enumerate(a):
        if t not in seen:
            seen.add(t)
            keep.append(i)
    keep = np.array(keep)
    ta, tb = [a[i] for i in keep], [b[i] for i in keep]
    results = []
    for size in args.sizes:
        for n_ns in (1, 1000):
            r = asyncio.run(bench(size, n_ns, ta, Ea[keep], tb, Eb[keep], args.queries, np.random.default_rng(0)))
            print(json.dumps(r), flush=True)
            results.append(r)
    Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
