"""Could the static token table (tier 2's encoder, ~0.05 ms) decide a miss before MiniLM runs? A negative result.

The idea: search the namespace with the cheap static embedding first, and skip the MiniLM query embedding
(3-4 ms) when no entry is close enough to be accepted. This measures, on QQP's held-out test split with
every distinct test `text_a` in one namespace (a dense namespace, like one application's traffic), how
many look-ups such a gate would skip at each static-cosine floor, how many MiniLM-acceptable neighbours
(MiniLM cosine >= 0.87, the acceptance model's similarity floor at delta 2%) it would lose, and whether
MiniLM's best neighbour is among the static top-K (the candidates a static index would hand over).

    .venv/bin/python bench/cache/static_gate.py      # ~2 min with the QQP embeddings cached; results: GATEWAY.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _embed import embed_texts, load_pairs  # noqa: E402
from eval import group_split  # noqa: E402

from pointsman.embed import MiniLMEncoder  # noqa: E402
from pointsman.embed.static import StaticEncoder  # noqa: E402

FLOOR = 0.87


def main() -> int:
    a, b, y = load_pairs()
    n = len(y)
    E = embed_texts(a + b, MiniLMEncoder(intra_op_threads=2), progress=False)
    S = StaticEncoder().encode(a + b)
    split = group_split(a, b)
    test = np.nonzero(split == 2)[0]
    first: dict[str, int] = {}
    for i in test:
        first.setdefault(a[i], i)
    entries = np.array(list(first.values()))
    queries = np.random.default_rng(0).choice(test, 4000, replace=False)
    train_mean = S[:n][split == 0].mean(0)
    mini = E[n:][queries] @ E[:n][entries].T
    best = mini.argmax(1)
    acceptable = mini.max(1) >= FLOOR
    print(f"{len(entries)} entries, {len(queries)} queries; MiniLM best neighbour >= {FLOOR}: {acceptable.sum()}")
    for name, centre in (("static", None), ("static, centred", train_mean)):
        def unit(X: np.ndarray) -> np.ndarray:
            X = X if centre is None else X - centre
            return X / np.linalg.norm(X, axis=1, keepdims=True)

        stat = unit(S[n:][queries]) @ unit(S[:n][entries]).T
        top = stat.max(1)
        print(f"\n{name}: static top-1 cosine p10/p25/p50/p75/p90 {np.quantile(top, [.1, .25, .5, .75, .9]).round(3)}")
        print("| static floor | look-ups skipped | MiniLM-acceptable neighbours lost |\n|---|---|---|")
        for floor in np.quantile(top, [0.01, 0.05, 0.1, 0.2]).round(2):
            skip = top < floor
            print(f"| {floor:.2f} | {skip.mean():.1%} | {int((skip & acceptable).sum())} / {int(acceptable.sum())} |")
        order = np.argsort(-stat, 1)
        for k in (3, 8, 16):
            inside = (order[:, :k] == best[:, None]).any(1)
            print(f"MiniLM's best (>= {FLOOR}) in the static top-{k}: {inside[acceptable].mean():.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
