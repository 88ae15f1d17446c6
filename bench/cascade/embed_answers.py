#!/usr/bin/env python
"""Embed (and cache under ~/.cache/pointsman/emb) the prompts and the answer tails the cascade eval uses.

    .venv/bin/python bench/cascade/embed_answers.py [--tails 512 64]

Run once before ``eval.py`` (which would otherwise embed on first use): about 0.4 ms per token on the
project's 2-core CPU, so GSM8K (2,614 answers) and arena-bench (4,163 answers) at 512 characters
(~128 tokens) take a few minutes each.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from pointsman.cascade.answer_features import answer_tail  # noqa: E402
from pointsman.evaluation.datasets import (embed_prompts, load_arena_bench_answers,  # noqa: E402
                                           load_routellm_gsm8k_answers)

DATA = Path(os.environ.get("POINTSMAN_SHARED_DATA", ROOT.parent / "shared" / "data"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tails", type=int, nargs="+", default=[512, 64])
    ap.add_argument("--datasets", nargs="+", default=["gsm8k", "arena"])
    args = ap.parse_args()
    for name in args.datasets:
        at = load_routellm_gsm8k_answers(DATA / "routellm") if name == "gsm8k" else load_arena_bench_answers(DATA / "arena-bench")
        t0 = time.time()
        embed_prompts(at.table.prompts, progress=True)
        print(f"{name}: prompts {time.time() - t0:.0f}s", flush=True)
        ii, jj = at.pairs()
        for tail in sorted(args.tails):
            t0 = time.time()
            embed_prompts([answer_tail(at.answers[i][j], tail) for i, j in zip(ii, jj)], progress=True)
            print(f"{name}: {len(ii)} answer tails of {tail} chars {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
