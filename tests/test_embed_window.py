"""The encoder window (routing reads a prompt's prefix), the encoder's LRU, the batcher's per-request
windows, and the semantic tier asking for its artefact's window. Real model, a handful of texts."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.test_router_offline import needs_encoder

LONG = " ".join(f"sentence {i} talks about the history of mathematics and of the natural sciences." for i in range(30))
SHORT = "What is the capital of France?"


@pytest.fixture(scope="module")
def enc():
    from pointsman.embed.encoder import MiniLMEncoder
    return MiniLMEncoder(cache_size=64).load()


@needs_encoder
def test_window_reads_only_the_prefix(enc):
    from pointsman.embed.encoder import MiniLMEncoder

    plain = MiniLMEncoder(cache_size=0).load()
    ids, full = plain.tokenize([LONG], 32)
    assert len(ids[0]) == 32 and ids[0][-1] == plain._sep_id and full[0] > 200
    # what a window of 32 sees does not depend on the text after it
    a = plain.encode([LONG], max_tokens=32)[0]
    b = plain.encode([LONG + " and then something entirely different about cooking pasta"], max_tokens=32)[0]
    assert np.allclose(a, b, atol=1e-5)
    # ... but the full window does see it
    assert not np.allclose(plain.encode([LONG])[0], a, atol=1e-3)
    # features still count the whole prompt; "truncated" follows the window
    _, f32 = plain.encode_with_features([LONG], max_tokens=32)
    _, f512 = plain.encode_with_features([LONG], max_tokens=512)
    from pointsman.embed.features import FEATURE_NAMES
    t = FEATURE_NAMES.index("truncated")
    assert f32[0, t] == 1.0 and f512[0, t] == 0.0
    assert f32[0, FEATURE_NAMES.index("log_tokens")] == f512[0, FEATURE_NAMES.index("log_tokens")]
    # per-text windows in one call equal one call per window
    mixed, _ = plain.encode_with_features([LONG, LONG, SHORT], max_tokens=[32, 256, 16])
    assert np.allclose(mixed[0], a, atol=1e-5)
    assert np.allclose(mixed[1], plain.encode([LONG])[0], atol=1e-5)
    assert np.allclose(mixed[2], plain.encode([SHORT], max_tokens=16)[0], atol=1e-5)


@needs_encoder
def test_lru_answers_repeats_and_shares_a_short_text_across_windows(enc):
    first = enc.encode_with_features([SHORT + " (lru)"], max_tokens=64)
    hits = enc.cache_hits
    again = enc.cached(SHORT + " (lru)", 64)
    assert again is not None and enc.cache_hits == hits + 1
    assert np.array_equal(again[0], first[0][0]) and np.array_equal(again[1], first[1][0])
    # a text shorter than both windows: the full-window request is the same embedding, no model run
    full = enc.cached(SHORT + " (lru)", None)
    assert full is not None and np.array_equal(full[0], first[0][0])
    # a truncated text is specific to its window
    enc.encode([LONG], max_tokens=32)
    assert enc.cached(LONG, 32) is not None
    assert enc.cached(LONG, 64) is None and enc.cached(LONG) is None
    # bounded
    enc.encode([f"filler text number {i}" for i in range(100)])
    assert len(enc._cache) <= enc.cache_size


@needs_encoder
async def test_batcher_mixes_windows_in_one_batch_and_answers_cached_texts_inline(enc):
    from pointsman.embed.batcher import EmbedBatcher
    from pointsman.embed.encoder import MiniLMEncoder

    plain = MiniLMEncoder(cache_size=0).load()
    b = EmbedBatcher(MiniLMEncoder(cache_size=64), workers=2)
    try:
        await b.warmup()
        texts = [f"{LONG} variant {i}" for i in range(12)]
        windows = [16, 64, None] * 4
        got = await asyncio.gather(*(b.embed(t, w) for t, w in zip(texts, windows)))
        for t, w, v in zip(texts, windows, got):
            assert np.allclose(v, plain.encode([t], max_tokens=w)[0], atol=1e-5)
        assert b.items == 12 and b.batches < 12
        items = b.items
        again = await b.embed(texts[0], 16)  # LRU: answered without a batch
        assert np.array_equal(again, got[0]) and b.items == items
    finally:
        await b.close()


async def test_semantic_tier_asks_for_its_artefacts_window(tmp_path):
    from pointsman.config.schema import ModelConfig, Prices, SemanticTierConfig
    from pointsman.embed.features import FEATURE_NAMES
    from pointsman.predictors import LinearPredictor
    from pointsman.routing.base import RouteContext
    from pointsman.embed.registry import Embedders
    from pointsman.routing.semantic import SemanticTier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 384)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    F = rng.standard_normal((64, len(FEATURE_NAMES))).astype(np.float32)
    Y = (rng.random((64, 2)) < 0.6).astype(float)
    predictor = LinearPredictor("logistic", epochs=1, n_members=1).fit(X, F, Y, model_names=["cheap", "strong"])
    predictor.info["max_seq_length"] = 48
    path = tmp_path / "r.npz"
    predictor.save(path)

    asked = []

    class Recorder:
        async def embed_with_features(self, text, max_tokens=None):
            asked.append(max_tokens)
            return X[0], F[0]

    pool = [ModelConfig(name="cheap", provider="openai", prices=Prices(0.1, 0.1)),
            ModelConfig(name="strong", provider="openai", prices=Prices(10, 30))]
    tier = SemanticTier(SemanticTierConfig(router=str(path)), pool, Embedders({"minilm": Recorder()}))
    ctx = RouteContext({"messages": [{"role": "user", "content": "hello"}]})
    await tier.decide(ctx, ["cheap", "strong"])
    await tier.decide(ctx, ["cheap", "strong"])  # the request's embedding is reused
    assert asked == [48]
    # an artefact from before windows were recorded reads 256 tokens, as it was trained
    del predictor.info["max_seq_length"]
    predictor.save(path)
    tier.reload()
    await tier.decide(RouteContext({"messages": [{"role": "user", "content": "hi"}]}), ["cheap", "strong"])
    assert asked == [48, 256]
