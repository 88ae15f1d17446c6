"""`pointsman route`: the gateway's own routing code, run offline over a file of prompts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from pointsman.config.loader import load_config
from pointsman.config.schema import Config, ModelConfig, Policy, Prices, SemanticTierConfig
from pointsman.gateway.pool import Pool
from pointsman.core import RouteContext
from pointsman.routing.policy import PolicyRouter
from pointsman.config.priors import quality_prior

DEFAULT_OUTPUT_TOKENS = 256


def read_prompts(path: str) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(id, chat body) per line: the line's `id` (or `prompt_id`) if it has one, else its 0-based index among the
    prompts, so that results can be joined back to the input."""
    index = 0
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = orjson.loads(line)
        if isinstance(row, dict) and isinstance(row.get("messages"), list):
            body = {"messages": row["messages"]}
        elif isinstance(row, dict) and isinstance(row.get("prompt"), str):
            body = {"messages": [{"role": "user", "content": row["prompt"]}]}
        else:
            raise ValueError(f"{path}:{lineno}: each line needs \"prompt\" (a string) or \"messages\" (a list)")
        yield row.get("id", row.get("prompt_id", index)), body
        index += 1


def _own_pool(router_path: str, prices_path: str | None) -> Config:
    """Without a pool config: the router's own models, with the prices it was trained with."""
    from pointsman.evaluation.datasets import read_prices_csv
    from pointsman.predictors import load_predictor

    from pointsman.routing.semantic import router_file

    predictor = load_predictor(router_file(router_path))
    prices = {m: (p.input_per_mtok, p.output_per_mtok) for m, p in read_prices_csv(prices_path).items()} if prices_path \
        else {m: tuple(v) for m, v in (predictor.info.get("prices") or {}).items()}
    anchors = predictor.info.get("anchor_quality") or {}
    models = [ModelConfig(name=m, provider="openai", prices=Prices(*prices.get(m, (0.0, 0.0))), quality=anchors.get(m),
                          context_window=10**9) for m in predictor.model_names]
    return Config(models=models, policies={"auto": Policy(semantic=SemanticTierConfig(router=router_path))})


def offline_router(router_path: str | None, config_path: str | None, prices_path: str | None
                   ) -> tuple[PolicyRouter, Callable[[dict[str, Any], dict[str, float]], Awaitable[dict[str, Any]]]]:
    """Without a router path: the one the gateway would use, the router the config's default policy names, else
    the shipped one (SemanticTierConfig's default, "default")."""
    config = load_config(config_path) if config_path else _own_pool(router_path or SemanticTierConfig().router, prices_path)
    policy_name = config.server.default_policy
    policy = config.policies.setdefault(policy_name, Policy())
    if policy.semantic is None:
        policy.semantic = SemanticTierConfig() if router_path is None else SemanticTierConfig(router=router_path)
    elif router_path is not None:  # the pool's own knob settings, with the router given on the command line
        policy.semantic.router = router_path
    from pointsman.providers.transport import ReqwestTransport

    from pointsman.embed.registry import Embedders

    # offline there is nothing to batch with: every encoder runs in the calling thread
    router = PolicyRouter(config, Pool(config, ReqwestTransport()), Embedders(batch=False))
    semantic = router.policies[policy_name].semantic
    assert semantic is not None
    mean_output = semantic.predictor.info.get("mean_output_tokens") or {}

    async def route(body: dict[str, Any], overrides: dict[str, float]) -> dict[str, Any]:
        ctx = RouteContext(body, overrides)
        decision = await router.route("auto", ctx)
        quality, _ = await semantic.predict(ctx)
        input_tokens = ctx.total_chars / 4
        cost = {m.name: (input_tokens * m.prices.input + mean_output.get(m.name, DEFAULT_OUTPUT_TOKENS) * m.prices.output) / 1e6
                for m in config.models}
        return {"quality": {m.name: round(float(q), 4) for m, q in zip(config.models, quality)},
                "prior": {m.name: round(quality_prior(m), 3) for m in config.models},
                "cost_usd": {k: round(v, 8) for k, v in cost.items()},
                "tier": decision.tier, "model": decision.model, "reason": decision.reason,
                "confidence": None if decision.confidence is None else round(decision.confidence, 4)}

    return router, route
