"""Promotion by comparison on held-out partial traffic (issue 16): a better candidate passes, a worse one
is refused, and the off-policy estimate is unbiased on synthetic traffic with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from pointsman.learning.compare import KNN_NAME, compare

PRICES = {"strong": 10.0, "weak": 0.1}


def _traffic(seed: int = 0, n: int = 600, shadow: float = 0.5):
    """Prompts on a circle: the weak model fails on the right half (x > 0). The deployed router routes by a
    useless signal (the y coordinate); each prompt is scored for its chosen model and, on a ``shadow`` share,
    for the other one (propensity = the shadow share)."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, n)
    X = np.stack([np.cos(angle), np.sin(angle)], axis=1).astype(np.float32)
    truth = np.stack([np.full(n, 0.95), np.where(X[:, 0] > 0, 0.1, 0.9)], axis=1)  # P(good) per (strong, weak)
    outcome = (rng.random((n, 2)) < truth).astype(float)
    chosen = (X[:, 1] <= 0).astype(int)  # deployed: strong (0) on the upper half
    ids, models, scores, propensity = [], [], [], []
    for i in range(n):
        for j, p in [(chosen[i], 1.0)] + ([(1 - chosen[i], shadow)] if rng.random() < shadow else []):
            ids.append(i)
            models.append(["strong", "weak"][j])
            scores.append(outcome[i, j])
            propensity.append(p)
    return X, np.array(ids), models, np.array(scores), np.array(propensity), truth


def deployed(X, F):
    return np.stack([np.full(len(X), 0.9), np.where(X[:, 1] > 0, 0.5, 0.9)], axis=1)


def good(X, F):
    return np.stack([np.full(len(X), 0.9), np.where(X[:, 0] > 0, 0.2, 0.9)], axis=1)


def bad(X, F):
    return np.stack([np.full(len(X), 0.9), np.where(X[:, 0] > 0, 0.9, 0.2)], axis=1)


@pytest.mark.parametrize("estimate", ["doubly robust", "complete prompts"])
def test_a_better_candidate_is_promoted_and_a_worse_one_refused(estimate):
    X, ids, models, scores, propensity, _ = _traffic()
    p = propensity if estimate == "doubly robust" else None
    rows = X[ids]
    win = compare({"deployed": deployed, "candidate": good}, rows, None, ids, models, scores, prices=PRICES,
                  margin=0.01, propensity=p, n_boot=200)
    lose = compare({"deployed": deployed, "candidate": bad}, rows, None, ids, models, scores, prices=PRICES,
                   margin=0.01, propensity=p, n_boot=200)
    assert win.promote and win.result("candidate").delta > 0.1, win.table()
    assert not lose.promote and lose.result("candidate").delta < -0.1, lose.table()
    assert KNN_NAME in [r.name for r in win.results]  # fitted on the earlier 70% of the rows
    table = lose.table()
    assert "refuse" in table and "| candidate |" in table and "| deployed |" in table


def test_the_doubly_robust_estimate_is_unbiased_at_a_given_knob():
    """The candidate's estimated score at the default knob against its true expected score on the held-out prompts."""
    errors = []
    for seed in range(8):
        X, ids, models, scores, propensity, truth = _traffic(seed, shadow=0.3)
        result = compare({"deployed": deployed, "candidate": good}, X[ids], None, ids, models, scores, prices=PRICES,
                         propensity=propensity, n_boot=20, knn=False)
        held = np.unique(ids)[-result.prompts:]
        choice = np.argmax(good(X[held], None) - 0.25 * np.array([1.0, 0.01]), axis=1)
        errors.append(result.result("candidate").quality_at_knob - truth[held, choice].mean())
    assert abs(np.mean(errors)) < 0.03 and np.std(errors) < 0.08, errors


def test_too_few_scorable_prompts_promote_nothing():
    X, ids, models, scores, _, _ = _traffic(shadow=0.02)  # almost no prompt has both models scored
    result = compare({"deployed": deployed, "candidate": good}, X[ids], None, ids, models, scores, prices=PRICES)
    assert not result.promote and "held-out prompts can be scored" in result.reason
    with pytest.raises(ValueError, match="deployed"):
        compare({"candidate": good}, X[ids], None, ids, models, scores, prices=PRICES)
