"""What one cache entry costs in memory, component by component, and the whole cache at its caps.

Fills a `SemanticCache` over the in-process `MemoryStore` (the embedded default) the way the gateway does:
one tenant, one model, one system prompt (so one namespace, the soak's shape; `--namespaces` spreads the
entries), distinct Quora questions as prompts (../shared/data/qqp, else generated ones), a ~450-byte
chat.completion as the answer (a share of them streamed, stored with their chunking), the query embedding
(unit random vectors: the memory does not depend on their values), the facts the false-hit checks read, and
the side maps a request leaves (which entry answered which request id, recent hits).

Two measures, in two fresh processes each:
  tracemalloc  Python-level allocations (numpy buffers included), per component by walking the objects
               (``sys.getsizeof`` deep, shared objects counted once) and in all (a snapshot difference)
  RSS          the process's resident memory before and after filling (includes usearch's native graph
               and the allocator's slack)

    PYTHONPATH=src .venv/bin/python bench/cache/memory.py [--n 100000] [--stream-share 0.25] [--out MEMORY.md]

Run it against another tree (``PYTHONPATH=<worktree>/src``) for a before/after; the table says which code
ran (the git commit of the ``pointsman`` package imported).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[2] / "shared" / "data" / "qqp" / "pairs.jsonl"


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def questions(n: int) -> list[str]:
    texts: list[str] = []
    if DATA.is_file():
        seen = set()
        with open(DATA, encoding="utf-8") as fh:
            for line in fh:
                r = json.loads(line)
                for t in (r["text_a"], r["text_b"]):
                    if t not in seen:
                        seen.add(t)
                        texts.append(t)
    random.Random(0).shuffle(texts)
    i = 0
    while len(texts) < n:  # more entries than distinct questions: numbered variants (the soak's distinct prompts)
        texts.append(f"{texts[i % max(1, len(texts))] if texts else 'What is the weather like'} (case {i})")
        i += 1
    return texts[:n]


def answer_for(i: int, text: str) -> dict[str, Any]:
    """A chat.completion whose JSON is about 450 bytes, as in the issue's soak."""
    content = (f"Answer {i}: " + text + " ") * 8
    content = content[:300]
    return {"id": f"chatcmpl-{i:016x}", "object": "chat.completion", "created": 1764300000 + i, "model": "echo",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 24, "completion_tokens": 64, "total_tokens": 88}}


def chunks_of(content: str) -> list[str]:
    """How a streamed answer arrives: a few characters a chunk (a token or two)."""
    out, i, rng = [], 0, random.Random(len(content))
    while i < len(content):
        step = rng.randint(2, 7)
        out.append(content[i:i + step])
        i += step
    return out


def deep_size(obj: Any, seen: set[int]) -> int:
    """Bytes of `obj` and everything it holds that `seen` has not counted (numpy: its buffer if it owns it)."""
    if id(obj) in seen or obj is None or isinstance(obj, bool | type):
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return sys.getsizeof(obj) if obj.base is None else sys.getsizeof(obj) + deep_size(obj.base, seen)
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set | frozenset):
        size += sum(deep_size(x, seen) for x in obj)
    elif hasattr(obj, "__slots__"):
        for cls in type(obj).__mro__:
            for name in getattr(cls, "__slots__", ()):
                if name != "__weakref__" and hasattr(obj, name):
                    size += deep_size(getattr(obj, name), seen)
    elif hasattr(obj, "__dict__"):
        size += deep_size(vars(obj), seen)
    return size


async def fill(n: int, namespaces: int, stream_share: float, cache: Any) -> None:
    from pointsman.app.caching import tenant_of

    texts = questions(n)
    rng = np.random.default_rng(0)
    tenant = tenant_of("3f2a9c1e0b7d4a55", "")
    for i, text in enumerate(texts):
        body = {"model": "auto", "temperature": 0, "messages": [
            {"role": "system", "content": f"You are terse. (app {i % namespaces})"}, {"role": "user", "content": text}]}
        keys = cache.keys(body, tenant=tenant, route="auto")
        vec = rng.standard_normal(384).astype(np.float32)
        vec /= np.linalg.norm(vec)
        answer = answer_for(i, text)
        pieces = chunks_of(answer["choices"][0]["message"]["content"]) if rng.random() < stream_share else None
        await cache.store(keys.exact_key, keys.namespace, vec, keys.query_text, answer, model="small",
                          pieces=pieces, tenant=keys.tenant, route=keys.route, request_id=f"req_{i:024x}")


def components(cache: Any) -> dict[str, int]:
    """Bytes per component, each shared object counted once (in the first component that reaches it)."""
    store = cache.backend
    entries = list(store.entries.values())
    seen: set[int] = set()
    out: dict[str, int] = {}

    def total(name: str, objs: Any) -> None:
        out[name] = out.get(name, 0) + sum(deep_size(o, seen) for o in objs)

    # what every entry refers to once is counted with the first component that reaches it: the shared
    # strings (model, route, tenant, namespace) go to "keys and labels"
    total("answer bytes", (e.answer for e in entries))
    total("stream chunking", (e.pieces for e in entries))
    total("prompt text", (e.prompt_text for e in entries))
    total("keys and labels (exact key, namespace, tenant, route, model)",
          (x for e in entries for x in (e.exact_key, e.namespace, e.tenant, e.route, e.model)))
    total("vector on the entry", (e.vector for e in entries))
    # facts: on every entry (before), or in the cache's bounded map of recent candidates (after)
    total("facts (false-hit checks)", [getattr(e, "facts", None) for e in entries] + [getattr(cache, "_facts", None)])
    seen.update(id(e) for e in entries)
    out["entry objects (CacheEntry)"] = sum(sys.getsizeof(e) for e in entries) + sum(
        deep_size(getattr(e, name), seen) for e in entries for name in ("created", "ttl", "last_used", "min_similarity",
                                                                        "size", "id", "hits", "rejects"))
    seen.add(id(store.entries))
    out["entries map (OrderedDict) + exact-key map"] = sys.getsizeof(store.entries) + sys.getsizeof(store.by_exact) + sum(
        deep_size(k, seen) for k in store.entries)
    idx_bytes = 0
    native = 0
    for index in store.indexes.values():
        idx_bytes += deep_size(index, seen)
        if getattr(index, "ann", None) is not None:
            native += int(index.ann.memory_usage)
    out["vector index (matrix, ids, positions)"] = idx_bytes
    out["usearch graph (native, not in tracemalloc)"] = native
    out["served map (request id -> entry)"] = deep_size(cache._served, seen)
    out["recent hits map"] = deep_size(cache._recent, seen)
    out["query facts map"] = deep_size(getattr(cache, "_query_facts", None), seen)
    return out


def measure(n: int, namespaces: int, stream_share: float, mode: str, caps: bool = False) -> dict[str, Any]:
    """In this (fresh) process: fill a cache of n entries (``caps``: the gateway's, with its default caps), return
    the measures."""
    from pointsman.cache import MemoryStore, SemanticCache
    from pointsman.cache.base import CachePolicy

    import pointsman

    # the cache's own imports (the acceptance model, the checks' tables) before the baseline
    if caps:
        from pointsman.app.caching import make_cache
        from pointsman.config.schema import CacheConfig

        cache = make_cache(CacheConfig())
        store = cache.backend
    else:
        store = MemoryStore(max_entries=n + 1, max_bytes=1 << 40)
        cache = SemanticCache(store, CachePolicy(), encoder="minilm-dup")
    texts = questions(n)
    gc.collect()
    rss0 = rss_mb()
    if mode == "tracemalloc":
        tracemalloc.start()
        snap0 = tracemalloc.take_snapshot()
    t0 = time.perf_counter()
    asyncio.run(fill(n, namespaces, stream_share, cache))
    took = time.perf_counter() - t0
    for index in getattr(store, "indexes", {}).values():  # graphs still being built (the fill outruns them)
        if hasattr(index, "wait_built"):
            index.wait_built(600)
    gc.collect()
    out: dict[str, Any] = {"n": len(store), "fill_s": took, "package": str(Path(pointsman.__file__).parent),
                           "evictions": getattr(store, "evictions", 0), "max_bytes": getattr(store, "max_bytes", 0)}
    out["prompt_chars_mean"] = sum(len(t) for t in texts) / max(1, len(texts))
    out["answer_bytes_mean"] = sum(len(e.answer) for e in store.entries.values()) / max(1, len(store))
    out["store_bytes_estimate"] = int(getattr(store, "bytes", 0))
    if mode == "tracemalloc":
        snap1 = tracemalloc.take_snapshot()
        out["traced_total"] = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
        tracemalloc.stop()
        out["components"] = components(cache)
        out["ann_namespaces"] = sum(1 for i in store.indexes.values() if getattr(i, "ann", None) is not None)
    else:
        out["rss_before_mb"], out["rss_after_mb"] = rss0, rss_mb()
    return out


def run_child(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--n", str(args.n), "--namespaces", str(args.namespaces),
           "--stream-share", str(args.stream_share), *(["--caps"] if args.caps else [])]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ.copy())
    return json.loads(done.stdout.strip().splitlines()[-1])


def commit_of(package: str) -> str:
    try:
        return subprocess.run(["git", "-C", package, "describe", "--always", "--dirty"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--namespaces", type=int, default=1)
    parser.add_argument("--stream-share", type=float, default=0.25, help="answers stored with their stream chunking")
    parser.add_argument("--child", choices=("tracemalloc", "rss"))
    parser.add_argument("--caps", action="store_true", help="the gateway's cache (make_cache) with the default caps: "
                        "fill past them and see what eviction holds")
    parser.add_argument("--out", default=None, help="write the table (markdown) here too")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.n, args.namespaces, args.stream_share, args.child, args.caps)))
        return 0
    traced = run_child(args, "tracemalloc")
    rss = run_child(args, "rss")
    n = traced["n"]
    native = traced["components"].get("usearch graph (native, not in tracemalloc)", 0)
    lines = [f"### {args.label or 'run'}: {n:,} entries, {args.namespaces} namespace(s), "
             f"{args.stream_share:.0%} streamed" + (f"; {args.n:,} stored into the default caps (entries' share of "
                                                     f"max_bytes {traced['max_bytes'] / 2**20:.1f} MB), "
                                                     f"{traced['evictions']:,} evicted" if args.caps else ""),
             "",
             f"- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; code: `{commit_of(traced['package'])}`; command: "
             f"`bench/cache/memory.py --n {args.n} --namespaces {args.namespaces} --stream-share {args.stream_share}"
             + (" --caps" if args.caps else "") + "`",
             f"- prompts {traced['prompt_chars_mean']:.0f} characters on average, answers "
             f"{traced['answer_bytes_mean']:.0f} bytes of JSON; filled in {traced['fill_s']:.1f} s",
             "",
             "| component | bytes per entry | MB in all |",
             "|---|---|---|"]
    for name, size in traced["components"].items():
        lines.append(f"| {name} | {size / n:,.0f} | {size / 2**20:,.1f} |")
    counted = sum(traced["components"].values())
    lines += [f"| **sum of components** | **{counted / n:,.0f}** | **{counted / 2**20:,.1f}** |",
              f"| tracemalloc (all Python allocations) + usearch native | {(traced['traced_total'] + native) / n:,.0f} "
              f"| {(traced['traced_total'] + native) / 2**20:,.1f} |",
              f"| RSS growth (another process, same fill) | {(rss['rss_after_mb'] - rss['rss_before_mb']) * 2**20 / n:,.0f} "
              f"| {rss['rss_after_mb'] - rss['rss_before_mb']:,.1f} |",
              f"| the store's own estimate (`bytes`, what `max_bytes` bounds) | {traced['store_bytes_estimate'] / n:,.0f} "
              f"| {traced['store_bytes_estimate'] / 2**20:,.1f} |",
              "",
              f"RSS {rss['rss_before_mb']:.0f} MB before filling (the cache's imports loaded), "
              f"{rss['rss_after_mb']:.0f} MB after."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
