"""Cascade evaluation: the curves and APGR, the three methods on a small synthetic table, the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from pointsman.cascade.answer_features import ANSWER_FEATURE_NAMES
from pointsman.evaluation import cascade as E
from pointsman.evaluation.datasets import AnswerTable, ModelPrice, OutcomeTable


def test_hull_apgr_reference_values():
    x = np.linspace(0.0, 1.0, 11)
    # quality rising linearly with cost from weak (0.5) to strong (1.0): APGR 0.5
    assert E.hull_apgr(x, 0.5 + 0.5 * x, 0.5, 1.0, 0.0) == pytest.approx(0.5, abs=1e-3)
    # the whole gap recovered at once: APGR 1
    assert E.hull_apgr(np.array([0.0, 1.0]), np.array([1.0, 1.0]), 0.5, 1.0, 0.0) == pytest.approx(1.0, abs=1e-3)
    # nothing left of the always-cheap cost
    assert E.hull_apgr(np.array([0.5]), np.array([1.0]), 0.5, 1.0, 0.5) < 0.76


def test_cascade_points_count_the_cheap_attempt():
    yw = np.array([1.0, 0.0, 1.0, 0.0])
    ys = np.array([1.0, 1.0, 1.0, 1.0])
    cw, cs = np.full(4, 0.01), np.full(4, 1.0)
    pts = E._cascade_points(yw, yw, ys, cw, cs)  # a perfect verifier escalates the two wrong ones first
    np.testing.assert_allclose(pts[0], [0.01, 0.5])
    np.testing.assert_allclose(pts[2], [0.51, 1.0])
    np.testing.assert_allclose(pts[-1], [1.01, 1.0])


def _table(n=240, seed=0):
    """Two models; the weak one is wrong where the prompt's first coordinate is high, and its wrong answers
    carry a wrong equation 80% of the time (what a verifier can see)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 384)).astype(np.float32)
    hard = rng.random(n) < 0.4
    X[:, 0] += np.where(hard, 6.0, -6.0)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    weak = np.where(hard, rng.random(n) < 0.3, rng.random(n) < 0.9).astype(float)
    strong = (rng.random(n) < 0.9).astype(float)
    prompts = [f"q{i}: how many? {i}" for i in range(n)]
    answers = []
    for i in range(n):
        bad = weak[i] == 0 and rng.random() < 0.8
        answers.append([f"2 + 2 = {5 if bad else 4}\n#### {i}", f"2 + 2 = 4\n#### {i}"])
    tokens = np.full(n, 30.0)
    out = np.full((n, 2), 100.0)
    prices = {"weak": ModelPrice(0.24, 0.24), "strong": ModelPrice(24.7, 24.7)}
    cost = np.column_stack([prices[m].cost(tokens, out[:, j]) for j, m in enumerate(["weak", "strong"])])
    t = OutcomeTable("toy", prompts, ["weak", "strong"], np.column_stack([weak, strong]), cost, tokens, out,
                     prices, strong="strong", weak="weak")
    at = AnswerTable(t, answers)
    pi, mj = at.pairs()
    from pointsman.cascade.answer_features import answer_features
    AF = answer_features([prompts[i] for i in pi], [answers[i][j] for i, j in zip(pi, mj)])
    F = np.zeros((n, 21), dtype=np.float32)
    return E.AnswerData(at, X, F, pi, mj, None, AF, t.normalised_scores()[pi, mj], 0)


def test_three_methods_on_a_toy_table():
    d = _table()
    assert d.AF[:, ANSWER_FEATURE_NAMES.index("eq_any_wrong")].sum() > 10
    from pointsman.cascade.learned import LearnedVerifier
    from pointsman.predictors import LinearPredictor

    r = E.evaluate_cascade(d, folds_k=3, log=lambda s: None,
                           router=lambda: LinearPredictor("ridge", alpha=1.0, n_members=1),
                           verifier=lambda: LearnedVerifier(tail_chars=0, inner_folds=2))
    m = r["methods"]
    for name in ("routing only", "cascade only", "cascade routing", "oracle router", "oracle verifier cascade"):
        assert 0.0 <= m[name]["APGR"] <= 1.6, name
    assert m["oracle router"]["APGR"] > m["routing only"]["APGR"] > 0.55
    assert m["cascade only"]["APGR"] > 0.6  # the wrong equation is visible to the verifier
    assert m["cascade routing"]["APGR"] > max(m["routing only"]["APGR"], m["cascade only"]["APGR"]) - 0.05
    assert r["verifier"]["weak"]["auc"] > 0.7
    md = E.tables([r])
    assert "cascade routing" in md and "| routing only |" in md


def test_cli_trains_and_evaluates_a_long_format_file(tmp_path, monkeypatch):
    import json

    from pointsman.cli import main

    monkeypatch.setenv("POINTSMAN_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        ok = rng.random() < 0.6
        rows.append({"prompt": f"Sam has {i} pens and buys {i + 2} more. How many pens?", "model": "small",
                     "answer": f"{i} + {i + 2} = {2 * i + 2 if ok else 2 * i + 3}\n#### {2 * i + 2 if ok else 2 * i + 3}",
                     "score": float(ok), "input_tokens": 20, "output_tokens": 20})
        rows.append({"prompt": f"Sam has {i} pens and buys {i + 2} more. How many pens?", "model": "big",
                     "answer": f"{i} + {i + 2} = {2 * i + 2}\n#### {2 * i + 2}", "score": 1.0,
                     "input_tokens": 20, "output_tokens": 20})
    data = tmp_path / "outcomes.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    prices = tmp_path / "prices.csv"
    prices.write_text("model,input_usd_per_mtok,output_usd_per_mtok\nsmall,0.2,0.2\nbig,20,20\n")
    out = tmp_path / "v.npz"
    assert main(["train", "--verifier", str(data), "-o", str(out), "--prices", str(prices)]) == 0
    from pointsman.cascade.learned import load_verifier
    assert load_verifier(out).model_means["big"] == 1.0
    assert main(["eval", "--cascade", str(data), "--prices", str(prices), "--folds", "3", "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "cascade.md").read_text().count("cascade routing") >= 1
    # on a machine (here: a cache directory) that has none yet, the router's static table was distilled
    assert len(list((tmp_path / "cache" / "models").glob("*-static-*.npy"))) == 1
