"""The adapted router (issue 16): a base router corrected by partial feedback rows, saved as one artefact,
routed by the semantic tier unchanged."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from pointsman.config.schema import ModelConfig, Prices, SemanticTierConfig
from pointsman.embed.features import prompt_features
from pointsman.learning.adapt import Adapter, adapt
from pointsman.predictors import AdaptedPredictor, load_predictor
from pointsman.routing.semantic import DEFAULT_ROUTER

STRONG, WEAK = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"


def _cluster(rng: np.random.Generator, centre: np.ndarray, n: int) -> np.ndarray:
    X = centre + 0.02 * rng.standard_normal((n, len(centre)))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def world():
    """Two kinds of prompt: on A both models answer well, on B only the strong one. Each prompt has one row,
    for a model picked at random (partial feedback), plus a shadow row for a fifth of them."""
    rng = np.random.default_rng(0)
    base = load_predictor(DEFAULT_ROUTER)
    a, b = (c / np.linalg.norm(c) for c in rng.standard_normal((2, base.embed_dim)))
    texts = [f"question number {i}: what is the capital of country {i}?" for i in range(400)]
    F = prompt_features(texts, np.full(len(texts), 16), 512)
    X = np.vstack([_cluster(rng, a, 200), _cluster(rng, b, 200)])
    hard = np.arange(400) >= 200
    rows_p, rows_m, rows_y = [], [], []
    for i in range(400):
        for model in [rng.choice([STRONG, WEAK])] + ([STRONG, WEAK] if rng.random() < 0.2 else []):
            rows_p.append(i)
            rows_m.append(model)
            rows_y.append(0.0 if (model == WEAK and hard[i] and rng.random() < 0.9) else 1.0)
    p = np.array(rows_p)
    return {"base": base, "X": X, "F": F, "hard": hard, "a": a, "b": b, "rng": rng,
            "rows": (X[p], F[p], rows_m, np.array(rows_y), p)}


def _gain(router, X, F) -> np.ndarray:
    q = router.predict(X, F)
    return q[:, router.model_names.index(STRONG)] - q[:, router.model_names.index(WEAK)]


def test_feedback_teaches_where_the_strong_model_helps(world):
    X, F, models, y, p = world["rows"]
    router = adapt(world["base"], X, F, models, y, prompt_ids=p)
    assert isinstance(router, AdaptedPredictor) and router.model_names == world["base"].model_names
    rng = world["rng"]
    fresh_a, fresh_b = _cluster(rng, world["a"], 50), _cluster(rng, world["b"], 50)  # prompts never fed back
    Ff = world["F"][:50]
    base_lift = _gain(world["base"], fresh_b, Ff).mean() - _gain(world["base"], fresh_a, Ff).mean()
    lift = _gain(router, fresh_b, Ff).mean() - _gain(router, fresh_a, Ff).mean()
    assert abs(base_lift) < 0.05 and lift > 0.3, (base_lift, lift)


def test_no_feedback_or_noise_leaves_the_base_as_it_was(world):
    base, X, F = world["base"], world["X"][:20], world["F"][:20]
    empty = adapt(base, np.zeros((0, base.embed_dim), np.float32), np.zeros((0, F.shape[1]), np.float32), [], np.zeros(0))
    np.testing.assert_allclose(empty.predict(X, F), base.predict(X, F), atol=1e-9)
    rng = np.random.default_rng(1)
    noise = adapt(base, *world["rows"][:3], rng.permutation(world["rows"][3]), prompt_ids=world["rows"][4])
    # shuffled scores carry no signal about where the strong model helps: the ranking barely moves
    assert np.corrcoef(_gain(noise, X, F), _gain(base, X, F))[0, 1] > 0.9


def test_an_unseen_model_is_added_and_a_bad_score_range_refused(world):
    X, F, models, y, p = world["rows"]
    router = adapt(world["base"], X, F, ["newcomer" if m == WEAK else m for m in models], y, prompt_ids=p,
                   pool=[ModelConfig(name="newcomer", provider="openai", prices=Prices(input=0.1, output=0.1))])
    assert router.model_names == [*world["base"].model_names, "newcomer"]
    q = router.predict(world["X"][200:], world["F"][200:])
    assert q.shape == (200, 3) and q[:, 2].mean() < q[:, 0].mean()  # the newcomer fails the hard prompts
    with pytest.raises(ValueError, match="0..1"):
        adapt(world["base"], X, F, models, y * 10)
    assert Adapter(shrink=5.0).set_params(temperature=0.1).get_params()["temperature"] == 0.1


def test_saved_as_one_artefact_and_routed_by_the_semantic_tier(world, tmp_path):
    from pointsman.core import RouteContext
    from pointsman.embed.registry import Embedders
    from pointsman.routing.semantic import SemanticTier

    X, F, models, y, p = world["rows"]
    router = adapt(world["base"], X, F, models, y, prompt_ids=p)
    path = tmp_path / "adapted.npz"
    router.save(path)
    with np.load(path, allow_pickle=False) as z:  # plain arrays only
        assert all(z[k].dtype != object for k in z.files)
    loaded = load_predictor(path)
    assert loaded.kind == "adapted" and loaded.info == router.info and loaded.model_names == router.model_names
    np.testing.assert_allclose(loaded.predict_with_uncertainty(world["X"], world["F"])[0],
                               router.predict_with_uncertainty(world["X"], world["F"])[0], atol=1e-6)
    assert loaded.info["encoder"] == world["base"].info["encoder"] and loaded.info["prices"]
    assert loaded.reference.keys() == world["base"].reference.keys()
    assert isinstance(loaded, AdaptedPredictor) and loaded.base is not None
    assert loaded.base.reference.keys() == world["base"].reference.keys()

    class FixedEmbedder:  # stands in for the static encoder: each prompt's text names its embedding
        async def embed_with_features(self, text, max_tokens=None):
            return (world["b"] if "hard" in text else world["a"]).astype(np.float32), world["F"][0]

    pool = [ModelConfig(name=STRONG, provider="openai", prices=Prices(input=24.7, output=24.7)),
            ModelConfig(name=WEAK, provider="openai", prices=Prices(input=0.24, output=0.24))]
    tier = SemanticTier(SemanticTierConfig(router=str(path)), pool, Embedders({"static": FixedEmbedder()}))

    def route(text: str) -> str:
        ctx = RouteContext({"messages": [{"role": "user", "content": text}]})
        decision = asyncio.run(tier.decide(ctx, [STRONG, WEAK]))
        assert decision is not None
        return decision.model

    assert (route("a hard one"), route("an easy one")) == (STRONG, WEAK)


def test_inference_stays_cheap_with_many_feedback_rows(world):
    rng = np.random.default_rng(2)
    n = 3000
    idx = rng.integers(0, 400, n)
    router = adapt(world["base"], world["X"][idx], world["F"][idx], rng.choice([STRONG, WEAK], n), rng.random(n),
                   temperature=0.05, shrink=3.0, shared_shrink=3.0, slope_shrink=100.0)  # fixed: no leave-one-out
    x, f = world["X"][:1], world["F"][:1]
    router.predict_with_uncertainty(x, f)
    t0 = time.perf_counter()
    for _ in range(50):
        router.predict_with_uncertainty(x, f)
    assert (time.perf_counter() - t0) / 50 < 0.01  # per decision, with 3,000 rows
