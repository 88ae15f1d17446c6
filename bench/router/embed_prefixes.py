#!/usr/bin/env python
"""Embed the evaluation data sets at several encoder windows (prefix lengths) into the eval cache.

    .venv/bin/python bench/router/embed_prefixes.py --lengths 64 128 256 [--datasets mmlu gsm8k arena]

Writes the same cache files that :func:`pointsman.evaluation.datasets.embed_prompts` reads for a
``MiniLMEncoder(max_seq_length=L)``, so ``eval.py --max-seq-length L`` then runs without
re-embedding. Work is shared between windows: a prompt no longer than a smaller window has the same
embedding at every larger one and is encoded once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from pointsman.embed.encoder import MiniLMEncoder  # noqa: E402
from pointsman.evaluation.datasets import (_emb_cache_path, load_arena_bench, load_routellm_gsm8k,  # noqa: E402
                                           load_routellm_mmlu)

DATA = Path(os.environ.get("POINTSMAN_SHARED_DATA", ROOT.parent / "shared" / "data"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", nargs="+", type=int, default=[64, 128, 256])
    ap.add_argument("--datasets", nargs="+", default=["gsm8k", "arena", "mmlu"], choices=["mmlu", "gsm8k", "arena"])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    lengths = sorted(set(args.lengths))
    for name in args.datasets:
        if name == "mmlu":
            t = load_routellm_mmlu(args.data / "routellm")
        elif name == "gsm8k":
            t = load_routellm_gsm8k(args.data / "routellm")
        else:
            t = load_arena_bench(args.data / "arena-bench")
        prompts = list(t.prompts)
        prev_emb, prev_L = None, 0
        for L in lengths:
            enc = MiniLMEncoder(intra_op_threads=args.threads, max_seq_length=L)
            path = _emb_cache_path(prompts, enc, None)
            ids, n_tok = enc.tokenize(prompts)
            if path.exists():
                with np.load(path, allow_pickle=False) as z:
                    prev_emb, prev_L = z["emb"], L
                print(f"{t.name} L={L}: cached {path.name}", flush=True)
                continue
            emb = np.zeros((len(prompts), enc.dim), dtype=np.float32)
            reuse = n_tok <= prev_L if prev_emb is not None else np.zeros(len(prompts), bool)
            if reuse.any():
                emb[reuse] = prev_emb[reuse]
            todo = np.flatnonzero(~reuse)
            t0 = time.perf_counter()
            if len(todo):
                emb[todo] = enc.encode_ids([ids[i] for i in todo], progress=True)
            print(f"{t.name} L={L}: encoded {len(todo)} of {len(prompts)} "
                  f"({int(np.minimum(n_tok[todo], L).sum())} tokens) in {time.perf_counter() - t0:.0f} s; "
                  f"truncated at L: {(n_tok > L).mean():.1%}", flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, emb=emb, n_tokens=n_tok)
            os.replace(tmp, path)
            prev_emb, prev_L = emb, L
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
