#!/usr/bin/env python
"""Cascade evaluation on ../shared/data: routing only vs cascade only vs cascade routing, held-out folds.

    .venv/bin/python bench/cascade/embed_answers.py            # once: embeds prompts and answer tails (cached)
    .venv/bin/python bench/cascade/eval.py [--tail-chars 0] [--datasets gsm8k arena]

The engine is :mod:`pointsman.evaluation.cascade` (protocol in its docstring; the same 5 folds, seed 0,
as bench/router). Writes ``results.json``, ``results_tables.md`` and ``gsm8k.png`` / ``arena-bench.png``
next to this script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from pointsman.cascade.learned import LearnedVerifier  # noqa: E402
from pointsman.evaluation.metrics import upper_hull  # noqa: E402
from pointsman.evaluation.cascade import evaluate_cascade, plot, prepare, tables  # noqa: E402
from pointsman.evaluation.datasets import load_arena_bench_answers, load_routellm_gsm8k_answers  # noqa: E402

DATA = Path(os.environ.get("POINTSMAN_SHARED_DATA", ROOT.parent / "shared" / "data"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["gsm8k", "arena"], choices=["gsm8k", "arena"])
    ap.add_argument("--tail-chars", type=int, default=0)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args(argv)
    results = []
    for name in args.datasets:
        at = load_routellm_gsm8k_answers(DATA / "routellm") if name == "gsm8k" else load_arena_bench_answers(DATA / "arena-bench")
        d = prepare(at, args.tail_chars, progress=True)
        r = evaluate_cascade(d, folds_k=args.folds, verifier=lambda: LearnedVerifier(tail_chars=args.tail_chars))
        plot(r, args.out / f"{at.table.name}.png")
        results.append(r)
    suffix = "" if args.tail_chars == 0 else f"_tail{args.tail_chars}"
    previous = args.out / f"results{suffix}.json"
    if previous.exists():  # a run on some data sets keeps the others' results
        done = {r["name"] for r in results}
        results = [r for r in json.loads(previous.read_text()) if r["name"] not in done] + results
        order = {"gsm8k": 0, "arena-bench": 1}
        results.sort(key=lambda r: order.get(r["name"], 2))
    for r in results:  # keep the hull vertices only (every metric and the plot are functions of the hull)
        for v in r["methods"].values():
            pts = np.asarray(v["_points"], dtype=float)
            hc, hq = upper_hull(pts[:, 0], pts[:, 1])
            v["_points"] = [[round(float(c), 7), round(float(q), 5)] for c, q in zip(hc, hq)]
    md = tables(results)
    (args.out / f"results_tables{suffix}.md").write_text(md)
    (args.out / f"results{suffix}.json").write_text(json.dumps(results, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
