"""The learned verifier: answer features, fit / predict / save / load, check() through an embedder, the
shipped default artefact, the answer readers and `pointsman train --verifier`."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from pointsman.cascade.answer_features import ANSWER_FEATURE_NAMES, answer_features, answer_tail, final_number
from pointsman.cascade.base import AnswerContext, Verdict
from pointsman.cascade.learned import LearnedVerifier, load_verifier
from pointsman.embed.features import FEATURE_NAMES
from pointsman.routing.base import RouteContext

F = {name: k for k, name in enumerate(ANSWER_FEATURE_NAMES)}


def test_final_number_and_tail():
    assert final_number("9 * 2 = 18\n#### 18") == 18
    assert final_number("So the answer is $1,250.") == 1250
    assert final_number("It takes 2.5 bolts.") == 2.5
    assert final_number("no numbers here") is None
    text = "word " * 100 + "the end 42"
    tail = answer_tail(text, 30)
    assert tail.endswith("42") and len(tail) <= 30 and not tail.startswith(" ")
    assert answer_tail("short", 64) == "short"


def test_answer_features_see_the_defects():
    prompt = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    good, wrong_eq, hedged = answer_features(
        [prompt] * 3,
        ["Tom has 3 + 4 = 7 apples.\n#### 7",
         "Tom has 3 + 4 = 8 apples.\n#### 8",
         "I'm not sure, approximately 7.5 apples, assuming some are eaten."])
    assert good[F["eq_any_wrong"]] == 0 and wrong_eq[F["eq_any_wrong"]] == 1
    assert good[F["final_is_integer"]] == 1 and hedged[F["final_is_integer"]] == 0 and hedged[F["decimal_final"]] == 1
    assert good[F["prompt_num_coverage"]] == 1.0
    assert hedged[F["hedging"]] > good[F["hedging"]]
    refusal = answer_features([prompt], ["I'm sorry, but I can't help with that."])[0]
    assert refusal[F["refusal"]] == 1 and refusal[F["has_final_number"]] == 0


def _synthetic(n=600, seed=0):
    """Correctness is driven by one answer feature (a wrong equation) and one prompt direction."""
    rng = np.random.default_rng(seed)
    P = rng.normal(size=(n, 384)).astype(np.float32)
    P /= np.linalg.norm(P, axis=1, keepdims=True)
    AF = rng.normal(size=(n, len(ANSWER_FEATURE_NAMES))).astype(np.float32)
    bad = rng.random(n) < 0.3
    AF[:, F["eq_any_wrong"]] = bad
    prior = np.where(rng.random(n) < 0.5, 0.6, 0.85)
    logit = 1.5 - 4.0 * bad + 20 * P[:, 0] + 2 * (prior - 0.7)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    # drawn last: the outcome above does not depend on how many prompt features there are (pure noise here)
    PF = rng.normal(size=(n, len(FEATURE_NAMES))).astype(np.float32)
    return P, PF, AF, prior, y


def test_fit_predict_is_calibrated_and_ranks():
    P, PF, AF, prior, y = _synthetic(1000)  # every prompt input but one is noise: enough rows to find that one
    tr, te = slice(0, 750), slice(750, None)
    v = LearnedVerifier(tail_chars=0, inner_folds=2).fit(P[tr], PF[tr], None, AF[tr], prior[tr], y[tr])
    s = v.predict(P[te], PF[te], None, AF[te], prior[te])
    assert s.shape == (250,) and np.all((s >= 0) & (s <= 1))
    from pointsman.evaluation.cascade import verifier_auc
    assert verifier_auc(s, y[te]) > 0.75
    assert abs(s.mean() - y[te].mean()) < 0.08  # calibrated on average
    bad = AF[te][:, F["eq_any_wrong"]] == 1
    assert s[bad].mean() < s[~bad].mean() - 0.15
    assert 0.2 <= v.kappa <= 200


def test_save_load_roundtrip_without_pickle(tmp_path):
    P, PF, AF, prior, y = _synthetic(300)
    A = np.random.default_rng(1).normal(size=(300, 384)).astype(np.float32)
    v = LearnedVerifier(tail_chars=64, inner_folds=2).fit(P, PF, A, AF, prior, y, models=np.array(["a", "b"] * 150))
    path = tmp_path / "v.npz"
    v.save(path)
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["__meta__"].tobytes())
    assert meta["format"] == "pointsman.verifier/1" and meta["kappa"] == pytest.approx(v.kappa)
    w = LearnedVerifier.load(path)
    assert w.tail_chars == 64 and w.model_means.keys() == {"a", "b"}
    np.testing.assert_allclose(w.predict(P[:20], PF[:20], A[:20], AF[:20], prior[:20]),
                               v.predict(P[:20], PF[:20], A[:20], AF[:20], prior[:20]), atol=1e-5)
    meta["answer_feature_names"] = meta["answer_feature_names"][:-1]
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="answer-feature"):
        LearnedVerifier.load(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="fit"):
        LearnedVerifier().save(tmp_path / "unfitted.npz")


class FakeEmbedder:
    """Deterministic stand-in for EmbedBatcher: a hashed bag of words, L2-normalised."""

    def __init__(self):
        self.calls = []

    async def embed_with_features(self, text, max_tokens=None):
        self.calls.append(text)
        v = np.zeros(384, dtype=np.float32)
        for word in text.split():
            v[hash(word) % 384] += 1.0
        v /= max(np.linalg.norm(v), 1e-9)
        return v, np.zeros(len(FEATURE_NAMES), dtype=np.float32)

    async def embed(self, text):
        return (await self.embed_with_features(text))[0]


def _item(prompt, answer, model="m"):
    route = RouteContext({"messages": [{"role": "user", "content": prompt}]})
    return AnswerContext(route, {"choices": [{"message": {"role": "assistant", "content": answer},
                                              "finish_reason": "stop"}]}, model)


def test_check_uses_shared_prompt_embedding_and_priors():
    P, PF, AF, prior, y = _synthetic(300)
    emb = FakeEmbedder()
    v = LearnedVerifier(emb, tail_chars=0, inner_folds=2, priors={"pool-small": 0.3}).fit(
        P, PF, None, AF, prior, y, models=np.array(["x"] * 300))

    async def go():
        item = _item("Tom has 3 apples and buys 4 more. How many?", "3 + 4 = 7\n#### 7", "pool-small")
        await item.route.embedding(emb, max_tokens=v.prompt_tokens)  # routing already embedded the prompt
        first = await v.check(item)
        empty = await v.check(_item("q", "   "))
        unknown = await v.check(_item("Tom has 3 apples and buys 4 more. How many?", "3 + 4 = 7\n#### 7", "never-seen"))
        return first, empty, unknown

    first, empty, unknown = asyncio.run(go())
    assert isinstance(first, Verdict) and 0.0 <= first.score <= 1.0 and first.verifier == "learned"
    assert len(emb.calls) == 2  # one prompt embedding for the first item (shared), one for the third
    assert empty is None
    assert "prior 0.30" in first.detail and f"prior {v.default_prior:.2f}" in unknown.detail
    assert v.prior_of("x") == pytest.approx(v.model_means["x"])


def test_default_verifier_ships_and_scores():
    from pointsman.embed.registry import Embedders, encoder_kind

    v = load_verifier("default")
    assert encoder_kind(v.encoder) == "minilm" and v.prompt_tokens == 64  # artefacts without the field: MiniLM
    v.embedder = Embedders(batch=False).for_artefact({"encoder": v.encoder})
    assert v.coef is not None and 0.2 <= v.kappa <= 200
    assert {"mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"} <= set(v.model_means)

    async def go():
        return await v.check(_item("A shop sells 12 pens at $3 each. How much for all?", "12 * 3 = 36\n#### 36"))

    verdict = asyncio.run(go())
    assert 0.0 < verdict.score < 1.0


def test_long_format_answers_reader(tmp_path):
    from pointsman.evaluation.datasets import load_answer_table

    path = tmp_path / "outcomes.jsonl"
    rows = [{"prompt": "p1", "model": "a", "answer": "x = 1", "score": 1},
            {"prompt": "p1", "model": "b", "answer": "x = 2", "score": 0},
            {"prompt": "p2", "model": "a", "score": 1},
            {"prompt": "p2", "model": "b", "answer": "y", "score": 0.5}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    at = load_answer_table(path)
    assert at.table.prompts == ["p1", "p2"] and at.table.models == ["a", "b"]
    assert at.answers == [["x = 1", "x = 2"], [None, "y"]]
    ii, jj = at.pairs()
    assert list(zip(ii, jj)) == [(0, 0), (0, 1), (1, 1)]
    with pytest.raises(ValueError, match="no answers"):
        load_answer_table(tmp_path / "nothing.txt")


def test_a_verifier_on_static_embeddings_round_trips_and_names_its_encoder(tmp_path):
    """`pointsman train --verifier --encoder static`: 256-dim prompt embeddings, routing's window, its encoder recorded."""
    from pointsman.embed.registry import encoder_kind
    from pointsman.embed.static import STATIC_MODEL_ID

    P, PF, AF, prior, y = _synthetic(200)
    P = P[:, :256] / np.linalg.norm(P[:, :256], axis=1, keepdims=True)
    v = LearnedVerifier(tail_chars=0, inner_folds=2, encoder=STATIC_MODEL_ID).fit(P, PF, None, AF, prior, y)
    assert v.prompt_tokens == 512 and v.embed_dim == 256
    v.save(tmp_path / "v.npz")
    back = load_verifier(tmp_path / "v.npz")
    assert encoder_kind(back.encoder) == "static" and back.embed_dim == 256 and back.prompt_tokens == 512
    assert np.allclose(back.predict(P[:5], PF[:5], None, AF[:5], prior[:5]), v.predict(P[:5], PF[:5], None, AF[:5], prior[:5]),
                       atol=1e-5)
