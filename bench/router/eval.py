#!/usr/bin/env python
"""Offline router evaluation on ../shared/data: cross-validated predictors against baselines.

    .venv/bin/python bench/router/eval.py                    # all three data sets, 5 folds
    .venv/bin/python bench/router/eval.py --datasets gsm8k --folds 5 --out bench/router
    .venv/bin/python bench/router/eval.py --encoder minilm --out /tmp/minilm      # the transformer, 64 tokens
    .venv/bin/python bench/router/eval.py --max-seq-length 256 --out /tmp/w256   # another window

The engine is :mod:`pointsman.evaluation.report` (see its docstring for the protocol: same folds
for every method, nested-CV selection as the headline, RouteLLM's contaminated prompts excluded).
Writes ``results.json``, ``results_tables.md`` and one cost-quality PNG per data set to ``--out``.
Embeddings are cached outside the repo (``~/.cache/pointsman/emb``), so reruns are fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from pointsman.evaluation.datasets import (embed_prompts, load_arena_bench, load_routellm_gsm8k,  # noqa: E402
                                           load_routellm_mmlu)
from pointsman.embed.encoder import ROUTING_MAX_TOKENS  # noqa: E402
from pointsman.embed.registry import default_window, make_encoder  # noqa: E402
from pointsman.embed.static import STATIC_MAX_TOKENS  # noqa: E402
from pointsman.evaluation.report import evaluate, plot, tables, tqdm  # noqa: E402

DATA = Path(os.environ.get("POINTSMAN_SHARED_DATA", ROOT.parent / "shared" / "data"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["mmlu", "gsm8k", "arena"], choices=["mmlu", "gsm8k", "arena"])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--quick", action="store_true", help="only kNN and logistic, no nested selection")
    ap.add_argument("--max-seq-length", type=int, default=None,
                    help=f"encoder window: the prefix of each prompt the router reads (default {STATIC_MAX_TOKENS} "
                         f"static, {ROUTING_MAX_TOKENS} minilm)")
    ap.add_argument("--encoder", default="static", choices=["static", "minilm"],
                    help="static: the distilled token table (what the shipped router reads); minilm: the transformer")
    args = ap.parse_args(argv)
    if args.max_seq_length is None:
        args.max_seq_length = default_window(args.encoder)
    args.out.mkdir(parents=True, exist_ok=True)
    log = lambda s: tqdm.write(s) if hasattr(tqdm, "write") else print(s)  # noqa: E731
    results = []
    for name in tqdm(args.datasets, desc="data sets"):
        if name == "mmlu":
            t = load_routellm_mmlu(args.data / "routellm")
        elif name == "gsm8k":
            t = load_routellm_gsm8k(args.data / "routellm")
        else:
            t = load_arena_bench(args.data / "arena-bench")
        log(f"{t.name}: {len(t)} prompts x {len(t.models)} models; {'; '.join(t.notes)}")
        X, F = embed_prompts(t.prompts, encoder=make_encoder(args.encoder, args.max_seq_length), progress=True)
        r = evaluate(t, X, F, folds=args.folds, quick=args.quick, log=log)
        r["max_seq_length"], r["encoder"] = args.max_seq_length, args.encoder
        plot(r, args.out / f"{t.name}.png")
        results.append(r)
    clean = json.loads(json.dumps(results, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    for r in clean:
        for v in r["methods"].values():
            v.pop("_curve", None)
    (args.out / "results.json").write_text(json.dumps(clean, indent=1))
    md = tables(results)
    (args.out / "results_tables.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
