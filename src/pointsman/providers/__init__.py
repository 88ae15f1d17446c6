"""Providers: one file per upstream protocol, one contract in base.py.

Adding a provider is adding a file and a line here. Imports are lazy so that the local model's heavy
runtime loads only when a pool actually holds a local model.
"""

from __future__ import annotations

from importlib import import_module

from pointsman.config.schema import ModelConfig
from pointsman.providers.base import Provider, ProviderError
from pointsman.providers.transport import Transport

# provider name -> "module:class"
PROVIDERS: dict[str, str] = {
    "openai": "pointsman.providers.openai_compat:OpenAICompatProvider",
    "anthropic": "pointsman.providers.anthropic:AnthropicProvider",
    "local": "pointsman.providers.local:LocalProvider",
}


# provider name -> "module:class" for models of kind "embedding" (POST /v1/embeddings)
EMBEDDING_PROVIDERS: dict[str, str] = {
    "openai": "pointsman.providers.embeddings:OpenAIEmbeddingsProvider",
}


def build_provider(config: ModelConfig, transport: Transport) -> Provider:
    if config.kind == "embedding":
        target = EMBEDDING_PROVIDERS.get(config.provider)
        if target is None:
            raise ValueError(f"model {config.name!r}: provider {config.provider!r} serves no embeddings; kind: embedding "
                             f"takes {sorted(EMBEDDING_PROVIDERS)}")
    else:
        target = PROVIDERS.get(config.provider)
    if target is None:
        raise ValueError(f"model {config.name!r}: unknown provider {config.provider!r}; known: {sorted(PROVIDERS)}")
    module_name, class_name = target.split(":")
    cls = getattr(import_module(module_name), class_name)
    return cls(config, transport)


__all__ = ["EMBEDDING_PROVIDERS", "PROVIDERS", "Provider", "ProviderError", "build_provider"]
