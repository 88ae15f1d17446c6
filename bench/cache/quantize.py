"""How much storing the cached vectors in fewer bits moves the cache's decisions (QQP, ../shared/data/qqp).

The store keeps each entry's vector compactly; the query's stays float32. For every QQP pair (text_a cached,
text_b asked) this compares the float32 cosine with the cosine against the entry's vector as stored
(float16; int8 with one scale per vector, as `cache/memory.py` stores it; int8 at a fixed scale of 127, as
usearch's i8 graph holds it), then the acceptance decision the shipped minilm-dup model makes on it (the
similarity floor, the five checks, the calibrated threshold at delta 2%), on all pairs and on eval.py's test
split. Prints a markdown table (appended to --out if given).

    .venv/bin/python bench/cache/quantize.py [--out bench/cache/MEMORY.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _embed import embed_texts, load_pairs  # noqa: E402
from eval import group_split  # noqa: E402

from pointsman.cache import default_acceptance_model  # noqa: E402
from pointsman.cache.checks import CHECK_NAMES, compare, facts, pair_features  # noqa: E402
from pointsman.cache.memory import quantize  # noqa: E402


def decisions(sim: np.ndarray, fa: list, fb: list, results: list, model, floor: float) -> np.ndarray:
    served = np.zeros(len(sim), dtype=bool)
    for i, s in enumerate(sim):
        r = results[i]
        if s < floor or not r.passed:
            continue
        served[i] = model.prob(pair_features(float(s), fb[i], fa[i], r)) >= model.threshold
    return served


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from pointsman.embed import MiniLMEncoder
    from pointsman.embed.registry import DUP_PATCH

    a, b, y = load_pairs()
    n = len(y)
    E = embed_texts(a + b, MiniLMEncoder(intra_op_threads=2, patch=DUP_PATCH), progress=False)
    Ea, Eb = E[:n].astype(np.float32), E[n:].astype(np.float32)
    test = group_split(a, b) == 2
    model = default_acceptance_model(0.02, encoder="minilm-dup")
    floor = max(0.7, model.similarity_floor())
    fa, fb = [facts(t) for t in a], [facts(t) for t in b]
    results = [compare(q, c, CHECK_NAMES) for q, c in zip(fb, fa)]
    exact = (Ea * Eb).sum(1)
    base = decisions(exact, fa, fb, results, model, floor)
    q8, scale = quantize(Ea)
    stored = {
        "float16": Ea.astype(np.float16).astype(np.float32),
        "int8, one scale per vector (the store)": q8.astype(np.float32) * scale[:, None],
        "int8 at 127 (usearch i8)": np.clip(np.round(Ea * 127), -127, 127).astype(np.float32) / 127,
    }
    lines = [f"### Stored vectors in fewer bits: the acceptance decisions on QQP ({time.strftime('%Y-%m-%d')})", "",
             f"`bench/cache/quantize.py`: {n:,} QQP pairs (text_a cached, text_b asked; the test split: {int(test.sum()):,}), "
             f"minilm-dup embeddings, the shipped acceptance model at delta 2% (threshold {model.threshold:.4f}, "
             f"similarity floor {floor:.4f}). float32: {int(base.sum()):,} served of all pairs, "
             f"{int(base[test].sum()):,} of the test split ({base[test].sum() / test.sum():.2%} hit rate, "
             f"{(base & (y == 0))[test].sum() / test.sum():.2%} wrong reuse).", "",
             "| stored as | bytes per vector | cosine error mean / p99.9 / max | decisions changed, all pairs (served -> not / not -> served) "
             "| test split: hit rate, wrong reuse |",
             "|---|---|---|---|---|"]
    sizes = {"float16": 768, "int8, one scale per vector (the store)": 388, "int8 at 127 (usearch i8)": 384}
    for name, V in stored.items():
        sim = (V * Eb).sum(1)
        err = np.abs(sim - exact)
        got = decisions(sim, fa, fb, results, model, floor)
        lost, gained = int((base & ~got).sum()), int((~base & got).sum())
        lines.append(f"| {name} | {sizes[name]} | {err.mean():.5f} / {np.quantile(err, 0.999):.5f} / {err.max():.5f} "
                     f"| {lost + gained} ({lost} / {gained}) | {got[test].sum() / test.sum():.2%}, "
                     f"{(got & (y == 0))[test].sum() / test.sum():.2%} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
