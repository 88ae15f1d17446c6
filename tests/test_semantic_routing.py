"""Tier 2 through the gateway: a router trained on outcomes picks per prompt, the knob is honoured,
the artefact swaps without a restart, and a router trained on other models maps onto any pool."""

from __future__ import annotations

import numpy as np
import openai
import pytest

from pointsman.config.schema import ModelConfig, Prices
from pointsman.embed import MiniLMEncoder, prompt_features
from pointsman.predictors import KNNPredictor
from pointsman.routing.semantic import PoolQualityMap
from tests.conftest import ledger_rows, model

EASY = ["hello, how are you?", "say hi to my friend", "what colour is the sky?", "thank you very much",
        "good morning!", "translate 'cat' into French", "tell me a short joke", "what day comes after Monday?"]
HARD = ["prove that there are infinitely many prime numbers", "derive the closed form of the Fibonacci sequence",
        "prove that the square root of 2 is irrational", "show that every bounded monotone sequence converges",
        "prove the fundamental theorem of arithmetic", "derive the quadratic formula step by step",
        "prove by induction that the sum of the first n odd numbers is n squared", "prove Cauchy-Schwarz"]


@pytest.fixture(scope="module")
def encoder():
    return MiniLMEncoder().load()


def train(encoder, path, cheap_on_hard: float) -> None:
    """cheap answers easy prompts well and hard ones with the given score; strong answers everything."""
    texts = EASY + HARD
    embeddings = encoder.encode(texts)
    tokens = encoder.count_tokens(texts)
    scores = np.array([[1.0, 1.0]] * len(EASY) + [[cheap_on_hard, 1.0]] * len(HARD))
    KNNPredictor(k=3, prior=0.1).fit(embeddings, prompt_features(texts, tokens), scores, model_names=["cheap", "strong"],
                          score_range=(0, 1)).save(path)


@pytest.fixture
def semantic_gateway(make_gateway, upstream, encoder, tmp_path, monkeypatch):
    monkeypatch.setenv("PM_ADMIN", "sk-admin")
    router = tmp_path / "router.npz"
    train(encoder, router, cheap_on_hard=0.0)
    gateway = make_gateway({
        "models": [model("cheap", upstream, prices={"input": 0.2, "output": 0.6}),
                   model("strong", upstream, prices={"input": 5, "output": 15})],
        "policies": {"auto": {"semantic": {"router": str(router), "lambda": 0.5}}},
        "server": {"admin_key_env": "PM_ADMIN", "api_keys_env": ["PM_ADMIN"]},
    })
    return gateway, router


def ask(gateway, text, **headers):
    client = openai.OpenAI(base_url=gateway.base_url, api_key="sk-admin", max_retries=0)
    return client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": text}], extra_headers=headers or None).headers


def test_hard_prompts_go_to_the_strong_model_easy_ones_to_the_cheap(semantic_gateway):
    gateway, _ = semantic_gateway
    easy = ask(gateway, "hi there, how are you doing today?")
    hard = ask(gateway, "prove that there are infinitely many twin-free primes")
    assert (easy["x-pointsman-model"], easy["x-pointsman-tier"]) == ("cheap", "semantic")
    assert (hard["x-pointsman-model"], hard["x-pointsman-tier"]) == ("strong", "semantic")
    scores = dict(pair.split("=") for pair in hard["x-pointsman-scores"].split(","))
    assert float(scores["strong"]) > float(scores["cheap"])
    assert "lambda=0.5" in hard["x-pointsman-reason"] and 0.5 <= float(hard["x-pointsman-confidence"]) <= 1
    row = ledger_rows(gateway)[-1]
    assert row["tier"] == "semantic" and "lambda=0.5" in row["reason"]


def test_the_knob_can_be_turned_per_request(semantic_gateway):
    gateway, _ = semantic_gateway
    hard = "prove that the square root of 3 is irrational"
    assert ask(gateway, hard)["x-pointsman-model"] == "strong"
    assert ask(gateway, hard, **{"x-pointsman-lambda": "5"})["x-pointsman-model"] == "cheap"  # cost matters more
    assert ask(gateway, hard, **{"x-pointsman-floor": "0.9"})["x-pointsman-model"] == "strong"
    assert ask(gateway, "good evening", **{"x-pointsman-floor": "0.9"})["x-pointsman-model"] == "cheap"
    with pytest.raises(openai.BadRequestError):
        ask(gateway, hard, **{"x-pointsman-lambda": "lots"})


def test_a_retrained_router_is_swapped_in_without_restart(semantic_gateway, encoder):
    import httpx

    gateway, router = semantic_gateway
    hard = "prove that there are infinitely many primes of the form 4k+3"
    assert ask(gateway, hard)["x-pointsman-model"] == "strong"
    train(encoder, router, cheap_on_hard=1.0)  # new outcomes: the cheap model turned out fine on these
    response = httpx.post(f"{gateway.url}/admin/router/reload", headers={"authorization": "Bearer sk-admin"})
    assert response.json() == {"reloaded": ["auto"]}
    assert ask(gateway, hard)["x-pointsman-model"] == "cheap"


def test_reloading_a_router_trained_on_the_other_encoder_switches_the_embedder(semantic_gateway):
    """MiniLM-trained router -> static-trained router, without restart: the artefact names its encoder."""
    import httpx

    from pointsman.embed.static import STATIC_MAX_TOKENS, STATIC_MODEL_ID, StaticEncoder

    gateway, router = semantic_gateway
    static = StaticEncoder().load()
    texts = EASY + HARD
    embeddings, features = static.encode_with_features(texts)
    scores = np.array([[1.0, 1.0]] * len(EASY) + [[0.0, 1.0]] * len(HARD))
    predictor = KNNPredictor(k=3, prior=0.1).fit(embeddings, features, scores, model_names=["cheap", "strong"],
                                                 score_range=(0, 1))
    predictor.info.update({"encoder": STATIC_MODEL_ID, "max_seq_length": STATIC_MAX_TOKENS})
    predictor.save(router)
    response = httpx.post(f"{gateway.url}/admin/router/reload", headers={"authorization": "Bearer sk-admin"})
    assert response.json() == {"reloaded": ["auto"]}
    easy, hard = ask(gateway, "good morning, how are you?"), ask(gateway, "prove that the square root of 5 is irrational")
    assert (easy["x-pointsman-model"], easy["x-pointsman-tier"]) == ("cheap", "semantic")
    assert (hard["x-pointsman-model"], hard["x-pointsman-tier"]) == ("strong", "semantic")


def test_a_router_trained_on_other_models_maps_onto_any_pool_by_prior():
    pool = [ModelConfig(name="tiny", provider="openai", quality=0.1),
            ModelConfig(name="mid", provider="openai", quality=0.6),
            ModelConfig(name="top", provider="openai", quality=0.95, prices=Prices(10, 30))]
    mapping = PoolQualityMap(["weak-anchor", "strong-anchor"], {"weak-anchor": 0.5, "strong-anchor": 0.85}, pool)
    hard, _ = mapping.map(np.array([0.2, 0.8]), np.array([0.1, 0.1]))
    easy, _ = mapping.map(np.array([0.95, 0.97]), np.array([0.1, 0.1]))
    assert hard[0] < hard[1] < hard[2] and easy[0] < easy[1] < easy[2]  # a higher prior never predicts worse
    assert easy[1] > 0.8 and hard[1] < 0.6  # a mid model is trusted on easy prompts, not on hard ones
    assert hard[2] - hard[1] > easy[2] - easy[1]  # the gap between models grows with difficulty


async def test_a_fresh_install_routes_auto_with_the_shipped_router():
    """No training, no config: cloud keys present, the shipped router maps onto the default pool."""
    from pointsman.config.defaults import default_config
    from pointsman.gateway.pool import Pool
    from pointsman.embed.registry import Embedders
    from pointsman.providers.transport import ReqwestTransport
    from pointsman.routing.base import RouteContext
    from pointsman.routing.policy import PolicyRouter

    config = default_config({"OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "y"}, include_local=False)
    router = PolicyRouter(config, Pool(config, ReqwestTransport()), Embedders(batch=False))

    async def choose(text: str, overrides: dict[str, float] | None = None):
        return await router.route("auto", RouteContext({"messages": [{"role": "user", "content": text}]}, overrides))

    greeting, word_problem, code = "hi, how are you?", \
        "Janet has 3 apples and buys 5 more. She gives half away. How many are left?", \
        "Write a Python function that merges two sorted lists and explain its complexity."
    decided = [await choose(text) for text in (greeting, word_problem, code)]
    assert {d.tier for d in decided} == {"semantic"}
    assert set(decided[0].scores) == {m.name for m in config.models}
    gap = [d.scores["gpt-4o"] - d.scores["gpt-4o-mini"] for d in decided]
    assert gap[0] < gap[1] < gap[2]  # a greeting needs the frontier model least, code most
    # the knob moves the line: a setting that keeps the greeting on the cheap model still sends code up
    thrifty = [await choose(text, {"lambda": 0.33}) for text in (greeting, code)]
    assert [d.model for d in thrifty] == ["gpt-4o-mini", "gpt-4o"]


def test_sticky_sessions_are_per_tenant(make_gateway, upstream, monkeypatch):
    """Tenant B sending tenant A's x-pointsman-session id was routed by A's session (and so learned it exists)."""
    import openai

    from tests.conftest import model

    monkeypatch.setenv("PM_STICKY_KEY_A", "sk-tenant-a")
    monkeypatch.setenv("PM_STICKY_KEY_B", "sk-tenant-b")
    gw = make_gateway({"models": [model("a", upstream, prices={"input": 1}), model("b", upstream, prices={"input": 9})],
                       "policies": {"auto": {"rules": [{"when": {"keywords": ["physics"]}, "route": "b"}],
                                             "default": "a", "sticky_s": 600}},
                       "server": {"api_keys_env": ["PM_STICKY_KEY_A", "PM_STICKY_KEY_B"]}})

    def ask(key: str, text: str):
        client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": text}], extra_headers={"x-pointsman-session": "s1"})
        return raw.headers["x-pointsman-model"], raw.headers["x-pointsman-tier"]

    assert ask("sk-tenant-a", "a physics question") == ("b", "rules")
    assert ask("sk-tenant-a", "and a follow-up") == ("b", "sticky")  # A's own session keeps its model
    assert ask("sk-tenant-b", "hello") == ("a", "default")  # B's "s1" is another session


async def test_an_encoder_failure_in_the_semantic_tier_fails_open(caplog):
    """An exception inside tier 2 (here its embedder) was a 500; the request can still be answered by the default."""
    from pointsman.config.loader import parse_config
    from pointsman.embed.registry import Embedders
    from pointsman.gateway.pool import Pool
    from pointsman.providers.transport import ReqwestTransport
    from pointsman.routing.base import RouteContext
    from pointsman.routing.policy import PolicyRouter

    class BrokenEmbedder:
        async def embed_with_features(self, text, max_tokens=None):
            raise RuntimeError("onnxruntime: out of memory")

    config = parse_config({"models": [{"name": "small", "provider": "openai", "quality": 0.5},
                                      {"name": "big", "provider": "openai", "quality": 0.9, "prices": {"input": 5}}],
                           "policies": {"auto": {"semantic": {}, "default": "small"}}})
    router = PolicyRouter(config, Pool(config, ReqwestTransport()), Embedders({"static": BrokenEmbedder()}))
    decision = await router.route("auto", RouteContext({"messages": [{"role": "user", "content": "hi"}]}))
    assert (decision.model, decision.tier) == ("small", "default")
    assert "semantic tier failed" in caplog.text and "out of memory" in caplog.text


def test_the_judge_calls_through_the_dispatcher_and_is_costed(make_gateway, upstream):
    """Tier 3 called its model directly: no retry, breaker or attempt record, no cost, failures swallowed."""
    import json

    import openai

    from tests.conftest import ledger_rows, model

    gw = make_gateway({"models": [model("judge", upstream, "judge-grades", quality=0.2, max_retries=1,
                                        prices={"input": 0.5, "output": 0.5}),
                                  model("cheap", upstream, quality=0.3, prices={"input": 1, "output": 1}),
                                  model("strong", upstream, quality=0.8, prices={"input": 5, "output": 5})],
                       "policies": {"auto": {"semantic": {"min_confidence": 1.0}, "judge": {"model": "judge", "timeout_s": 5}}},
                       "server": {"cooldown_failures": 1, "cooldown_s": 30}})
    upstream.script("judge-grades", ["grade:4", "status:500", "status:500"])
    client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
    ask = lambda: client.chat.completions.with_raw_response.create(  # noqa: E731
        model="auto", messages=[{"role": "user", "content": "prove that there are infinitely many primes"}])
    graded = ask()
    assert graded.headers["x-pointsman-tier"] == "llm" and graded.headers["x-pointsman-model"] == "strong"
    row = ledger_rows(gw)[-1]
    calls = json.loads(row["attempts"])
    assert [(a[0], a[1], a[6]) for a in calls] == [("judge", "ok", "judge"), ("strong", "ok", None)]
    assert calls[0][4] > 0 and row["cost_usd"] == pytest.approx(calls[0][4] + gw.gateway.pool["strong"].cost(
        row["prompt_tokens"] - calls[0][7], row["completion_tokens"] - calls[0][8]))
    failed = ask()  # the judge fails (its breaker opens at once here): tier 2's choice stands, all in the row
    assert failed.headers["x-pointsman-tier"] == "semantic"
    assert [(a[0], a[1]) for a in json.loads(ledger_rows(gw)[-1]["attempts"])][:2] == [
        ("judge", "upstream_error"), ("judge", "cooldown")]
    assert gw.gateway.pool["judge"].breaker.state == "open"  # the judge's model is health-checked like any other


def test_a_routing_tier_from_outside_the_package_is_one_file_and_one_config_line(make_gateway, upstream):
    """Issue 15: routing tiers are an extension point: a registry keyed by kind, a policy as an ordered list."""
    import openai

    import tests.example_tier  # noqa: F401 - registers the "urgent" kind
    from tests.conftest import model

    tiers = ["rules", {"kind": "urgent", "model": "big"}, "sticky"]
    gw = make_gateway({"models": [model("small", upstream), model("big", upstream, prices={"input": 9})],
                       "policies": {"auto": {"rules": [{"when": {"keywords": ["physics"]}, "route": "small"}],
                                             "tiers": tiers, "sticky_s": 60, "default": "small"},
                                    "by-path": {"tiers": [{"kind": "tests.example_tier:UrgentTier", "model": "big",
                                                           "word": "asap"}]}}})
    client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)

    def routed(text: str, policy: str = "auto") -> tuple[str, str]:
        raw = client.chat.completions.with_raw_response.create(model=policy, messages=[{"role": "user", "content": text}])
        return raw.headers["x-pointsman-model"], raw.headers["x-pointsman-tier"]

    assert routed("urgent: my physics homework") == ("small", "rules")  # rules come first in this policy
    assert routed("urgent: the server is down") == ("big", "urgent")
    assert routed("hello there") == ("small", "default")
    assert routed("do it asap", "router/by-path") == ("big", "urgent")  # an import path works without registering


def test_unknown_or_misconfigured_tiers_are_refused_at_start():
    from pointsman.config.loader import parse_config
    from pointsman.gateway.pool import Pool
    from pointsman.providers.transport import ReqwestTransport
    from pointsman.routing.policy import PolicyRouter

    for tiers, needle in ([{"kind": "nope"}], "unknown tier kind 'nope'"), ([{"kind": "rules"}], "list it by name"), \
                         (["judge"], "needs `judge:"), ([{"kind": "no.such.module:Tier"}], "cannot be imported"):
        config = parse_config({"models": [{"name": "a", "provider": "openai"}], "policies": {"auto": {"tiers": tiers}}})
        with pytest.raises(ValueError, match=needle):
            PolicyRouter(config, Pool(config, ReqwestTransport()))
