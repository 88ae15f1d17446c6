#!/usr/bin/env python
"""Adding a model with few labels: MF's shared space vs learning that model alone.

    .venv/bin/python bench/router/new_model.py

arena-bench, 14 models. For each model in turn ("the new model"): train MF on the other 13 models
over the training folds' prompts, then add the new model from only ``n`` of its labels
(``MFPredictor.add_model``) and predict its score on the held-out folds. Compared with two ways of
learning it from the same ``n`` labels alone: its mean, and a logistic head on the embeddings.
Reported: Pearson correlation and mean absolute error on held-out prompts, averaged over models
and folds.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from pointsman.evaluation.datasets import embed_prompts, load_arena_bench  # noqa: E402
from pointsman.evaluation.report import folds_of, tqdm  # noqa: E402
from pointsman.predictors import LinearPredictor, MFPredictor  # noqa: E402

DATA = Path(os.environ.get("POINTSMAN_SHARED_DATA", ROOT.parent / "shared" / "data"))


def corr(a, b):
    if np.std(a) < 1e-9 or np.std(b) < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def main() -> int:
    t = load_arena_bench(DATA / "arena-bench")
    X, F = embed_prompts(t.prompts)
    folds = folds_of(len(t), 5)
    rng = np.random.default_rng(0)
    sizes = (10, 30, 100)
    res = {n: {"mf": [], "mean": [], "logistic": []} for n in sizes}
    jobs = [(j, k) for j in range(len(t.models)) for k in range(len(folds))]
    for j, k in tqdm(jobs, desc="new-model runs"):
        te = folds[k]
        tr = np.concatenate([folds[i] for i in range(len(folds)) if i != k])
        others = [i for i in range(len(t.models)) if i != j]
        mf = MFPredictor(dim=16, epochs=60, n_members=3).fit(X[tr], F[tr], t.scores[tr][:, others],
                                                             [t.models[i] for i in others], t.score_range)
        lab = tr[~np.isnan(t.scores[tr, j])]
        tst = te[~np.isnan(t.scores[te, j])]
        y_te = t.scores[tst, j]
        for n in sizes:
            few = rng.choice(lab, size=min(n, len(lab)), replace=False)
            m2 = copy.deepcopy(mf)
            m2.add_model("new", X[few], F[few], t.scores[few, j], reg=1.0)
            p_mf = m2.predict(X[tst], F[tst])[:, -1]
            p_mean = np.full(len(tst), t.scores[few, j].mean())
            lg = LinearPredictor("logistic", epochs=60, n_members=1, weight_decay=1e-2).fit(
                X[few], F[few], t.scores[few, j][:, None], ["new"], t.score_range)
            p_lg = lg.predict(X[tst], F[tst])[:, 0]
            for name, p in (("mf", p_mf), ("mean", p_mean), ("logistic", p_lg)):
                res[n][name].append((corr(p, y_te), float(np.abs(p - y_te).mean())))
    print("| labels of the new model | MF add_model: r / MAE | its mean: r / MAE | logistic alone: r / MAE |")
    print("|---|---|---|---|")
    for n in sizes:
        cells = []
        for name in ("mf", "mean", "logistic"):
            a = np.array(res[n][name])
            cells.append(f"{a[:, 0].mean():.3f} / {a[:, 1].mean():.2f}")
        print(f"| {n} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
